"""Phases 1 and 3: Bayesian sweeps on Ray Tune + Optuna — one sweep function for both.

Example::

    cfg = SweepConfig.from_config(run_config, "phase1")
    result = run_sweep(cfg, SweepInputs(base_spec=spec, train_csv=..., train_images_dir=...,
                                        val_csv=..., val_images_dir=...), rd / "phase1_automl", "phase1")
    result.best_rec_path, result.ranked[0]
"""

from raypipe.automl._config import RankedTrial, SweepConfig, SweepConfigError, SweepInputs, SweepResult
from raypipe.automl._outputs import (
    BUDGET_KEYS,
    BestRecError,
    best_rec_schema,
    build_best_rec,
    rec_specs,
    validate_best_rec,
)
from raypipe.automl._ranking import TrialRecord, collapsed, rank_trials
from raypipe.automl._space import SearchParam, SearchSpaceError, parse_search_space, validate_search_space
from raypipe.automl._sweep import (
    SweepError,
    SweepFailedError,
    SweepInterruptedError,
    pinned_architecture,
    run_sweep,
    trial_spec_for,
)

__all__ = [
    "BUDGET_KEYS", "BestRecError", "RankedTrial", "SearchParam", "SearchSpaceError", "SweepConfig", "SweepConfigError",
    "SweepError", "SweepFailedError", "SweepInputs", "SweepInterruptedError", "SweepResult", "TrialRecord",
    "best_rec_schema", "build_best_rec", "collapsed", "parse_search_space", "pinned_architecture",
    "rank_trials", "rec_specs", "run_sweep", "trial_spec_for", "validate_best_rec", "validate_search_space",
]
