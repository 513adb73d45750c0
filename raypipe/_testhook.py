"""A test hook for crash safety: ``RAYPIPE_TEST_KILL_AT=<point>`` SIGKILLs the run at a named point.

``RAYPIPE_TEST_PAUSE_AT=<point>`` instead stops there (writing ``RAYPIPE_TEST_PAUSE_FILE``) until a
signal ends the process: a test then acts while the run is known to be at that point (a second
run against its lock, a Ctrl-C) and sends the signal itself.

Resuming after a kill must work at every moment, and a test can only prove that for moments it
can hit exactly: between two files of a handoff, after a stage's work but before its commit.
Sleeping a guessed time hits them by luck. So the code calls :func:`point` at the moments that
matter, and a test sets the variable; unset (always, outside tests) a point costs one dictionary
look-up.

The kill takes the whole run down at once, as a power cut would: the driver (its PID is handed
to Ray workers in ``RAYPIPE_TEST_DRIVER_PID``) with its process group when it leads one (a test
starts the run in a new session), else the driver alone, and the calling worker.

Points (``python -m raypipe.run``):
    gate            the summary is built; nothing approved, locked or written yet
    run_dir         the run dir exists with its starting files; tracking not started
    phase1_handoff  Phase 1's winner is handed to Phase 2 (spec, checkpoint, DEFT state written);
                    Phase 1 not yet marked complete
    <sweep>_trial   a trial of sweep ``phase1`` or ``final_automl`` trained an epoch, not yet reported
    deft_commit:<stage>  a DEFT stage finished its work; its evidence is not committed yet
    phase3_finalize Phase 3's winner is registered in the DEFT state; the deliverable not yet written
    complete        the deliverable is logged and the run marked complete; the MLflow run not yet ended
"""

from __future__ import annotations

import os
import signal
import time

KILL_AT = "RAYPIPE_TEST_KILL_AT"
PAUSE_AT = "RAYPIPE_TEST_PAUSE_AT"
PAUSE_FILE = "RAYPIPE_TEST_PAUSE_FILE"
DRIVER_PID = "RAYPIPE_TEST_DRIVER_PID"


def arm_driver() -> None:
    """In the driver, before Ray starts: let the workers know whom to kill."""
    if os.environ.get(KILL_AT) or os.environ.get(PAUSE_AT):
        os.environ[DRIVER_PID] = str(os.getpid())


def point(name: str) -> None:
    """SIGKILL the run here when ``RAYPIPE_TEST_KILL_AT`` names this point; stop here when
    ``RAYPIPE_TEST_PAUSE_AT`` does."""
    if os.environ.get(PAUSE_AT) == name:
        _pause(name)
    if os.environ.get(KILL_AT) != name:
        return
    me = os.getpid()
    driver = int(os.environ.get(DRIVER_PID) or me)
    try:
        if os.getpgid(driver) == driver:
            os.killpg(driver, signal.SIGKILL)
        else:
            os.kill(driver, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.kill(me, signal.SIGKILL)


def _pause(name: str) -> None:
    marker = os.environ.get(PAUSE_FILE)
    if marker:
        with open(marker, "w", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()} {name}\n")
    while True:  # until a signal: SIGINT raises KeyboardInterrupt here, as anywhere in the driver
        time.sleep(3600)


__all__ = ["DRIVER_PID", "KILL_AT", "PAUSE_AT", "PAUSE_FILE", "arm_driver", "point"]
