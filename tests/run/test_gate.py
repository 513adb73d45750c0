"""The pre-flight gate: nothing is written before the summary is approved."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from tests.conftest import REPO


def _run(args: list[str], cwd: Path, stdin=subprocess.DEVNULL, timeout=240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "raypipe.run", *args], cwd=cwd, capture_output=True, text=True,
                          stdin=stdin, env=env, timeout=timeout)


def _smoke_args(ws: Path) -> list[str]:
    return ["--config", str(REPO / "experiments" / "smoke.yaml"), "--workspace", str(ws), "tracking.enabled=false"]


def test_non_tty_without_yes_exits_2_and_writes_nothing(tiny_workspace, tmp_path):
    p = _run(_smoke_args(tiny_workspace), cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    assert "--yes" in p.stderr
    out = p.stdout
    # All nine sections, in order, rendered for a terminal (RD/preflight.md keeps the Markdown).
    from raypipe.preflight import SECTION_TITLES

    positions = [out.index(f"\n{title}\n") for title in SECTION_TITLES]
    assert positions == sorted(positions) and len(positions) == 9
    assert "## " not in out and "\x1b[" not in out
    assert "0 overlapping rows" in out
    assert not (tiny_workspace / "results").exists() or not any((tiny_workspace / "results").iterdir())
    assert not (tmp_path / "mlruns").exists()


def test_dry_run_writes_nothing(tiny_workspace, tmp_path):
    before = sorted(p.relative_to(tiny_workspace) for p in tiny_workspace.rglob("*"))
    p = _run(_smoke_args(tiny_workspace) + ["--dry-run", "--yes"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    after = sorted(p.relative_to(tiny_workspace) for p in tiny_workspace.rglob("*"))
    assert after == before
    assert "Compute estimate" in p.stdout


def test_leakage_blocker_stops_before_anything_is_written(tiny_workspace, tmp_path):
    train = tiny_workspace / "train" / "base" / "training_set.csv"
    val = pd.read_csv(tiny_workspace / "train" / "base" / "validation_set.csv", dtype=str, keep_default_na=False)
    leaked = pd.concat([pd.read_csv(train, dtype=str, keep_default_na=False), val.head(1)])
    leaked.to_csv(train, index=False)
    p = _run(_smoke_args(tiny_workspace) + ["--yes"], cwd=tmp_path)
    assert p.returncode == 1
    assert "BLOCKER" in p.stdout and "leakage" in p.stdout.lower()
    assert not (tiny_workspace / "results").exists()


def test_unknown_config_key_names_closest(tmp_path):
    p = _run(["phase2.max_iteration=2", "--dry-run"], cwd=tmp_path)
    assert p.returncode == 1
    assert "did you mean 'phase2.max_iterations'" in p.stderr
