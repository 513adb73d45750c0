"""Real ``python -m raypipe.run`` processes for the kill tests: start, stop at a named moment, resume.

A moment is hit by the run's own test hook (``RAYPIPE_TEST_KILL_AT``/``RAYPIPE_TEST_PAUSE_AT``,
:mod:`raypipe._testhook`) or by watching for a file the run writes; never by sleeping a guessed
time. Every run starts in a new session, so a kill takes its Ray processes with it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import REPO

TIMEOUT = 600
KILLED = -signal.SIGKILL


def run_args(ws: Path, *extra: str) -> list[str]:
    return ["--config", str(REPO / "experiments" / "smoke.yaml"), "--workspace", str(ws), "--yes", *extra]


@dataclass
class Runner:
    """Starts runs in ``cwd`` (where ``mlruns/`` goes) and keeps every run's output in ``log``."""

    cwd: Path
    log: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, args: list[str], **env: str) -> subprocess.Popen[bytes]:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as fh:
            fh.write(f"\n===== raypipe.run {' '.join(args)} {env}\n".encode())
        # The log file is handed to the child and closed here: the child keeps its own descriptor.
        with open(self.log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "raypipe.run", *args], cwd=self.cwd, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1", **env})
        self.procs.append(proc)
        return proc

    def output_since(self, marker: int) -> str:
        return self.log.read_bytes()[marker:].decode("utf-8", "replace")

    def mark(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def kill_at(self, args: list[str], point: str) -> str:
        """Run until the hook kills it at ``point``; returns the run's output."""
        m = self.mark()
        proc = self.start(args, RAYPIPE_TEST_KILL_AT=point)
        rc = proc.wait(timeout=TIMEOUT)
        out = self.output_since(m)
        assert rc == KILLED, f"expected the hook to SIGKILL the run at {point}, got exit {rc}\n{out[-4000:]}"
        kill_group(proc)
        return out

    def kill_when(self, args: list[str], cond: Callable[[], bool], what: str) -> str:
        """Run until ``cond()`` holds (polled), then SIGKILL the run's whole process group."""
        m = self.mark()
        proc = self.start(args)
        wait_for(cond, proc, what)
        kill_group(proc)
        return self.output_since(m)

    def pause_at(self, args: list[str], point: str, marker: Path) -> subprocess.Popen[bytes]:
        """Start a run that stops at ``point`` and return it once it is there."""
        proc = self.start(args, RAYPIPE_TEST_PAUSE_AT=point, RAYPIPE_TEST_PAUSE_FILE=str(marker))
        wait_for(marker.is_file, proc, f"the pause at {point}")
        return proc

    def finish(self, args: list[str]) -> tuple[int, str]:
        m = self.mark()
        proc = self.start(args)
        rc = proc.wait(timeout=TIMEOUT)
        return rc, self.output_since(m)

    def cleanup(self) -> None:
        for proc in self.procs:
            kill_group(proc)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def wait_for(cond: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run exited ({proc.returncode}) before {what}")
        time.sleep(0.1)  # the polling interval of a bounded wait, not synchronisation by sleeping
    raise AssertionError(f"timed out waiting for {what}")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def check_consistent(rd: Path) -> dict:
    """What must hold after any kill: state files readable, DEFT events numbered without gaps and
    no (iteration, stage) committed twice."""
    ps = read_json(rd / "pipeline_state.json")
    assert ps["status"] in ("in_progress", "interrupted", "complete"), ps
    if (rd / "deft_state.json").exists():
        events = read_json(rd / "deft_state.json")["events"]
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), events
        ok = Counter((e["iter"], e["stage"]) for e in events if e["status"] == "ok")
        assert not ok or max(ok.values()) == 1, f"a stage committed twice: {ok}"
    return ps
