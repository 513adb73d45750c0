"""Merge (the data_merge stage): provenance, multiset retention and the pre-training validation."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from raypipe.deft.errors import HardStop
from raypipe.deft.merge import run_merge
from raypipe.deft.sdg import run_sdg
from raypipe.deft.stages import REGISTRY
from raypipe.workspace import read_rows
from tests.deft._stage_data import LAYOUT, kpi_capture_files, mine, routed, run_dir


def _pool(ws: Path, iteration: int, k: int) -> Path:
    """The real mining_pool.csv of ``iteration``: SDG rows + novel mined rows."""
    mining_gaps, sdg_gaps = routed(ws)
    rd = run_dir(ws)
    sdg = run_sdg(sdg_gaps, ws / "train/base/training_set.csv", ws / "images", rd / f"iter{iteration}",
                  workspace_root=ws, layout=LAYOUT, num_sdg=3, recipes={}, iteration=iteration, seed=1,
                  kpi_capture_files=kpi_capture_files(ws))
    ev = mine(ws, mining_gaps, iteration, k=k, sdg_rows=Path(sdg["anomalygen_sdg_rows_csv"]))
    return Path(ev["mining_pool_csv"])


def _merge(ws: Path, iteration: int, pool: Path, prev: Path | None = None, train_csv: Path | None = None):
    return run_merge(iteration, run_dir(ws) / f"iter{iteration}", base_train_csv=train_csv or ws / "train/base/training_set.csv",
                     base_images_dir=ws / "images", prev_combined_csv=prev, mining_pool_csv=pool, workspace_root=ws,
                     validation_csv=ws / "train/base/validation_set.csv", validation_images_dir=ws / "images",
                     kpi_csv=ws / "kpi/testing_set.csv", kpi_images_dir=ws / "images", layout=LAYOUT)


def _rows(df: pd.DataFrame) -> Counter:
    return Counter(map(tuple, df.to_numpy().tolist()))


def test_two_iterations_provenance_and_multiset_retention(tiny_workspace):
    ws = tiny_workspace
    pool1 = _pool(ws, 1, k=2)
    p1 = read_rows(pool1)
    p1["lot"] = "L7"  # an extra column only the new rows carry: preserved, empty for the others
    p1.to_csv(pool1, index=False)
    ev1 = _merge(ws, 1, pool1)
    REGISTRY["data_merge"].validate({}, "iter1", ev1)

    base = read_rows(ws / "train/base/training_set.csv")
    c1 = read_rows(ev1["combined_training_csv"])
    assert len(c1) == len(base) + len(p1)
    assert list(c1.columns[:4]) == ["input_path", "golden_path", "label", "object_name"]
    assert {"boardname", "project", "comp_type_1", "lot"} <= set(c1.columns)
    assert (c1["lot"][:len(base)] == "").all() and (c1["lot"][len(base):] == "L7").all()
    # base rows rewritten once to workspace-root coordinates, otherwise untouched
    assert list(c1["input_path"][:len(base)]) == ["images/" + p for p in base["input_path"]]
    assert list(c1["object_name"][:len(base)]) == list(base["object_name"])
    for rec in c1.to_dict("records"):
        assert all(p.is_file() for p in LAYOUT.capture_paths(ws, rec))

    prov1 = pd.read_csv(ev1["provenance_csv"], dtype=str, keep_default_na=False)
    assert len(prov1) == len(c1)
    assert list(prov1["object_name"]) == list(c1["object_name"]) and list(prov1["input_path"]) == list(c1["input_path"])
    n_sdg = len(read_rows(run_dir(ws) / "iter1/mining_filter/sdg_rows_raw.csv"))
    assert Counter(prov1["source"]) == {"base_train": len(base), "sdg": n_sdg, "mined": len(p1) - n_sdg}
    assert set(prov1.loc[prov1["source"] == "sdg", "input_path"]) == {
        "results/run_20260101_000000/iter1/dataset/images/synthetic_iter1_ng"}

    report = json.loads(Path(ev1["merge_validation_report"]).read_text())
    assert report["status"] == "passed" and report["rows_checked"] == len(c1)
    assert report["missing_file_count"] == report["train_val_leakage_overlap_count"] == report["kpi_overlap_count"] == 0
    assert report["training_csv"] == ev1["combined_training_csv"]

    pool2 = _pool(ws, 2, k=4)
    ev2 = _merge(ws, 2, pool2, prev=Path(ev1["combined_training_csv"]))
    c2 = read_rows(ev2["combined_training_csv"])
    p2 = read_rows(pool2)
    # previous rows retained exactly: combined_2 = combined_1 + pool_2 as multisets
    assert _rows(c2[c1.columns]) - _rows(c1) == _rows(p2.reindex(columns=c1.columns, fill_value=""))
    assert _rows(c2[c1.columns].iloc[:len(c1)]) == _rows(c1)
    prov2 = pd.read_csv(ev2["provenance_csv"], dtype=str, keep_default_na=False)
    assert list(prov2["source"][:len(c1)]) == ["previous_iter_train"] * len(c1)
    assert list(prov2["origin"][:len(c1)]) == list(prov1["origin"])  # original source carried forward
    assert set(prov2["source"][len(c1):]) <= {"sdg", "mined"} and len(prov2) == len(c2)

    # a re-run replaces its outputs (no appended rows)
    ev2b = _merge(ws, 2, pool2, prev=Path(ev1["combined_training_csv"]))
    assert _rows(read_rows(ev2b["combined_training_csv"])) == _rows(c2)


def _expect_failure(ws: Path, pool: Path, key: str, train_csv: Path | None = None) -> dict:
    with pytest.raises(HardStop) as err:
        _merge(ws, 1, pool, train_csv=train_csv)
    assert err.value.stage == "data_merge"
    report = json.loads((run_dir(ws) / "iter1/dataset/merge_validation.json").read_text())
    assert report["status"] == "failed" and report[key] >= 1, report
    return report


def test_missing_image_fails_validation(tiny_workspace):
    ws = tiny_workspace
    pool = _pool(ws, 1, k=2)
    row = read_rows(pool).iloc[-1].to_dict()
    LAYOUT.capture_paths(ws, row)[1].unlink()
    report = _expect_failure(ws, pool, "missing_file_count")
    assert report["missing_file_count"] == 1 and row["object_name"] in report["file_problems"][0]


def test_kpi_capture_copied_under_another_name_is_caught_by_content(tiny_workspace):
    ws = tiny_workspace
    pool = _pool(ws, 1, k=2)
    base = read_rows(ws / "train/base/training_set.csv")
    kpi = read_rows(ws / "kpi/testing_set.csv")
    target = LAYOUT.capture_paths(ws / "images", base.iloc[2])[0]
    shutil.copyfile(LAYOUT.capture_paths(ws / "images", kpi.iloc[0])[0], target)  # same bytes, other path
    report = _expect_failure(ws, pool, "kpi_overlap_count")
    assert report["kpi_overlap_count"] == 1 and "same content" in report["kpi_overlaps"][0]
    assert f"row {3}:" in report["kpi_overlaps"][0]  # base row 3 is combined row 3


def test_kpi_row_and_validation_row_in_training_fail(tiny_workspace):
    ws = tiny_workspace
    pool = _pool(ws, 1, k=2)
    base = read_rows(ws / "train/base/training_set.csv")
    leaked = pd.concat([base, read_rows(ws / "kpi/testing_set.csv").iloc[[0]],
                        read_rows(ws / "train/base/validation_set.csv").iloc[[0, 1]]], ignore_index=True)
    train_csv = ws / "leaky_train.csv"
    leaked.to_csv(train_csv, index=False)
    report = _expect_failure(ws, pool, "kpi_overlap_count", train_csv=train_csv)
    assert report["kpi_overlap_count"] == 1 and "same path" in report["kpi_overlaps"][0]
    assert report["train_val_leakage_overlap_count"] == 2 and report["missing_file_count"] == 0
