from __future__ import annotations

from pathlib import Path

import pytest
from tao_run_fixture import build_run_dir


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A finished run dir written with raypipe.tao_interop (fresh per test: tests mutate it)."""
    return build_run_dir(tmp_path)
