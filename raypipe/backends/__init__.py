"""Trainer backends: the built-in PyTorch ChangeNet and the TAO container.

Phases never import a concrete backend: they name one (``backend``) and pass its options, built
from the run config in exactly one place (:func:`backend_options`), into whatever Ray task trains,
infers or embeds; :func:`get_backend` makes the trainer there.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping

from raypipe.backends._spec_rules import COMMON_RULES, SpecProblem, check_rules, check_value
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

__all__ = ["EpochMetrics", "SpecProblem", "Trainer", "TrainingError", "TrainResult", "backend_options",
           "checkpoint_name", "get_backend", "parse_checkpoint_name", "spec_problems", "spec_value_problem",
           "stage_backbone"]


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


def stage_backbone(cfg: RunConfig, run_dir: str | os.PathLike[str], spec: Mapping[str, Any], *,
                   final_root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """``spec`` naming the backbone file every training of the run starts from (call it before the
    run spec is written, so that every phase's spec names the file).

    TAO's specs always name one and TAO's handoff resolves it. The built-in backbone has no
    pretraining: its seeded initial weights are staged once under ``RD/backbone/`` and the built-in
    trainer loads its stem from that file whenever it does not warm-start. The TAO backend's file
    is the user's, staged in ``<workspace>/augmentation/backbone/`` (pre-flight blocks a spec
    without one): the spec is returned unchanged. ``final_root``: the name ``run_dir`` will have
    (when it is a staging dir).
    """
    if cfg.backend != "builtin":
        return dict(spec)
    from pathlib import Path

    from raypipe.tao_interop import stage_builtin_backbone

    staged, _ = stage_builtin_backbone(Path(run_dir), spec, seed=cfg.seed)
    if final_root is not None:
        # Staged inside a run dir that is still being created (RunDir.create's staging dir): the
        # spec names the file where it will be once that dir is renamed into place.
        backbone = staged["model"]["backbone"]
        path = Path(backbone["pretrained_backbone_path"])
        if path.is_relative_to(Path(run_dir).resolve()):
            backbone["pretrained_backbone_path"] = str(Path(final_root) / path.relative_to(Path(run_dir).resolve()))
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


def spec_problems(name: str, spec: dict[str, Any]) -> list[SpecProblem]:
    """Every spec value backend ``name`` cannot train with (the pre-flight gate reports them all).

    builtin: TAO's value rules, its own narrower choices, and its readers' checks. tao: TAO's value
    rules (the container validates the rest of its schema when it starts).
    """
    if name == "builtin":
        from raypipe.backends.builtin import spec_problems as builtin_problems

        return builtin_problems(spec)
    return check_rules(spec, COMMON_RULES)


def spec_value_problem(name: str, key: str, value: Any) -> str | None:
    """The problem with one value of ``key`` (a search-space bound), or None."""
    if name == "builtin":
        from raypipe.backends.builtin._config import RULES

        return check_value(key, value, RULES)
    return check_value(key, value, COMMON_RULES)
