"""``BuiltinTrainer``: the Trainer protocol (SPEC §10) on the built-in PyTorch change classifier."""

from __future__ import annotations

import contextlib
import copy
import math
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch
from torch import nn

from raypipe._io import append_jsonl, atomic_write_text
from raypipe.backends.base import EpochCallback, EpochMetrics, TrainingError, TrainResult, checkpoint_name
from raypipe.backends.builtin._checkpoint import (
    architecture_mismatch,
    load_backbone_weights,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from raypipe.backends.builtin._config import (
    BACKBONE_WIDTHS,
    DEFAULT_BACKBONE,
    DataConfig,
    ModelConfig,
    architecture_from_spec,
    data_from_spec,
    train_from_spec,
)
from raypipe.backends.builtin._data import (
    ImageDataError,
    ImageSet,
    Normaliser,
    load_image_set,
    read_csv_rows,
    sampler_weights,
)
from raypipe.backends.builtin._engine import (
    Runtime,
    lr_at_epoch,
    make_optimizer,
    predict,
    resolve_runtime,
    softmax_defect,
    train_epoch,
)
from raypipe.backends.builtin._model import ChangeNetCNN, build_model
from raypipe.metrics import far_at_recall
from raypipe.spec import FORBIDDEN_SPEC_KEYS, dump_spec, set_dotted

INFERENCE_COLUMNS = ("input_path", "golden_path", "object_name", "label", "siamese_score")
# Rows decoded per chunk in infer/embed: bounds memory on a large mining pool.
_CHUNK_ROWS = 2048
# Seed of the untrained network `embed(ckpt=None)` uses: fixed so that pool and target embeddings of
# one mining run (and of a re-run) come from the same random features.
UNTRAINED_EMBED_SEED = 0


def default_num_threads() -> int:
    """Ray's CPU assignment when running inside a Ray task/actor, else every core of the machine."""
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            try:
                cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
            except Exception:  # the driver has no assignment
                cpus = None
            if cpus:
                return max(1, int(cpus))
    return os.cpu_count() or 1


@contextlib.contextmanager
def _num_threads(n: int) -> Iterator[None]:
    # torch's thread count is process-wide: set it for the call and restore it after.
    prev = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def _now() -> dict[str, str]:
    t = datetime.now(timezone.utc)
    return {"date": t.strftime("%-m/%-d/%Y"), "time": t.strftime("%H:%M:%S")}


def _finite(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


class _FromCallback(Exception):
    """Carries an exception raised by ``on_epoch`` so it propagates unchanged (not as TrainingError)."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


class _TrainLog:
    """Plain-text train.log, flushed per line so a crash leaves what happened."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_text("", encoding="utf-8")

    def __call__(self, msg: str) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} {msg}\n")


class BuiltinTrainer:
    """Built-in PyTorch backend (``backend: builtin``).

    ``device``: ``auto`` (CUDA when available) | ``cpu`` | ``cuda[:N]``. ``num_threads``: torch CPU
    threads for each call (default: the Ray-assigned CPU count inside Ray, else ``os.cpu_count()``).
    ``amp``: bf16 autocast on CUDA (``auto``/True) or off (False); never on CPU.
    """

    name = "builtin"

    def __init__(self, device: str = "auto", num_threads: int | None = None, amp: bool | str = "auto",
                 eval_batch_size: int = 128) -> None:
        self.device = device
        self.num_threads = num_threads
        self.amp = amp
        self.eval_batch_size = eval_batch_size

    # -- protocol: backbones ---------------------------------------------------------------------
    def default_backbone(self) -> str:
        return DEFAULT_BACKBONE

    def supports_backbone(self, backbone_type: str) -> bool:
        return backbone_type in BACKBONE_WIDTHS

    # -- helpers -------------------------------------------------------------------------------------
    def _threads(self) -> contextlib.AbstractContextManager[None]:
        return _num_threads(self.num_threads or default_num_threads())

    def _runtime(self) -> Runtime:
        return resolve_runtime(self.device, self.amp)

    def _decode_threads(self, dcfg: DataConfig) -> int:
        # `workers` from the spec sizes the decode thread pool (threads, not processes: the data is
        # decoded once into memory, so there is nothing for DataLoader worker processes to do).
        return max(1, min(dcfg.workers or 1, self.num_threads or default_num_threads()))

    def _model_for(self, spec: dict[str, Any], ckpt: Path | None, runtime: Runtime) -> tuple[ChangeNetCNN, DataConfig]:
        arch = architecture_from_spec(spec)
        model = build_model(ModelConfig.from_architecture(arch), seed=UNTRAINED_EMBED_SEED)
        if ckpt is not None:
            load_weights(model, ckpt, arch)
        return model.to(runtime.device), data_from_spec(spec)

    # -- protocol: train -----------------------------------------------------------------------------
    def train(
        self,
        spec: dict[str, Any],
        train_csv: Path,
        val_csv: Path,
        out_dir: Path,
        init_ckpt: Path | None = None,
        *,
        images_dir: Path,
        val_images_dir: Path | None = None,
        seed: int = 0,
        on_epoch: EpochCallback | None = None,
    ) -> TrainResult:
        """Train per the spec; checkpoints, ``status.json`` (JSONL), ``experiment.yaml``, ``train.log``
        in ``out_dir``. Raises :class:`TrainingError` (after a FAILURE status line) when training
        cannot run or makes no step; exceptions from ``on_epoch`` propagate (that is how Tune stops)."""
        out_dir = Path(out_dir).resolve()  # every path we hand back (and state files record) is absolute
        out_dir.mkdir(parents=True, exist_ok=True)
        status_path = out_dir / "status.json"
        atomic_write_text(status_path, "")  # a re-run replaces a previous attempt's status, never appends
        log = _TrainLog(out_dir / "train.log")
        append_jsonl(status_path, {**_now(), "status": "STARTED", "verbosity": "INFO",
                                   "message": "Starting builtin ChangeNet training."})
        try:
            with self._threads():
                return self._train(spec, Path(train_csv), Path(val_csv), out_dir,
                                   Path(init_ckpt) if init_ckpt else None, Path(images_dir),
                                   Path(val_images_dir) if val_images_dir else Path(images_dir),
                                   seed, on_epoch, status_path, log)
        except _FromCallback as wrapped:
            exc = wrapped.original
            message = f"stopped by on_epoch: {type(exc).__name__}: {exc}"
            log(f"FAILURE {message}")
            append_jsonl(status_path, {**_now(), "status": "FAILURE", "verbosity": "INFO", "message": message})
            raise exc from None
        except BaseException as exc:
            message = f"{type(exc).__name__}: {exc}"
            log(f"FAILURE {message}")
            append_jsonl(status_path, {**_now(), "status": "FAILURE", "verbosity": "ERROR", "message": message})
            if isinstance(exc, (ValueError, FileNotFoundError, FloatingPointError)) and not isinstance(exc, TrainingError):
                raise TrainingError(message) from exc
            raise

    def _train(self, spec: dict[str, Any], train_csv: Path, val_csv: Path, out_dir: Path,
               init_ckpt: Path | None, images_dir: Path, val_images_dir: Path, seed: int,
               on_epoch: EpochCallback | None, status_path: Path, log: _TrainLog) -> TrainResult:
        t_start, cpu_start = time.perf_counter(), time.process_time()
        arch = architecture_from_spec(spec)
        mcfg = ModelConfig.from_architecture(arch)
        dcfg = data_from_spec(spec)
        tcfg = train_from_spec(spec)
        runtime = self._runtime()
        if tcfg.num_epochs < 1:
            raise TrainingError(f"train.num_epochs is {tcfg.num_epochs}: zero epochs is zero steps, not a success")
        # Warm start = WEIGHTS ONLY, fresh epoch counter and optimiser. SPEC §2.2/§6.7: a new phase or
        # DEFT iteration starts from `pretrained_model_path`, never `resume_training_checkpoint_path`:
        # resuming would carry the old epoch counter (so a finished run makes zero new steps, a
        # "success" with no new checkpoint) and the old optimiser/lr schedule state into new data.
        init = init_ckpt or (Path(tcfg.pretrained_model_path) if tcfg.pretrained_model_path else None)

        effective = copy.deepcopy(spec)
        for key in FORBIDDEN_SPEC_KEYS:
            effective.pop(key, None)
        set_dotted(effective, "train.pretrained_model_path", str(init) if init else None)
        set_dotted(effective, "train.checkpoint_interval", tcfg.checkpoint_interval)
        set_dotted(effective, "train.validation_interval", tcfg.validation_interval)
        set_dotted(effective, "dataset.classify.train_dataset", {"csv_path": str(train_csv.resolve()),
                                                                "images_dir": str(images_dir.resolve())})
        set_dotted(effective, "dataset.classify.validation_dataset", {"csv_path": str(val_csv.resolve()),
                                                                     "images_dir": str(val_images_dir.resolve())})
        atomic_write_text(out_dir / "experiment.yaml", dump_spec(effective))

        log(f"device={runtime.device} amp={runtime.amp_dtype} threads={torch.get_num_threads()} seed={seed} "
            f"torch={torch.__version__}")
        log(f"architecture {arch}")
        log(f"train: epochs={tcfg.num_epochs} lr={tcfg.lr} optim={tcfg.optim} policy={tcfg.policy} "
            f"wd={tcfg.weight_decay} momentum={tcfg.momentum} cls_weight={list(tcfg.cls_weight)} "
            f"batch={dcfg.batch_size} fpratio_sampling={dcfg.fpratio_sampling} augment={dcfg.augment.enabled} "
            f"checkpoint_interval={tcfg.checkpoint_interval} validation_interval={tcfg.validation_interval}")

        train_rows = read_csv_rows(train_csv)
        val_rows = read_csv_rows(val_csv)
        if len(train_rows) == 0:
            raise TrainingError(f"{train_csv}: no training rows; training would make zero steps")
        if len(val_rows) == 0:
            raise TrainingError(f"{val_csv}: no validation rows; val_far (the checkpoint criterion) is undefined")
        t0 = time.perf_counter()
        threads = self._decode_threads(dcfg)
        train = load_image_set(train_rows, images_dir, dcfg, source=str(train_csv), threads=threads).to(runtime.device)
        val = load_image_set(val_rows, val_images_dir, dcfg, source=str(val_csv), threads=threads).to(runtime.device)
        if int(val.labels.sum()) == 0:
            raise TrainingError(f"{val_csv}: no defect (NO_PASS) rows; FAR at 100% recall is undefined on it")
        n_def = int(train.labels.sum())
        log(f"data: train {len(train)} rows ({n_def} defect), val {len(val)} rows ({int(val.labels.sum())} defect), "
            f"{train.bank.shape[0] + val.bank.shape[0]} images decoded in {time.perf_counter() - t0:.2f}s")

        model = build_model(mcfg, seed=seed)
        if init is not None:
            payload = load_weights(model, init, arch)
            log(f"warm start: weights from {init} (its epoch {payload.get('epoch')}, step {payload.get('step')}); "
                "epoch counter and optimiser are fresh")
        elif tcfg.pretrained_backbone_path:
            n = load_backbone_weights(model, tcfg.pretrained_backbone_path)
            log(f"backbone: {n} stem tensors from {tcfg.pretrained_backbone_path}")
        if tcfg.freeze_backbone:
            for p in model.stem.parameters():
                p.requires_grad_(False)
        model.to(runtime.device)
        norm = Normaliser(dcfg, runtime.device)
        cls_weight = torch.tensor(tcfg.cls_weight, dtype=torch.float32)
        loss_fn = nn.CrossEntropyLoss(weight=cls_weight.to(runtime.device))
        opt = make_optimizer(list(model.parameters()), tcfg)
        gen = torch.Generator().manual_seed(seed)
        weights = sampler_weights(train.labels, dcfg.fpratio_sampling)

        extra: dict[str, Any] = {"seed": seed, "device": str(runtime.device), "init_ckpt": str(init) if init else None,
                                 "train_rows": len(train), "val_rows": len(val)}
        if init is not None:
            # SPEC §5 "baseline eval": the starting checkpoint's validation numbers, beside the new ones.
            extra["init_val"] = self._validate(model, val, norm, cls_weight, runtime)
            log(f"init_val {extra['init_val']}")

        epochs: list[EpochMetrics] = []
        checkpoints: list[Path] = []
        step = 0
        train_time = train_cpu = 0.0
        samples = 0
        for epoch in range(1, tcfg.num_epochs + 1):
            t_epoch, c_epoch = time.perf_counter(), time.process_time()
            lr = lr_at_epoch(tcfg.policy, tcfg.lr, epoch - 1, tcfg.num_epochs)
            for group in opt.param_groups:
                group["lr"] = lr
            train_loss, n_steps = train_epoch(
                model, train, norm, opt, loss_fn, batch_size=dcfg.batch_size, weights=weights, aug=dcfg.augment,
                gen=gen, runtime=runtime, freeze_backbone=tcfg.freeze_backbone)
            train_time += time.perf_counter() - t_epoch
            train_cpu += time.process_time() - c_epoch
            samples += len(train)
            step += n_steps
            last = epoch == tcfg.num_epochs
            write_ckpt = last or epoch % tcfg.checkpoint_interval == 0
            # Validate at validation_interval, and at every checkpoint so the best-val pick has a number.
            if write_ckpt or epoch % tcfg.validation_interval == 0:
                v = self._validate(model, val, norm, cls_weight, runtime)
            else:
                v = {"val_loss": math.nan, "val_far": math.nan, "val_threshold": math.nan, "pred_counts": {}}
            ckpt_path = None
            if write_ckpt:
                # File name as TAO (Lightning) writes it: zero-based epoch index, cumulative step, so
                # the first epoch is model_epoch_000_step_…; the payload keeps the 1-based epoch count.
                ckpt_path = save_checkpoint(out_dir / checkpoint_name(epoch - 1, step), model, arch, epoch=epoch,
                                            step=step, val_far=v["val_far"], val_loss=v["val_loss"])
                checkpoints.append(ckpt_path)
            m = EpochMetrics(epoch=epoch, step=step, train_loss=train_loss, val_loss=v["val_loss"],
                             val_far=v["val_far"], val_threshold=v["val_threshold"],
                             pred_counts=dict(v["pred_counts"]),
                             checkpoint=str(ckpt_path.resolve()) if ckpt_path else None)
            epochs.append(m)
            dt = time.perf_counter() - t_epoch
            append_jsonl(status_path, {
                **_now(), "status": "RUNNING", "verbosity": "INFO", "message": "Train metrics generated.",
                "epoch": epoch, "max_epoch": tcfg.num_epochs, "step": step,
                "time_per_epoch": f"{dt:.3f}s", "eta": f"{dt * (tcfg.num_epochs - epoch):.1f}s",
                "kpi": {"train_loss": train_loss, "val_loss": _finite(m.val_loss), "val_far": _finite(m.val_far),
                        "val_threshold": _finite(m.val_threshold), "lr": lr},
                "pred_counts": m.pred_counts, "checkpoint": m.checkpoint})
            log(f"epoch {epoch}/{tcfg.num_epochs} step {step} lr {lr:.3g} train_loss {train_loss:.4f} "
                f"val_loss {m.val_loss:.4f} val_far {m.val_far:.2f}% thr {m.val_threshold:.4g} "
                f"pred {m.pred_counts} {dt:.2f}s" + (f" -> {ckpt_path.name}" if ckpt_path else ""))
            if on_epoch is not None:
                try:
                    on_epoch(m)
                except BaseException as exc:  # Tune stopping a trial, a reporter error, KeyboardInterrupt
                    raise _FromCallback(exc) from exc

        if step == 0 or not checkpoints:
            raise TrainingError("training made zero optimiser steps / wrote no checkpoint; "
                                "a zero-step run is a failure")
        by_ckpt = [e for e in epochs if e.checkpoint]
        best = min(by_ckpt, key=lambda e: (e.val_far, e.val_loss, -e.epoch))
        extra["wall_s"] = time.perf_counter() - t_start
        extra["cpu_s"] = time.process_time() - cpu_start  # load-independent on a shared machine
        extra["train_samples_per_s"] = samples / train_time if train_time > 0 else math.nan
        # Per CPU-second of this process: the number that survives a shared machine's load (1 thread).
        extra["train_samples_per_cpu_s"] = samples / train_cpu if train_cpu > 0 else math.nan
        result = TrainResult(
            out_dir=out_dir, epochs=epochs, checkpoints=checkpoints,
            best_val_ckpt=Path(best.checkpoint or ""), latest_ckpt=checkpoints[-1],
            best_epoch=best.epoch, best_step=best.step, best_val_far=best.val_far, best_val_loss=best.val_loss,
            status="SUCCESS", extra=extra)
        append_jsonl(status_path, {**_now(), "status": "SUCCESS", "verbosity": "INFO",
                                   "message": "Train finished successfully.",
                                   "best_val_ckpt": str(result.best_val_ckpt), "latest_ckpt": str(result.latest_ckpt),
                                   "best_val_far": best.val_far, "best_epoch": best.epoch})
        log(f"SUCCESS best {result.best_val_ckpt.name} (val_far {best.val_far:.2f}%), latest "
            f"{result.latest_ckpt.name}, {extra['wall_s']:.2f}s, {extra['train_samples_per_s']:.1f} samples/s")
        return result

    def _validate(self, model: nn.Module, val: ImageSet, norm: Normaliser, cls_weight: torch.Tensor,
                  runtime: Runtime) -> dict[str, Any]:
        logits = predict(model, val, norm, batch_size=self.eval_batch_size, runtime=runtime)
        y = val.labels.cpu()
        loss = float(nn.functional.cross_entropy(torch.from_numpy(logits), y, weight=cls_weight))
        scores = softmax_defect(logits)
        res = far_at_recall(y.numpy().astype(bool), scores, 1.0)
        pred = logits.argmax(axis=1)
        return {"val_loss": loss, "val_far": res.far * 100.0, "val_threshold": res.threshold,
                "pred_counts": {"PASS": int((pred == 0).sum()), "NO_PASS": int((pred == 1).sum())}}

    # -- protocol: infer / embed ---------------------------------------------------------------------
    def infer(self, spec: dict[str, Any], ckpt: Path, csv: Path, out_dir: Path, *, images_dir: Path) -> Path:
        """``out_dir/inference.csv``: input_path, golden_path, object_name, label, siamese_score
        (= P(defect)), then every other input column unchanged; labels normalised."""
        csv, out_dir = Path(csv), Path(out_dir)
        rows = read_csv_rows(csv)
        missing = [c for c in ("input_path", "golden_path", "object_name", "label") if c not in rows.columns]
        if missing:
            raise ImageDataError(f"{csv}: missing required column(s) {missing}")
        with self._threads():
            runtime = self._runtime()
            model, dcfg = self._model_for(spec, Path(ckpt), runtime)
            norm = Normaliser(dcfg, runtime.device)
            scores = np.zeros(len(rows), dtype=np.float64)
            for start in range(0, len(rows), _CHUNK_ROWS):
                part = rows.iloc[start:start + _CHUNK_ROWS]
                data = load_image_set(part, Path(images_dir), dcfg, source=str(csv), threads=self._decode_threads(dcfg),
                                      ).to(runtime.device)
                logits = predict(model, data, norm, batch_size=self.eval_batch_size, runtime=runtime)
                scores[start:start + len(part)] = softmax_defect(logits)
        out = rows.copy()
        out["siamese_score"] = scores
        cols = list(INFERENCE_COLUMNS) + [c for c in rows.columns if c not in INFERENCE_COLUMNS]
        return atomic_write_text(out_dir / "inference.csv", out[cols].to_csv(index=False))

    def embed(self, spec: dict[str, Any], ckpt: Path | None, rows: pd.DataFrame, *, images_dir: Path) -> np.ndarray:
        """The model's embedding (before the head), float32 ``(len(rows), embedding_vectors*embed_dec)``.

        ``ckpt=None``: an untrained network with fixed seed :data:`UNTRAINED_EMBED_SEED` (random conv
        features of the capture−golden difference; stable across calls, so pool and targets match).
        """
        with self._threads():
            runtime = self._runtime()
            model, dcfg = self._model_for(spec, Path(ckpt) if ckpt is not None else None, runtime)
            norm = Normaliser(dcfg, runtime.device)
            out = np.zeros((len(rows), model.cfg.embedding_dim), dtype=np.float32)
            for start in range(0, len(rows), _CHUNK_ROWS):
                part = rows.iloc[start:start + _CHUNK_ROWS]
                data = load_image_set(part, Path(images_dir), dcfg, source="embed rows",
                                      threads=self._decode_threads(dcfg), need_label=False).to(runtime.device)
                out[start:start + len(part)] = predict(model, data, norm, batch_size=self.eval_batch_size,
                                                       runtime=runtime, embed=True)
        return out


def save_untrained_checkpoint(spec: dict[str, Any], path: Path, seed: int = 0) -> Path:
    """Write the seed-``seed`` untrained network as a checkpoint (epoch 0, step 0): the "before training"
    reference for reports and benchmarks, and a known source for warm-start tests."""
    arch = architecture_from_spec(spec)
    model = build_model(ModelConfig.from_architecture(arch), seed=seed)
    return save_checkpoint(Path(path), model, arch, epoch=0, step=0, val_far=math.nan, val_loss=math.nan)


def checkpoint_matches_spec(spec: dict[str, Any], ckpt: Path) -> list[str]:
    """Architecture differences between a spec and a checkpoint (empty: a warm start will load)."""
    return architecture_mismatch(architecture_from_spec(spec), load_checkpoint(ckpt).get("architecture") or {})
