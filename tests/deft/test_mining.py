"""Mining (the data_mining stage) on the tiny demo workspace with the real pixel embedder and FAISS."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raypipe.deft._stage_io import write_parquet
from raypipe.deft.errors import HardStop
from raypipe.deft.mining import MiningInputs, cosine_knn, l2_normalise, pixel_embedder, run_mining
from raypipe.deft.sdg import run_sdg
from raypipe.deft.stages import REGISTRY
from raypipe.rundir import RunDir
from raypipe.workspace import read_rows
from tests.deft._stage_data import LAYOUT, kpi_capture_files, routed, run_dir

EMBED = pixel_embedder(LAYOUT)


def _mine(ws: Path, gaps: Path, iteration: int = 1, *, k: int = 3, min_sim: float = -1.0,
          sdg_rows: Path | None = None, pool: Path | None = None):
    rd = run_dir(ws)
    return run_mining(MiningInputs(
        mining_gaps=gaps, pool_csv=pool or ws / "augmentation/mining_pool/mining_pool.csv", pool_images_dir=ws / "images",
        out=RunDir(rd).iteration(f"iter{iteration}").mining, workspace_root=ws, top_k_per_target=k,
        min_similarity=min_sim, history_path=RunDir(rd).mining_history, iteration=iteration,
        validation_csv=ws / "train/base/validation_set.csv", validation_images_dir=ws / "images",
        sdg_rows_csv=sdg_rows), embed=EMBED)


def _history(ws: Path) -> dict:
    return json.loads((run_dir(ws) / "mining_history.json").read_text())


def test_cosine_knn_matches_brute_force():
    rng = np.random.default_rng(0)
    t, p = l2_normalise(rng.normal(size=(7, 16))), l2_normalise(rng.normal(size=(50, 16)))
    sims, idx = cosine_knn(t, p, 4)
    full = t @ p.T
    assert np.array_equal(idx, np.argsort(-full, axis=1)[:, :4])
    assert np.allclose(sims, np.take_along_axis(full, idx, axis=1), atol=1e-5)
    assert cosine_knn(t, p[:2], 5)[1].shape == (7, 2)  # k capped by the pool size
    assert np.allclose(np.linalg.norm(l2_normalise(np.array([[3.0, 4.0], [0.0, 0.0]])), axis=1), [1, 0])


def test_ledger_drops_rows_mined_in_earlier_iterations(tiny_workspace):
    ws = tiny_workspace
    mining_gaps, _ = routed(ws)
    ev1 = _mine(ws, mining_gaps, 1, k=3)
    REGISTRY["data_mining"].validate({}, "iter1", ev1)  # the commit's own evidence check
    mined1 = pd.read_parquet(ev1["mining_mined_parquet"])
    assert ev1["mining_mined_count"] == len(mined1) > 0
    first = set(mined1["filepath"])

    ev2 = _mine(ws, mining_gaps, 2, k=6)  # same targets, wider net: only the new neighbours are novel
    mined2 = pd.read_parquet(ev2["mining_mined_parquet"])
    cands2 = pd.read_parquet(ev2["mining_candidate_parquet"])
    assert not set(mined2["filepath"]) & first
    assert set(cands2.loc[cands2["already_mined"], "filepath"]) == first  # top-3 ⊂ top-6, all kept
    assert len(mined2) == len(cands2) - len(first) > 0

    hist = _history(ws)
    assert [e["iteration"] for e in hist["iterations"]] == [1, 2]
    e2 = hist["iterations"][1]
    assert e2 == {"iteration": 2, "topn": 6, "candidate_unique_count": len(cands2),
                  "already_mined_count": len(first), "selected_count": len(mined2),
                  "selected_filepaths": sorted(mined2["filepath"])}
    assert hist["cumulative_unique_count"] == len(first) + len(mined2)
    assert all(os.path.isabs(fp) for fp in e2["selected_filepaths"])

    # a re-run of iteration 1 (after a kill) replaces its entry; iteration 2's stays
    ev1b = _mine(ws, mining_gaps, 1, k=3)
    assert set(pd.read_parquet(ev1b["mining_mined_parquet"])["filepath"]) == first
    assert [e["iteration"] for e in _history(ws)["iterations"]] == [1, 2]

    # iteration 3 with the same net finds nothing new and has no SDG rows: nothing to train on
    with pytest.raises(HardStop, match="nothing new to train on"):
        _mine(ws, mining_gaps, 3, k=6)
    assert [e["iteration"] for e in _history(ws)["iterations"]] == [1, 2]  # ledger untouched by the failure


def test_similarity_filter_summary_and_mining_pool(tiny_workspace):
    ws = tiny_workspace
    mining_gaps, sdg_gaps = routed(ws)
    sdg = run_sdg(sdg_gaps, ws / "train/base/training_set.csv", ws / "images", run_dir(ws) / "iter1",
                  workspace_root=ws, layout=LAYOUT, num_sdg=4, recipes={}, iteration=1, seed=0,
                  kpi_capture_files=kpi_capture_files(ws))
    all_sims = pd.read_parquet(_mine(ws, mining_gaps, 1, k=4)["mining_candidate_parquet"])["similarity"]
    threshold = float(np.median(all_sims))
    ev = _mine(ws, mining_gaps, 1, k=4, min_sim=threshold, sdg_rows=Path(sdg["anomalygen_sdg_rows_csv"]))

    knn = pd.read_csv(ev["mining_summary"])
    assert list(knn.columns) == ["candidate_count", "kept_count", "rejected_count", "similarity_threshold"]
    row = knn.iloc[0]
    assert row["candidate_count"] == row["kept_count"] + row["rejected_count"] == len(all_sims)
    assert 0 < row["kept_count"] < row["candidate_count"] and row["similarity_threshold"] == threshold
    mined = pd.read_parquet(ev["mining_mined_parquet"])
    assert (mined["similarity"] >= threshold).all() and len(mined) == row["kept_count"]
    assert set(mined["target_label"]) <= set(pd.read_parquet(mining_gaps)["label"])  # mining precision measurable
    summary = json.loads(Path(ev["mining_history_summary"]).read_text())
    expected_precision = float((mined["label"].str.upper() == mined["target_label"].str.upper()).mean())
    assert summary["mining_precision"] == pytest.approx(expected_precision)

    pool = read_rows(ev["mining_pool_csv"])
    sdg_rows = read_rows(sdg["anomalygen_sdg_rows_csv"])
    assert len(pool) == len(sdg_rows) + len(mined)
    assert list(pool["object_name"][:len(sdg_rows)]) == list(sdg_rows["object_name"])
    assert not set(pool.columns) & {"similarity", "target_label", "filepath"}
    for rec in pool.to_dict("records"):  # workspace-root-relative, every light present
        assert not os.path.isabs(rec["input_path"]) and rec["input_path"].startswith(("images/", "results/"))
        assert all(p.is_file() for p in LAYOUT.capture_paths(ws, rec) + LAYOUT.golden_paths(ws, rec))

    emb = pd.read_parquet(ev["mining_source_embeddings"])
    assert len(emb) == len(read_rows(ws / "augmentation/mining_pool/mining_pool.csv"))
    assert np.allclose(np.linalg.norm(np.stack(emb["embedding"].to_numpy()), axis=1), 1.0, atol=1e-5)


def test_validation_row_in_pool_is_a_hard_stop(tiny_workspace):
    ws = tiny_workspace
    mining_gaps, _ = routed(ws)
    pool_csv = ws / "augmentation/mining_pool/mining_pool.csv"
    pool = read_rows(pool_csv)
    planted = pd.concat([pool, read_rows(ws / "train/base/validation_set.csv").iloc[[0]]], ignore_index=True)
    planted.to_csv(pool_csv, index=False)
    with pytest.raises(HardStop, match="overlap the validation set") as err:
        _mine(ws, mining_gaps, 1, k=len(planted))  # every pool row is a candidate
    assert err.value.stage == "data_mining"
    assert not (run_dir(ws) / "mining_history.json").exists()


def test_skip_and_warning_paths(tiny_workspace, caplog):
    ws = tiny_workspace
    mining_gaps, sdg_gaps = routed(ws)
    empty = write_parquet(pd.read_parquet(mining_gaps).iloc[:0], ws / "empty.parquet")
    with pytest.raises(HardStop, match="nothing new to train on"):
        _mine(ws, empty, 1)

    sdg = run_sdg(sdg_gaps, ws / "train/base/training_set.csv", ws / "images", run_dir(ws) / "iter1",
                  workspace_root=ws, layout=LAYOUT, num_sdg=2, recipes={}, iteration=1, seed=0,
                  kpi_capture_files=kpi_capture_files(ws))
    ev = _mine(ws, empty, 1, sdg_rows=Path(sdg["anomalygen_sdg_rows_csv"]))
    assert ev["data_mining_skipped"] is True and len(read_rows(ev["mining_pool_csv"])) == 2
    REGISTRY["data_mining"].validate({}, "iter1", ev)

    # a target label with no pool rows is warned about before mining
    pool_csv = ws / "augmentation/mining_pool/mining_pool.csv"
    pool = read_rows(pool_csv)
    pool[pool["label"] != "bridge"].to_csv(pool_csv, index=False)
    with caplog.at_level(logging.WARNING, logger="raypipe.deft.mining"):
        ev = _mine(ws, mining_gaps, 1)
    assert any("BRIDGE" in r.getMessage() for r in caplog.records)
    summary = json.loads(Path(ev["mining_history_summary"]).read_text())
    assert summary["labels_without_pool_rows"] == ["BRIDGE"] and summary["warnings"]
