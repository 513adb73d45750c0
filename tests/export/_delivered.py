"""A real delivered model on the demo workspace, made the way the pipeline makes one.

The built-in trainer trains on the demo's training set (CPU, one thread, two epochs), scores the
KPI set, the real evaluator picks the FAR-at-100 %-recall threshold, and ``best_model.json`` plus
the inference spec are written with finalize's own helpers — into ``<ws>/results/run_test``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from raypipe._io import atomic_write_json, atomic_write_text
from raypipe.backends.builtin import BuiltinTrainer
from raypipe.deft.finalize import inference_spec
from raypipe.metrics import MetricContract, evaluate_inference_csv
from raypipe.rundir import RunDir
from raypipe.spec import dump_spec, load_spec, set_dotted


@dataclass(frozen=True)
class Delivered:
    workspace: Path
    run_dir: Path
    best_model_json: Path
    checkpoint: Path
    threshold: float
    far_pct: float
    kpi_csv: Path
    images_dir: Path
    pytorch_inference_csv: Path  # the KPI set scored by the built-in backend (PyTorch)
    spec: dict


def make_delivered(template: Path, root: Path) -> Delivered:
    ws = root / "ws"
    shutil.copytree(template, ws)
    rd = ws / "results" / "run_test"
    spec = load_spec(ws / "specs" / "baseline_spec.yaml")
    set_dotted(spec, "train.num_epochs", 2)
    trainer = BuiltinTrainer(device="cpu", num_threads=1)
    images = ws / "images"
    res = trainer.train(spec, ws / "train/base/training_set.csv", ws / "train/base/validation_set.csv",
                        rd / "baseline" / "train", images_dir=images, seed=0)
    kpi = ws / "kpi" / "testing_set.csv"
    inf = trainer.infer(spec, res.best_val_ckpt, kpi, rd / "baseline" / "inference" / "best_val", images_dir=images)
    result = evaluate_inference_csv(inf, inf.parent / "metric_result.json")
    training_spec = res.out_dir / "experiment.yaml"
    atomic_write_json(rd / "best_model.json", {
        "checkpoint": str(res.best_val_ckpt), "threshold": result["threshold"],
        "metric_contract": MetricContract().to_dict(), "metric_result": result, "iteration": "baseline",
        "backbone": None, "backbone_type": spec["model"]["backbone"]["type"], "images_dir": str(images),
        "training_spec": str(training_spec), "far_pct": result["value"]})
    atomic_write_text(RunDir(rd).inference_spec,
                      dump_spec(inference_spec(load_spec(training_spec), res.best_val_ckpt, result["threshold"])))
    return Delivered(ws, rd, rd / "best_model.json", Path(res.best_val_ckpt), float(result["threshold"]),
                     float(result["value"]), kpi, images, Path(inf), spec)
