"""SweepConfig from the typed run config (automl + phase sections)."""

from __future__ import annotations

import pytest

from raypipe.automl import SweepConfig, SweepConfigError
from raypipe.config import ConfigError, load_config


def test_phase1_defaults() -> None:
    cfg = SweepConfig.from_config(load_config(), "phase1")
    assert (cfg.algorithm, cfg.metric, cfg.num_trials, cfg.max_concurrent_trials) == ("bayesian", "far_pct", 8, 2)
    assert cfg.startup_trials == 3  # about a third of 8, not TPE's 10
    assert len(cfg.search_space) == 6 and cfg.dropped_keys == ()
    assert cfg.spec_overrides == {"train.num_epochs": 4, "dataset.classify.batch_size": 32}
    assert cfg.resources == {"cpu": 1.0, "gpu": 0.0} and cfg.storage_path is None and cfg.seed == 42


def test_phase3_drops_architecture_keys_from_the_shared_space() -> None:
    cfg = SweepConfig.from_config(load_config(), "phase3")
    assert cfg.num_trials == 6 and cfg.startup_trials == 2
    assert cfg.dropped_keys == ("model.classify.learnable_difference_modules",)
    assert "model.classify.learnable_difference_modules" not in cfg.search_space
    assert len(cfg.search_space) == 5


def test_overrides_and_fractional_gpu() -> None:
    run = load_config(None, ["automl.algorithm=asha", "automl.n_startup_trials=1", "automl.resources_per_trial.cpu=2",
                             "automl.resources_per_trial.gpu=0.25", "storage_path=s3://bucket/raypipe"])
    cfg = SweepConfig.from_config(run, "phase1")
    assert cfg.algorithm == "asha" and cfg.startup_trials == 1 and cfg.resources == {"cpu": 2.0, "gpu": 0.25}
    assert cfg.storage_path == "s3://bucket/raypipe"


@pytest.mark.parametrize("kw, key", [
    ({"algorithm": "hyperband"}, "automl.algorithm"),
    ({"metric": "accuracy"}, "automl.metric"),
    ({"num_trials": 0}, "automl_max_recommendations"),
    ({"noise_margin": -0.1}, "automl.noise_margin"),
    ({"resources_per_trial": {"cpu": 1, "gpu": 1.5}}, "resources_per_trial.gpu"),
    ({"resources_per_trial": {"cpu": 1, "tpu": 1}}, "resources_per_trial"),
    ({"max_concurrent_trials": 0}, "max_concurrent_trials"),
])
def test_invalid_settings_name_the_key(kw: dict, key: str) -> None:
    with pytest.raises(SweepConfigError, match=key.replace(".", r"\.")) as info:
        SweepConfig(**kw)
    assert isinstance(info.value, ConfigError)  # one error type: the config loader's


def test_a_sweep_built_in_code_follows_the_loaders_rules() -> None:
    """The same rules as the config file: a value the loader refuses is refused here too."""
    with pytest.raises(ConfigError, match=r"automl\.max_concurrent_trials"):
        load_config(None, ["automl.max_concurrent_trials=0"])
    with pytest.raises(SweepConfigError, match=r"automl\.max_concurrent_trials"):
        SweepConfig(max_concurrent_trials=0)


def test_unknown_phase() -> None:
    with pytest.raises(SweepConfigError, match="phase"):
        SweepConfig.from_config(load_config(), "phase2")
