"""``python -m raypipe.run``'s config: a new run's layers; ``--resume`` re-opens the gate only on a change."""

from __future__ import annotations

from pathlib import Path

import pytest

from raypipe.config import ConfigError, dump_config, load_config
from raypipe.run import _parser, resolve_config
from raypipe.rundir import RunDir
from tests.conftest import REPO


def _saved_run(tmp_path: Path) -> RunDir:
    rd = RunDir(tmp_path / "results" / "run_20260101_000000")
    rd.root.mkdir(parents=True)
    cfg = load_config(None, ["phase2.max_iterations=2", f"workspace={tmp_path}"])
    rd.config_yaml.write_text(dump_config(cfg, resolved={"run_dir": str(rd.root)}))
    return rd


def test_new_run_layers_and_workspace(tmp_path: Path) -> None:
    cfg, changed = resolve_config(_parser().parse_args(["--workspace", str(tmp_path), "seed=3"]))
    assert changed and cfg.workspace == str(tmp_path) and cfg.seed == 3


def test_without_config_the_laptop_profile_applies_wherever_the_command_runs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no experiments/ here: the profile comes with the package
    cfg, _ = resolve_config(_parser().parse_args(["--workspace", str(tmp_path)]))
    laptop = load_config(REPO / "experiments" / "aoi_default.yaml", [])
    assert cfg.phase2.contract.target == laptop.phase2.contract.target != load_config(None, []).phase2.contract.target
    assert cfg.phase1.automl_max_recommendations == laptop.phase1.automl_max_recommendations


def test_resume_without_changes_keeps_the_gate_closed(tmp_path: Path) -> None:
    rd = _saved_run(tmp_path)
    cfg, changed = resolve_config(_parser().parse_args(["--resume", str(rd.root)]))
    assert not changed and cfg.phase2.max_iterations == 2 and cfg.workspace == str(tmp_path)
    cfg, changed = resolve_config(_parser().parse_args(["--resume", str(rd.root), "--ray-address", "auto"]))
    assert not changed and cfg.ray_address == "auto"  # joining another cluster is not a new plan
    cfg, changed = resolve_config(_parser().parse_args(["--resume", str(rd.root), "phase2.max_iterations=2"]))
    assert not changed  # the same value again


def test_resume_with_a_new_value_reopens_the_gate(tmp_path: Path) -> None:
    rd = _saved_run(tmp_path)
    cfg, changed = resolve_config(_parser().parse_args(["--resume", str(rd.root), "phase2.max_iterations=3"]))
    assert changed and cfg.phase2.max_iterations == 3
    assert cfg.seed == 42  # untouched keys keep the saved run's values


def test_resume_refuses_a_dir_without_config_and_names_the_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a raypipe run dir"):
        resolve_config(_parser().parse_args(["--resume", str(tmp_path)]))
    rd = _saved_run(tmp_path)
    with pytest.raises(ConfigError, match=r"^override 'seed=-3': seed:"):
        resolve_config(_parser().parse_args(["--resume", str(rd.root), "seed=-3"]))


def test_help_explains_overrides_with_examples() -> None:
    text = _parser().format_help()
    assert "key.path=value overrides" in text and "phase2.max_iterations=2" in text and "exit codes" in text
    assert "--time-budget" in text and "--dashboard" in text and "--verbose" in text


def test_time_budget_flag_is_a_config_layer(tmp_path: Path) -> None:
    cfg, _ = resolve_config(_parser().parse_args(["--workspace", str(tmp_path), "--time-budget", "1h30m"]))
    assert cfg.time_budget_s == 5400.0
    with pytest.raises(ConfigError, match="time_budget"):
        resolve_config(_parser().parse_args(["--workspace", str(tmp_path), "--time-budget", "soon"]))
