"""Reading what a TAO container left behind: status.json, checkpoints, inference.csv.

TAO conventions relied on here (checked against NVIDIA/tao_pytorch_backend):
- ``status.json`` is JSON Lines, one object per event with ``status`` in
  SUCCESS|FAILURE|STARTED|RUNNING|SKIPPED, an optional ``message`` and ``kpi`` dict; validation
  writes ``kpi.val_loss`` ("Eval metrics generated."), training ``kpi.train_loss``.
- Checkpoints are ``model_epoch_<EEE>_step_<SSS>.pth`` where ``EEE`` is Lightning's **zero-based**
  epoch index (a one-epoch run writes ``model_epoch_000_step_…``), plus a ``*_latest.pth`` link.
- ``visual_changenet inference`` writes ``<results_dir>/inference.csv``: the input rows with a
  ``siamese_score`` column appended, in input order.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from raypipe._io import atomic_write_text, read_jsonl
from raypipe.backends.base import parse_checkpoint_name
from raypipe.workspace._rows import normalise_label, read_rows

# TAO file epochs are zero-based; EpochMetrics.epoch is one-based.
TAO_FILE_EPOCH_OFFSET = 1
INFERENCE_COLUMNS = ("input_path", "golden_path", "object_name", "label", "siamese_score")


def read_status(path: Path) -> list[dict[str, Any]]:
    """status.json records in order (a torn last line from a killed container is dropped)."""
    return [r for r in read_jsonl(path) if isinstance(r, dict)]


def failure_message(records: list[dict[str, Any]]) -> str | None:
    """The message of the first FAILURE record, or None when the run did not report one."""
    for rec in records:
        if str(rec.get("status", "")).upper() == "FAILURE":
            return str(rec.get("message") or "status.json: FAILURE")
    return None


def find_checkpoints(train_dir: Path) -> list[Path]:
    """``model_epoch_<EEE>_step_<SSS>.pth`` files (not the ``*_latest`` link), by (epoch, step)."""
    found: list[tuple[tuple[int, int], Path]] = []
    for p in Path(train_dir).glob("model_epoch_*_step_*.pth"):
        if p.is_symlink() or not p.is_file():
            continue
        try:
            found.append((parse_checkpoint_name(p), p.resolve()))
        except ValueError:
            continue
    return [p for _, p in sorted(found)]


def checkpoint_epoch(path: Path) -> int:
    """One-based epoch of a TAO checkpoint file."""
    return parse_checkpoint_name(path)[0] + TAO_FILE_EPOCH_OFFSET


def epoch_losses(records: list[dict[str, Any]], validation_interval: int = 1) -> tuple[dict[int, float], dict[int, float]]:
    """Per-epoch ``train_loss`` and ``val_loss`` (one-based epochs) from status.json.

    The k-th validation record belongs to epoch ``k * validation_interval`` and the k-th training
    record to epoch ``k``: TAO's KPI records carry no epoch number, and Lightning skips the
    sanity-check validation when writing them, so counting is exact.
    """
    train: dict[int, float] = {}
    val: dict[int, float] = {}
    n_train = n_val = 0
    for rec in records:
        kpi = rec.get("kpi")
        if not isinstance(kpi, dict):
            continue
        if "val_loss" in kpi:
            n_val += 1
            val[n_val * max(1, validation_interval)] = _float(kpi["val_loss"])
        if "train_loss" in kpi:
            n_train += 1
            train[n_train] = _float(kpi["train_loss"])
    return train, val


def last_kpi(records: list[dict[str, Any]]) -> dict[str, Any]:
    for rec in reversed(records):
        if isinstance(rec.get("kpi"), dict) and rec["kpi"]:
            return dict(rec["kpi"])
    return {}


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def find_inference_csv(results_dir: Path) -> Path | None:
    """Newest ``inference.csv`` TAO wrote under ``results_dir`` (its exact subdir varies by version)."""
    found = [p for p in Path(results_dir).rglob("inference.csv") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def normalise_inference_csv(tao_csv: Path, input_csv: Path, out_csv: Path) -> Path:
    """Write raypipe's ``inference.csv`` from TAO's: input rows (every column preserved) + ``siamese_score``.

    Scores are taken by position, so the row count must match and, where TAO kept
    ``object_name``, the order too; anything else is an error, never a silent misalignment.
    """
    rows = read_rows(input_csv)
    tao = pd.read_csv(tao_csv, dtype=str, keep_default_na=False)
    if "siamese_score" not in tao.columns:
        raise ValueError(f"{tao_csv}: TAO inference output has no 'siamese_score' column "
                         f"(columns: {', '.join(tao.columns)})")
    if len(tao) != len(rows):
        raise ValueError(f"{tao_csv}: {len(tao)} scored rows for {len(rows)} input rows in {input_csv}")
    if "object_name" in tao.columns and "object_name" in rows.columns:
        mismatch = (tao["object_name"].to_numpy() != rows["object_name"].to_numpy()).nonzero()[0]
        if mismatch.size:
            i = int(mismatch[0])
            raise ValueError(f"{tao_csv}: row {i + 1}, column 'object_name': {tao['object_name'].iloc[i]!r} "
                             f"does not match input row {rows['object_name'].iloc[i]!r} of {input_csv}")
    scores = pd.to_numeric(tao["siamese_score"], errors="coerce")
    if scores.isna().any():
        i = int(scores.isna().to_numpy().nonzero()[0][0])
        raise ValueError(f"{tao_csv}: row {i + 1}, column 'siamese_score': expected a number, "
                         f"got {tao['siamese_score'].iloc[i]!r}")
    out = rows.copy()
    out["label"] = out["label"].map(normalise_label)
    out["siamese_score"] = scores.to_numpy()
    cols = list(INFERENCE_COLUMNS) + [c for c in out.columns if c not in INFERENCE_COLUMNS]
    atomic_write_text(out_csv, out[cols].to_csv(index=False))
    return Path(out_csv)


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
