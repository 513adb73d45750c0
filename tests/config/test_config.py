from __future__ import annotations

import pytest

from raypipe.config import ConfigError, load_config, package_defaults


def test_layering_defaults_file_overrides(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("phase2:\n  max_iterations: 5\nautoml:\n  max_concurrent_trials: 1\n")
    cfg = load_config(f, ["phase2.max_iterations=2", "spec_overrides.train.num_epochs=1", "seed=7"])
    assert cfg["phase2"]["max_iterations"] == 2  # override beats file
    assert cfg["automl"]["max_concurrent_trials"] == 1  # file beats defaults
    assert cfg["spec_overrides"]["train.num_epochs"] == 1
    assert cfg["seed"] == 7
    assert cfg["phase1"] == package_defaults()["phase1"]


@pytest.mark.parametrize("override, suggestion", [
    ("phase2.max_iteration=2", "phase2.max_iterations"),
    ("tracking.uri=x", "tracking.tracking_uri"),
    ("bakend=tao", "backend"),
])
def test_unknown_keys_name_closest(override, suggestion):
    with pytest.raises(ConfigError, match=f"did you mean '{suggestion}'"):
        load_config(None, [override])


def test_unknown_key_in_file_names_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("automl:\n  algoritm: random\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'automl.algoritm'"):
        load_config(f)


def test_values_parsed_as_yaml_scalars():
    cfg = load_config(None, ["tracking.enabled=false", "automl.resources_per_trial.gpu=0.5", "ray_address=null"])
    assert cfg["tracking"]["enabled"] is False
    assert cfg["automl"]["resources_per_trial"]["gpu"] == 0.5
    assert cfg["ray_address"] is None


def test_invalid_values_refused():
    with pytest.raises(ConfigError, match="automl.algorithm"):
        load_config(None, ["automl.algorithm=hyperband"])
    with pytest.raises(ConfigError, match="phase2.max_iterations"):
        load_config(None, ["phase2.max_iterations=0"])


def test_exponent_without_dot_is_a_number():
    cfg = load_config(None, ["spec_overrides.train.optim.lr=1e-4"])
    assert cfg["spec_overrides"]["train.optim.lr"] == 1e-4
