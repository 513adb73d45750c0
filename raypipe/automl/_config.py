"""Typed inputs and outputs of one sweep (SPEC §5): what to try, on what data, and what came out.

The config says *what to try* (algorithm, space, trials, metric); Ray placement is only the
per-trial resource request, so the same sweep runs on a laptop and on a GPU cluster.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from raypipe.spec import ARCHITECTURE_KEYS

if TYPE_CHECKING:  # tracking is optional at import time: trials import it lazily
    from raypipe.tracking import TrackingContext

log = logging.getLogger(__name__)

ALGORITHMS = ("bayesian", "random", "asha", "grid")
METRICS = ("far_pct", "val_loss")
PHASES = ("phase1", "phase3")


class SweepConfigError(ValueError):
    """A sweep setting is invalid; the message names the config key."""


@dataclass(frozen=True)
class SweepConfig:
    """One sweep's settings, from the merged config's ``automl`` section plus the phase section."""

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
        if self.algorithm not in ALGORITHMS:
            raise SweepConfigError(f"automl.algorithm: '{self.algorithm}' is not one of {list(ALGORITHMS)}")
        if self.metric not in METRICS:
            raise SweepConfigError(f"automl.metric: '{self.metric}' is not one of {list(METRICS)}")
        if not isinstance(self.num_trials, int) or self.num_trials < 1:
            raise SweepConfigError(f"automl_max_recommendations: need an integer >= 1, got {self.num_trials!r}")
        if not isinstance(self.max_concurrent_trials, int) or self.max_concurrent_trials < 1:
            raise SweepConfigError(f"automl.max_concurrent_trials: need an integer >= 1, got "
                                   f"{self.max_concurrent_trials!r}")
        if self.n_startup_trials is not None and (not isinstance(self.n_startup_trials, int)
                                                  or self.n_startup_trials < 0):
            raise SweepConfigError(f"automl.n_startup_trials: need null or an integer >= 0, got "
                                   f"{self.n_startup_trials!r}")
        if self.noise_margin is not None and (not isinstance(self.noise_margin, (int, float))
                                              or not math.isfinite(self.noise_margin) or self.noise_margin < 0):
            raise SweepConfigError(f"automl.noise_margin: need null or a number >= 0, got {self.noise_margin!r}")
        if not isinstance(self.max_failures, int) or self.max_failures < 0:
            raise SweepConfigError(f"automl.max_failures: need an integer >= 0, got {self.max_failures!r}")
        if not isinstance(self.val_loss_top_k, int) or self.val_loss_top_k < 1:
            raise SweepConfigError(f"automl.val_loss_top_k: need an integer >= 1, got {self.val_loss_top_k!r}")
        res = self.resources_per_trial
        if not isinstance(res, Mapping) or set(res) - {"cpu", "gpu"}:
            raise SweepConfigError(f"automl.resources_per_trial: expected {{cpu, gpu}}, got {res!r}")
        cpu, gpu = res.get("cpu", 1), res.get("gpu", 0)
        for name, val in (("cpu", cpu), ("gpu", gpu)):
            if not isinstance(val, (int, float)) or isinstance(val, bool) or val < 0:
                raise SweepConfigError(f"automl.resources_per_trial.{name}: need a number >= 0, got {val!r}")
        if cpu <= 0 and gpu <= 0:
            raise SweepConfigError("automl.resources_per_trial: a trial needs some cpu or gpu")
        if gpu > 1 and gpu != int(gpu):
            raise SweepConfigError(f"automl.resources_per_trial.gpu: fractions are for sharing one GPU; "
                                   f"above 1 use a whole number, got {gpu}")

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
    def from_config(cls, cfg: Mapping[str, Any], phase: str) -> SweepConfig:
        """From the merged run config: ``automl`` + ``<phase>`` + top-level seed/storage/spec_overrides.

        Phase 3 always warm-starts, so the architecture keys of the shared space (e.g. Phase 1's
        ``learnable_difference_modules``) are dropped there and pinned to the checkpoint instead.
        """
        if phase not in PHASES:
            raise SweepConfigError(f"phase must be one of {list(PHASES)}, got {phase!r}")
        automl = dict(cfg.get("automl") or {})
        section = dict(cfg.get(phase) or {})
        space = dict(automl.get("search_space") or {})
        dropped: tuple[str, ...] = ()
        if phase == "phase3":
            dropped = tuple(k for k in space if any(k == a or k.startswith(a + ".") or k.startswith(a + "[")
                                                    for a in ARCHITECTURE_KEYS))
            for k in dropped:
                del space[k]
            if dropped:
                log.info("phase3: architecture keys %s pinned to the warm-start checkpoint (not swept)",
                         ", ".join(dropped))
        kw: dict[str, Any] = {
            "search_space": space,
            "spec_overrides": dict(cfg.get("spec_overrides") or {}),
            "dropped_keys": dropped,
        }
        if "automl_max_recommendations" in section:
            kw["num_trials"] = section["automl_max_recommendations"]
        if cfg.get("seed") is not None:
            kw["seed"] = int(cfg["seed"])
        if cfg.get("storage_path"):
            kw["storage_path"] = str(cfg["storage_path"])
        for key in ("algorithm", "metric", "max_concurrent_trials", "n_startup_trials", "noise_margin",
                    "max_failures", "resources_per_trial", "reuse_actors", "val_loss_top_k"):
            if key in automl:
                kw[key] = automl[key]
        if "resources_per_trial" in kw:
            kw["resources_per_trial"] = dict(kw["resources_per_trial"])
        return cls(**kw)


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


@dataclass
class SweepResult:
    """What a sweep produced. ``ranked`` is best first: the Phase 1→2 handoff falls back along it."""

    best_rec_path: Path
    trials_csv: Path
    best_spec: dict[str, Any]  # the winner's full nested training spec
    best_checkpoint: Path  # a readable local .pth (downloaded when storage is remote)
    best_score: float
    best_trial_id: str
    ranked: list[tuple[str, float, Path | None, dict[str, int]]]  # (trial_id, score, checkpoint, pred_counts)
    baseline_eval: dict[str, Any] | None
    noise_guard: dict[str, Any] | None
    failed: list[dict[str, Any]]  # {trial_id, params, error}
    best_params: dict[str, Any] = field(default_factory=dict)  # the winner's swept HPs (dotted)
    trial_specs: dict[str, dict[str, Any]] = field(default_factory=dict)  # trial_id → best_rec-style specs
    experiment_path: str = ""  # the Tune experiment (local path or URI)
