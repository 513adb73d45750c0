"""A real delivered model on the demo workspace, made the way the pipeline makes one.

The built-in trainer trains on the demo's training set (CPU, one thread, two epochs), scores the
KPI set, the real evaluator picks the FAR-at-100 %-recall threshold, and ``best_model.json`` plus
the inference spec are written with finalize's own helpers (TAO's vocabulary, the backbone staged
as a run stages it) — into ``<ws>/results/run_test``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from raypipe import tao_interop as ti
from raypipe._io import atomic_write_json, atomic_write_text
from raypipe.backends.builtin import BuiltinTrainer
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
    spec, weight_dir = ti.stage_builtin_backbone(rd, spec, seed=0)
    trainer = BuiltinTrainer(device="cpu", num_threads=1)
    images = ws / "images"
    res = trainer.train(spec, ws / "train/base/training_set.csv", ws / "train/base/validation_set.csv",
                        rd / "baseline" / "train", images_dir=images, seed=0)
    kpi = ws / "kpi" / "testing_set.csv"
    inf = trainer.infer(spec, res.best_val_ckpt, kpi, rd / "baseline" / "inference" / "best_val", images_dir=images)
    result = evaluate_inference_csv(inf, inf.parent / "metric_result.json")
    training_spec = res.out_dir / "experiment.yaml"
    entry = {"best_ckpt_path": str(res.best_val_ckpt), "training_spec": str(training_spec), "metric_result": result,
             "threshold": result["threshold"]}
    trained = load_spec(training_spec)
    record = ti.best_model_record(label="baseline", entry=entry, spec=trained, metric_contract=MetricContract().to_dict(),
                                  images_dir=images, backbone_weight_dir=weight_dir)
    atomic_write_json(rd / "best_model.json", record)
    atomic_write_text(RunDir(rd).inference_spec, dump_spec(ti.inference_spec(
        trained, threshold=record["threshold"], backbone_container_path=record["backbone_container_path"])))
    return Delivered(ws, rd, rd / "best_model.json", Path(res.best_val_ckpt), float(result["threshold"]),
                     float(result["value"]), kpi, images, Path(inf), spec)
