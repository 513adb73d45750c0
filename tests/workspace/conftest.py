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


@pytest.fixture(scope="session")
def small_workspace_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smaller demo than the shared ``tiny_workspace`` (scale 0.02: every split still has every
    defect kind) with a sealed test split: the check tests copy it once per test, so its file count
    is their setup cost."""
    from raypipe.workspace import generate_demo

    return generate_demo(tmp_path_factory.mktemp("ws_small") / "ws", seed=5, scale=0.02)


@pytest.fixture
def small_workspace(small_workspace_template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(small_workspace_template, tmp_path / "ws", symlinks=True))
