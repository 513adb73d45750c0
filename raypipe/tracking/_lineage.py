"""Checkpoint lineage: which checkpoint came from which, trained on which data.

``RD/lineage.json`` = ``{"records": [...]}``, one record per checkpoint that matters (each sweep
winner, the baseline, each iteration's best, the final model). The file is the source of truth;
MLflow gets a copy as an artifact of the pipeline run. No mlflow import: the DEFT driver and the
sweep driver can record lineage with tracking disabled.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any

from raypipe._io import atomic_write_json, read_json
from raypipe.tracking._filelock import exclusive

LINEAGE_FILE = "lineage.json"
PHASES = ("phase1", "phase2", "phase3")
_DIGEST_CHARS = 16  # MLflow's dataset digest column holds at most 36 characters


class LineageError(ValueError):
    """A lineage record is malformed, or a chain cannot be walked."""


def data_digest(csv: Path) -> str:
    """Content digest of a data file (sha256 of its bytes, 16 hex chars).

    The same digest is the MLflow dataset digest (``RunLogger.log_dataset``) and the lineage
    ``training_data_digest``, so a checkpoint's training set can be found in the MLflow UI.
    Bytes, not parsed rows: two CSVs that differ in any way train different models.
    """
    h = hashlib.sha256()
    with open(csv, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:_DIGEST_CHARS]


def normalise_checkpoint(checkpoint: str | os.PathLike[str]) -> str:
    """Lineage key of a checkpoint: an absolute, normalised local path, or a URI unchanged."""
    text = os.fspath(checkpoint)
    if "://" in text:
        return text
    return os.path.normpath(os.path.abspath(text))


def validate_record(record: dict[str, Any]) -> dict[str, Any]:
    """Check a lineage record and return a normalised copy (checkpoint paths absolute)."""
    if not isinstance(record, dict):
        raise LineageError(f"lineage record must be a dict, got {type(record).__name__}")
    missing = [k for k in ("checkpoint", "phase", "parent_checkpoint", "training_data_digest", "metric", "mlflow_run_id") if k not in record]
    if "trial" not in record and "iteration" not in record:
        missing.append("trial|iteration")
    if missing:
        raise LineageError(f"lineage record for {record.get('checkpoint')!r} misses {', '.join(missing)}")
    if not record["checkpoint"]:
        raise LineageError("lineage record: 'checkpoint' is empty")
    if record["phase"] not in PHASES:
        raise LineageError(f"lineage record for {record['checkpoint']!r}: phase {record['phase']!r} is not one of {', '.join(PHASES)}")
    metric = record["metric"]
    if not isinstance(metric, dict) or any(k not in metric for k in ("name", "value", "split")):
        raise LineageError(f"lineage record for {record['checkpoint']!r}: metric must be {{name, value, split}}, got {metric!r}")
    value = metric["value"]
    if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)):
        raise LineageError(f"lineage record for {record['checkpoint']!r}: metric.value must be a finite number or null, got {value!r}")
    if not isinstance(record["training_data_digest"], str) or not record["training_data_digest"]:
        raise LineageError(f"lineage record for {record['checkpoint']!r}: training_data_digest must be a digest string (see data_digest)")
    out = dict(record)
    out["metric"] = dict(metric)
    out["checkpoint"] = normalise_checkpoint(record["checkpoint"])
    if record["parent_checkpoint"] is not None:
        out["parent_checkpoint"] = normalise_checkpoint(record["parent_checkpoint"])
        if out["parent_checkpoint"] == out["checkpoint"]:
            raise LineageError(f"lineage record for {out['checkpoint']!r} names itself as parent")
    return out


def read_lineage(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``RD/lineage.json`` (empty when there is none yet)."""
    path = Path(run_dir) / LINEAGE_FILE
    if not path.exists():
        return []
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise LineageError(f"{path}: expected {{\"records\": [...]}}")
    return data["records"]


def record_lineage(run_dir: Path, record: dict[str, Any]) -> None:
    """Add (or replace, by checkpoint) one record in ``RD/lineage.json``, atomically.

    Idempotent: recording the same checkpoint again on resume replaces its record in place, so
    the file never holds two records for one checkpoint. A lock file serialises writers (the
    sweep driver and the DEFT actor may record at the same time); the write itself is
    temp+fsync+rename, so a reader or a SIGKILL never sees half a file.
    """
    rec = validate_record(record)
    run_dir = Path(run_dir)
    with exclusive(run_dir / f".{LINEAGE_FILE}.lock"):
        records = read_lineage(run_dir)
        for i, old in enumerate(records):
            if old.get("checkpoint") == rec["checkpoint"]:
                if old == rec:
                    return
                records[i] = rec
                break
        else:
            records.append(rec)
        atomic_write_json(run_dir / LINEAGE_FILE, {"records": records})


def lineage_chain(run_dir: Path, checkpoint: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Records from ``checkpoint`` back through its parents (final → ... → Phase 1 trial).

    Raises LineageError naming the missing link when a parent has no record, or on a cycle.
    """
    by_ckpt = {r["checkpoint"]: r for r in read_lineage(run_dir)}
    key: str | None = normalise_checkpoint(checkpoint)
    if key not in by_ckpt:
        raise LineageError(f"{Path(run_dir) / LINEAGE_FILE}: no record for checkpoint {key}")
    chain: list[dict[str, Any]] = []
    seen: set[str] = set()
    while key is not None:
        if key in seen:
            raise LineageError(f"{Path(run_dir) / LINEAGE_FILE}: lineage cycle at {key}")
        seen.add(key)
        rec = by_ckpt.get(key)
        if rec is None:
            child = chain[-1]["checkpoint"]
            raise LineageError(
                f"{Path(run_dir) / LINEAGE_FILE}: parent checkpoint {key} of {child} has no record"
            )
        chain.append(rec)
        key = rec.get("parent_checkpoint")
    return chain

