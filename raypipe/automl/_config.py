"""Typed inputs and outputs of one sweep: what to try, on what data, and what came out.

The config says *what to try* (algorithm, space, trials, metric); Ray placement is only the
per-trial resource request, so the same sweep runs on a laptop and on a GPU cluster.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from raypipe.config import AutoMLConfig, ConfigError, RunConfig, check_node
from raypipe.spec import ARCHITECTURE_KEYS

if TYPE_CHECKING:  # tracking is optional at import time: trials import it lazily
    from raypipe.tracking import TrackingContext

log = logging.getLogger(__name__)

PHASES = ("phase1", "phase3")


class SweepConfigError(ConfigError):
    """A sweep setting is invalid; the message names the config key."""


@dataclass(frozen=True)
class SweepConfig:
    """One sweep's settings: the run config's ``automl`` node plus the phase's trial count.

    Built by :meth:`from_config` in the pipeline; constructing it directly (benchmarks, tests)
    applies the same rules as the config loader (those of :class:`raypipe.config.AutoMLConfig`).
    """

    algorithm: str = "bayesian"  # bayesian (Optuna TPE) | random | asha (TPE + ASHA on epochs) | grid
    metric: str = "far_pct"  # far_pct (validation FAR@100% recall) | val_loss (+ collapse guard, FAR re-scoring)
    num_trials: int = 8  # automl_max_recommendations
    max_concurrent_trials: int = 2
    n_startup_trials: int | None = None  # TPE random start-up trials; None: about a third of num_trials
    noise_margin: float | None = 0.5  # relative gap winner vs runner-up that triggers a re-run; None: off
    max_failures: int = 1  # retries of a crashing trial
    resources_per_trial: Mapping[str, float] = field(default_factory=lambda: {"cpu": 1, "gpu": 0})
    search_space: Mapping[str, Any] = field(default_factory=dict)
    spec_overrides: Mapping[str, Any] = field(default_factory=dict)  # dotted keys pinned in every trial
    seed: int = 42
    reuse_actors: bool = True
    val_loss_top_k: int = 3
    storage_path: str | None = None  # None: the sweep dir; else a shared fs path or s3://…
    dropped_keys: tuple[str, ...] = ()  # swept keys removed by from_config (architecture keys in Phase 3)

    def __post_init__(self) -> None:
        if not isinstance(self.num_trials, int) or isinstance(self.num_trials, bool) or self.num_trials < 1:
            raise SweepConfigError(f"automl_max_recommendations: need an integer >= 1, got {self.num_trials!r}")
        check_node(AutoMLConfig, {
            "algorithm": self.algorithm, "metric": self.metric, "val_loss_top_k": self.val_loss_top_k,
            "n_startup_trials": self.n_startup_trials, "noise_margin": self.noise_margin,
            "max_failures": self.max_failures, "max_concurrent_trials": self.max_concurrent_trials,
            "reuse_actors": self.reuse_actors, "resources_per_trial": {"gpu": 0, **self.resources_per_trial},
            "search_space": dict(self.search_space)}, prefix="automl", source="SweepConfig", error=SweepConfigError)

    @property
    def startup_trials(self) -> int:
        """TPE start-up trials: TPE's own default (10) would make a 5–10 trial sweep random search."""
        if self.n_startup_trials is not None:
            return self.n_startup_trials
        return max(1, round(self.num_trials / 3))

    @property
    def resources(self) -> dict[str, float]:
        return {"cpu": float(self.resources_per_trial.get("cpu", 1)),
                "gpu": float(self.resources_per_trial.get("gpu", 0))}

    @classmethod
    def from_config(cls, cfg: RunConfig, phase: str) -> SweepConfig:
        """From the run config: ``automl`` + ``<phase>`` + top-level seed/storage/spec_overrides.

        Phase 3 always warm-starts, so the architecture keys of the shared space (e.g. Phase 1's
        ``learnable_difference_modules``) are dropped there and pinned to the checkpoint instead.
        """
        if phase not in PHASES:
            raise SweepConfigError(f"phase must be one of {list(PHASES)}, got {phase!r}")
        automl = cfg.automl
        space = dict(automl.search_space)
        dropped: tuple[str, ...] = ()
        if phase == "phase3":
            dropped = tuple(k for k in space if any(k == a or k.startswith(a + ".") or k.startswith(a + "[")
                                                    for a in ARCHITECTURE_KEYS))
            for k in dropped:
                del space[k]
            if dropped:
                log.info("phase3: architecture keys %s pinned to the warm-start checkpoint (not swept)",
                         ", ".join(dropped))
        trials = cfg.phase1.automl_max_recommendations if phase == "phase1" else cfg.phase3.automl_max_recommendations
        return cls(algorithm=automl.algorithm, metric=automl.metric, num_trials=trials,
                   max_concurrent_trials=automl.max_concurrent_trials, n_startup_trials=automl.n_startup_trials,
                   noise_margin=automl.noise_margin, max_failures=automl.max_failures,
                   resources_per_trial=automl.resources_per_trial.as_dict(), search_space=space,
                   spec_overrides=dict(cfg.spec_overrides), seed=cfg.seed, reuse_actors=automl.reuse_actors,
                   val_loss_top_k=automl.val_loss_top_k, storage_path=cfg.storage_path, dropped_keys=dropped)


@dataclass
class SweepInputs:
    """The data and starting point of a sweep. There is deliberately no KPI path: a sweep never reads it."""

    base_spec: dict[str, Any]
    train_csv: Path
    train_images_dir: Path
    val_csv: Path
    val_images_dir: Path
    backend: str = "builtin"
    backend_options: dict[str, Any] = field(default_factory=dict)
    init_ckpt: Path | None = None  # warm start: train.pretrained_model_path of every trial
    centre: dict[str, Any] | None = None  # dotted HPs of Phase 1's winner: the first trial of Phase 3
    tracking: TrackingContext | None = None
    run_dir: Path | None = None  # the pipeline's run dir: trials record where they ran in RD/placement.jsonl


@dataclass(frozen=True)
class RankedTrial:
    """One usable trial of a finished sweep, in the ranking order."""

    trial_id: str
    score: float  # the sweep's objective (``SweepConfig.metric``) at the trial's kept checkpoint
    checkpoint: Path | None  # a readable local .pth; None when it stayed in remote storage only
    pred_counts: dict[str, int]  # validation predictions at argmax: {"PASS": n, "NO_PASS": m}

    @property
    def collapsed(self) -> bool:
        """Predictions cover at most one class (a model that always answers the same)."""
        return bool(self.pred_counts) and sum(1 for v in self.pred_counts.values() if v > 0) < 2


@dataclass
class SweepResult:
    """What a sweep produced. ``ranked`` is best first: the Phase 1→2 handoff falls back along it."""

    best_rec_path: Path
    trials_csv: Path
    best_spec: dict[str, Any]  # the winner's full nested training spec
    best_checkpoint: Path  # a readable local .pth (downloaded when storage is remote)
    best_score: float
    best_trial_id: str
    ranked: list[RankedTrial]
    baseline_eval: dict[str, Any] | None
    noise_guard: dict[str, Any] | None
    failed: list[dict[str, Any]]  # {trial_id, params, error}
    best_params: dict[str, Any] = field(default_factory=dict)  # the winner's swept HPs (dotted)
    trial_specs: dict[str, dict[str, Any]] = field(default_factory=dict)  # trial_id → best_rec-style specs
    experiment_path: str = ""  # the Tune experiment (local path or URI)
