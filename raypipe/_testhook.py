"""A test hook for crash safety: ``RAYPIPE_TEST_KILL_AT=<point>`` SIGKILLs the run at a named point.

Resuming after a kill must work at every moment, and a test can only prove that for moments it
can hit exactly: between two files of a handoff, after a stage's work but before its commit.
Sleeping a guessed time hits them by luck. So the code calls :func:`point` at the moments that
matter, and a test sets the variable; unset (always, outside tests) a point costs one dictionary
look-up.

The kill takes the whole run down at once, as a power cut would: the driver (its PID is handed
to Ray workers in ``RAYPIPE_TEST_DRIVER_PID``) with its process group when it leads one (a test
starts the run in a new session), else the driver alone, and the calling worker.

Points (``python -m raypipe.run``):
    gate            the summary is built, the lock held, nothing approved or written yet
    run_dir         the run dir exists with its starting files; tracking not started
    phase1_handoff  Phase 1's winner is handed to Phase 2 (spec, checkpoint, DEFT state written);
                    Phase 1 not yet marked complete
    <sweep>_trial   a trial of sweep ``phase1`` or ``final_automl`` reported its first epoch
    deft_commit:<stage>  a DEFT stage finished its work; its evidence is not committed yet
    phase3_finalize Phase 3's winner is registered in the DEFT state; the deliverable not yet written
    complete        the run is marked complete; tracking not yet closed
"""

from __future__ import annotations

import os
import signal

KILL_AT = "RAYPIPE_TEST_KILL_AT"
DRIVER_PID = "RAYPIPE_TEST_DRIVER_PID"


def arm_driver() -> None:
    """In the driver, before Ray starts: let the workers know whom to kill."""
    if os.environ.get(KILL_AT):
        os.environ[DRIVER_PID] = str(os.getpid())


def point(name: str) -> None:
    """SIGKILL the run here when ``RAYPIPE_TEST_KILL_AT`` names this point."""
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


__all__ = ["DRIVER_PID", "KILL_AT", "arm_driver", "point"]
