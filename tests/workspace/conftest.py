from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def image_cache_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("xdg_cache")


@pytest.fixture(autouse=True)
def _private_image_cache(image_cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The image check caches in $XDG_CACHE_HOME/raypipe: keep the tests' entries out of ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(image_cache_home))


def add_sealed_test_split(ws: Path) -> Path:
    """Move half of each KPI label's rows to ``test/testing_set.csv`` (the demo does not write one
    yet): both sets keep PASS and defect rows, and no image is shared."""
    from raypipe.workspace import CSV_FILES, TEST_CSV, read_rows, write_rows

    kpi = read_rows(ws / CSV_FILES["kpi"])
    to_test = kpi.groupby("label", sort=False).cumcount() % 2 == 1
    write_rows(kpi[~to_test], ws / CSV_FILES["kpi"])
    write_rows(kpi[to_test], ws / TEST_CSV)
    return ws


@pytest.fixture(scope="session")
def small_workspace_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smaller demo than the shared ``tiny_workspace`` (scale 0.02: every split still has every
    defect kind) with a sealed test split: the check tests copy it once per test, so its file count
    is their setup cost."""
    from raypipe.workspace import generate_demo

    return add_sealed_test_split(generate_demo(tmp_path_factory.mktemp("ws_small") / "ws", seed=5, scale=0.02))


@pytest.fixture
def small_workspace(small_workspace_template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(small_workspace_template, tmp_path / "ws", symlinks=True))
