"""One run per workspace: an exclusive lock a run holds on its workspace for its whole life.

Two runs on one workspace would race on ``results/`` and on the tracking store; the second must be
refused before it creates anything, with a message that says who holds the workspace.

The lock is ``fcntl.flock`` on ``results/.raypipe.lock`` (a run writes only under ``results/``). The
kernel drops a flock when its holder exits, however it exits (SIGKILL included), so on one host a
lock never outlives its process. The file also records the holder (PID, host, run dir, since): the
refusal names it, and a record left behind by a holder that is gone is explained when the next run
takes the lock over. The file is never deleted: unlinking a lock file lets two processes lock two
different inodes under one name.

On a shared filesystem the lock is as good as the filesystem's flock support (NFSv4 has it; some
FUSE filesystems do not), and a holder on another host cannot be asked whether it is alive.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Self

LOCK_FILE = "results/.raypipe.lock"


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or last held) a workspace. ``since`` is ISO 8601 UTC."""

    pid: int
    host: str
    run_dir: str | None
    since: str

    def describe(self) -> str:
        run_dir = self.run_dir or "(no run dir yet)"
        return f"PID {self.pid} on host {self.host}, run dir {run_dir}, since {self.since}{_age(self.since)}"

    def alive(self) -> bool | None:
        """Whether the PID exists on this host; None when the holder is on another host."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by another user
            return True
        return True


class WorkspaceLockedError(RuntimeError):
    """Another process holds the workspace; ``holder`` is None when it has not written its record yet."""

    def __init__(self, workspace: Path, holder: LockHolder | None) -> None:
        self.workspace, self.holder = workspace, holder
        who = holder.describe() if holder else "another process (it has not recorded its details yet)"
        mine = " (this process)" if holder and holder.pid == os.getpid() and holder.host == socket.gethostname() else ""
        super().__init__(
            f"workspace {workspace} is in use by another raypipe run: {who}{mine}. Only one run per workspace: "
            f"wait for it to finish or stop it (kill {holder.pid if holder else '<pid>'} on its host), then "
            f"start this run again; the lock is {workspace / LOCK_FILE}")


def _age(since: str) -> str:
    try:
        start = datetime.fromisoformat(since)
    except ValueError:
        return ""
    minutes = (datetime.now(timezone.utc) - start).total_seconds() / 60
    return f" ({minutes:.0f} min ago)" if minutes >= 0 else ""


def _parse(text: str) -> LockHolder | None:
    try:
        d = json.loads(text)
        return LockHolder(int(d["pid"]), str(d["host"]), d.get("run_dir"), str(d["since"]))
    except (ValueError, KeyError, TypeError):
        return None  # empty (free, or a holder between locking and writing) or torn


def _read_fd(fd: int) -> LockHolder | None:
    return _parse(os.pread(fd, 1 << 16, 0).decode("utf-8", "replace"))


class WorkspaceLock:
    """:meth:`acquire` / :meth:`release` (or ``with WorkspaceLock(ws): ...``).

    >>> lock = WorkspaceLock("/data/ws")                       # doctest: +SKIP
    >>> note = lock.acquire(run_dir="/data/ws/results/run_x")  # raises WorkspaceLockedError if taken
    """

    def __init__(self, workspace: str | os.PathLike[str]) -> None:
        self.workspace = Path(workspace)
        self.path = self.workspace / LOCK_FILE
        self._fd: int | None = None
        self._holder: LockHolder | None = None

    @property
    def holder(self) -> LockHolder | None:
        """This process's record while it holds the lock."""
        return self._holder

    def acquire(self, run_dir: str | os.PathLike[str] | None = None) -> str | None:
        """Take the lock or raise :class:`WorkspaceLockedError`. Returns an explanation when the file
        held a record of an earlier holder that is gone (a stale lock, taken over), else None."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: already held by this lock object")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_fd(fd) if exc.errno in (errno.EAGAIN, errno.EACCES) else None
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    raise WorkspaceLockedError(self.workspace, holder) from None
                raise
            # The name may have been deleted or replaced since we opened it: a lock on an orphaned
            # inode excludes no one. Lock whatever the name points to now.
            try:
                now = os.stat(self.path)
            except FileNotFoundError:
                now = None
            mine = os.fstat(fd)
            if now is not None and (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
                break
            os.close(fd)
        previous = _read_fd(fd)
        self._fd = fd
        self._write(LockHolder(os.getpid(), socket.gethostname(), str(run_dir) if run_dir else None,
                               datetime.now(timezone.utc).isoformat(timespec="seconds")))
        return _stale_note(previous) if previous is not None else None

    def set_run_dir(self, run_dir: str | os.PathLike[str]) -> None:
        """Record the run dir once it is known (the lock is taken before the run dir is created)."""
        if self._fd is None or self._holder is None:
            raise RuntimeError(f"{self.path}: not held")
        self._write(LockHolder(self._holder.pid, self._holder.host, str(run_dir), self._holder.since))

    def _write(self, holder: LockHolder) -> None:
        assert self._fd is not None
        data = (json.dumps(asdict(holder)) + "\n").encode("utf-8")
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
        os.fsync(self._fd)
        self._holder = holder

    def release(self) -> None:
        """Clear the record and unlock (idempotent). A run that dies without this leaves a record
        the next run reports as stale; the lock itself is gone with the process."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd, self._holder = None, None

    def __enter__(self) -> Self:
        """Acquire if not held yet (no run dir, stale note dropped: call :meth:`acquire` for those)."""
        if self._fd is None:
            self.acquire()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _stale_note(previous: LockHolder) -> str:
    alive = previous.alive()
    if alive is None:
        why = (f"that run is not holding the lock any more (host {previous.host} cannot be asked from here "
               f"whether PID {previous.pid} still runs)")
    elif alive:
        why = f"PID {previous.pid} exists but does not hold the lock: the run ended and its PID was reused"
    else:
        why = f"PID {previous.pid} is gone: the run ended without releasing the lock (killed or crashed)"
    resume = f"; if it did not finish, resume it with --resume {previous.run_dir}" if previous.run_dir else ""
    return f"stale workspace lock taken over: {previous.describe()}; {why}{resume}"


def lock_status(workspace: str | os.PathLike[str]) -> tuple[bool, LockHolder | None]:
    """(held, holder record) without taking the lock or writing anything (for ``--dry-run``).

    The probe takes a shared lock for an instant; a run starting in that instant is refused and
    can simply be started again.
    """
    path = Path(workspace) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False, None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return True, _read_fd(fd)
            raise
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False, _read_fd(fd)
    finally:
        os.close(fd)


__all__ = ["LOCK_FILE", "LockHolder", "WorkspaceLock", "WorkspaceLockedError", "lock_status"]
