"""Baseline eval (SPEC §5): the warm-start checkpoint scored on the validation set before any trial.

It answers "did the sweep beat where it started?" — reported beside the trials, never mixed into
their ranking. Runs as a Ray task with the trial's resources (it needs the GPU the trials get).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from raypipe._io import atomic_write_json, read_json

BASELINE_FILE = "baseline_eval.json"


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
    result = evaluate_inference_csv(csv, out / "metric_result.json")
    scores = pd.read_csv(csv, usecols=["siamese_score"])["siamese_score"]
    # siamese_score = P(defect): argmax of the two-class head is score > 0.5.
    n_defect = int((scores > 0.5).sum())
    return {
        "checkpoint": str(ckpt), "far_pct": float(result["value"]), "threshold": float(result["threshold"]),
        "pred_counts": {"PASS": int(len(scores) - n_defect), "NO_PASS": n_defect},
        "diagnostics": result["diagnostics"], "inference_csv": str(csv),
        "metric_result": str(out / "metric_result.json"),
    }


def baseline_eval(spec: dict[str, Any], ckpt: Path, val_csv: Path, val_images_dir: Path, sweep_dir: Path,
                  backend: str, backend_options: dict[str, Any], resources: dict[str, float]) -> dict[str, Any]:
    """Cached in ``sweep_dir/baseline_eval.json`` (a restored sweep does not re-evaluate the same file)."""
    import ray

    cache = sweep_dir / BASELINE_FILE
    ident = _checkpoint_identity(ckpt)
    if cache.is_file():
        try:
            cached = read_json(cache)
        except (OSError, json.JSONDecodeError):
            cached = None
        if isinstance(cached, dict) and cached.get("checkpoint_identity") == ident:
            return cached
    task = ray.remote(evaluate_checkpoint).options(num_cpus=resources.get("cpu", 1),
                                                   num_gpus=resources.get("gpu", 0), max_retries=0)
    result = ray.get(task.remote(spec, str(ckpt), str(val_csv), str(val_images_dir),
                                 str(sweep_dir / "baseline_eval"), backend, backend_options))
    result["checkpoint_identity"] = ident
    atomic_write_json(cache, result)
    return result
