"""The Tune trainable: one trial = one ``backend.train`` of one configuration.

It runs inside a Ray worker. Everything it needs travels in a small picklable :class:`TrialJob`
(``tune.with_parameters``); it reports each epoch's validation metrics to Tune and, only when the
epoch improves the trial's best, a checkpoint — so the trial's latest persisted checkpoint is always
its best one and ``CheckpointConfig(num_to_keep=1)`` keeps exactly that file.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from raypipe import tao_interop as ti
from raypipe.rundir import TrialCheckpoint
from raypipe.spec import dump_spec, get_dotted, set_dotted

# Beside the model in every checkpoint Tune keeps: the epoch's metrics and the trial's spec.
META_FILE = TrialCheckpoint(Path()).meta.name


@dataclass(frozen=True)
class TrialJob:
    """Everything a trial needs besides its sampled HPs (picklable, no open handles)."""

    base_spec: dict[str, Any]
    spec_overrides: dict[str, Any]
    param_keys: tuple[str, ...]
    pinned_arch: dict[str, Any] | None
    init_ckpt: str | None
    train_csv: str
    train_images_dir: str
    val_csv: str
    val_images_dir: str
    backend: str
    backend_options: dict[str, Any]
    seed: int
    metric: str  # far_pct | val_loss
    sweep_name: str
    tracking: Any = None  # raypipe.tracking.TrackingContext | None
    run_dir: str | None = None  # where the trial records its placement (RD/placement.jsonl); None: not recorded


def build_trial_spec(job: TrialJob, params: Mapping[str, Any]) -> dict[str, Any]:
    """Base spec ← spec_overrides ← sampled HPs ← warm start (pretrained path, pinned architecture),
    naming the CSVs the trial trains and validates on.

    The base spec of Phase 3 is the loop-best's spec, which names the loop-best's training CSV; every
    spec a sweep records (a trial's, ``best_spec.yaml``, the state's ``training_spec``) must name the
    data the model was actually trained on.
    """
    spec = copy.deepcopy(job.base_spec)
    for key, value in job.spec_overrides.items():
        set_dotted(spec, key, copy.deepcopy(value))
    for key, value in params.items():
        set_dotted(spec, key, value)
    if job.pinned_arch:
        for key, value in job.pinned_arch.items():
            # None in a checkpoint's record means "not applicable" (e.g. grid_map of a linear concat):
            # leave the spec's value rather than write a null TAO may reject.
            if value is not None and get_dotted(spec, key, None) != value:
                set_dotted(spec, key, copy.deepcopy(value))
    if job.init_ckpt:
        # pretrained_model_path (weights only, fresh epoch counter), never resume_training_checkpoint_path:
        # resuming would carry the old epoch counter and optimiser into a new sweep.
        set_dotted(spec, "train.pretrained_model_path", job.init_ckpt)
    return ti.record_training_data(spec, train_csv=job.train_csv, images_dir=job.train_images_dir,
                                   val_csv=job.val_csv, val_images_dir=job.val_images_dir)


def _finite_or_inf(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.inf
    return v if math.isfinite(v) else math.inf


def selection_key(metric: str, val_far: Any, val_loss: Any) -> tuple[float, float]:
    """Order of checkpoints within a trial: the objective first, the other metric breaks ties."""
    far, loss = _finite_or_inf(val_far), _finite_or_inf(val_loss)
    return (far, loss) if metric == "far_pct" else (loss, far)


class _NoRun:
    """Stands in for a tracking RunLogger when tracking is off."""

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        return None

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        return None


@contextlib.contextmanager
def _tracking_run(job: TrialJob, trial_id: str, params: Mapping[str, Any]) -> Iterator[Any]:
    if job.tracking is None:
        yield _NoRun()
        return
    from raypipe.tracking import child_run, trial_run_names  # lazily: workers without tracking never import mlflow

    name, key = trial_run_names(job.sweep_name, trial_id)
    with child_run(job.tracking, name, key=key, params=dict(params), tags={"raypipe.phase": job.sweep_name}) as run:
        yield run


def _stage_checkpoint(src: str, dest: Path, meta: dict[str, Any], spec: dict[str, Any]) -> Path:
    """A checkpoint dir for Tune: the model file (hard link when possible), its metrics and spec."""
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / Path(src).name
    try:
        os.link(src, target)
    except OSError:
        shutil.copy2(src, target)
    files = TrialCheckpoint(dest)
    files.meta.write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
    files.spec.write_text(dump_spec(spec), encoding="utf-8")
    return dest


def _quiet_worker_logs() -> None:
    # Ray prints "Checkpoint successfully created" per report from every worker; the sweep's own
    # progress display says what matters.
    for name in ("ray.train", "ray.tune", "ray.train._internal.session", "ray.tune.trainable"):
        logging.getLogger(name).setLevel(logging.WARNING)


def sweep_trial(config: dict[str, Any], job: TrialJob) -> None:
    """Tune function trainable: train one configuration, report every epoch.

    Tune may stop the trial inside any ``tune.report`` (ASHA at a rung, the sweep's stopper). How it
    does so is Tune's business: a stop is whatever non-``Exception`` leaves ``report``, and it is
    handed back to Tune unchanged once the trial's tracking run is closed as a normal end (a
    failure, an ``Exception``, closes it FAILED). What the trial knows is on its run before each
    report, and the driver writes every trial's final status from the experiment's files
    afterwards (``_close_trial_runs``).
    """
    from ray import tune

    from raypipe.backends import TrainingError, get_backend

    _quiet_worker_logs()
    started_at = time.time()
    trial_id = tune.get_context().get_trial_id() or "local"
    params = {k: config[k] for k in job.param_keys if k in config}
    if job.run_dir:
        from raypipe.placement import record_placement

        record_placement(job.run_dir, phase=job.sweep_name, what=f"trial {trial_id}", extra={"params": params})
    spec = build_trial_spec(job, params)
    work = Path(tempfile.mkdtemp(prefix=f"raypipe_trial_{trial_id}_"))
    stop: BaseException | None = None
    try:
        with _tracking_run(job, trial_id, params) as run:
            run.set_tags({"trial_dir": tune.get_context().get_trial_dir() or ""})
            reporter = _EpochReporter(job, trial_id, params, spec, work, run, started_at)
            trainer = get_backend(job.backend, **job.backend_options)
            try:
                trainer.train(spec, Path(job.train_csv), Path(job.val_csv), work / "train",
                              Path(job.init_ckpt) if job.init_ckpt else None,
                              images_dir=Path(job.train_images_dir), val_images_dir=Path(job.val_images_dir),
                              seed=job.seed, on_epoch=reporter)
            except Exception:
                raise  # a failure: the tracking run ends FAILED
            except BaseException as exc:  # not an error: the trial was stopped (see the docstring)
                # No status tag here: this worker may finish after the driver wrote the trial's final one.
                stop = exc
            else:
                if not reporter.reported_checkpoint:
                    raise TrainingError("the trial finished without a checkpointed epoch with validation metrics")
                run.set_tags({"status": "complete"})
    finally:
        # Tune has copied every reported checkpoint into the experiment's storage by now.
        shutil.rmtree(work, ignore_errors=True)
    if stop is not None:
        raise stop


class _EpochReporter:
    """The backend's ``on_epoch``: reports each epoch to Tune, with a checkpoint when the trial's best improves."""

    def __init__(self, job: TrialJob, trial_id: str, params: Mapping[str, Any], spec: dict[str, Any], work: Path,
                 run: Any, started_at: float) -> None:
        import ray

        self.job, self.trial_id, self.params, self.spec, self.work, self.run = job, trial_id, params, spec, work, run
        self.started_at = started_at
        self.gpu_ids = ",".join(str(g) for g in ray.get_gpu_ids())
        self.best: dict[str, Any] = {"key": (math.inf, math.inf)}
        self.reported_checkpoint = False
        self.t0 = time.perf_counter()

    def __call__(self, m: Any) -> None:
        from ray import tune

        from raypipe._testhook import point

        point(f"{self.job.sweep_name}_trial")
        best = self.best
        pred = dict(m.pred_counts or {})
        key = selection_key(self.job.metric, m.val_far, m.val_loss)
        improved = m.checkpoint is not None and key <= best["key"]
        if improved:
            best.update(key=key, epoch=m.epoch, step=m.step, val_far=_finite_or_inf(m.val_far),
                        val_loss=_finite_or_inf(m.val_loss), pred=pred, file=Path(m.checkpoint).name)
        metrics = {
            "epoch": m.epoch, "step": m.step, "train_loss": _finite_or_inf(m.train_loss),
            "val_loss": _finite_or_inf(m.val_loss), "val_far": _finite_or_inf(m.val_far),
            "val_threshold": float(m.val_threshold) if m.val_threshold is not None else math.nan,
            "pred_pass": int(pred.get("PASS", 0)), "pred_no_pass": int(pred.get("NO_PASS", 0)),
            # `score` is the trial's best-so-far objective: what Optuna/ASHA compare, and what the
            # kept checkpoint scored (inf until a checkpointed epoch).
            "score": best["key"][0],
            "best_epoch": best.get("epoch", 0), "best_step": best.get("step", 0),
            "best_val_far": best.get("val_far", math.inf), "best_val_loss": best.get("val_loss", math.inf),
            "best_pred_pass": int(best.get("pred", {}).get("PASS", 0)),
            "best_pred_no_pass": int(best.get("pred", {}).get("NO_PASS", 0)),
            "best_checkpoint_file": best.get("file", ""),
            "started_at": self.started_at, "compute_s": time.perf_counter() - self.t0,
            "gpu_ids": self.gpu_ids, "seed": self.job.seed,
        }
        epoch_metrics = {"val_far": metrics["val_far"], "val_loss": metrics["val_loss"],
                         "train_loss": metrics["train_loss"]}
        if "epoch" in best:  # the kept checkpoint's values: what the sweep ranks this trial by
            epoch_metrics.update(best_val_far=best["val_far"], best_val_loss=best["val_loss"])
        self.run.log_metrics(epoch_metrics, step=m.epoch)
        if not improved:
            tune.report(metrics)
            return
        meta = {"trial_id": self.trial_id, "epoch": m.epoch, "step": m.step, "val_far": metrics["val_far"],
                "val_loss": metrics["val_loss"], "val_threshold": metrics["val_threshold"], "pred_counts": pred,
                "params": dict(self.params), "seed": self.job.seed, "checkpoint_file": Path(m.checkpoint).name}
        ckdir = _stage_checkpoint(m.checkpoint, self.work / f"ckpt_{m.epoch:03d}", meta, self.spec)
        # Before the report: Tune may stop the trial inside it.
        self.run.set_tags({"checkpoint_file": best["file"], "best_epoch": best["epoch"]})
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(ckdir)))
        self.reported_checkpoint = True
