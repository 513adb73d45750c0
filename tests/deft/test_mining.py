"""Mining (the data_mining stage) on the tiny demo workspace with the real pixel embedder and FAISS."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raypipe import tao_interop as ti
from raypipe.deft._stage_io import write_parquet
from raypipe.deft.errors import HardStop
from raypipe.deft.iteration_metrics import iteration_metrics
from raypipe.deft.mining import BLIND_PRECISION, summary_line
from raypipe.deft.report import _Run, mining_rows
from raypipe.deft.sdg import run_sdg
from raypipe.deft.stages import REGISTRY
from raypipe.testing.tao_contract import check_mining_ledger
from raypipe.workspace import normalise_label, read_rows
from tests.deft._stage_data import LAYOUT, kpi_capture_files, mine, routed, run_dir

POOL = "augmentation/mining_pool/mining_pool.csv"


def _ledger(ws: Path) -> dict:
    return json.loads((run_dir(ws) / "mining_history.json").read_text())


def _sdg(ws: Path, gaps: Path, n: int) -> Path:
    ev = run_sdg(gaps, ws / "train/base/training_set.csv", ws / "images", run_dir(ws) / "iter1", workspace_root=ws,
                 layout=LAYOUT, num_sdg=n, recipes={}, iteration=1, seed=0, kpi_capture_files=kpi_capture_files(ws))
    return Path(ev["anomalygen_sdg_rows_csv"])


def test_history_aware_iterations_and_tao_ledger(tiny_workspace):
    ws = tiny_workspace
    mining_gaps, _ = routed(ws)
    ev1 = mine(ws, mining_gaps, 1, k=3)
    REGISTRY["data_mining"].validate({}, "iter1", ev1)  # the commit's own evidence check (TAO's logs included)
    mined1 = pd.read_parquet(ev1["mining_mined_parquet"])
    assert ev1["mining_mined_count"] == len(mined1) > 0
    first = set(mined1["filepath"])

    # same targets again: rows mined earlier are out of the search space, so the next-nearest are found
    ev2 = mine(ws, mining_gaps, 2, k=3)
    mined2 = pd.read_parquet(ev2["mining_mined_parquet"])
    assert len(mined2) > 0 and not set(mined2["filepath"]) & first
    summary2 = json.loads(Path(ev2["mining_history_summary"]).read_text())
    assert summary2["excluded_mined_earlier"] == len(first) and summary2["already_mined_count"] == 0
    assert all(k in summary2 for k in ti.MINING_SUMMARY_KEYS)

    ledger = _ledger(ws)
    assert ledger["version"] == ti.LEDGER_VERSION and ledger["identity"] == "filepath"
    assert [e["iteration"] for e in ledger["iterations"]] == [1, 2]
    e2 = ledger["iterations"][1]
    assert e2["selected_filepaths"] == sorted(mined2["filepath"]) and all(os.path.isabs(p) for p in first)
    assert e2["output_sha256"] == ti.file_sha256(ev2["mining_mined_parquet"])
    assert ledger["cumulative_unique_count"] == len(first) + len(mined2) == summary2["cumulative_unique_count"]
    state = {"iterations": {"iter1": ev1, "iter2": ev2}}
    assert check_mining_ledger(run_dir(ws), state) == []  # TAO's own reading of the ledger

    # a re-run of iteration 1 (after a kill) replaces its entry; iteration 2's stays
    assert set(pd.read_parquet(mine(ws, mining_gaps, 1, k=3)["mining_mined_parquet"])["filepath"]) == first
    assert [e["iteration"] for e in _ledger(ws)["iterations"]] == [1, 2]

    # nothing kept and no SDG rows: nothing to train on, and the ledger is left as it was
    before = (run_dir(ws) / "mining_history.json").read_bytes()
    with pytest.raises(HardStop, match="nothing new to train on"):
        mine(ws, mining_gaps, 3, k=3, min_sim=1.0)
    assert (run_dir(ws) / "mining_history.json").read_bytes() == before


def test_per_label_stats_logs_and_summary_line(tiny_workspace, tmp_path):
    ws = tiny_workspace
    mining_gaps, _ = routed(ws)
    ev = mine(ws, mining_gaps, 1, k=2, cache_dir=tmp_path / "cache")
    stats = pd.read_csv(ev["mining_stats_csv"], keep_default_na=False, na_values=[""]).set_index("label")
    mined = pd.read_parquet(ev["mining_mined_parquet"])
    pool = read_rows(ws / POOL)
    targets = pd.read_parquet(mining_gaps).drop_duplicates("object_name")
    for label, row in stats.iterrows():
        by_label = mined[mined["target_label"] == label]
        assert row["targets"] == (targets["label"].map(normalise_label) == label).sum()
        assert row["mined"] == len(by_label)
        assert row["precision"] == pytest.approx(1.0)  # label mode: a target searches its own label's rows
        assert row["pool_rows"] == (pool["label"].map(normalise_label) == label).sum()
        assert row["recall"] == pytest.approx((mined["label"] == label).sum() / row["pool_rows"])
        assert 0.0 <= row[BLIND_PRECISION] <= 1.0  # the embedder's own precision, searching label-blind
    line = summary_line(ev["mining_stats_csv"], ev["mining_mined_count"])
    assert "\n" not in line and f"mined {len(mined)} novel pool rows" in line
    # the same numbers go to MLflow (per label) with the defect-target headline
    metrics = iteration_metrics({"iterations": {"iter1": ev}, "events": []}, "iter1")
    for label, row in stats.iterrows():
        assert metrics[f"mining_{label}_mined"] == row["mined"]
        assert metrics[f"mining_{label}_recall"] == pytest.approx(row["recall"])
    defect = stats[stats.index != "PASS"]
    assert metrics["mining_defect_precision"] == pytest.approx(defect["same_label"].sum() / defect["mined"].sum())
    # and to the report's mining table: one row per kind, the counts of the file
    rows = mining_rows(_Run(run_dir(ws), {"iterations": {"iter1": ev}}, {}))
    assert [(r[0], r[1], float(r[3])) for r in rows] == [("iter1", lab, row["mined"]) for lab, row in stats.iterrows()]

    # TAO's step logs state the real facts, then TAO's status line
    source = Path(ev["mining_source_log"]).read_text().splitlines()
    assert source[-1] == ti.STATUS_PASS and f"rows: {len(pool)}" in source and "embedded_now: 0" not in source
    assert "cache_hits: 0" in source
    knn = Path(ev["mining_knn_log"]).read_text()
    assert "label_mode: label" in knn and f"selected: {len(mined)}" in knn
    resolved = pd.read_csv(run_dir(ws) / ti.RESOLVED_POOL_CSV)
    assert len(resolved) == len(pool) and resolved["filepath"].str.endswith("_LowAngleLight.png").all()

    # a second run reads every vector from the content cache and mines the same rows
    again = mine(ws, mining_gaps, 1, k=2, cache_dir=tmp_path / "cache")
    assert f"cache_hits: {len(pool)}" in Path(again["mining_source_log"]).read_text().splitlines()
    assert set(pd.read_parquet(again["mining_mined_parquet"])["filepath"]) == set(mined["filepath"])


def test_similarity_filter_and_mining_pool(tiny_workspace):
    ws = tiny_workspace
    mining_gaps, sdg_gaps = routed(ws)
    sdg_csv = _sdg(ws, sdg_gaps, 4)
    all_sims = pd.read_parquet(mine(ws, mining_gaps, 1, k=4)["mining_candidate_parquet"])["similarity"]
    threshold = float(np.median(all_sims))
    ev = mine(ws, mining_gaps, 1, k=4, min_sim=threshold, sdg_rows=sdg_csv)

    knn = pd.read_csv(ev["mining_summary"])
    assert list(knn.columns) == ["candidate_count", "kept_count", "rejected_count", "similarity_threshold"]
    row = knn.iloc[0]
    assert row["candidate_count"] == row["kept_count"] + row["rejected_count"] == len(all_sims)
    assert 0 < row["kept_count"] < row["candidate_count"] and row["similarity_threshold"] == threshold
    mined = pd.read_parquet(ev["mining_mined_parquet"])
    assert (mined["similarity"] >= threshold).all() and len(mined) == row["kept_count"]

    pool = read_rows(ev["mining_pool_csv"])
    sdg_rows = read_rows(sdg_csv)
    assert len(pool) == len(sdg_rows) + len(mined)
    assert list(pool["object_name"][:len(sdg_rows)]) == list(sdg_rows["object_name"])
    assert not set(pool.columns) & {"similarity", "target_label", "filepath"}
    for rec in pool.to_dict("records"):  # workspace-root-relative, every light present
        assert not os.path.isabs(rec["input_path"]) and rec["input_path"].startswith(("images/", "results/"))
        assert all(p.is_file() for p in LAYOUT.capture_paths(ws, rec) + LAYOUT.golden_paths(ws, rec))

    emb = pd.read_parquet(ev["mining_source_embeddings"])
    assert len(emb) == len(read_rows(ws / POOL))
    assert np.allclose(np.linalg.norm(np.stack(emb["embedding"].to_numpy()), axis=1), 1.0, atol=1e-5)


def test_label_blind_mode_mines_across_labels(tiny_workspace):
    ws = tiny_workspace
    mining_gaps, _ = routed(ws)
    ev = mine(ws, mining_gaps, 1, k=3, label_mode="none")
    stats = pd.read_csv(ev["mining_stats_csv"], keep_default_na=False, na_values=[""])
    mined = pd.read_parquet(ev["mining_mined_parquet"])
    same = (mined["label"] == mined["target_label"]).mean()
    assert json.loads(Path(ev["mining_history_summary"]).read_text())["mining_precision"] == pytest.approx(same)
    assert same < 1.0  # the pixel embedder alone confuses kinds on the demo: label mode exists for that
    assert stats["precision"].fillna(-1).tolist() == stats[BLIND_PRECISION].fillna(-1).tolist()


def test_validation_row_in_pool_and_broken_pool_row_are_hard_stops(tiny_workspace):
    ws = tiny_workspace
    mining_gaps, _ = routed(ws)
    pool_csv = ws / POOL
    pool = read_rows(pool_csv)
    planted = pd.concat([pool, read_rows(ws / "train/base/validation_set.csv").iloc[[0]]], ignore_index=True)
    planted.to_csv(pool_csv, index=False)
    with pytest.raises(HardStop, match="overlap the validation set") as err:
        mine(ws, mining_gaps, 1, k=len(planted), label_mode="none")  # every pool row is a candidate
    assert err.value.stage == "data_mining"
    assert not (run_dir(ws) / "mining_history.json").exists()

    broken = pool.copy()
    broken.loc[3, "golden_path"] = "images/nowhere"
    broken.to_csv(pool_csv, index=False)
    with pytest.raises(HardStop, match=r"mining_pool.csv: .*row 4, column 'golden_path'"):
        mine(ws, mining_gaps, 1)


def test_skip_writes_an_empty_ledger_entry_and_warning_paths(tiny_workspace, caplog):
    ws = tiny_workspace
    mining_gaps, sdg_gaps = routed(ws)
    empty = write_parquet(pd.read_parquet(mining_gaps).iloc[:0], ws / "empty.parquet")
    with pytest.raises(HardStop, match="nothing new to train on"):
        mine(ws, empty, 1)

    ev = mine(ws, empty, 1, sdg_rows=_sdg(ws, sdg_gaps, 2))
    assert ev["data_mining_skipped"] is True and len(read_rows(ev["mining_pool_csv"])) == 2
    REGISTRY["data_mining"].validate({}, "iter1", ev)
    # iteration 2 mines after a skipped iteration 1: TAO's ledger stays contiguous and verifiable
    ev2 = mine(ws, mining_gaps, 2)
    assert [(e["iteration"], e["selected_count"]) for e in _ledger(ws)["iterations"]] == \
        [(1, 0), (2, ev2["mining_mined_count"])]
    assert check_mining_ledger(run_dir(ws), {"iterations": {"iter1": ev, "iter2": ev2}}) == []

    # a target label with no pool rows is warned about before mining
    pool_csv = ws / POOL
    pool = read_rows(pool_csv)
    pool[pool["label"] != "bridge"].to_csv(pool_csv, index=False)
    with caplog.at_level(logging.WARNING, logger="raypipe.deft.mining"):
        ev = mine(ws, mining_gaps, 1)
    assert any("bridge" in r.getMessage() for r in caplog.records)
    summary = json.loads(Path(ev["mining_history_summary"]).read_text())
    assert summary["labels_without_pool_rows"] == ["bridge"] and summary["warnings"]
