"""Baseline eval: the warm-start checkpoint scored on the validation set before any trial.

It answers "did the sweep beat where it started?" — reported beside the trials, never mixed into
their ranking. Runs as a Ray task with the trial's resources (it needs the GPU the trials get).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from raypipe._io import atomic_write_json, read_json
from raypipe._ray import run_task
from raypipe.rundir import InferenceDir, SweepDir


def _checkpoint_identity(ckpt: Path) -> str:
    st = ckpt.stat()
    return hashlib.sha256(f"{ckpt.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]


def evaluate_checkpoint(spec: dict[str, Any], ckpt: str, val_csv: str, val_images_dir: str, out_dir: str,
                        backend: str, backend_options: dict[str, Any]) -> dict[str, Any]:
    """Infer the validation set with ``ckpt`` and score it (FAR at 100% recall, pred counts at 0.5)."""
    import pandas as pd

    from raypipe.backends import get_backend
    from raypipe.metrics import evaluate_inference_csv

    trainer = get_backend(backend, **backend_options)
    out = Path(out_dir)
    csv = trainer.infer(spec, Path(ckpt), Path(val_csv), out, images_dir=Path(val_images_dir))
    result = evaluate_inference_csv(csv, InferenceDir(out).metric_result)
    scores = pd.read_csv(csv, usecols=["siamese_score"])["siamese_score"]
    # siamese_score = P(defect): argmax of the two-class head is score > 0.5.
    n_defect = int((scores > 0.5).sum())
    return {
        "checkpoint": str(ckpt), "far_pct": float(result["value"]), "threshold": float(result["threshold"]),
        "pred_counts": {"PASS": int(len(scores) - n_defect), "NO_PASS": n_defect},
        "diagnostics": result["diagnostics"], "inference_csv": str(csv),
        "metric_result": str(InferenceDir(out).metric_result),
    }


def baseline_eval(spec: dict[str, Any], ckpt: Path, val_csv: Path, val_images_dir: Path, sweep: SweepDir,
                  backend: str, backend_options: dict[str, Any], resources: dict[str, float]) -> dict[str, Any]:
    """Cached in ``<sweep dir>/baseline_eval.json`` (a restored sweep does not re-evaluate the same file)."""
    cache = sweep.baseline_eval
    ident = _checkpoint_identity(ckpt)
    if cache.is_file():
        try:
            cached = read_json(cache)
        except (OSError, json.JSONDecodeError):
            cached = None
        if isinstance(cached, dict) and cached.get("checkpoint_identity") == ident:
            return cached
    result = run_task(evaluate_checkpoint, spec, str(ckpt), str(val_csv), str(val_images_dir),
                      str(sweep.baseline_eval_dir), backend, backend_options, resources=resources)
    result["checkpoint_identity"] = ident
    atomic_write_json(cache, result)
    return result
