from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Every Ray client in tests (driver, subprocesses, multi-node) agrees on one auth mode (STACK.md).
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


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
