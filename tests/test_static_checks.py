"""ruff and mypy, with the settings in ``pyproject.toml``, run by the test command (so CI runs them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_ruff() -> None:
    proc = _run("ruff", "check", "raypipe", "tests", "benchmarks")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


@pytest.mark.slow
def test_mypy() -> None:
    proc = _run("mypy")  # files and options: [tool.mypy] in pyproject.toml
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
