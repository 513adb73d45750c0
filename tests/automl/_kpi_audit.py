"""A KPI tripwire for the sweep tests: an audit hook that refuses (and logs) any open of a KPI file.

Installed in every Ray worker of the test session (``worker_process_setup_hook``) and, armed only
while a sweep test runs, in the pytest process itself. An open of a forbidden path raises
PermissionError and appends the path and process id to a log file, so a sweep that read the KPI set
fails twice over: its trial errors, and the log is not empty. Workers import this module by name
(``_kpi_audit.install``) through the PYTHONPATH the Ray fixture gives them.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any, Callable

PATHS_ENV = "RAYPIPE_TEST_KPI_PATHS"  # file listing forbidden absolute paths, one per line
LOG_ENV = "RAYPIPE_TEST_KPI_LOG"  # where violations are appended


def make_hook(forbidden: set[str], log_path: str, armed: Callable[[], bool]) -> Callable[[str, tuple], None]:
    guard = threading.local()

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event != "open" or getattr(guard, "busy", False) or not armed():
            return
        target = args[0] if args else None
        if isinstance(target, int) or target is None:
            return
        try:
            path = os.path.abspath(os.fsdecode(target))
        except TypeError:
            return
        if path in forbidden:
            guard.busy = True
            try:
                with open(log_path, "a", encoding="utf-8") as fh:
                    fh.write(f"{os.getpid()}\t{path}\n")
            finally:
                guard.busy = False
            raise PermissionError(f"KPI file opened during an AutoML sweep: {path}")

    return hook


def install() -> None:
    """Ray worker_process_setup_hook: arm the tripwire for this worker's whole life."""
    listing = os.environ.get(PATHS_ENV)
    log_path = os.environ.get(LOG_ENV)
    if not listing or not log_path:
        return
    forbidden = {ln.strip() for ln in Path(listing).read_text(encoding="utf-8").splitlines() if ln.strip()}
    sys.addaudithook(make_hook(forbidden, log_path, lambda: True))
