"""Builders of small, REAL run-dir artifacts for the deft-core tests (no mocks: the files the
commit checks are written to disk, metric results come from the real evaluator)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from raypipe import tao_interop as ti
from raypipe.deft.state import initialise_state
from raypipe.metrics import MetricContract, run_evaluator

BACKBONE = "builtin_siamese_init.pth"
SPEC: dict[str, Any] = {
    "task": "classify",
    "train": {"num_epochs": 1, "optim": {"lr": 1e-4}},
    # TAO's way of naming a staged backbone: the container path, found again on the host by its
    # name in the state's config.backbone_weight_dir (new_run stages the file there).
    "model": {"backbone": {"type": "builtin_siamese", "pretrained_backbone_path": f"/data/pretrained_models/{BACKBONE}"},
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
    weights = rd / "backbone" / BACKBONE
    weights.parent.mkdir(parents=True, exist_ok=True)
    weights.write_bytes(b"initial backbone weights")
    initialise_state(rd, config_block={"kpi_test_csv": str(kpi), "images_dir": str(tmp_path / "images"),
                                       "backend": "builtin", "backbone_weight_dir": str(weights.parent)},
                     metric_contract=MetricContract(), max_iterations=max_iterations,
                     execution_policy=ti.execution_policy("airgap", activation_source="test"), baseline=base)
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


def phase3_entry(rd: Path, *, far_pass_scores: list[float]) -> dict[str, Any]:
    """``iterations.final_automl`` as the pipeline's Phase 3 registers it (TAO's vocabulary): a real
    evaluation of a Phase 3 checkpoint, and the combined CSV it trained on."""
    from raypipe.deft.state import load_state
    from raypipe.rundir import RunDir

    ck = ckpt(rd, "final_automl", 2, 40)
    ev = eval_evidence(rd, "final_automl", ck, far_pass_scores=far_pass_scores)
    csv = rd / "iter1" / "dataset" / "train_combined_iter1.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    csv.write_text("input_path,golden_path,label,object_name\na,g,PASS,o\n")
    baseline = load_state(RunDir(rd).deft_state)["iterations"]["baseline"]
    return ti.final_automl_entry(best_ckpt_path=ck, training_spec=ev["training_spec"], metric_result=ev["metric_result"],
                                 threshold=ev["threshold"], training_csv=csv, metric_name="far_pct",
                                 inference_csv=ev["inference_csv"], parent_ckpt_path=baseline["best_ckpt_path"])
