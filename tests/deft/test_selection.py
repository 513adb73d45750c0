"""The k-NN selection recipe and its statistics: labels, history, the similarity cut (real FAISS)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raypipe.deft._selection import (
    LabelStats,
    SelectionConfig,
    centred_unit,
    cosine_knn,
    headline,
    l2_normalise,
    mining_stats,
    search_groups,
    select,
    stats_frame,
)
from raypipe.embedding import embed_rows, make_embedder
from raypipe.workspace import ImageLayout, read_rows

LAYOUT = ImageLayout(("LowAngleLight", "SolderLight"), ".png")


def _clustered(labels: list[str], seed: int = 0, spread: float = 0.3) -> np.ndarray:
    """One random centre per label, rows scattered around it: a pool whose geometry follows its labels."""
    rng = np.random.default_rng(seed)
    centres = {lab: rng.normal(size=16) for lab in sorted(set(labels))}
    return np.stack([centres[lab] + spread * rng.normal(size=16) for lab in labels]).astype(np.float32)


def test_cosine_knn_matches_brute_force():
    rng = np.random.default_rng(0)
    t, p = l2_normalise(rng.normal(size=(7, 16))), l2_normalise(rng.normal(size=(50, 16)))
    sims, idx = cosine_knn(t, p, 4)
    full = t @ p.T
    assert np.array_equal(idx, np.argsort(-full, axis=1)[:, :4])
    assert np.allclose(sims, np.take_along_axis(full, idx, axis=1), atol=1e-5)
    assert cosine_knn(t, p[:2], 5)[1].shape == (7, 2)  # k capped by the pool size


def test_centring_uses_the_pool_mean():
    rng = np.random.default_rng(1)
    pool = rng.normal(size=(30, 8)) + 5.0  # a large shared component: raw cosines all near 1
    t_unit, p_unit = centred_unit(pool[:3], pool)
    assert np.allclose(p_unit, l2_normalise(pool - pool.mean(axis=0)), atol=1e-6)
    assert np.allclose(t_unit, p_unit[:3], atol=1e-6)
    raw = l2_normalise(pool) @ l2_normalise(pool).T
    centred = p_unit @ p_unit.T
    assert raw.min() > 0.8 and centred.min() < 0.0


def test_search_groups_per_label_mode():
    targets = ["bridge", "PASS", "scratch", "pass"]  # scratch: not in the pool
    pool = ["bridge", "PASS", "missing", "Bridge ", "PASS"]
    by_mode = {m: {tuple(t): tuple(p) for t, p in search_groups(targets, pool, m)} for m in ("none", "class", "label")}
    assert by_mode["none"] == {(0, 1, 2, 3): (0, 1, 2, 3, 4)}
    assert by_mode["class"] == {(1, 3): (1, 4), (0, 2): (0, 2, 3)}
    assert by_mode["label"] == {(0,): (0, 3), (1, 3): (1, 4), (2,): (0, 2, 3)}  # scratch falls back to defects


def test_label_mode_keeps_labels_and_class_mode_keeps_classes():
    pool_labels = ["PASS"] * 30 + ["bridge"] * 10 + ["missing"] * 10 + ["polarity"] * 10
    target_labels = ["bridge", "polarity", "PASS", "tombstone"]
    rng = np.random.default_rng(3)
    pool = rng.normal(size=(60, 16)).astype(np.float32)  # label-blind geometry: only the recipe can respect labels
    targets = rng.normal(size=(4, 16)).astype(np.float32)
    p = pd.Series(pool_labels)

    pairs, sel = select(target_labels, targets, pool_labels, pool,
                        SelectionConfig(top_k_per_target=4, label_mode="label", min_similarity=-1.0))
    got = p.iloc[sel["pool_index"]].to_numpy()
    assert (got[sel["target_label"] == "bridge"] == "bridge").all()
    assert (got[sel["target_label"] == "polarity"] == "polarity").all()
    assert (got[sel["target_label"] == "PASS"] == "PASS").all()
    assert set(got[sel["target_label"] == "tombstone"]) <= {"bridge", "missing", "polarity"}  # class fallback
    assert len(pairs) == 16 and sel["pool_index"].is_unique  # a row two targets found is selected once

    _, sel = select(target_labels, targets, pool_labels, pool, SelectionConfig(4, -1.0, "class"))
    got = p.iloc[sel["pool_index"]].to_numpy()
    assert ((got == "PASS") == (sel["target_label"] == "PASS").to_numpy()).all()

    _, blind = select(target_labels, targets, pool_labels, pool, SelectionConfig(4, -1.0, "none"))
    assert (p.iloc[blind["pool_index"]].to_numpy()[blind["target_label"] != "PASS"] == "PASS").any()


def test_history_makes_the_second_iteration_reach_further():
    labels = ["PASS"] * 40 + ["bridge"] * 20
    pool = _clustered(labels)
    targets, t_labels = pool[[40, 41]] + 0.01, ["bridge", "bridge"]
    cfg = SelectionConfig(top_k_per_target=3, min_similarity=-1.0, label_mode="label")
    _, first = select(t_labels, targets, labels, pool, cfg)
    before = np.zeros(len(labels), dtype=bool)
    before[first["pool_index"]] = True
    pairs2, second = select(t_labels, targets, labels, pool, cfg, before)
    assert not set(second["pool_index"]) & set(first["pool_index"])
    assert len(second) >= 3 and (pairs2["rank"] <= 3).all()
    # together: exactly each target's top-6 among the bridge rows (k=6 in one go, no history)
    _, wide = select(t_labels, targets, labels, pool, SelectionConfig(6, -1.0, "label"))
    assert set(first["pool_index"]) | set(second["pool_index"]) == set(wide["pool_index"])
    # history off: the same rows again
    _, again = select(t_labels, targets, labels, pool, SelectionConfig(3, -1.0, "label", history_aware=False), before)
    assert set(again["pool_index"]) == set(first["pool_index"])


def test_min_similarity_cut_and_one_row_per_pool_sample():
    labels = ["PASS"] * 20 + ["bridge"] * 20
    pool = _clustered(labels, seed=5)
    targets = pool[[20, 21, 22]]
    pairs, sel = select(["bridge"] * 3, targets, labels, pool, SelectionConfig(8, -1.0, "label"))
    cut = float(np.median(pairs["similarity"]))
    pairs_c, sel_c = select(["bridge"] * 3, targets, labels, pool, SelectionConfig(8, cut, "label"))
    assert (pairs_c["kept"] == (pairs_c["similarity"] >= cut)).all() and 0 < pairs_c["kept"].sum() < len(pairs_c)
    assert (sel_c["similarity"] >= cut).all() and len(sel_c) < len(sel)
    assert sel["pool_index"].is_unique and (sel["n_targets"] >= 1).all()
    best = pairs.groupby("pool_index")["similarity"].max()
    assert np.allclose(sel.set_index("pool_index")["similarity"], best.loc[sel["pool_index"]])


def test_bad_config_and_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="top_k_per_target"):
        SelectionConfig(top_k_per_target=0)
    with pytest.raises(ValueError, match="cosine in"):
        SelectionConfig(min_similarity=1.5)
    with pytest.raises(ValueError, match="label_mode"):
        SelectionConfig(label_mode="kind")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mined_before"):
        select(["a"], np.ones((1, 4)), ["a", "b"], np.ones((2, 4)), SelectionConfig(), np.zeros(3, bool))
    with pytest.raises(ValueError, match="shapes do not match"):
        select(["a"], np.ones((1, 3)), ["a"], np.ones((1, 4)), SelectionConfig())


def test_stats_precision_and_recall_by_hand():
    pool_labels = ["PASS", "PASS", "PASS", "bridge", "bridge", "polarity", "polarity", "polarity", "polarity"]
    before = np.zeros(9, dtype=bool)
    before[5] = True  # one polarity row mined in an earlier iteration
    selected = pd.DataFrame({"pool_index": [0, 3, 4, 6, 1], "target_label": ["bridge", "bridge", "bridge", "polarity", "PASS"]})
    stats = {s.label: s for s in mining_stats(2, ["bridge", "bridge", "polarity", "PASS"], selected, pool_labels, before)}
    assert stats["bridge"] == LabelStats(2, "bridge", targets=2, mined=3, same_label=2, precision=2 / 3, pool_rows=2,
                                         mined_of_label=2, recall=1.0, cumulative_recall=1.0)
    assert stats["polarity"] == LabelStats(2, "polarity", 1, 1, 1, 1.0, 4, 1, 0.25, 0.5)
    # PASS: its own target found one PASS row, and bridge's target pulled another
    assert stats["PASS"] == LabelStats(2, "PASS", 1, 1, 1, 1.0, 3, 2, 2 / 3, 2 / 3)
    assert headline(list(stats.values())) == {"defect_precision": 0.75, "pass_precision": 1.0}
    frame = stats_frame(list(stats.values()))
    assert list(frame.columns) == list(LabelStats.__dataclass_fields__) and len(frame) == 3
    empty = mining_stats(1, ["scratch"], selected.iloc[:0], pool_labels)
    assert empty == [LabelStats(1, "scratch", 1, 0, 0, None, 0, 0, None, None)]


def test_on_real_demo_images(tiny_workspace_template, tmp_path):
    """Difference embeddings of the tiny demo → two history-aware iterations, label mode: precision 1, recall grows."""
    ws = tiny_workspace_template
    pool = read_rows(ws / "augmentation/mining_pool/mining_pool.csv")
    kpi = read_rows(ws / "kpi/testing_set.csv")
    targets = kpi[kpi["label"] != "PASS"].reset_index(drop=True)
    emb = make_embedder("difference", LAYOUT)
    p_emb, _ = embed_rows(emb, pool, ws / "images")
    t_emb, _ = embed_rows(emb, targets, ws / "images")
    cfg = SelectionConfig(top_k_per_target=1, min_similarity=-1.0, label_mode="label")
    before = np.zeros(len(pool), dtype=bool)
    recalls = []
    for it in (1, 2):
        _, sel = select(targets["label"], t_emb, pool["label"], p_emb, cfg, before)
        stats = mining_stats(it, targets["label"], sel, pool["label"], before)
        assert headline(stats)["defect_precision"] == 1.0
        assert not before[sel["pool_index"]].any()
        before[sel["pool_index"]] = True
        recalls.append({s.label: s.cumulative_recall for s in stats})
    grew = [lab for lab in recalls[0] if recalls[1][lab] > recalls[0][lab]]
    assert grew, recalls  # iteration 2 reached rows iteration 1 could not
