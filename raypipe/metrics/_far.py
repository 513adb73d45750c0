"""FAR at a recall target (SPEC §4).

FAR at 100 % recall is the KPI AOI lines ship on: every defect must be caught, and the price is
the fraction of good parts flagged. It is decided by the single hardest defect, which is why the
diagnostics (AUROC, FAR at 99 / 95 % recall) travel beside it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

RECALL_TOL = 1e-12


class MetricUndefinedError(ValueError):
    """FAR is undefined: the set has no defect (NO_PASS) rows."""


@dataclass(frozen=True)
class ThresholdResult:
    threshold: float
    far: float  # fraction, FP / (FP + TN)
    recall: float
    precision: float
    f1: float
    tp: int
    fp: int
    tn: int
    fn: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _candidates(scores: np.ndarray) -> np.ndarray:
    distinct = np.unique(scores)
    return np.concatenate([[np.nextafter(distinct[0], -np.inf)], distinct])


def threshold_table(is_defect: ArrayLike, scores: ArrayLike) -> dict[str, np.ndarray]:
    """Confusion counts and rates at every candidate threshold (prediction NO_PASS iff score > t)."""
    y = np.asarray(is_defect, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or s.ndim != 1 or s.size == 0:
        raise ValueError("labels and scores must be non-empty 1-D arrays of equal length")
    if not np.all(np.isfinite(s)):
        raise ValueError("siamese_score contains NaN or infinite values")
    cand = _candidates(s)
    pos = np.sort(s[y])
    neg = np.sort(s[~y])
    tp = pos.size - np.searchsorted(pos, cand, side="right")
    fp = neg.size - np.searchsorted(neg, cand, side="right")
    fn = pos.size - tp
    tn = neg.size - fp
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), np.nan)
        recall = np.where(pos.size > 0, tp / max(pos.size, 1), np.nan)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        f1 = np.where(np.isnan(precision), np.nan, f1)
        far = np.where(neg.size > 0, fp / max(neg.size, 1), 0.0)
    return {"threshold": cand, "tp": tp, "fp": fp, "tn": tn, "fn": fn,
            "precision": precision, "recall": recall, "f1": f1, "far": far}


def _pick(table: dict[str, np.ndarray], eligible: np.ndarray) -> ThresholdResult:
    idx = np.flatnonzero(eligible)
    def key(i: int) -> tuple[float, float, float]:
        f1, pr = table["f1"][i], table["precision"][i]
        return (-math.inf if np.isnan(f1) else float(f1), -math.inf if np.isnan(pr) else float(pr),
                float(table["threshold"][i]))
    best = max(idx, key=key)
    return ThresholdResult(
        threshold=float(table["threshold"][best]), far=float(table["far"][best]),
        recall=float(table["recall"][best]), precision=float(table["precision"][best]),
        f1=float(table["f1"][best]), tp=int(table["tp"][best]), fp=int(table["fp"][best]),
        tn=int(table["tn"][best]), fn=int(table["fn"][best]),
    )


def far_at_recall(is_defect: ArrayLike, scores: ArrayLike, recall_target: float = 1.0) -> ThresholdResult:
    """Best threshold (max F1, then precision, then threshold) among those reaching ``recall_target``.

    >>> far_at_recall([False, True, False], [0.1, 0.8, 0.9]).far
    0.5
    """
    y = np.asarray(is_defect, dtype=bool)
    if not y.any():
        raise MetricUndefinedError("FAR at recall is undefined: no defect (NO_PASS) rows in the set")
    table = threshold_table(y, scores)
    eligible = table["recall"] >= recall_target - RECALL_TOL
    return _pick(table, eligible)


def best_f1_threshold(is_defect: ArrayLike, scores: ArrayLike, min_recall: float = 1.0) -> ThresholdResult | None:
    """RCA threshold (SPEC §6.4): best F1 among thresholds with recall ≥ ``min_recall``; None if none."""
    y = np.asarray(is_defect, dtype=bool)
    if not y.any():
        raise MetricUndefinedError("no defect (NO_PASS) rows in the set")
    table = threshold_table(y, scores)
    eligible = table["recall"] >= min_recall - RECALL_TOL
    if not eligible.any():
        return None
    return _pick(table, eligible)


def auroc(is_defect: ArrayLike, scores: ArrayLike) -> float:
    """Area under ROC via the Mann–Whitney rank statistic (ties count one half)."""
    import pandas as pd

    y = np.asarray(is_defect, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pd.Series(s).rank(method="average").to_numpy()
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
