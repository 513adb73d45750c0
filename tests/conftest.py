from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Every Ray client in tests (driver, subprocesses, multi-node) agrees on one auth mode: Ray refuses a
# client whose RAY_AUTH_MODE differs from the cluster's.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

# The image check and the embedding cache write under $XDG_CACHE_HOME/raypipe: tests (and the
# subprocesses and Ray workers they start, which inherit the variable) keep theirs in a temporary
# directory instead of the user's ~/.cache. Set before any test imports raypipe.
_CACHE_HOME = tempfile.mkdtemp(prefix="raypipe_test_cache_")
os.environ["XDG_CACHE_HOME"] = _CACHE_HOME
atexit.register(shutil.rmtree, _CACHE_HOME, ignore_errors=True)


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
