"""The data_mining records TAO's commit script requires: step logs and the mining ledger.

``commit_stage.py`` refuses a mining commit without three step logs under the iteration dir
(non-empty, not a placeholder such as "ok"), and the run-level ledger ``mining_history.json``.
TAO's logs are the complete output of its embedding and k-NN containers, ending with TAO's
status line; raypipe's are the facts of its own steps, ending the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

MINING_LOG_FILES: dict[str, str] = {"mining_target_log": "target_embeddings.log",
                                    "mining_source_log": "source_embeddings.log",
                                    "mining_knn_log": "nearest_neighbors.log"}
MINING_HISTORY_FILE = "mining_history.json"
STATUS_PASS = "Execution status: PASS"
STATUS_FAIL = "Execution status: FAIL"
LEDGER_VERSION = 1
# What TAO's history filter reports from an iteration's mining_history_summary.json.
MINING_SUMMARY_KEYS = ("iteration", "topn", "candidate_unique_count", "already_mined_count", "selected_count",
                       "cumulative_unique_count")


def mining_log_text(step: str, facts: Mapping[str, Any], *, passed: bool = True) -> str:
    """A step log: what ran, on what, with what result (``key: value`` lines), then TAO's status line."""
    if not facts:
        raise ValueError(f"mining log '{step}': no facts to record (TAO refuses placeholder logs)")
    lines = [f"raypipe data_mining: {step}"] + [f"{k}: {v}" for k, v in facts.items()]
    return "\n".join(lines + [STATUS_PASS if passed else STATUS_FAIL]) + "\n"


def mining_records(iter_dir: str | Path, run_dir: str | Path) -> dict[str, str]:
    """The four data_mining fields TAO requires beside raypipe's: three step logs and the ledger."""
    mining_dir = Path(iter_dir).resolve() / "mining_filter"
    out = {key: str(mining_dir / name) for key, name in MINING_LOG_FILES.items()}
    out["mining_history"] = str(Path(run_dir).resolve() / MINING_HISTORY_FILE)
    return out


def write_mining_logs(iter_dir: str | Path, steps: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Write the three step logs; ``steps`` maps ``mining_target_log``/``mining_source_log``/
    ``mining_knn_log`` to that step's facts (embedder, rows, dimension, seconds; index, k, counts).
    Returns the field → path mapping to commit."""
    from raypipe._io import atomic_write_text

    missing = [k for k in MINING_LOG_FILES if k not in steps]
    if missing:
        raise ValueError(f"write_mining_logs: no facts for {missing}")
    mining_dir = Path(iter_dir).resolve() / "mining_filter"
    out: dict[str, str] = {}
    for key, name in MINING_LOG_FILES.items():
        out[key] = str(atomic_write_text(mining_dir / name, mining_log_text(name.removesuffix(".log"), steps[key])))
    return out


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def mining_ledger_entry(*, iteration: int, topn: int, candidate_parquet: str | Path, output_parquet: str | Path,
                        summary_file: str | Path, candidate_unique_count: int, already_mined_count: int,
                        selected_filepaths: Iterable[str]) -> dict[str, Any]:
    """One ``mining_history.json`` iteration in TAO's ledger format.

    TAO's history filter re-verifies a committed iteration by these digests before it trusts the
    ledger, so write the candidate parquet, the mined parquet and the summary first, then this.
    """
    selected = sorted(str(p) for p in selected_filepaths)
    if len(selected) != len(set(selected)):
        raise ValueError(f"mining ledger iteration {iteration}: selected_filepaths has duplicates")
    paths = {k: Path(v).resolve() for k, v in (("candidate_parquet", candidate_parquet),
                                               ("output_parquet", output_parquet), ("summary_file", summary_file))}
    return {"iteration": int(iteration), "topn": int(topn),
            "candidate_parquet": str(paths["candidate_parquet"]),
            "candidate_sha256": file_sha256(paths["candidate_parquet"]),
            "candidate_unique_count": int(candidate_unique_count), "already_mined_count": int(already_mined_count),
            "selected_count": len(selected), "selected_filepaths": selected,
            "output_parquet": str(paths["output_parquet"]), "output_sha256": file_sha256(paths["output_parquet"]),
            "summary_file": str(paths["summary_file"]), "summary_sha256": file_sha256(paths["summary_file"])}


def mining_ledger(entries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The whole ledger: TAO's version and identity, entries by iteration, the cumulative count."""
    ordered = sorted((dict(e) for e in entries), key=lambda e: int(e["iteration"]))
    unique = {p for e in ordered for p in e["selected_filepaths"]}
    return {"version": LEDGER_VERSION, "identity": "filepath", "iterations": ordered,
            "cumulative_unique_count": len(unique)}
