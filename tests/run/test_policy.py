"""The run's execution policy: decided once, in TAO's words, honoured before Ray and MLflow start."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

import raypipe._ray
from raypipe import tao_interop as ti
from raypipe.config import load_config
from raypipe.run import main, recorded_policy, run_policy
from raypipe.rundir import RunDir
from tests.conftest import REPO


class _RayStarting(Exception):
    """Raised by the stand-in for ``ray_session``: the test has seen what it needs."""


def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No offline variable set, and whatever ``main`` sets is removed again after the test."""
    for name in ti.OFFLINE_PROCESS_ENV:
        monkeypatch.setenv(name, "x")  # recorded first: undone last, i.e. the variable is removed again
        monkeypatch.delenv(name)


def _record_ray_start(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    @contextlib.contextmanager
    def session(address: str | None = None, **kw: Any) -> Iterator[bool]:
        seen.update(environ=dict(os.environ), kw=kw)
        raise _RayStarting
        yield False  # unreachable: keeps this a generator

    monkeypatch.setattr(raypipe._ray, "ray_session", session)
    return seen


def _main(workspace: Path, *overrides: str) -> int:
    return main(["--config", str(REPO / "experiments" / "smoke.yaml"), "--workspace", str(workspace), "--dry-run",
                 *overrides])


def test_an_airgapped_run_sets_its_offline_environment_before_ray_starts(monkeypatch, tiny_workspace_template):
    _clean_environment(monkeypatch)
    seen = _record_ray_start(monkeypatch)
    with pytest.raises(_RayStarting):
        _main(tiny_workspace_template)
    # Ray's usage stats and MLflow's telemetry are off, TAO's offline variables on, before anything starts
    assert {k: seen["environ"].get(k) for k in ti.OFFLINE_PROCESS_ENV} == ti.OFFLINE_PROCESS_ENV
    assert seen["kw"]["env_vars"] == ti.OFFLINE_PROCESS_ENV  # and a joined cluster's workers get them too


def test_a_network_enabled_run_sets_none_of_them(monkeypatch, tiny_workspace_template):
    _clean_environment(monkeypatch)
    seen = _record_ray_start(monkeypatch)
    with pytest.raises(_RayStarting):
        _main(tiny_workspace_template, "execution_policy.network_mode=network-enabled")
    assert not set(ti.OFFLINE_PROCESS_ENV) & set(seen["environ"]) and seen["kw"]["env_vars"] == {}


def test_air_gapped_environment_refuses_network_enabled_before_anything_starts(monkeypatch, tiny_workspace_template,
                                                                                capsys):
    _clean_environment(monkeypatch)
    monkeypatch.setenv("AIR_GAPPED", "1")
    seen = _record_ray_start(monkeypatch)
    assert _main(tiny_workspace_template, "execution_policy.network_mode=network-enabled") == 1
    assert "AIR_GAPPED=1 is set in the environment" in capsys.readouterr().err and not seen


def test_the_old_policy_words_are_refused_with_taos(tiny_workspace_template, capsys):
    assert _main(tiny_workspace_template, "execution_policy.network_mode=offline") == 1
    assert "did you mean 'airgap'" in capsys.readouterr().err


def _saved_run(tmp_path: Path, policy: Any) -> RunDir:
    rd = RunDir(tmp_path / "run_1")
    rd.root.mkdir(parents=True)
    rd.config_yaml.write_text(yaml.safe_dump({"seed": 1, "resolved": {"execution_policy": policy}}))
    return rd


def test_a_resumed_run_keeps_the_policy_it_recorded(tmp_path, monkeypatch):
    monkeypatch.delenv("AIR_GAPPED", raising=False)
    online = ti.execution_policy("network-enabled", activation_source="config:execution_policy.network_mode")
    rd = _saved_run(tmp_path, online)
    assert recorded_policy(rd) == online
    assert run_policy(load_config(None, []), rd) == online  # TAO: the run's policy is immutable
    assert run_policy(load_config(None, []), None)["network_mode"] == "airgap"
    # a run dir from before the TAO words: nothing usable recorded, so the config decides
    old = _saved_run(tmp_path / "old", {"network_mode": "offline", "allow_container_pull": False})
    assert recorded_policy(old) is None and run_policy(load_config(None, []), old)["activation_source"] == "default"
