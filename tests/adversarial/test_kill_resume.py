"""Kill anywhere: one smoke run stopped at six moments by SIGKILL (two in its start-up: the first
second, the new run dir) and once by Ctrl-C, each time continued with ``--resume``, until it
completes; two runs on one workspace. (A kill at the gate needs no moment of its own: nothing is
written before approval, which ``tests/run/test_gate.py`` checks; a kill while the MLflow store is
created is ``tests/tracking/test_store.py``'s.)

One chain shares one pipeline run (a smoke run costs minutes on 2 cores): kill at moment 1, start
again or resume and kill at moment 2, … , and finally resume to completion. After every kill the
state files must be readable and consistent; at the end the run must be exactly as complete as an
uninterrupted one (no lost or duplicated events, trials or training rows), and every file of the
workspace outside ``results/`` byte-identical to before.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.run._artifacts import check_complete_run, find_run_dir

from ._harness import TRACEBACK, snapshot
from ._runner import TIMEOUT, Runner, check_consistent, read_json, run_args

pytestmark = pytest.mark.slow


def _outside_results(ws: Path) -> dict[str, str]:
    return {k: v for k, v in snapshot(ws).items() if k != "results" and not k.startswith("results/")}


def _second_run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "raypipe.run", *args], cwd=cwd, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=TIMEOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_kill_at_every_moment_then_resume_to_completion(tiny_workspace: Path, tmp_path: Path) -> None:
    ws = tiny_workspace
    before = _outside_results(ws)
    runner = Runner(tmp_path, tmp_path / "runs.log")
    new = run_args(ws)
    try:
        # 0. In its first second (the interpreter starting, imports): nothing is left behind.
        untouched = snapshot(ws)
        runner.kill_when(new, lambda: True, "the start")
        assert snapshot(ws) == untouched

        # 1. Right after the run dir appeared: it holds every starting file, and no staging dir is left.
        runner.kill_at(new, "run_dir")
        rd = find_run_dir(ws)
        for name in ("config.yaml", "run_spec.yaml", "pipeline_state.json", "preflight.md"):
            assert (rd / name).is_file(), name
        assert not [p.name for p in (ws / "results").iterdir() if p.name.endswith(".partial")]
        check_consistent(rd)
        resume = run_args(ws, "--resume", str(rd))[4:]  # --yes --resume RD (the workspace comes from RD)

        # 2. During Phase 1's first trial (in a Ray worker: the whole run goes down). This resume took
        #    over the lock the killed run left.
        out = runner.kill_at(resume, "phase1_trial")
        assert "stale workspace lock taken over" in out and "is gone" in out, out[-3000:]
        assert check_consistent(rd)["phases"]["phase1"]["status"] == "in_progress"

        # 3. Mid-DEFT: iteration 1's training did its work, its evidence is not committed. A partial
        #    checkpoint a killed training might leave must not survive the redo.
        runner.kill_at(resume, "deft_commit:train")
        check_consistent(rd)
        (rd / "iter1" / "train" / "model_epoch_009_step_00999.pth").write_bytes(b"partial leftover of the killed run")

        # 4. During Phase 3: a refinement trial is training.
        runner.kill_at(resume, "final_automl_trial")
        assert check_consistent(rd)["phases"]["phase3"]["status"] == "in_progress"

        # Ctrl-C at the final scoring, with a second run and a second resume against the held lock
        # (two real processes).
        marker = tmp_path / "paused"
        proc = runner.pause_at(resume, "phase3_finalize", marker)
        me = proc.pid
        second = _second_run(new, tmp_path)
        assert second.returncode == 1, second.stdout[-2000:] + second.stderr[-2000:]
        refusal = second.stderr
        assert "in use by another raypipe run" in refusal and f"PID {me}" in refusal, refusal
        assert f"host {socket.gethostname()}" in refusal and str(rd) in refusal, refusal
        assert len(list((ws / "results").glob("run_*"))) == 1, "the refused run created a run dir"
        again = _second_run(resume, tmp_path)
        assert again.returncode == 1 and f"PID {me}" in again.stderr, again.stderr
        m = runner.mark()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=TIMEOUT) == 130
        out = runner.output_since(m)
        assert TRACEBACK not in out, out[-4000:]
        assert f"python -m raypipe.run --resume {rd}" in out
        assert check_consistent(rd)["status"] == "interrupted"

        # 5. After the run was marked complete, before its MLflow run was closed.
        out = runner.kill_at(resume, "complete")
        assert "stale workspace lock" not in out, "Ctrl-C left the lock record behind"
        assert check_consistent(rd)["status"] == "complete"

        # A complete run is never redone or downgraded: --resume says so and changes nothing.
        done = snapshot(rd)
        rc, out = runner.finish(resume)
        assert rc == 0 and "this run is complete" in out, out[-3000:]
        assert snapshot(rd) == done
    finally:
        runner.cleanup()
    state = check_complete_run(rd)
    # Every interrupted stage was redone exactly once; every Phase 1 and Phase 3 trial is listed once.
    assert sum(1 for e in state["events"] if e["stage"] == "train" and e["iter"] == "iter1" and e["status"] == "ok") == 1
    kept = sorted(p.name for p in (rd / "iter1" / "train").glob("*.pth"))
    assert kept == [Path(state["iterations"]["iter1"]["best_ckpt_path"]).name]  # the leftover was replaced
    assert read_json(rd / "pipeline_state.json")["status"] == "complete"
    assert _outside_results(ws) == before, "the run wrote into the workspace outside results/"
