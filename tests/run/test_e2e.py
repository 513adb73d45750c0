"""End to end: ``python -m raypipe.run`` on the smoke profile, and SIGKILL + ``--resume`` in each phase."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import REPO
from tests.run._artifacts import check_complete_run, find_run_dir
from tests.run._mlflow_checks import check_store
from tests.tracking._server import post_json, running_mlflow_server

pytestmark = pytest.mark.slow
TIMEOUT = 900


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "raypipe.run", *args]


def _popen(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    # A new session so that the test can clean up everything the run started (Ray's own processes).
    return subprocess.Popen(args, cwd=cwd, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def _wait_for(cond: Callable[[], bool], proc: subprocess.Popen, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if proc.poll() is not None:
            raise AssertionError(f"run exited ({proc.returncode}) before {what}")
        time.sleep(0.2)  # polling interval of a bounded wait, not synchronisation by sleeping
    raise AssertionError(f"timed out waiting for {what}")


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def test_smoke_run_end_to_end(tiny_workspace, tmp_path):
    log = tmp_path / "run.log"
    secret = "ngc-" + secrets.token_hex(16)  # planted credential: must appear nowhere in the store
    proc = subprocess.run(_cmd("--config", str(REPO / "experiments" / "smoke.yaml"), "--workspace",
                               str(tiny_workspace), "--yes"), cwd=tmp_path, capture_output=True, text=True,
                          timeout=TIMEOUT, stdin=subprocess.DEVNULL, env={**os.environ, "NGC_KEY": secret})
    log.write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rd = find_run_dir(tiny_workspace)
    check_complete_run(rd)
    assert "Phase 3 best" in proc.stdout and str(rd / "best_model.json") in proc.stdout
    # What the user reads: every phase under its own name, each DEFT stage as it commits, a closing
    # summary, and none of the libraries' chatter (Ray worker prefixes, the end-of-sweep SIGTERM
    # traceback, MLflow's store creation) or Python dicts.
    out = proc.stdout + proc.stderr
    for phase in ("Phase 1", "Phase 2", "Phase 3"):
        assert f"  {phase}   " in proc.stdout, phase
    assert " evaluate " in proc.stdout and " rca " in proc.stdout and "[final_automl]" not in out
    assert "Run complete" in proc.stdout and "total time" in proc.stdout and "mlflow ui" in proc.stdout
    for chatter in ("(pid=", "Exception ignored", "SystemExit", "Creating initial MLflow", "{'PASS'", "## 1."):
        assert chatter not in out, chatter

    # The delivered model scores new data on its own.
    out = tmp_path / "scored"
    p = subprocess.run([sys.executable, "-m", "raypipe.infer", "--best-model", str(rd / "best_model.json"),
                        "--csv", str(tiny_workspace / "kpi" / "testing_set.csv"),
                        "--images-dir", str(tiny_workspace / "images"), "--output-dir", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    result = json.loads((out / "metric_result.json").read_text())
    best = json.loads((rd / "best_model.json").read_text())
    assert result["value"] == pytest.approx(best["far_pct"])

    # MLflow: the default store is a sqlite db inside ./mlruns of the working directory.
    store = tmp_path / "mlruns"
    uri = f"sqlite:///{store / 'mlflow.db'}"
    check_store(uri, rd, phase1_trials=2, epochs=1, secret=secret, store_dir=store)
    # The same store through `mlflow server` and its REST API.
    with running_mlflow_server(uri, store / "artifacts", tmp_path) as url:
        found = post_json(f"{url}/api/2.0/mlflow/runs/search",
                          {"experiment_ids": [e["experiment_id"] for e in post_json(
                              f"{url}/api/2.0/mlflow/experiments/search", {"max_results": 100})["experiments"]],
                           "max_results": 1000})["runs"]
    names = {r["info"]["run_name"] for r in found}
    assert {"phase1", "phase2", "phase3", "iter1"} <= names
    assert sum(1 for r in found if any(t["key"] == "mlflow.parentRunId" for t in r["data"].get("tags", []))) >= 6


def test_sigkill_in_each_phase_then_resume(tiny_workspace, tmp_path):
    log = tmp_path / "run.log"
    args = _cmd("--config", str(REPO / "experiments" / "smoke.yaml"), "--workspace", str(tiny_workspace), "--yes")
    proc = _popen(args, tmp_path, log)
    try:
        # Phase 1: at least one trial has reported, but the sweep is not finished.
        _wait_for(lambda: (tiny_workspace / "results").exists() and any(
            (tiny_workspace / "results").glob("run_*/phase1_automl/*/*/progress.csv")), proc, "a Phase 1 trial")
        _kill(proc)
        rd = find_run_dir(tiny_workspace)
        assert _json(rd / "pipeline_state.json")["phases"]["phase1"]["status"] == "in_progress"

        # Phase 2: killed in the middle of the first iteration.
        proc = _popen(_cmd("--resume", str(rd)), tmp_path, log)
        _wait_for(lambda: any(e.get("stage") == "anomalygen" for e in _json(rd / "deft_state.json").get("events", [])),
                  proc, "the iter1 anomalygen commit")
        _kill(proc)

        # Phase 3: a refinement trial has started.
        proc = _popen(_cmd("--resume", str(rd)), tmp_path, log)
        _wait_for(lambda: _json(rd / "pipeline_state.json").get("phases", {}).get("phase3", {}).get("status")
                  == "in_progress" and any((rd / "final_automl").glob("*/*/progress.csv")), proc, "a Phase 3 trial")
        _kill(proc)

        proc = _popen(_cmd("--resume", str(rd)), tmp_path, log)
        assert proc.wait(timeout=TIMEOUT) == 0, log.read_text()[-4000:]
    finally:
        _kill(proc)
    state = check_complete_run(rd)
    # The interrupted stage was redone once: exactly one ok event per (iteration, stage).
    assert sum(1 for e in state["events"] if e["stage"] == "anomalygen" and e["status"] == "ok") == 1
