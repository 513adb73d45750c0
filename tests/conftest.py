from __future__ import annotations

import atexit
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Every Ray client in tests (driver, subprocesses, multi-node) agrees on one auth mode: Ray 2.60
# refuses a client whose RAY_AUTH_MODE differs from the cluster's.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

# The image check and the embedding cache write under $XDG_CACHE_HOME/raypipe: tests (and the
# subprocesses and Ray workers they start, which inherit the variable) keep theirs in a temporary
# directory instead of the user's ~/.cache. Set before any test imports raypipe.
_CACHE_HOME = tempfile.mkdtemp(prefix="raypipe_test_cache_")
os.environ["XDG_CACHE_HOME"] = _CACHE_HOME
atexit.register(shutil.rmtree, _CACHE_HOME, ignore_errors=True)


@pytest.fixture(autouse=True)
def _environment_restored():
    """A test that calls ``raypipe.run.main`` in-process leaves the run's environment (the execution
    policy's offline variables) behind; later tests, and the subprocesses they start, must not
    inherit it."""
    saved = dict(os.environ)
    yield
    if dict(os.environ) != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def tiny_workspace_template(tmp_path_factory) -> Path:
    """One tiny demo workspace per test session; tests copy it (``tiny_workspace``) before mutating."""
    from raypipe.workspace import generate_demo

    root = tmp_path_factory.mktemp("demo_template") / "ws"
    generate_demo(root, seed=0, scale=0.1)
    return root


@pytest.fixture
def tiny_workspace(tiny_workspace_template, tmp_path) -> Path:
    dst = tmp_path / "ws"
    shutil.copytree(tiny_workspace_template, dst)
    return dst


@dataclass(frozen=True)
class SmokeRun:
    """A finished ``python -m raypipe.run`` of the smoke profile (see :func:`smoke_run`)."""

    workspace: Path
    cwd: Path  # the run's working directory: its MLflow store is ./mlruns there
    proc: subprocess.CompletedProcess[str]
    secret: str  # the NGC_KEY planted in the run's environment: it must appear nowhere

    @property
    def run_dir(self) -> Path:
        runs = sorted((self.workspace / "results").glob("run_*"))
        assert len(runs) == 1, runs
        return runs[0]

    @property
    def store(self) -> Path:
        return self.cwd / "mlruns"  # MLflow's default store: ./mlruns of the working directory

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.store / 'mlflow.db'}"


def run_smoke(template: Path, root: Path) -> SmokeRun:
    """``python -m raypipe.run`` on the smoke profile, on a fresh copy of the tiny demo workspace."""
    ws, cwd = root / "ws", root / "cwd"
    shutil.copytree(template, ws)
    cwd.mkdir()
    secret = "ngc-" + secrets.token_hex(16)
    proc = subprocess.run([sys.executable, "-m", "raypipe.run", "--config", str(REPO / "experiments" / "smoke.yaml"),
                           "--workspace", str(ws), "--yes"], cwd=cwd, capture_output=True, text=True, timeout=900,
                          stdin=subprocess.DEVNULL, env={**os.environ, "NGC_KEY": secret})
    (cwd / "run.log").write_text(proc.stdout + proc.stderr)
    return SmokeRun(ws, cwd, proc, secret)


@pytest.fixture(scope="session")
def smoke_run(tiny_workspace_template, tmp_path_factory) -> SmokeRun:
    """ONE smoke-profile pipeline run per test session, shared by every test that reads a finished
    run dir (the end-to-end checks, TAO's contract): CI has 15 minutes on 2 cores for the whole suite.
    Tests must leave its files as they found them (a resume
    test deletes scoring outputs that its --resume then rewrites)."""
    return run_smoke(tiny_workspace_template, tmp_path_factory.mktemp("smoke_run"))
