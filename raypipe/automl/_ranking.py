"""Picking the winner of a sweep (the metric policy), as pure functions over trial records.

- ``far_pct`` (default): rank complete trials by validation FAR at their kept checkpoint, ties by
  val_loss. Collapsed trials stay ranked (FAR@100% recall is threshold-based, so an argmax
  collapse does not change it); the Phase 1→2 handoff skips them using their pred counts.
- ``val_loss``: a trial whose validation predictions collapse to one class is discarded (a low
  loss from always answering PASS is no model), then the top-K by val_loss are re-scored by FAR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass
class TrialRecord:
    """One trial as the driver sees it after the sweep."""

    trial_id: str
    index: int  # creation order (0-based)
    status: str  # complete | failed | discarded | not_run | rerun | baseline
    params: dict[str, Any]
    val_far: float = math.nan  # at the kept (best) checkpoint
    val_loss: float = math.nan
    pred_counts: dict[str, int] = field(default_factory=dict)
    checkpoint: str | None = None  # local path or URI of the .pth file
    checkpoint_epoch: int | None = None
    checkpoint_step: int | None = None
    epochs_run: int = 0
    compute_s: float = math.nan
    error: str = ""
    note: str = ""
    job_id: str = ""  # the trial's directory name in the Tune experiment

    def score(self, metric: str) -> float:
        return self.val_far if metric == "far_pct" else self.val_loss


def collapsed(pred_counts: dict[str, int] | None) -> bool:
    """Predictions (argmax) on the validation set cover at most one class."""
    if not pred_counts:
        return False
    return sum(1 for v in pred_counts.values() if v > 0) < 2


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def rank_trials(records: list[TrialRecord], metric: str, top_k: int) -> tuple[list[TrialRecord], list[TrialRecord]]:
    """(ranked best first, all records with discarded ones marked). Failed / not-run trials are never ranked."""
    out = [replace(r) for r in records]
    candidates = [r for r in out if r.status == "complete" and r.checkpoint and _finite(r.score(metric))]
    if metric == "far_pct":
        ranked = sorted(candidates, key=lambda r: (r.val_far, _inf(r.val_loss), r.index))
        return ranked, out
    kept = []
    for r in candidates:
        if collapsed(r.pred_counts):
            r.status = "discarded"
            r.note = f"validation predictions collapsed to one class {r.pred_counts}"
        else:
            kept.append(r)
    by_loss = sorted(kept, key=lambda r: (r.val_loss, _inf(r.val_far), r.index))
    head = sorted(by_loss[:top_k], key=lambda r: (_inf(r.val_far), r.val_loss, r.index))
    for r in head:
        r.note = (r.note + "; " if r.note else "") + f"top-{top_k} by val_loss, re-scored by FAR"
    return head + by_loss[top_k:], out


def _inf(x: float) -> float:
    return x if _finite(x) else math.inf


def pick_score(r: TrialRecord) -> float:
    """The number the final order uses for the head of the ranking: validation FAR in both policies."""
    return _inf(r.val_far)


def noise_gap(winner: TrialRecord, runner_up: TrialRecord) -> float:
    """Relative margin by which the winner beats the runner-up (0 for a tie, inf from a zero runner-up)."""
    w, r = pick_score(winner), pick_score(runner_up)
    if not (math.isfinite(w) and math.isfinite(r)):
        return math.inf if math.isfinite(w) else 0.0
    if r == w:
        return 0.0
    if r == 0:
        return math.inf
    return (r - w) / abs(r)


def needs_rerun(ranked: list[TrialRecord], margin: float | None) -> tuple[bool, float | None]:
    """Noise guard: re-run the winner when it beats the runner-up by more than ``margin`` (relative)."""
    if margin is None or len(ranked) < 2:
        return False, None
    gap = noise_gap(ranked[0], ranked[1])
    return gap > margin, gap
