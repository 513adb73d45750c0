"""The sweep's metric policy: FAR ranking, the val_loss collapse guard with FAR re-scoring, the noise guard."""

from __future__ import annotations

import math

from raypipe.automl import TrialRecord, collapsed, rank_trials
from raypipe.automl._ranking import needs_rerun, noise_gap

OK = {"PASS": 9, "NO_PASS": 7}
ONE_CLASS = {"PASS": 16, "NO_PASS": 0}


def rec(tid: str, i: int, far: float, loss: float, pred: dict[str, int] = OK, status: str = "complete") -> TrialRecord:
    return TrialRecord(tid, i, status, {}, val_far=far, val_loss=loss, pred_counts=dict(pred),
                       checkpoint=f"/ck/{tid}.pth", checkpoint_epoch=1, checkpoint_step=1)


def test_far_policy_ranks_by_far_then_loss_and_skips_failures() -> None:
    records = [rec("a", 0, 50.0, 0.3), rec("b", 1, 20.0, 0.5), rec("c", 2, 20.0, 0.4),
               rec("d", 3, 10.0, 0.1, status="failed"), rec("e", 4, 5.0, 0.2, pred=ONE_CLASS)]
    ranked, out = rank_trials(records, "far_pct", top_k=3)
    assert [r.trial_id for r in ranked] == ["e", "c", "b", "a"]
    # FAR at 100% recall is threshold-based: a collapsed argmax stays ranked (the handoff skips it).
    assert out[4].status == "complete" and collapsed(out[4].pred_counts)


def test_val_loss_policy_discards_collapsed_and_rescores_top_k_by_far() -> None:
    records = [rec("low_loss_collapsed", 0, 10.0, 0.05, pred=ONE_CLASS), rec("a", 1, 80.0, 0.1),
               rec("b", 2, 50.0, 0.2), rec("c", 3, 10.0, 0.3)]
    ranked, out = rank_trials(records, "val_loss", top_k=2)
    assert out[0].status == "discarded" and "collapsed" in out[0].note
    # top-2 by val_loss are a (0.1) and b (0.2); FAR re-scoring puts b first; c follows by loss.
    assert [r.trial_id for r in ranked] == ["b", "a", "c"]
    assert "re-scored by FAR" in ranked[0].note and ranked[0].score("val_loss") == 0.2


def test_val_loss_policy_with_every_trial_collapsed_ranks_nothing() -> None:
    ranked, out = rank_trials([rec("a", 0, 10.0, 0.1, ONE_CLASS), rec("b", 1, 20.0, 0.2, ONE_CLASS)], "val_loss", 3)
    assert ranked == [] and {r.status for r in out} == {"discarded"}


def test_noise_guard_margin_is_relative() -> None:
    w, r = rec("w", 0, 10.0, 0.1), rec("r", 1, 40.0, 0.2)
    assert noise_gap(w, r) == 0.75
    assert needs_rerun([w, r], 0.5) == (True, 0.75)
    assert needs_rerun([w, r], 0.8) == (False, 0.75)
    assert needs_rerun([w, rec("t", 1, 10.0, 0.3)], 0.0) == (False, 0.0)  # a tie is no win
    assert needs_rerun([w], 0.0) == (False, None) and needs_rerun([w, r], None) == (False, None)
    assert noise_gap(rec("z", 0, 0.0, 0.1), rec("y", 1, 0.0, 0.1)) == 0.0
    assert math.isinf(noise_gap(rec("z", 0, 0.0, 0.1), rec("y", 1, math.nan, 0.1)))


def test_collapsed() -> None:
    assert collapsed({"PASS": 0, "NO_PASS": 4}) and not collapsed(OK) and not collapsed({})
