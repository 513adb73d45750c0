"""The typed run config: layering, "did you mean", and every invalid value refused at load with its key and source."""

from __future__ import annotations

import pickle

import pytest

from raypipe.config import ConfigError, RunConfig, build_config, load_config, package_defaults, read_saved_config


def test_layering_defaults_file_overrides(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("phase2:\n  max_iterations: 5\nautoml:\n  max_concurrent_trials: 1\n")
    cfg = load_config(f, ["phase2.max_iterations=2", "spec_overrides.train.num_epochs=1", "seed=7"])
    assert cfg.phase2.max_iterations == 2  # override beats file
    assert cfg.automl.max_concurrent_trials == 1  # file beats defaults
    assert cfg.spec_overrides["train.num_epochs"] == 1
    assert cfg.seed == 7
    assert cfg.phase1.model_dump() == package_defaults()["phase1"]


def test_the_defaults_file_is_the_whole_schema():
    """Every key of defaults.yaml is a key of the typed tree and vice versa: one source of defaults."""
    from raypipe.spec import flatten

    defaults = load_config()
    open_sections = ("spec_overrides.", "automl.search_space.", "phase2.metric_contract.", "phase2.train_overrides",
                     "phase2.sdg.recipes")
    typed = {k for k in flatten(defaults.model_dump()) if not k.startswith(open_sections)}
    written = {k for k in flatten(package_defaults()) if not k.startswith(open_sections)}
    assert typed == written


def test_nodes_are_frozen_and_picklable():
    cfg = load_config()
    with pytest.raises(ValueError, match="frozen"):
        cfg.phase2.max_iterations = 9  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(cfg)) == cfg  # it crosses into Ray actors and tasks
    changed = cfg.replace(seed=3)
    assert changed.seed == 3 and cfg.seed == 42
    with pytest.raises(Exception, match="seed"):
        cfg.replace(seed=-1)  # replace validates like a load


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
    assert cfg.tracking.enabled is False
    assert cfg.automl.resources_per_trial.gpu == 0.5
    assert cfg.ray_address is None


@pytest.mark.parametrize("override, key", [
    ("automl.max_concurrent_trials=0", "automl.max_concurrent_trials"),
    ("phase2.sdg.num_SDG=-5", "phase2.sdg.num_SDG"),
    ("phase2.mining_filter.min_similarity=5", "phase2.mining_filter.min_similarity"),
    ("device=tpu", "device"),
    ("seed=abc", "seed"),
    ("automl.resources_per_trial.gpu=-1", "automl.resources_per_trial.gpu"),
    ("automl.resources_per_trial.gpu=1.5", "automl.resources_per_trial.gpu"),
    ("phase2.sdg.kind=anomalygen", "phase2.sdg.kind"),
    ("automl.algorithm=hyperband", "automl.algorithm"),
    ("phase2.max_iterations=0", "phase2.max_iterations"),
    ("phase2.max_iterations=2.5", "phase2.max_iterations"),
    ("phase2.rca.min_recall=0", "phase2.rca.min_recall"),
    ("automl.noise_margin=-0.1", "automl.noise_margin"),
    ("tao.val_scoring=fast", "tao.val_scoring"),
    ("tao.gpus=several", "tao.gpus"),
    ("tao.env_allowlist=[NGC_KEY]", "tao.env_allowlist"),
    ("execution_policy.network_mode=airgap-ish", "execution_policy.network_mode"),
    ("phase2.sdg.recipes={missing: blob}", "phase2.sdg.recipes"),
    ("phase2.metric_contract.operator=~", "phase2.metric_contract"),
    ("spec_overrides.train..lr=1", "spec_overrides"),
    ("automl.search_space.train.optim.lr={valid_min: 2, valid_max: 1}", "automl.search_space"),
    ("preflight.t_trial_s=0", "preflight.t_trial_s"),
])
def test_invalid_values_fail_at_load_naming_key_and_source(override, key):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert str(info.value).startswith(f"override '{override}': {key}:"), str(info.value)


def test_sdg_kind_anomalygen_with_builtin_backend_fails_at_load_not_after_phase1(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text("backend: builtin\nphase2:\n  sdg:\n    kind: anomalygen\n")
    with pytest.raises(ConfigError, match=r"exp.yaml: phase2.sdg.kind: 'anomalygen' .* not wired"):
        load_config(f)


def test_cross_key_rule_blames_the_layer_that_broke_it(tmp_path):
    # The file's 'model' embedder is fine for builtin; switching the backend to tao breaks the rule.
    f = tmp_path / "exp.yaml"
    f.write_text("phase2:\n  mining_filter:\n    embedder: model\n")
    with pytest.raises(ConfigError, match=r"^override 'backend=tao': phase2.mining_filter.embedder: 'model'"):
        load_config(f, ["backend=tao"])
    cfg = load_config(f, ["backend=tao", "phase2.mining_filter.embedder=pixels"])
    assert cfg.backend == "tao" and cfg.tao.image
    assert load_config(None, ["backend=tao"]).phase2.mining_filter.embedder == "imagenet"  # the default suits both


def test_removed_keys_say_why():
    with pytest.raises(ConfigError, match=r"'phase2.mining_filter.metric' was removed: mining always .* cosine"):
        load_config(None, ["phase2.mining_filter.metric=cosine"])
    with pytest.raises(ConfigError, match=r"'phase2.mining_filter.history_aware' was removed"):
        load_config(None, ["phase2.mining_filter.history_aware.enabled=false"])


def test_a_saved_config_of_an_older_run_still_loads(tmp_path):
    import yaml

    old = package_defaults()
    old["phase2"]["mining_filter"]["metric"] = "cosine"
    old["phase2"]["mining_filter"]["history_aware"] = {"enabled": True, "identity": "filepath"}
    old["resolved"] = {"run_dir": "/x"}
    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump(old))
    cfg = build_config([], base=read_saved_config(saved), base_source=str(saved))
    assert isinstance(cfg, RunConfig) and cfg == load_config()


def test_exponent_without_dot_is_a_number():
    cfg = load_config(None, ["spec_overrides.train.optim.lr=1e-4"])
    assert cfg.spec_overrides["train.optim.lr"] == 1e-4


def test_experiment_profiles_load():
    from pathlib import Path

    for profile in sorted((Path(__file__).resolve().parents[2] / "experiments").glob("*.yaml")):
        load_config(profile)
