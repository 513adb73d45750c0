"""The trainer protocol every phase talks to.

Phases never import a concrete backend: they take a :class:`Trainer` chosen by config, so the
built-in PyTorch backend and the TAO container backend are interchangeable and pass one
conformance suite (``raypipe.testing``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np
import pandas as pd


@dataclass
class EpochMetrics:
    """What one epoch reports; the same fields go to Ray Tune, status.json and MLflow."""

    epoch: int  # 1-based
    step: int  # optimiser steps so far
    train_loss: float
    val_loss: float
    val_far: float  # FAR at 100 % recall on the validation set, in percent
    val_threshold: float
    pred_counts: dict[str, int]  # {"PASS": n, "NO_PASS": m} at argmax on the validation set
    checkpoint: str | None = None  # absolute path of the checkpoint written this epoch, if any

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    out_dir: Path
    epochs: list[EpochMetrics]
    checkpoints: list[Path]
    best_val_ckpt: Path  # checkpoint with the lowest val FAR (ties: lower val_loss, then later)
    latest_ckpt: Path
    best_epoch: int
    best_step: int
    best_val_far: float
    best_val_loss: float
    status: str = "SUCCESS"
    extra: dict[str, Any] = field(default_factory=dict)


EpochCallback = Callable[[EpochMetrics], None]


@runtime_checkable
class Trainer(Protocol):
    """Trains, infers and embeds for one change-detection architecture.

    ``images_dir`` is the root that the CSV's relative ``input_path``/``golden_path`` resolve against
    (the workspace image root for base CSVs, the workspace root for combined CSVs we write).
    """

    name: str

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
    ) -> TrainResult: ...

    def infer(
        self,
        spec: dict[str, Any],
        ckpt: Path,
        csv: Path,
        out_dir: Path,
        *,
        images_dir: Path,
    ) -> Path:
        """Write ``out_dir/inference.csv`` (input_path, golden_path, object_name, label,
        siamese_score, + preserved columns) and return its path."""
        ...

    def embed(
        self,
        spec: dict[str, Any],
        ckpt: Path | None,
        rows: pd.DataFrame,
        *,
        images_dir: Path,
    ) -> np.ndarray:
        """One float32 vector per row (L2-normalisable); used for k-NN mining."""
        ...

    def default_backbone(self) -> str: ...

    def supports_backbone(self, backbone_type: str) -> bool: ...


class TrainingError(RuntimeError):
    """Training failed (non-zero exit, FAILURE status, or no new checkpoint)."""


def checkpoint_name(epoch: int, step: int) -> str:
    """``model_epoch_<EEE>_step_<SSS>.pth`` exactly as TAO names them."""
    return f"model_epoch_{epoch:03d}_step_{step:05d}.pth"


def parse_checkpoint_name(path: str | Path) -> tuple[int, int]:
    import re

    m = re.search(r"model_epoch_(\d+)_step_(\d+)\.pth$", str(path))
    if not m:
        raise ValueError(f"{path}: not a model_epoch_<EEE>_step_<SSS>.pth checkpoint")
    return int(m.group(1)), int(m.group(2))
