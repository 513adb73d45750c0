"""Evaluate an ``inference.csv``: ``metric_result.json``, ``threshold_metrics.csv``, ``summary.txt``.

Every input problem is found before the first byte is written, and no output ever replaces an
input or a file this evaluator did not write.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raypipe._io import atomic_write_json, atomic_write_text, read_json
from raypipe.metrics._contract import ContractError, MetricContract, validate_result
from raypipe.metrics._far import (
    MetricUndefinedError,
    auroc,
    far_at_recall,
    threshold_table,
)

SIDE_FILES = ("threshold_metrics.csv", "summary.txt")  # written beside the output JSON
_TABLE_HEADER = "threshold,tp,fp,tn,fn,precision,recall,f1,far_pct"
_SUMMARY_START = "inference_csv: "


class EvaluatorInputError(ValueError):
    """The inference CSV, an option or an output path is unusable; the message names which and why."""


def read_inference_csv(path: Path) -> pd.DataFrame:
    """The CSV with every cell as a string; unreadable files raise :class:`EvaluatorInputError`."""
    if not path.exists():
        raise EvaluatorInputError(f"{path}: inference CSV not found")
    if not path.is_file():
        raise EvaluatorInputError(f"{path}: is not a file; expected the inference CSV")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.EmptyDataError:
        raise EvaluatorInputError(f"{path}: file is empty; expected a header with label and siamese_score "
                                  f"and one row per sample") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        detail = " ".join(str(exc).split())
        raise EvaluatorInputError(f"{path}: not a readable CSV ({detail})") from None
    except OSError as exc:
        raise EvaluatorInputError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def labels_scores(df: pd.DataFrame, source: str,
                  label_map: Mapping[str, str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(is_defect, scores) of an inference CSV's rows; the first bad cell raises, naming its row.

    Ground truth follows the workspace rules: ``PASS`` (any case) is PASS, any other label a defect
    class; empty labels, missing-value markers (``nan``, ``null``) and PASS synonyms (``OK``,
    ``passed``) are refused unless ``label_map`` says what they mean, because each would silently
    count as a defect.
    """
    from raypipe.workspace._labels import (
        apply_label_map,
        label_issue,
        normalise_label_map,
    )
    from raypipe.workspace._rows import normalise_label

    missing = [c for c in ("label", "siamese_score") if c not in df.columns]
    if missing:
        found = ", ".join(map(str, df.columns)) or "none"
        raise EvaluatorInputError(f"{source}: column '{missing[0]}' missing; expected the columns label and "
                                  f"siamese_score (found: {found})")
    labels = apply_label_map(df["label"].astype(str), normalise_label_map(label_map))
    for i, raw in enumerate(labels.tolist(), start=1):
        issue = "empty" if not raw.strip() else label_issue(raw)
        if issue is not None:
            what = {"empty": "is empty", "missing": "is a missing value",
                    "pass_synonym": "reads as PASS but is not PASS"}[issue]
            raise EvaluatorInputError(f"{source}: row {i}, column 'label': '{raw}' {what}; write PASS or a defect "
                                      f"name (or map it with --label-map)")
    scores = pd.to_numeric(df["siamese_score"].astype(str).str.strip(), errors="coerce")
    bad = ~np.isfinite(scores.to_numpy(dtype=np.float64, na_value=np.nan))
    if bad.any():
        row = int(np.flatnonzero(bad)[0]) + 1
        raise EvaluatorInputError(f"{source}: row {row}, column 'siamese_score': expected a finite number, "
                                  f"got {df['siamese_score'].iloc[row - 1]!r}")
    y = labels.map(normalise_label) != "PASS"
    return y.to_numpy(dtype=bool), scores.to_numpy(dtype=np.float64)


def require_defined(is_defect: np.ndarray, source: str, recall_target_pct: float = 100.0) -> None:
    """FAR at a recall target needs defect rows (recall) and PASS rows (FAR = FP / PASS rows)."""
    n = len(is_defect)
    metric = f"FAR at {recall_target_pct:g}% recall"
    if n == 0:
        raise MetricUndefinedError(f"{source}: {metric} is undefined: no data rows (header only); expected one row "
                                   f"per evaluated sample")
    if not is_defect.any():
        raise MetricUndefinedError(f"{source}: {metric} is undefined: no defect (NO_PASS) rows among {n} rows; "
                                   f"add defect samples to the evaluated set")
    if is_defect.all():
        raise MetricUndefinedError(f"{source}: {metric} is undefined: no PASS rows among {n} rows (FAR is "
                                   f"false alarms per PASS row); add PASS samples to the evaluated set")


def far_metric_result(is_defect: np.ndarray, scores: np.ndarray, recall_target_pct: float = 100.0) -> dict[str, Any]:
    """The ``metric_result.json`` object for labels and scores:
    ``{name: far_pct, value: FAR*100, unit: %, threshold, constraints: {recall_pct}, diagnostics}``."""
    best = far_at_recall(is_defect, scores, recall_target_pct / 100.0)
    diag: dict[str, Any] = {
        "precision": best.precision, "f1": best.f1, "tp": best.tp, "fp": best.fp, "tn": best.tn,
        "fn": best.fn, "n_pass": int((~is_defect).sum()), "n_nopass": int(is_defect.sum()),
        "auroc": auroc(is_defect, scores),
        "far_at_recall_99_pct": far_at_recall(is_defect, scores, 0.99).far * 100,
        "far_at_recall_95_pct": far_at_recall(is_defect, scores, 0.95).far * 100,
    }
    diag = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in diag.items()}
    return {"name": "far_pct", "value": best.far * 100, "unit": "%", "threshold": best.threshold,
            "constraints": {"recall_pct": best.recall * 100}, "diagnostics": diag}


def output_paths(output_json: Path) -> tuple[Path, Path, Path]:
    """(output JSON, threshold_metrics.csv, summary.txt): everything the evaluator writes."""
    return (output_json, output_json.parent / SIDE_FILES[0], output_json.parent / SIDE_FILES[1])


def check_outputs(inference_csv: Path, output_json: Path) -> None:
    """Refuse before computing anything if writing would destroy an input or a file we did not write.

    An existing output is replaced only when it is empty or an earlier result of this evaluator
    (a re-run or a resumed run); the input CSV is never an output, whatever the path spelling,
    symlink or hard link.
    """
    if output_json.name in SIDE_FILES:
        raise EvaluatorInputError(f"{output_json}: --output-json must not be named {' or '.join(SIDE_FILES)}; the "
                                  f"evaluator writes those beside it")
    for out in output_paths(output_json):
        if not (out.exists() or out.is_symlink()):
            continue
        if out.exists() and os.path.samefile(out, inference_csv):
            raise EvaluatorInputError(f"{out}: is the input CSV {inference_csv}; writing it would destroy the "
                                      f"input. Choose an --output-json in another directory (threshold_metrics.csv "
                                      f"and summary.txt are written beside it)")
        if out.is_dir():
            raise EvaluatorInputError(f"{out}: is a directory; --output-json and the files beside it "
                                      f"({', '.join(SIDE_FILES)}) must be file paths")
        if not _own_output(out):
            raise EvaluatorInputError(f"{out}: exists and is not an earlier output of this evaluator; refusing to "
                                      f"overwrite it. Move it away or choose an --output-json in another directory")


def _own_output(path: Path) -> bool:
    try:
        if path.stat().st_size == 0:
            return True
        with open(path, encoding="utf-8") as fh:
            head = fh.read(1 << 20)
    except (OSError, UnicodeDecodeError):
        return False
    if path.name == SIDE_FILES[0]:
        return head.splitlines()[0:1] == [_TABLE_HEADER]
    if path.name == SIDE_FILES[1]:
        return head.startswith(_SUMMARY_START)
    try:
        obj = json.loads(head)
    except ValueError:
        return False
    return isinstance(obj, dict) and {"name", "value", "unit"} <= set(obj)


def evaluate_inference_csv(inference_csv: str | Path, output_json: str | Path, recall_target_pct: float = 100.0,
                           *, label_map: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Builtin FAR@recall evaluator. Writes ``threshold_metrics.csv`` and ``summary.txt`` beside the
    JSON, then the JSON (last: its presence means the evaluation is complete).

    Raises :class:`EvaluatorInputError` (bad CSV, option or output path) or
    :class:`MetricUndefinedError` (no defect or no PASS rows) before anything is written.
    """
    inference_csv, output_json = Path(inference_csv), Path(output_json)
    if not (math.isfinite(recall_target_pct) and 0 < recall_target_pct <= 100):
        raise EvaluatorInputError(f"recall target must be in (0, 100] %, got {recall_target_pct!r}")
    df = read_inference_csv(inference_csv)
    check_outputs(inference_csv, output_json)
    y, s = labels_scores(df, str(inference_csv), label_map)
    require_defined(y, str(inference_csv), recall_target_pct)
    result = far_metric_result(y, s, recall_target_pct)
    table = threshold_table(y, s)
    tdf = pd.DataFrame({k: table[k] for k in ("threshold", "tp", "fp", "tn", "fn", "precision", "recall", "f1", "far")})
    tdf["far_pct"] = tdf.pop("far") * 100
    d = result["diagnostics"]
    summary = (
        f"{_SUMMARY_START}{inference_csv}\n"
        f"rows: {len(df)} (PASS {d['n_pass']}, NO_PASS {d['n_nopass']})\n"
        f"FAR at {recall_target_pct:g}% recall: {result['value']:.4f} %\n"
        f"threshold: {result['threshold']:.6g} (NO_PASS iff siamese_score > threshold)\n"
        f"recall: {result['constraints']['recall_pct']:.2f} %  precision: {d['precision']:.4f}  f1: {d['f1']:.4f}\n"
        f"tp {d['tp']}  fp {d['fp']}  tn {d['tn']}  fn {d['fn']}\n"
        f"AUROC: {d['auroc'] if d['auroc'] is None else round(d['auroc'], 4)}  "
        f"FAR@99%: {d['far_at_recall_99_pct']:.2f} %  FAR@95%: {d['far_at_recall_95_pct']:.2f} %\n"
    )
    _, table_path, summary_path = output_paths(output_json)
    atomic_write_text(table_path, tdf.to_csv(index=False))
    atomic_write_text(summary_path, summary)
    atomic_write_json(output_json, result)
    return result


def run_evaluator(contract: MetricContract, inference_csv: Path, output_json: Path,
                  iter_label: str = "") -> dict[str, Any]:
    """Run the contract's evaluator and return the validated result (``passed`` recomputed)."""
    ev = contract.evaluator
    kind = ev.get("type")
    if kind == "builtin":
        if ev.get("id", "far_at_recall") != "far_at_recall":
            raise ContractError(f"unknown builtin evaluator id {ev.get('id')!r} (known: far_at_recall)")
        raw = evaluate_inference_csv(inference_csv, output_json, contract.recall_target_pct)
    elif kind == "command":
        argv = [str(ev["path"]), *[str(a) for a in ev.get("args", [])],
                "--inference-csv", str(Path(inference_csv).resolve()),
                "--output-json", str(Path(output_json).resolve())]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)  # an argv list, never a shell
        if proc.returncode != 0:
            raise ContractError(f"evaluator {argv[0]} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
        raw = read_json(output_json)
    elif kind == "artifact":
        path = Path(str(ev["path_template"]).format(iter_label=iter_label))
        if not path.is_file():
            raise ContractError(f"artifact evaluator: {path} not found")
        raw = read_json(path)
        atomic_write_json(output_json, raw)
    else:  # pragma: no cover - rejected by MetricContract
        raise ContractError(f"unknown evaluator type {kind!r}")
    result = validate_result(contract, raw)
    result["evidence_path"] = str(Path(output_json).resolve())
    return result
