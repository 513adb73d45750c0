"""MLflow's console chatter: hidden by default, shown on request. Each case runs in its own
process: the switch sets process-wide state (environment, logger levels, warning filters)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CREATION_LINES = ("Creating initial MLflow database tables", "Updating database tables")


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow  # a real second process creates a store (~10-20 s on 2 shared cores)
def test_verbose_shows_what_the_default_hides(tmp_path: Path) -> None:
    code = ("from raypipe.tracking import set_mlflow_verbosity, start_pipeline_run\n"
            "set_mlflow_verbosity(verbose=True)\n"
            f"start_pipeline_run('sqlite:///{tmp_path}/v/mlflow.db', 'raypipe-aoi', '{tmp_path}/rd', {{}})\n")
    proc = _run(code, tmp_path)
    for line in CREATION_LINES:
        assert line in proc.stderr
    assert "Running upgrade" in proc.stderr  # alembic's migration log
    # (the default, quiet case is checked in-process in test_store.py, where the store is created anyway)


def test_quiet_reaches_mlflow_imported_later_and_child_processes(tmp_path: Path) -> None:
    code = (
        "import logging, os, subprocess, sys, warnings\n"
        "from raypipe.tracking import set_mlflow_verbosity\n"
        "set_mlflow_verbosity(verbose=False)\n"
        "assert 'mlflow' not in sys.modules  # the switch itself does not import MLflow\n"
        "import mlflow\n"
        "assert logging.getLogger('mlflow').getEffectiveLevel() == logging.ERROR\n"
        "assert logging.getLogger('alembic').getEffectiveLevel() == logging.ERROR\n"
        "logging.getLogger('mlflow.tracking').warning('MLFLOW-WARNING-LINE')\n"
        "logging.getLogger('mlflow.tracking').error('MLFLOW-ERROR-LINE')\n"
        "warnings.warn_explicit('MLFLOW-PY-WARNING', UserWarning, 'x.py', 1, module='mlflow.store.x')\n"
        "warnings.warn_explicit('OTHER-PY-WARNING', UserWarning, 'y.py', 1, module='raypipe.x')\n"
        "child = subprocess.run([sys.executable, '-c', 'import os; print(os.environ[\"MLFLOW_LOGGING_LEVEL\"], "
        "os.environ[\"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT\"])'], capture_output=True, text=True)\n"
        "print('child:', child.stdout.strip())\n"
    )
    proc = _run(code, tmp_path)
    assert "MLFLOW-WARNING-LINE" not in proc.stderr and "MLFLOW-PY-WARNING" not in proc.stderr
    assert "MLFLOW-ERROR-LINE" in proc.stderr and "OTHER-PY-WARNING" in proc.stderr  # errors and others still show
    assert "child: ERROR true" in proc.stdout
