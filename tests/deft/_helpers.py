"""Builders of small, REAL run-dir artifacts for the deft-core tests (no mocks: the files the
commit checks are written to disk, metric results come from the real evaluator)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from raypipe.deft.state import initialise_state
from raypipe.metrics import MetricContract, run_evaluator

SPEC: dict[str, Any] = {
    "task": "classify",
    "train": {"num_epochs": 1, "optim": {"lr": 1e-4}},
    "model": {"backbone": {"type": "builtin_siamese", "pretrained_backbone_path": None},
              "classify": {"eval_margin": 0.5, "difference_module": "learnable"}},
    "dataset": {"classify": {
        "train_dataset": {"csv_path": "/data/train.csv", "images_dir": "/data/images"},
        "validation_dataset": {"csv_path": "/data/val.csv", "images_dir": "/data/images"},
        "test_dataset": {"csv_path": "/data/test.csv", "images_dir": "/data/images"},
        "infer_dataset": {"csv_path": "/data/infer.csv", "images_dir": "/data/images"},
        "batch_size": 16, "image_ext": ".png", "input_map": {"LowAngleLight": 0, "SolderLight": 1},
        "augmentation_config": {"augment": True, "random_flip": {"vflip_probability": 0.5}}}},
}


def new_run(tmp_path: Path, *, max_iterations: int = 2, baseline: bool = False) -> Path:
    rd = tmp_path / "run_20260101_000000"
    rd.mkdir(parents=True, exist_ok=True)
    kpi = tmp_path / "kpi.csv"
    pd.DataFrame({"input_path": ["a", "b", "c"], "golden_path": ["g", "g", "g"],
                  "label": ["PASS", "PASS", "missing"], "object_name": ["x", "y", "z"]}).to_csv(kpi, index=False)
    base = None
    if baseline:
        # the exact shape of the lead's Phase 1 → 2 handoff (a pre-seeded baseline)
        base = {"stage_completed": "train", "best_ckpt_path": str(ckpt(rd, "baseline", 3, 30)), "train_metric": 12.5,
                "source": "automl_phase1", "training_spec": str(spec_file(rd, "baseline"))}
    initialise_state(rd, config_block={"kpi_test_csv": str(kpi), "images_dir": str(tmp_path / "images"),
                                       "backend": "builtin"},
                     metric_contract=MetricContract(), max_iterations=max_iterations,
                     execution_policy={"network_mode": "offline"}, baseline=base)
    return rd


def ckpt(rd: Path, label: str, epoch: int = 1, step: int = 10, payload: bytes = b"weights") -> Path:
    p = rd / label / "train" / f"model_epoch_{epoch:03d}_step_{step:05d}.pth"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(payload)
    return p.resolve()


def spec_file(rd: Path, label: str) -> Path:
    p = rd / label / "train" / "experiment.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(SPEC))
    return p.resolve()


def train_evidence(rd: Path, label: str, epoch: int = 1, step: int = 10) -> dict[str, Any]:
    return {"best_ckpt_path": str(ckpt(rd, label, epoch, step)), "training_spec": str(spec_file(rd, label)),
            "best_ckpt_kind": "best_val", "val_loss": 0.3}


def eval_evidence(rd: Path, label: str, ckpt_path: Path | str, *, far_pass_scores: list[float],
                  kind: str = "best_val") -> dict[str, Any]:
    """Real inference.csv + real evaluator: defects score 0.9, PASS rows score as given."""
    out = rd / label / "inference" / kind
    out.mkdir(parents=True, exist_ok=True)
    n_def = 4
    df = pd.DataFrame({
        "input_path": [f"p{i}" for i in range(len(far_pass_scores) + n_def)],
        "golden_path": "g", "object_name": "o",
        "label": ["PASS"] * len(far_pass_scores) + ["missing"] * n_def,
        "siamese_score": list(far_pass_scores) + [0.9] * n_def})
    csv = out / "inference.csv"
    df.to_csv(csv, index=False)
    res = run_evaluator(MetricContract(), csv, out / "metric_result.json", label)
    return {"best_ckpt_path": str(ckpt_path), "inference_csv": str(csv.resolve()), "metric_result": res,
            "threshold": res["threshold"], "far_pct": res["value"],
            "training_spec": str(spec_file(rd, label))}


def parquet(path: Path, n: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"filepath": [f"f{i}" for i in range(n)], "label": ["missing"] * n,
                  "score": np.linspace(0, 1, n)}).to_parquet(path, index=False)
    return path.resolve()
