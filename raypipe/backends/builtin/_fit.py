"""One training run of the built-in backend, in steps with one job each.

:func:`fit` is what ``BuiltinTrainer.train`` runs: resolve the spec into typed configs
(:class:`RunConfig`), record the effective spec, decode the data, build (or warm-start) the network,
then train epoch by epoch, validating and checkpointing at the spec's intervals, and pick the
best-validation checkpoint. Everything random (initial weights, epoch order, augmentation) draws
from generators seeded by ``seed``, and torch runs in deterministic mode, so the same spec, data,
seed and thread count give bit-identical checkpoints and scores on CPU.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from raypipe._io import append_jsonl, atomic_write_text
from raypipe.backends.base import EpochCallback, EpochMetrics, TrainingError, TrainResult, checkpoint_name
from raypipe.backends.builtin._checkpoint import load_backbone_weights, load_weights, save_checkpoint
from raypipe.backends.builtin._config import (
    DataConfig,
    ModelConfig,
    TrainConfig,
    architecture_from_spec,
    data_from_spec,
    train_from_spec,
)
from raypipe.backends.builtin._data import ImageSet, Normaliser, load_image_set, read_csv_rows, sampler_weights
from raypipe.backends.builtin._engine import (
    Runtime,
    deterministic_torch,
    lr_at_epoch,
    make_optimizer,
    predict,
    softmax_defect,
    train_epoch,
)
from raypipe.backends.builtin._model import ChangeNetCNN, build_model
from raypipe.metrics import far_at_recall
from raypipe.spec import FORBIDDEN_SPEC_KEYS, dump_spec, set_dotted

Log = Callable[[str], None]


def now_fields() -> dict[str, str]:
    """TAO's status.json date/time fields."""
    t = datetime.now(timezone.utc)
    return {"date": t.strftime("%-m/%-d/%Y"), "time": t.strftime("%H:%M:%S")}


def _finite(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


class CallbackError(Exception):
    """Carries an exception raised by ``on_epoch`` so it propagates unchanged (not as TrainingError)."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


@dataclass(frozen=True)
class RunInputs:
    """What one ``train`` call was given, paths absolute."""

    spec: dict[str, Any]
    train_csv: Path
    val_csv: Path
    out_dir: Path
    images_dir: Path
    val_images_dir: Path
    init_ckpt: Path | None
    seed: int


@dataclass(frozen=True)
class RunConfig:
    """The spec read once into typed configs, plus the resolved warm start."""

    arch: dict[str, Any]
    model: ModelConfig
    data: DataConfig
    train: TrainConfig
    init: Path | None

    @classmethod
    def resolve(cls, spec: dict[str, Any], init_ckpt: Path | None) -> "RunConfig":
        arch = architecture_from_spec(spec)
        tcfg = train_from_spec(spec)
        if tcfg.num_epochs < 1:
            raise TrainingError(f"train.num_epochs is {tcfg.num_epochs}: zero epochs is zero steps, not a success")
        # A warm start is WEIGHTS ONLY, with a fresh epoch counter and optimiser: a new phase or DEFT
        # iteration starts from `pretrained_model_path`, never `resume_training_checkpoint_path`, since
        # resuming would carry the old epoch counter (a finished run would make zero new steps, a
        # "success" with no new checkpoint) and the old optimiser/lr-schedule state into new data.
        init = init_ckpt or (Path(tcfg.pretrained_model_path) if tcfg.pretrained_model_path else None)
        return cls(arch, ModelConfig.from_architecture(arch), data_from_spec(spec), tcfg, init)


@dataclass(frozen=True)
class Validation:
    """One pass over the validation set."""

    loss: float
    far: float  # percent, at 100 % recall
    threshold: float
    pred_counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def skipped(cls) -> "Validation":
        return cls(math.nan, math.nan, math.nan, {})


class StatusFile:
    """TAO-style ``status.json`` (JSON lines): STARTED, one RUNNING line per epoch, SUCCESS or FAILURE."""

    def __init__(self, path: Path) -> None:
        self.path = path
        atomic_write_text(path, "")  # a re-run replaces a previous attempt's status, never appends

    def write(self, status: str, message: str, verbosity: str = "INFO", **fields: Any) -> None:
        append_jsonl(self.path, {**now_fields(), "status": status, "verbosity": verbosity, "message": message,
                                 **fields})


class TrainLog:
    """Plain-text train.log, flushed per line so a crash leaves what happened."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_text("", encoding="utf-8")

    def __call__(self, msg: str) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} {msg}\n")


def write_effective_spec(inputs: RunInputs, cfg: RunConfig) -> Path:
    """``experiment.yaml``: the spec as trained (host paths, resolved warm start, clamped intervals)."""
    effective = copy.deepcopy(inputs.spec)
    for key in FORBIDDEN_SPEC_KEYS:
        effective.pop(key, None)
    set_dotted(effective, "train.pretrained_model_path", str(cfg.init) if cfg.init else None)
    set_dotted(effective, "train.checkpoint_interval", cfg.train.checkpoint_interval)
    set_dotted(effective, "train.validation_interval", cfg.train.validation_interval)
    set_dotted(effective, "dataset.classify.train_dataset", {"csv_path": str(inputs.train_csv),
                                                            "images_dir": str(inputs.images_dir)})
    set_dotted(effective, "dataset.classify.validation_dataset", {"csv_path": str(inputs.val_csv),
                                                                 "images_dir": str(inputs.val_images_dir)})
    return atomic_write_text(inputs.out_dir / "experiment.yaml", dump_spec(effective))


def log_settings(log: Log, cfg: RunConfig, runtime: Runtime, seed: int) -> None:
    t, d = cfg.train, cfg.data
    log(f"device={runtime.device} amp={runtime.amp_dtype} threads={torch.get_num_threads()} seed={seed} "
        f"torch={torch.__version__}")
    log(f"architecture {cfg.arch}")
    log(f"train: epochs={t.num_epochs} lr={t.lr} optim={t.optim} policy={t.policy} wd={t.weight_decay} "
        f"momentum={t.momentum} cls_weight={list(t.cls_weight)} batch={d.batch_size} "
        f"fpratio_sampling={d.fpratio_sampling} augment={d.augment.enabled} "
        f"checkpoint_interval={t.checkpoint_interval} validation_interval={t.validation_interval}")


def load_datasets(inputs: RunInputs, cfg: RunConfig, runtime: Runtime, threads: int,
                  log: Log) -> tuple[ImageSet, ImageSet]:
    """Decode the training and validation sets; refuse what would make training or FAR meaningless."""
    train_rows, val_rows = read_csv_rows(inputs.train_csv), read_csv_rows(inputs.val_csv)
    if len(train_rows) == 0:
        raise TrainingError(f"{inputs.train_csv}: no training rows; training would make zero steps")
    if len(val_rows) == 0:
        raise TrainingError(f"{inputs.val_csv}: no validation rows; val_far (the checkpoint criterion) is undefined")
    t0 = time.perf_counter()
    train = load_image_set(train_rows, inputs.images_dir, cfg.data, source=str(inputs.train_csv), threads=threads)
    val = load_image_set(val_rows, inputs.val_images_dir, cfg.data, source=str(inputs.val_csv), threads=threads)
    if int(val.labels.sum()) == 0:
        raise TrainingError(f"{inputs.val_csv}: no defect (NO_PASS) rows; FAR at 100% recall is undefined on it")
    log(f"data: train {len(train)} rows ({int(train.labels.sum())} defect), val {len(val)} rows "
        f"({int(val.labels.sum())} defect), {train.bank.shape[0] + val.bank.shape[0]} images decoded in "
        f"{time.perf_counter() - t0:.2f}s")
    return train.to(runtime.device), val.to(runtime.device)


def init_model(cfg: RunConfig, seed: int, runtime: Runtime, log: Log) -> ChangeNetCNN:
    """The seed's network, then the warm-start weights (or a pretrained stem), then freezing."""
    model = build_model(cfg.model, seed=seed)
    if cfg.init is not None:
        payload = load_weights(model, cfg.init, cfg.arch)
        log(f"warm start: weights from {cfg.init} (its epoch {payload.get('epoch')}, step {payload.get('step')}); "
            "epoch counter and optimiser are fresh")
    elif cfg.train.pretrained_backbone_path:
        n = load_backbone_weights(model, cfg.train.pretrained_backbone_path)
        log(f"backbone: {n} stem tensors from {cfg.train.pretrained_backbone_path}")
    if cfg.train.freeze_backbone:
        for p in model.stem.parameters():
            p.requires_grad_(False)
    return model.to(runtime.device)


class Session:
    """The model and everything that updates it: optimiser, loss, sampler weights, seeded generator."""

    def __init__(self, model: ChangeNetCNN, cfg: RunConfig, train: ImageSet, runtime: Runtime, seed: int,
                 eval_batch_size: int) -> None:
        self.model, self.cfg, self.train_set, self.runtime = model, cfg, train, runtime
        self.eval_batch_size = eval_batch_size
        self.norm = Normaliser(cfg.data, runtime.device)
        self.cls_weight = torch.tensor(cfg.train.cls_weight, dtype=torch.float32)
        self.loss_fn = nn.CrossEntropyLoss(weight=self.cls_weight.to(runtime.device))
        self.opt = make_optimizer(list(model.parameters()), cfg.train)
        self.gen = torch.Generator().manual_seed(seed)  # epoch order and augmentation
        self.weights = sampler_weights(train.labels, cfg.data.fpratio_sampling)

    def train_epoch(self, epoch: int) -> tuple[float, int, float]:
        """Train 1-based ``epoch``; returns (mean training loss, optimiser steps, lr)."""
        t = self.cfg.train
        lr = lr_at_epoch(t.policy, t.lr, epoch - 1, t.num_epochs)
        for group in self.opt.param_groups:
            group["lr"] = lr
        loss, steps = train_epoch(self.model, self.train_set, self.norm, self.opt, self.loss_fn,
                                  batch_size=self.cfg.data.batch_size, weights=self.weights,
                                  aug=self.cfg.data.augment, gen=self.gen, runtime=self.runtime,
                                  freeze_backbone=t.freeze_backbone)
        return loss, steps, lr

    def validate(self, val: ImageSet) -> Validation:
        logits = predict(self.model, val, self.norm, batch_size=self.eval_batch_size, runtime=self.runtime)
        y = val.labels.cpu()
        loss = float(nn.functional.cross_entropy(torch.from_numpy(logits), y, weight=self.cls_weight))
        res = far_at_recall(y.numpy().astype(bool), softmax_defect(logits), 1.0)
        pred = logits.argmax(axis=1)
        return Validation(loss, res.far * 100.0, res.threshold,
                          {"PASS": int((pred == 0).sum()), "NO_PASS": int((pred == 1).sum())})


@dataclass
class _Clock:
    """Training-only wall and CPU time (validation and checkpoint writing excluded) and samples seen."""

    wall: float = 0.0
    cpu: float = 0.0
    samples: int = 0

    def rates(self) -> dict[str, float]:
        # Per CPU-second of this process: the number that survives a shared machine's load (1 thread).
        return {"train_samples_per_s": self.samples / self.wall if self.wall > 0 else math.nan,
                "train_samples_per_cpu_s": self.samples / self.cpu if self.cpu > 0 else math.nan}


def run_epochs(session: Session, val: ImageSet, out_dir: Path, status: StatusFile, log: Log,
               on_epoch: EpochCallback | None, clock: _Clock) -> list[EpochMetrics]:
    """Train every epoch; validate at validation_interval and at every checkpoint (so the best-val
    pick always has a number); write checkpoints at checkpoint_interval and after the last epoch."""
    t = session.cfg.train
    epochs: list[EpochMetrics] = []
    step = 0
    for epoch in range(1, t.num_epochs + 1):
        t_epoch, c_epoch = time.perf_counter(), time.process_time()
        train_loss, n_steps, lr = session.train_epoch(epoch)
        clock.wall += time.perf_counter() - t_epoch
        clock.cpu += time.process_time() - c_epoch
        clock.samples += len(session.train_set)
        step += n_steps
        write_ckpt = epoch == t.num_epochs or epoch % t.checkpoint_interval == 0
        v = session.validate(val) if write_ckpt or epoch % t.validation_interval == 0 else Validation.skipped()
        ckpt_path = None
        if write_ckpt:
            # File name as TAO (Lightning) writes it: zero-based epoch index, cumulative step, so the
            # first epoch is model_epoch_000_step_…; the payload keeps the 1-based epoch count.
            ckpt_path = save_checkpoint(out_dir / checkpoint_name(epoch - 1, step), session.model, session.cfg.arch,
                                        epoch=epoch, step=step, val_far=v.far, val_loss=v.loss)
        m = EpochMetrics(epoch=epoch, step=step, train_loss=train_loss, val_loss=v.loss, val_far=v.far,
                         val_threshold=v.threshold, pred_counts=dict(v.pred_counts),
                         checkpoint=str(ckpt_path.resolve()) if ckpt_path else None)
        epochs.append(m)
        _report_epoch(m, lr, t.num_epochs, time.perf_counter() - t_epoch, status, log)
        if on_epoch is not None:
            try:
                on_epoch(m)
            except BaseException as exc:  # Tune stopping a trial, a reporter error, KeyboardInterrupt
                raise CallbackError(exc) from exc
    return epochs


def _report_epoch(m: EpochMetrics, lr: float, num_epochs: int, dt: float, status: StatusFile, log: Log) -> None:
    status.write("RUNNING", "Train metrics generated.", epoch=m.epoch, max_epoch=num_epochs, step=m.step,
                 time_per_epoch=f"{dt:.3f}s", eta=f"{dt * (num_epochs - m.epoch):.1f}s",
                 kpi={"train_loss": m.train_loss, "val_loss": _finite(m.val_loss), "val_far": _finite(m.val_far),
                      "val_threshold": _finite(m.val_threshold), "lr": lr},
                 pred_counts=m.pred_counts, checkpoint=m.checkpoint)
    log(f"epoch {m.epoch}/{num_epochs} step {m.step} lr {lr:.3g} train_loss {m.train_loss:.4f} "
        f"val_loss {m.val_loss:.4f} val_far {m.val_far:.2f}% thr {m.val_threshold:.4g} "
        f"pred {m.pred_counts} {dt:.2f}s" + (f" -> {Path(m.checkpoint).name}" if m.checkpoint else ""))


def best_epoch(epochs: list[EpochMetrics]) -> EpochMetrics:
    """The checkpointed epoch with the lowest val FAR; ties: lower val loss, then the later epoch."""
    by_ckpt = [e for e in epochs if e.checkpoint]
    if not by_ckpt or by_ckpt[-1].step == 0:
        raise TrainingError("training made zero optimiser steps / wrote no checkpoint; a zero-step run is a failure")
    return min(by_ckpt, key=lambda e: (e.val_far, e.val_loss, -e.epoch))


def fit(inputs: RunInputs, runtime: Runtime, *, decode_threads: int, eval_batch_size: int,
        status: StatusFile, log: Log, on_epoch: EpochCallback | None = None) -> TrainResult:
    """Run one training per ``inputs`` and return its :class:`TrainResult` (SUCCESS written to status)."""
    t_start, cpu_start = time.perf_counter(), time.process_time()
    cfg = RunConfig.resolve(inputs.spec, inputs.init_ckpt)
    write_effective_spec(inputs, cfg)
    log_settings(log, cfg, runtime, inputs.seed)
    with deterministic_torch():
        train, val = load_datasets(inputs, cfg, runtime, decode_threads, log)
        session = Session(init_model(cfg, inputs.seed, runtime, log), cfg, train, runtime, inputs.seed,
                          eval_batch_size)
        extra: dict[str, Any] = {"seed": inputs.seed, "device": str(runtime.device),
                                 "init_ckpt": str(cfg.init) if cfg.init else None,
                                 "train_rows": len(train), "val_rows": len(val)}
        if cfg.init is not None:
            # The starting checkpoint's validation numbers, reported beside the new ones.
            init_val = session.validate(val)
            extra["init_val"] = {"val_loss": init_val.loss, "val_far": init_val.far,
                                 "val_threshold": init_val.threshold, "pred_counts": init_val.pred_counts}
            log(f"init_val {extra['init_val']}")
        clock = _Clock()
        epochs = run_epochs(session, val, inputs.out_dir, status, log, on_epoch, clock)
    best = best_epoch(epochs)
    checkpoints = [Path(e.checkpoint) for e in epochs if e.checkpoint]
    extra.update(clock.rates(), wall_s=time.perf_counter() - t_start,
                 cpu_s=time.process_time() - cpu_start)  # cpu_s: load-independent on a shared machine
    result = TrainResult(out_dir=inputs.out_dir, epochs=epochs, checkpoints=checkpoints,
                         best_val_ckpt=Path(best.checkpoint or ""), latest_ckpt=checkpoints[-1],
                         best_epoch=best.epoch, best_step=best.step, best_val_far=best.val_far,
                         best_val_loss=best.val_loss, status="SUCCESS", extra=extra)
    status.write("SUCCESS", "Train finished successfully.", best_val_ckpt=str(result.best_val_ckpt),
                 latest_ckpt=str(result.latest_ckpt), best_val_far=best.val_far, best_epoch=best.epoch)
    log(f"SUCCESS best {result.best_val_ckpt.name} (val_far {best.val_far:.2f}%), latest "
        f"{result.latest_ckpt.name}, {extra['wall_s']:.2f}s, {extra['train_samples_per_s']:.1f} samples/s")
    return result
