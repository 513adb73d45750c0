"""KPI scoring for the ``evaluate`` stage: inference with the best-val AND the latest checkpoint, each
scored by the metric contract's evaluator; the better one (by the contract's operator) is committed.

Both inferences are Ray tasks with the training resources and run concurrently when the cluster
has room. Outputs per checkpoint kind: ``RD/<label>/inference/{best_val,latest}/`` with
``inference.csv``, ``metric_result.json``, ``threshold_metrics.csv``, ``summary.txt`` and a score
histogram PNG. Phase 3's winner is scored by the same code (label ``final_automl``, best_val only).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import pandas as pd

from raypipe._ray import submit_task
from raypipe.deft._stage_io import fresh_dir
from raypipe.deft.errors import HardStop
from raypipe.metrics import (
    EvaluatorInputError,
    MetricContract,
    MetricUndefinedError,
    far_at_recall,
    pick_best,
    run_evaluator,
)
from raypipe.placement import Placement
from raypipe.rundir import IterationDir

if TYPE_CHECKING:
    from raypipe.config import Resources

KINDS = ("best_val", "latest")


@dataclass(frozen=True)
class InferJob:
    backend: str
    backend_options: dict[str, Any]
    spec: dict[str, Any]
    ckpt: Path
    kpi_csv: Path
    images_dir: Path
    out_dir: Path


def infer_job(job: InferJob) -> str:
    """Run one inference (a Ray task body): the same code path for DEFT entries and Phase 3's winner."""
    from raypipe.backends import get_backend

    trainer = get_backend(job.backend, **job.backend_options)
    return str(trainer.infer(job.spec, job.ckpt, job.kpi_csv, job.out_dir, images_dir=job.images_dir))


def _threshold_and_far(result: Mapping[str, Any], inference_csv: Path, recall_pct: float) -> tuple[float, float]:
    """The operating threshold and FAR (%) of a result; computed from the CSV when a custom
    evaluator does not report them (the state needs both for every evaluated entry)."""
    thr = result.get("threshold")
    far = result.get("value") if result.get("name") == "far_pct" else None
    if isinstance(thr, (int, float)) and math.isfinite(thr) and far is not None:
        return float(thr), float(far)
    df = pd.read_csv(inference_csv, dtype={"label": str}, keep_default_na=False)
    y = (df["label"].astype(str).str.strip().str.upper() != "PASS").to_numpy()
    best = far_at_recall(y, df["siamese_score"].to_numpy(dtype=np.float64), recall_pct / 100.0)
    return (float(thr) if isinstance(thr, (int, float)) and math.isfinite(thr) else best.threshold,
            float(far) if far is not None else best.far * 100.0)


def score_histogram_png(inference_csv: Path, out_png: Path, threshold: float | None) -> Path:
    """A small PASS/defect score histogram (the inference dir's plot), drawn with PIL."""
    from PIL import Image, ImageDraw

    df = pd.read_csv(inference_csv, dtype={"label": str}, keep_default_na=False)
    s = df["siamese_score"].to_numpy(dtype=np.float64)
    defect = (df["label"].astype(str).str.strip().str.upper() != "PASS").to_numpy()
    bins = np.linspace(0.0, 1.0, 41)
    hp, _ = np.histogram(np.clip(s[~defect], 0, 1), bins)
    hd, _ = np.histogram(np.clip(s[defect], 0, 1), bins)
    w, h, pad = 400, 200, 20
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    top = max(int(hp.max(initial=0)), int(hd.max(initial=0)), 1)
    bw = (w - 2 * pad) / len(hp)
    for i, (a, b) in enumerate(zip(hp, hd)):
        x0 = pad + i * bw
        for n, colour, off in ((a, (43, 108, 176), 0.0), (b, (192, 86, 33), bw / 2)):
            if n:
                y = h - pad - (h - 2 * pad) * n / top
                draw.rectangle([x0 + off, y, x0 + off + bw / 2 - 1, h - pad], fill=colour)
    if threshold is not None and math.isfinite(threshold):
        x = pad + (w - 2 * pad) * min(max(threshold, 0.0), 1.0)
        draw.line([x, pad, x, h - pad], fill=(229, 62, 62), width=2)
    draw.line([pad, h - pad, w - pad, h - pad], fill=(120, 120, 120))
    draw.text((pad, 2), "siamese_score: PASS (blue) vs defect (orange), threshold (red)", fill=(0, 0, 0))
    out_png.parent.mkdir(parents=True, exist_ok=True)
    img.save(out_png)
    return out_png


def score_inference(contract: MetricContract, csv: Path, metric_result: Path, label: str) -> dict[str, Any]:
    """The contract's evaluator on one inference CSV; a KPI set it cannot score stops the loop with
    the evaluator's message (it names the file and row) and what to fix, not a traceback."""
    try:
        return run_evaluator(contract, csv, metric_result, iter_label=label)
    except (MetricUndefinedError, EvaluatorInputError) as exc:
        raise HardStop("evaluate", str(exc), "the KPI set needs PASS and defect rows") from None


def run_evaluate(*, label: str, out: IterationDir, ckpts: Mapping[str, Path | None], spec: dict[str, Any],
                 training_spec: str | Mapping[str, Any], contract: MetricContract, kpi_csv: Path, images_dir: Path,
                 backend: str, backend_options: dict[str, Any], resources: Resources | Mapping[str, float],
                 placement: Placement | None = None) -> dict[str, Any]:
    """Infer + evaluate both checkpoint kinds into ``out.inference(kind)``; return the ``evaluate``
    evidence of the better one.

    ``placement``: each inference task records itself as ``<placement.what>/<kind>``.
    """
    import ray

    fresh_dir(out.inference_root)
    distinct: dict[str, Path] = {}
    for kind in KINDS:
        ck = ckpts.get(kind)
        if ck is not None and Path(ck).resolve() not in {p.resolve() for p in distinct.values()}:
            distinct[kind] = Path(ck)
    if "best_val" not in distinct:
        raise HardStop("evaluate", f"{label}: no checkpoint to evaluate", "re-run the train stage")
    refs = {kind: submit_task(infer_job, InferJob(backend, backend_options, spec, ck, Path(kpi_csv), Path(images_dir),
                                                  out.inference(kind).path),
                              resources=resources, placement=placement.child(kind) if placement else None)
            for kind, ck in distinct.items()}
    csvs = {kind: Path(ray.get(ref)) for kind, ref in refs.items()}
    results: dict[str, dict[str, Any]] = {}
    for kind, csv in csvs.items():
        scored = out.inference(kind)
        res = score_inference(contract, csv, scored.metric_result, label)
        thr, far = _threshold_and_far(res, csv, contract.recall_target_pct)
        score_histogram_png(csv, scored.score_histogram, thr)
        results[kind] = {"status": "complete", "metric_result": res, "threshold": thr, "far_pct": far,
                         "best_ckpt_path": str(distinct[kind].resolve()), "inference_csv": str(csv.resolve())}
    if "latest" not in distinct and ckpts.get("latest") is not None:
        # latest == best_val: the same checkpoint, same numbers; keep the documented layout.
        shutil.copytree(out.inference("best_val").path, out.inference("latest").path, dirs_exist_ok=True)
    pick = pick_best(contract, [(k, results[k]) for k in KINDS if k in results])
    assert pick is not None  # every candidate is complete with a metric result
    best = results[pick.label]
    return {"best_ckpt_path": best["best_ckpt_path"], "inference_csv": best["inference_csv"],
            "metric_result": best["metric_result"], "threshold": best["threshold"], "far_pct": best["far_pct"],
            "training_spec": training_spec if isinstance(training_spec, Mapping) else str(training_spec),
            "best_ckpt_kind": pick.label,
            "candidates": {k: v["metric_result"]["value"] for k, v in results.items()}}
