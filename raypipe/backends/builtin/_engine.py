"""The training/evaluation loop pieces: optimiser, lr policy, one epoch, batched prediction."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch import nn

from raypipe.backends.builtin._config import AugmentConfig, TrainConfig
from raypipe.backends.builtin._data import ImageSet, Normaliser, augment_batch, epoch_order
from raypipe.backends.builtin._model import ChangeNetCNN


@dataclass(frozen=True)
class Runtime:
    """Where the math runs: device and (CUDA only) the autocast dtype."""

    device: torch.device
    amp_dtype: torch.dtype | None = None

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)


@contextlib.contextmanager
def deterministic_torch() -> Iterator[None]:
    """Deterministic kernels for the duration of a run, previous settings restored after.

    On CPU every op this backend uses has a deterministic kernel, so a seeded run is bit-identical
    (at the same thread count: oneDNN splits reductions by thread). On CUDA a few ops have none and
    cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG``; ``warn_only`` keeps those runs going, reproducible
    as far as the hardware allows, instead of failing them.
    """
    prev = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev[2], prev[3]


def resolve_runtime(device: str, amp: bool | str = "auto") -> Runtime:
    """``auto`` → CUDA when available. bf16 autocast only on CUDA (on CPU it is slower for these convs)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch.cuda.is_available() is False")
    amp_dtype = None
    if dev.type == "cuda" and amp in ("auto", True) and torch.cuda.is_bf16_supported():
        amp_dtype = torch.bfloat16
    return Runtime(dev, amp_dtype)


def lr_at_epoch(policy: str, lr: float, epoch_index: int, num_epochs: int) -> float:
    """Learning rate of 0-based epoch ``epoch_index`` (TAO's per-epoch LambdaLR/StepLR).

    linear: ``lr * (1 - epoch/(num_epochs+1))``, TAO's linear policy; step: ×0.1 every ``max(1, num_epochs//3)`` epochs.
    """
    if policy == "linear":
        return lr * (1.0 - epoch_index / float(num_epochs + 1))
    if policy == "step":
        return lr * (0.1 ** (epoch_index // max(1, num_epochs // 3)))
    raise ValueError(f"train.optim.policy must be linear or step, got {policy!r}")


def make_optimizer(params: Iterator[nn.Parameter] | list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.optim == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optim == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def set_train_mode(model: nn.Module, freeze_backbone: bool) -> None:
    model.train()
    if freeze_backbone:
        model.get_submodule("stem").eval()  # a frozen stem stays in inference behaviour


def train_epoch(model: nn.Module, data: ImageSet, norm: Normaliser, opt: torch.optim.Optimizer,
                loss_fn: nn.Module, *, batch_size: int, weights: torch.Tensor | None, aug: AugmentConfig,
                gen: torch.Generator, runtime: Runtime, freeze_backbone: bool) -> tuple[float, int]:
    """One pass of ``len(data)`` sampled rows. Returns (mean loss over samples, optimiser steps)."""
    set_train_mode(model, freeze_backbone)
    order = epoch_order(len(data), weights, gen).to(data.labels.device)
    # Loss is summed on the device and read once per epoch: a per-step float() would sync CUDA every step.
    total = torch.zeros((), device=data.labels.device)
    seen, steps = 0, 0
    for start in range(0, order.numel(), batch_size):
        idx = order[start:start + batch_size]
        cap, gold = augment_batch(*data.batch(idx), aug, gen)
        y = data.labels[idx]
        with runtime.autocast():
            logits = model(norm(cap), norm(gold))
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
        total += loss.detach() * idx.numel()
        seen += idx.numel()
    mean = float(total) / max(seen, 1)
    if not math.isfinite(mean):
        # A diverged run is a failed run, not a score: say so and what to change.
        raise FloatingPointError(f"training diverged: non-finite training loss (lr {opt.param_groups[0]['lr']:.3g}); "
                                 "lower train.optim.lr")
    return mean, steps


@torch.no_grad()
def predict(model: ChangeNetCNN, data: ImageSet, norm: Normaliser, *, batch_size: int, runtime: Runtime,
            embed: bool = False) -> np.ndarray:
    """Logits ``(N, 2)`` (or embeddings with ``embed``) in row order, eval mode, no grad."""
    model.eval()
    out = []
    for start in range(0, len(data), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(data)), device=data.labels.device)
        cap, gold = data.batch(idx)
        with runtime.autocast():
            res = model.features(norm(cap), norm(gold)) if embed else model(norm(cap), norm(gold))
        out.append(res.float().cpu())
    if not out:
        width = model.cfg.embedding_dim if embed else 2
        return np.zeros((0, width), dtype=np.float32)
    return torch.cat(out).numpy().astype(np.float32, copy=False)


def softmax_defect(logits: np.ndarray) -> np.ndarray:
    """P(defect) from 2-class logits, in float64 for stable thresholds."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e[:, 1] / e.sum(axis=1)
