"""The sweep's live display (rich table on a TTY, plain lines otherwise) and its failure watch."""

from __future__ import annotations

import io
import pickle
import re
from types import SimpleNamespace

from ray import tune

from raypipe.automl._progress import (
    FailureWatch,
    StopWhenAllFail,
    SweepCallbacks,
    SweepProgress,
    error_signature,
    live_sweep,
    root_cause,
)

KEYS = ("train.optim.lr", "train.classify.cls_weight[1]")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _trial(tid: str, error: str = "") -> SimpleNamespace:
    # The attributes Tune passes to callbacks that the display reads (trial id, config, error text).
    return SimpleNamespace(trial_id=tid, config={"train.optim.lr": 1e-3, "train.classify.cls_weight[1]": 7.5},
                           get_error=lambda: error)


def _drive(progress: SweepProgress) -> None:
    progress.setup()
    t = _trial("abc_00000")
    progress.on_trial_start(0, [t], t)
    progress.on_trial_result(1, [t], t, {"epoch": 1, "val_far": 40.0, "val_loss": 0.5, "score": 40.0})
    progress.on_trial_complete(2, [t], t)
    bad = _trial("abc_00001", "Traceback...\nraypipe.backends.base.TrainingError: bad optimizer 'x'")
    progress.on_trial_start(3, [t, bad], bad)
    progress.on_trial_error(4, [t, bad], bad)
    progress.on_experiment_end([t, bad])


def test_plain_lines_without_a_terminal() -> None:
    out = io.StringIO()
    _drive(SweepProgress("phase1", KEYS, "far_pct", 2, stream=out))
    text = out.getvalue()
    lines = text.splitlines()
    # One format: ``HH:MM:SS  Phase 1   text``; the user's phase name, never the sweep's folder name.
    assert all(re.match(r"\d\d:\d\d:\d\d  Phase 1   \S", line) for line in lines), lines
    assert "trial abc_00000 started: lr=0.001 cls_weight[1]=7.5" in text
    assert "trial abc_00000 epoch 1: validation FAR 40%, loss 0.5; trial best FAR 40.00%" in text
    assert "trial abc_00000 complete in 0 s: best FAR 40.00% · 1/2 done" in text
    assert "trial abc_00001 failed after retries: raypipe.backends.base.TrainingError: bad optimizer 'x'" in text
    assert "1 trial(s) complete" in text and "\x1b[" not in text and "{" not in text


def test_phase3_sweep_is_titled_phase_3() -> None:
    out = io.StringIO()
    _drive(SweepProgress("final_automl", KEYS, "far_pct", 2, stream=out))
    assert out.getvalue().splitlines()[0][10:18] == "Phase 3 " and "final_automl" not in out.getvalue()


def test_eta_from_measured_trial_times_in_waves_of_concurrency() -> None:
    progress = SweepProgress("phase1", KEYS, "far_pct", total=6, stream=io.StringIO(), concurrency=2)
    assert progress.eta_s(now=100.0) is None  # nothing measured yet
    progress._rows = {
        "a": {"status": "DONE", "seconds": 40.0, "started": 0.0},
        "b": {"status": "DONE", "seconds": 60.0, "started": 0.0},
        "c": {"status": "RUNNING", "started": 80.0},
        "d": {"status": "FAILED", "started": 0.0},
    }
    # mean trial 50 s; c has 30 s left at t=110; 6 - 3 ended - 1 running = 2 waiting -> (2*50 + 20) / 2
    assert progress.eta_s(now=110.0) == 60.0


def test_rich_table_on_a_terminal_and_pickles_for_restore() -> None:
    out = _Tty()
    progress = SweepProgress("phase1", KEYS, "far_pct", 2, stream=out)
    _drive(progress)
    text = out.getvalue()
    assert "1/2 done" in text and "Phase 1" in text and "abc_00000" in text and "FAILED" in text and "cls_weight[1]" in text
    restored = pickle.loads(pickle.dumps(progress))  # Tune pickles callbacks into tuner.pkl
    assert restored._live is None and restored.stream is not None


def test_root_cause_and_signature() -> None:
    tb = "Traceback (most recent call last):\n  File x\nValueError: lr 0.5 too high at step 12\n"
    assert root_cause(tb) == "ValueError: lr 0.5 too high at step 12"
    assert error_signature(tb) == error_signature(tb.replace("0.5", "0.25").replace("12", "3"))


def test_failure_watch_stops_only_on_one_shared_cause() -> None:
    watch = FailureWatch(threshold=2)
    stop = StopWhenAllFail("exp", watch)
    for _ in range(2):
        watch.on_trial_error(0, [], _trial("x", "FileNotFoundError: /data/train.csv"))
    assert stop.stop_all()
    mixed = FailureWatch(threshold=2)
    mixed.on_trial_error(0, [], _trial("x", "FileNotFoundError: a"))
    mixed.on_trial_error(0, [], _trial("y", "MemoryError: b"))
    assert not StopWhenAllFail("exp", mixed).stop_all()
    ok = FailureWatch(threshold=2)
    ok.on_trial_complete(0, [], _trial("z"))
    for _ in range(3):
        ok.on_trial_error(0, [], _trial("x", "FileNotFoundError: a"))
    assert not StopWhenAllFail("exp", ok).stop_all()  # one success: failures are the HPs', not shared
    # a failure whose error text was not readable yet does not hide the shared cause of the others
    racy = FailureWatch(threshold=2)
    racy.on_trial_error(0, [], _trial("x", ""))
    assert not StopWhenAllFail("exp", racy).stop_all()
    racy.on_trial_error(0, [], _trial("y", "TrainingError: bad optimizer"))
    assert StopWhenAllFail("exp", racy).stop_all()


class _Record(tune.Callback):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_trial_start(self, iteration: int, trials: list, trial: object, **info: object) -> None:
        self.seen.append(getattr(trial, "trial_id", "?"))


def test_restored_callbacks_and_stopper_relay_to_this_process() -> None:
    """Tuner.restore brings back the pickled run config; its relay and stopper must reach the live objects."""
    first, first_watch = _Record(), FailureWatch(threshold=1)
    relay = pickle.loads(pickle.dumps(SweepCallbacks("/exp/phase1", [first, first_watch])))
    stopper = pickle.loads(pickle.dumps(StopWhenAllFail("/exp/phase1", first_watch)))
    live, live_watch = _Record(), FailureWatch(threshold=1)
    with live_sweep("/exp/phase1", [live, live_watch], live_watch):
        relay.on_trial_start(iteration=0, trials=[], trial=_trial("t1"))
        relay.on_trial_error(iteration=0, trials=[], trial=_trial("t1", "OSError: disk"))
        assert live.seen == ["t1"] and live_watch.failed and stopper.stop_all()
    # nothing live (e.g. under Ray Client the tuner runs elsewhere): the pickled copies observe
    relay.on_trial_start(iteration=0, trials=[], trial=_trial("t2"))
    assert relay.callbacks[0].seen == ["t2"] and not stopper.stop_all() and live.seen == ["t1"]
