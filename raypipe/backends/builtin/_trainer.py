"""``BuiltinTrainer``: the trainer protocol (train, infer, embed) on the built-in PyTorch change classifier.

One training run itself lives in ``_fit``; this module is the protocol surface: threads, device,
status/log files and the error contract (bad input -> TrainingError, a callback's exception unchanged).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch

from raypipe._io import atomic_write_text
from raypipe.backends.base import EpochCallback, TrainingError, TrainResult
from raypipe.backends.builtin._checkpoint import (
    architecture_mismatch,
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
)
from raypipe.backends.builtin._data import ImageDataError, Normaliser, load_image_set, read_csv_rows
from raypipe.backends.builtin._engine import Runtime, predict, resolve_runtime, softmax_defect
from raypipe.backends.builtin._fit import CallbackError, RunInputs, StatusFile, TrainLog, fit
from raypipe.backends.builtin._model import ChangeNetCNN, build_model

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
        status = StatusFile(out_dir / "status.json")
        log = TrainLog(out_dir / "train.log")
        status.write("STARTED", "Starting builtin ChangeNet training.")
        images = Path(images_dir).resolve()
        inputs = RunInputs(spec=spec, train_csv=Path(train_csv).resolve(), val_csv=Path(val_csv).resolve(),
                           out_dir=out_dir, images_dir=images,
                           val_images_dir=Path(val_images_dir).resolve() if val_images_dir else images,
                           init_ckpt=Path(init_ckpt) if init_ckpt else None, seed=seed)
        try:
            with self._threads():
                return fit(inputs, self._runtime(), decode_threads=self._decode_threads(data_from_spec(spec)),
                           eval_batch_size=self.eval_batch_size, status=status, log=log, on_epoch=on_epoch)
        except CallbackError as wrapped:
            exc = wrapped.original
            message = f"stopped by on_epoch: {type(exc).__name__}: {exc}"
            log(f"FAILURE {message}")
            status.write("FAILURE", message)
            raise exc from None
        except BaseException as exc:
            message = f"{type(exc).__name__}: {exc}"
            log(f"FAILURE {message}")
            status.write("FAILURE", message, verbosity="ERROR")
            if isinstance(exc, (ValueError, FileNotFoundError, FloatingPointError)) and not isinstance(exc, TrainingError):
                raise TrainingError(message) from exc
            raise

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
