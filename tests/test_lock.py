"""One run per workspace, tested with real processes: refusal names the holder, SIGKILL frees the
lock, a stale record is explained and taken over, and exactly one of many racing runs wins."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from raypipe._lock import (
    LOCK_FILE,
    LockHolder,
    WorkspaceLock,
    WorkspaceLockedError,
    lock_status,
)

# A stand-in for a run: take the lock, say so, hold it until stdin closes.
_HOLDER = """
import sys
from raypipe._lock import WorkspaceLock, WorkspaceLockedError
lock = WorkspaceLock(sys.argv[1])
try:
    note = lock.acquire(run_dir=sys.argv[2])
except WorkspaceLockedError as exc:
    print("refused", exc, flush=True)
    sys.exit(3)
print("locked", note, flush=True)
sys.stdin.read()
lock.release()
"""


def _start(ws: Path, run_dir: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _HOLDER, str(ws), run_dir], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def _held_by_child(ws: Path, run_dir: str = "/runs/run_a") -> subprocess.Popen[str]:
    child = _start(ws, run_dir)
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.startswith("locked"), line
    return child


def _finish(child: subprocess.Popen[str]) -> None:
    if child.poll() is None:
        child.kill()
    child.communicate()


def test_second_run_is_refused_with_the_holder_named(tmp_path: Path) -> None:
    child = _held_by_child(tmp_path)
    try:
        with pytest.raises(WorkspaceLockedError) as err:
            WorkspaceLock(tmp_path).acquire(run_dir=tmp_path / "results" / "run_b")
        msg = str(err.value)
        assert f"workspace {tmp_path} is in use by another raypipe run: PID {child.pid} on host " \
               f"{socket.gethostname()}, run dir /runs/run_a, since " in msg
        assert f"kill {child.pid}" in msg and str(tmp_path / LOCK_FILE) in msg
        assert err.value.holder is not None and err.value.holder.pid == child.pid
        assert lock_status(tmp_path) == (True, err.value.holder)
    finally:
        _finish(child)


def test_sigkilled_holder_frees_the_lock_and_its_record_is_explained(tmp_path: Path) -> None:
    child = _held_by_child(tmp_path)
    child.send_signal(signal.SIGKILL)
    _finish(child)
    held, record = lock_status(tmp_path)
    assert not held and record is not None and record.pid == child.pid  # stale record, no lock
    lock = WorkspaceLock(tmp_path)
    note = lock.acquire(run_dir="/runs/run_b")
    try:
        assert note is not None and note.startswith(f"stale workspace lock taken over: PID {child.pid} on host ")
        assert f"PID {child.pid} is gone: the run ended without releasing the lock" in note
        assert "resume it with --resume /runs/run_a" in note
        record = json.loads((tmp_path / LOCK_FILE).read_text())
        assert (record["pid"], record["run_dir"]) == (os.getpid(), "/runs/run_b")
        lock.set_run_dir("/runs/run_c")
        assert lock_status(tmp_path)[1] == LockHolder(os.getpid(), socket.gethostname(), "/runs/run_c", record["since"])
    finally:
        lock.release()


def test_release_clears_the_record_and_the_next_run_starts_clean(tmp_path: Path) -> None:
    child = _held_by_child(tmp_path)
    assert child.stdin is not None
    child.stdin.close()  # the holder releases and exits
    assert child.wait() == 0
    assert (tmp_path / LOCK_FILE).read_text() == ""
    assert lock_status(tmp_path) == (False, None)
    lock = WorkspaceLock(tmp_path)
    assert lock.acquire("/runs/run_b") is None  # nothing stale after a clean release
    with lock:
        assert lock.holder is not None and lock.holder.run_dir == "/runs/run_b"
    assert (tmp_path / LOCK_FILE).read_text() == ""


def test_exactly_one_of_racing_runs_wins(tmp_path: Path) -> None:
    children = [_start(tmp_path, f"/runs/run_{i}") for i in range(4)]
    try:
        lines = [c.stdout.readline() for c in children if c.stdout is not None]
        assert sorted(line.split()[0] for line in lines) == ["locked", "refused", "refused", "refused"], lines
        assert all("is in use by another raypipe run" in line for line in lines if line.startswith("refused"))
    finally:
        for c in children:
            _finish(c)


@pytest.mark.parametrize("record, expected", [
    ({"pid": 1, "host": "build-node-7", "run_dir": "/r/run_x", "since": "2024-01-01T00:00:00+00:00"},
     "PID 1 on host build-node-7, run dir /r/run_x, since 2024-01-01T00:00:00+00:00"),
    ({"pid": os.getppid(), "host": socket.gethostname(), "run_dir": None, "since": "2024-01-01T00:00:00+00:00"},
     f"PID {os.getppid()} exists but does not hold the lock: the run ended and its PID was reused"),
])
def test_stale_records_from_elsewhere_are_explained(tmp_path: Path, record: dict, expected: str) -> None:
    (tmp_path / "results").mkdir()
    (tmp_path / LOCK_FILE).write_text(json.dumps(record))
    lock = WorkspaceLock(tmp_path)
    try:
        note = lock.acquire()
        assert note is not None and expected in note
        if record["host"] != socket.gethostname():
            assert "host build-node-7 cannot be asked from here" in note
    finally:
        lock.release()


def test_the_lock_touches_nothing_but_its_file(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "rows.csv").write_text("a\n")
    assert lock_status(tmp_path) == (False, None)
    assert not (tmp_path / "results").exists()  # probing creates nothing
    with WorkspaceLock(tmp_path):
        pass
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "results", LOCK_FILE, "train", "train/rows.csv"]
