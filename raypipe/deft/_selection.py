"""The k-NN selection recipe of the data_mining stage, and its per-label statistics.

Pure functions of arrays and frames (no file I/O), so the stage, the benchmark and the tests run
the same recipe:

1. **Centred cosine.** Targets and pool are centred on the pool's mean vector, then L2-normalised;
   similarity is their inner product. Raw embeddings share a large common component (every pair
   scores near 1), which would make ``min_similarity`` meaningless; centring keeps what differs.
2. **Label-aware search space.** The pool is labelled production data, so a target searches where
   its label says the useful rows are. ``label_mode``:
   ``label`` — rows with the target's own label when the pool has any, else rows of its class;
   ``class`` — a defect target searches the pool's defect rows, a PASS (false-alarm) target the
   PASS rows (hard negatives); ``none`` — the whole pool (label-blind, as mining used to be).
3. **Per-target top-k, history-aware.** Rows mined in earlier iterations are removed from the search
   space *before* the top-k, so a second iteration reaches the next-nearest rows instead of
   re-finding (and discarding) the same ones.
4. **Similarity cut.** A neighbour is kept when its centred cosine reaches ``min_similarity``.
5. A pool row found by several targets is selected once, credited to its most similar target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import pandas as pd

from raypipe.workspace._rows import PASS, normalise_label

LabelMode = Literal["none", "class", "label"]
LABEL_MODES: tuple[str, ...] = ("none", "class", "label")


@dataclass(frozen=True)
class SelectionConfig:
    """``phase2.mining_filter``'s selection knobs (validated here, once)."""

    top_k_per_target: int = 5
    min_similarity: float = 0.0  # on centred cosine, in [-1, 1]
    label_mode: LabelMode = "label"
    history_aware: bool = True

    def __post_init__(self) -> None:
        if int(self.top_k_per_target) < 1:
            raise ValueError(f"mining top_k_per_target must be >= 1, got {self.top_k_per_target}")
        if not -1.0 <= float(self.min_similarity) <= 1.0:
            raise ValueError(f"mining min_similarity is a cosine in [-1, 1], got {self.min_similarity}")
        if self.label_mode not in LABEL_MODES:
            raise ValueError(f"mining label_mode must be one of {', '.join(LABEL_MODES)}, got {self.label_mode!r}")


# --------------------------------------------------------------------------- vectors and search

def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32, C-contiguous, as FAISS wants); zero rows stay zero."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def centred_unit(targets: np.ndarray, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sets centred on the pool's mean and L2-normalised: their inner product is the centred cosine."""
    if targets.ndim != 2 or pool.ndim != 2 or targets.shape[1] != pool.shape[1]:
        raise ValueError(f"embedding shapes do not match: targets {targets.shape}, pool {pool.shape}")
    centre = pool.astype(np.float64).mean(axis=0, keepdims=True) if len(pool) else 0.0
    return l2_normalise(targets - centre), l2_normalise(pool - centre)


def cosine_knn(targets: np.ndarray, pool: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` by inner product of unit vectors (= cosine) with ``faiss.IndexFlatIP``.

    Flat (exact) search: a thousand targets against a million 256-d vectors takes seconds on two
    cores (``benchmarks/mining_scale.py``); an approximate index would only add recall loss.
    Returns (similarities, pool indices), each ``[n_targets, min(k, n_pool)]``, best first.
    """
    import faiss

    if pool.ndim != 2 or targets.ndim != 2 or pool.shape[1] != targets.shape[1]:
        raise ValueError(f"embedding shapes do not match: targets {targets.shape}, pool {pool.shape}")
    k = min(int(k), pool.shape[0])
    index = faiss.IndexFlatIP(pool.shape[1])
    index.add(np.ascontiguousarray(pool, dtype=np.float32))
    return index.search(np.ascontiguousarray(targets, dtype=np.float32), k)


# --------------------------------------------------------------------------- the recipe

def search_groups(target_labels: Sequence[str], pool_labels: Sequence[str],
                  mode: LabelMode) -> list[tuple[np.ndarray, np.ndarray]]:
    """(target indices, pool indices) pairs: which pool rows each target may be matched with."""
    t = np.array([normalise_label(x) for x in target_labels], dtype=object)
    p = np.array([normalise_label(x) for x in pool_labels], dtype=object)
    all_t, all_p = np.arange(len(t)), np.arange(len(p))
    if mode == "none":
        return [(all_t, all_p)]
    groups: list[tuple[np.ndarray, np.ndarray]] = []
    pool_has = set(p.tolist())
    if mode == "label":
        for lab in sorted(set(t.tolist()) & pool_has):
            groups.append((all_t[t == lab], all_p[p == lab]))
        t_left = np.array([lab not in pool_has for lab in t], dtype=bool)
    else:
        t_left = np.ones(len(t), dtype=bool)
    for is_pass in (True, False):  # class fallback: PASS with PASS, any defect with the defect rows
        t_sel = t_left & ((t == PASS) == is_pass)
        if t_sel.any():
            groups.append((all_t[t_sel], all_p[(p == PASS) == is_pass]))
    return groups


def select(target_labels: Sequence[str], target_emb: np.ndarray, pool_labels: Sequence[str],
           pool_emb: np.ndarray, config: SelectionConfig,
           mined_before: np.ndarray | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run the recipe; returns ``(neighbours, selected)``.

    ``neighbours``: every (target, pool row) pair of each target's top-k, with ``target_index``,
    ``pool_index``, ``rank`` (1 = nearest), ``similarity`` (centred cosine) and ``kept``.
    ``selected``: one row per distinct kept pool row — ``pool_index``, ``similarity`` (its best),
    ``target_index`` and ``target_label`` of the target that found it best, ``n_targets`` — in pool
    order. ``mined_before``: boolean mask over the pool of rows earlier iterations took (skipped when
    ``config.history_aware``).
    """
    n_pool = len(pool_labels)
    if len(target_labels) != len(target_emb) or n_pool != len(pool_emb):
        raise ValueError(f"{len(target_labels)} target labels for {len(target_emb)} vectors, "
                         f"{n_pool} pool labels for {len(pool_emb)} vectors")
    skip = np.zeros(n_pool, dtype=bool) if mined_before is None else np.asarray(mined_before, dtype=bool)
    if skip.shape != (n_pool,):
        raise ValueError(f"mined_before has shape {skip.shape}, expected ({n_pool},)")
    t_unit, p_unit = centred_unit(np.asarray(target_emb), np.asarray(pool_emb))
    searchable = ~skip if config.history_aware else np.ones(n_pool, dtype=bool)

    frames = []
    for t_idx, p_idx in search_groups(target_labels, pool_labels, config.label_mode):
        p_idx = p_idx[searchable[p_idx]]
        if len(p_idx) == 0 or len(t_idx) == 0:
            continue
        sims, local = cosine_knn(t_unit[t_idx], p_unit[p_idx], config.top_k_per_target)
        k = sims.shape[1]
        frames.append(pd.DataFrame({"target_index": np.repeat(t_idx, k), "pool_index": p_idx[local.ravel()],
                                    "rank": np.tile(np.arange(1, k + 1), len(t_idx)),
                                    "similarity": sims.ravel().astype(np.float64)}))
    cols = ["target_index", "pool_index", "rank", "similarity"]
    pairs = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        {c: pd.Series(dtype="float64" if c == "similarity" else "int64") for c in cols})
    pairs = pairs.sort_values(["target_index", "rank"], kind="mergesort").reset_index(drop=True)
    pairs["kept"] = pairs["similarity"] >= config.min_similarity

    kept = pairs[pairs["kept"]]
    n_targets = kept.groupby("pool_index")["target_index"].nunique()
    # best pair per pool row; ties → lower target index (deterministic)
    best = kept.sort_values(["similarity", "target_index"], ascending=[False, True], kind="mergesort") \
        .drop_duplicates("pool_index").sort_values("pool_index", kind="mergesort")
    t_labels = np.array([normalise_label(x) for x in target_labels], dtype=object)
    selected = pd.DataFrame({
        "pool_index": best["pool_index"].to_numpy(dtype=np.int64),
        "similarity": best["similarity"].to_numpy(dtype=np.float64),
        "target_index": best["target_index"].to_numpy(dtype=np.int64),
        "target_label": t_labels[best["target_index"].to_numpy(dtype=np.int64)].astype(str),
        "n_targets": best["pool_index"].map(n_targets).to_numpy(dtype=np.int64),
    })
    return pairs, selected.reset_index(drop=True)


# --------------------------------------------------------------------------- statistics

@dataclass(frozen=True)
class LabelStats:
    """One label's mining outcome in one iteration.

    ``mined``/``same_label``/``precision`` are about the rows *this label's targets* found;
    ``mined_of_label``/``recall`` about the pool rows *of this label* that were mined (by any target);
    ``cumulative_recall`` counts earlier iterations too. Recall is None where the pool has no row of
    the label (unlabelled pools carry one label, e.g. ``unknown``).
    """

    iteration: int
    label: str
    targets: int
    mined: int
    same_label: int
    precision: float | None
    pool_rows: int
    mined_of_label: int
    recall: float | None
    cumulative_recall: float | None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def mining_stats(iteration: int, target_labels: Sequence[str], selected: pd.DataFrame,
                 pool_labels: Sequence[str], mined_before: np.ndarray | None = None) -> list[LabelStats]:
    """Per label: targets, mined, same-label precision, pool recall (this iteration and cumulative).

    ``selected`` is :func:`select`'s second frame (``pool_index``, ``target_label``); ``mined_before``
    the same mask :func:`select` got. Labels are every target label and every mined row's label.
    """
    t = pd.Series([normalise_label(x) for x in target_labels], dtype=object)
    p = pd.Series([normalise_label(x) for x in pool_labels], dtype=object)
    before = np.zeros(len(p), dtype=bool) if mined_before is None else np.asarray(mined_before, dtype=bool)
    got = p.iloc[selected["pool_index"].to_numpy(dtype=np.int64)].reset_index(drop=True)
    by = selected["target_label"].reset_index(drop=True).astype(str)
    out = []
    for lab in sorted(set(t) | set(got)):
        mine = by == lab
        n_mined, n_same = int(mine.sum()), int((mine & (got == lab)).sum())
        pool_rows = int((p == lab).sum())
        of_label = int((got == lab).sum())
        earlier = int((before & (p == lab).to_numpy()).sum())
        out.append(LabelStats(
            iteration=int(iteration), label=lab, targets=int((t == lab).sum()), mined=n_mined, same_label=n_same,
            precision=n_same / n_mined if n_mined else None, pool_rows=pool_rows, mined_of_label=of_label,
            recall=of_label / pool_rows if pool_rows else None,
            cumulative_recall=(earlier + of_label) / pool_rows if pool_rows else None))
    return out


def stats_frame(stats: Sequence[LabelStats]) -> pd.DataFrame:
    """The records as a DataFrame (one row per iteration and label), columns in field order."""
    cols = list(LabelStats.__dataclass_fields__)
    return pd.DataFrame([s.to_dict() for s in stats], columns=cols)


def headline(stats: Sequence[LabelStats]) -> dict[str, float | None]:
    """Micro-averaged same-label precision of defect targets and of PASS targets (one iteration)."""
    def ratio(rows: list[LabelStats]) -> float | None:
        mined = sum(s.mined for s in rows)
        return sum(s.same_label for s in rows) / mined if mined else None

    return {"defect_precision": ratio([s for s in stats if s.label != PASS]),
            "pass_precision": ratio([s for s in stats if s.label == PASS])}


__all__ = ["LABEL_MODES", "LabelMode", "LabelStats", "SelectionConfig", "centred_unit", "cosine_knn", "headline",
           "l2_normalise", "mining_stats", "search_groups", "select", "stats_frame"]
