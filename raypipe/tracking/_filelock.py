"""One cross-process exclusive lock on a lock file (lineage writers, sqlite store creators)."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_file`` (created if missing) for the block.

    flock works across processes on one host and on most shared filesystems (NFSv4 maps it to
    byte-range locks), and the kernel drops it when its holder dies, SIGKILL included. The lock
    file is never removed, so there is no unlink race between two waiters.
    """
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
