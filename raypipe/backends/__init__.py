"""Trainer backends: the built-in PyTorch ChangeNet and the TAO container (SPEC §10)."""

from raypipe.backends.base import (
    EpochMetrics,
    Trainer,
    TrainingError,
    TrainResult,
    checkpoint_name,
    parse_checkpoint_name,
)

__all__ = ["EpochMetrics", "Trainer", "TrainingError", "TrainResult", "checkpoint_name",
           "parse_checkpoint_name", "get_backend"]


def get_backend(name: str, **options: object) -> Trainer:
    """Backend by config name (``builtin`` | ``tao``); imported lazily so torch/docker load only when used."""
    if name == "builtin":
        from raypipe.backends.builtin import BuiltinTrainer

        return BuiltinTrainer(**options)  # type: ignore[arg-type]
    if name == "tao":
        from raypipe.backends.tao import TaoTrainer

        return TaoTrainer(**options)  # type: ignore[arg-type]
    raise ValueError(f"unknown backend '{name}' (expected 'builtin' or 'tao')")
