from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Every Ray client in tests (driver, subprocesses, multi-node) agrees on one auth mode (STACK.md).
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def add_sealed_test_split(ws: Path) -> Path:
    """Give a demo workspace a sealed test split (when it has none): half of each KPI label's rows
    move to ``test/testing_set.csv``, so both sets keep PASS and defect rows and share no image."""
    from raypipe.workspace import CSV_FILES, TEST_CSV, read_rows, write_rows

    if (ws / TEST_CSV).is_file():
        return ws
    kpi = read_rows(ws / CSV_FILES["kpi"])
    to_test = kpi.groupby("label", sort=False).cumcount() % 2 == 1
    write_rows(kpi[~to_test], ws / CSV_FILES["kpi"])
    write_rows(kpi[to_test], ws / TEST_CSV)
    return ws


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
