"""Trainer backends: the built-in PyTorch ChangeNet and the TAO container.

Phases never import a concrete backend: they name one (``backend``) and pass its options, built
from the run config in exactly one place (:func:`backend_options`), into whatever Ray task trains,
infers or embeds; :func:`get_backend` makes the trainer there.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping

from raypipe.backends.base import (
    EpochMetrics,
    Trainer,
    TrainingError,
    TrainResult,
    checkpoint_name,
    parse_checkpoint_name,
)

if TYPE_CHECKING:
    from raypipe.config import RunConfig

__all__ = ["EpochMetrics", "Trainer", "TrainingError", "TrainResult", "backend_options", "checkpoint_name",
           "get_backend", "parse_checkpoint_name", "stage_backbone"]


def backend_options(cfg: RunConfig, *, workspace_root: str | os.PathLike[str] | None = None,
                    run_dir: str | os.PathLike[str] | None = None,
                    execution_policy: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The keyword options of ``get_backend(cfg.backend, **options)`` (small and picklable).

    builtin: the torch ``device``. tao: the ``tao`` node (image, shm_size, gpus, user, val_scoring,
    env_allowlist, credentials, anomalygen_image) plus the mounts every container needs — the
    workspace and the run dir — and the run's ``execution_policy`` (TAO's words; without one the
    containers run air-gapped: fail closed).
    """
    if cfg.backend == "builtin":
        return {"device": cfg.device}
    options: dict[str, Any] = cfg.tao.model_dump()
    options["workspace_root"] = str(workspace_root) if workspace_root is not None else None
    options["run_dir"] = str(run_dir) if run_dir is not None else None
    options["execution_policy"] = dict(execution_policy) if execution_policy is not None else None
    return options


def stage_backbone(cfg: RunConfig, run_dir: str | os.PathLike[str], spec: Mapping[str, Any]) -> dict[str, Any]:
    """``spec`` naming the backbone file every training of the run starts from (call it before the
    run spec is written, so that every phase's spec names the file).

    TAO's specs always name one and TAO's handoff resolves it. The built-in backbone has no
    pretraining: its seeded initial weights are staged once under ``RD/backbone/`` and the built-in
    trainer loads its stem from that file whenever it does not warm-start. The TAO backend's file
    is the user's, staged in ``<workspace>/augmentation/backbone/`` (pre-flight blocks a spec
    without one): the spec is returned unchanged.
    """
    if cfg.backend != "builtin":
        return dict(spec)
    from pathlib import Path

    from raypipe.tao_interop import stage_builtin_backbone

    staged, _ = stage_builtin_backbone(Path(run_dir), spec, seed=cfg.seed)
    return staged


def get_backend(name: str, **options: Any) -> Trainer:
    """Backend by config name (``builtin`` | ``tao``); imported lazily so torch/docker load only when used."""
    if name == "builtin":
        from raypipe.backends.builtin import BuiltinTrainer

        return BuiltinTrainer(**options)
    if name == "tao":
        from raypipe.backends.tao import TaoTrainer

        return TaoTrainer(**options)
    raise ValueError(f"unknown backend '{name}' (expected 'builtin' or 'tao')")
