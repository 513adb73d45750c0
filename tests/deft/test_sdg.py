"""Built-in SDG (the anomalygen stage) on the tiny demo workspace."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raypipe.deft._stage_io import write_parquet
from raypipe.deft.errors import HardStop
from raypipe.deft.sdg import allocate, label_from_stem, run_sdg
from raypipe.deft.stages import REGISTRY
from raypipe.workspace import read_rows
from tests.deft._stage_data import LAYOUT, kpi_capture_files, load, routed, run_dir


def _run(ws: Path, gaps: Path, num_sdg: int = 12, **kw):
    args = dict(workspace_root=ws, layout=LAYOUT, num_sdg=num_sdg, recipes={}, iteration=1, seed=3,
                kpi_capture_files=kpi_capture_files(ws))
    args.update(kw)
    return run_sdg(gaps, ws / "train/base/training_set.csv", ws / "images", run_dir(ws) / "iter1", **args)


def test_allocation_is_proportional_and_sums_to_total():
    assert allocate({"R+bridge": 3, "C+missing": 1}, 8) == {"R+bridge": 6, "C+missing": 2}
    alloc = allocate({"a+x": 1, "b+x": 1, "c+x": 1}, 10)
    assert sum(alloc.values()) == 10 and sorted(alloc.values()) == [3, 3, 4]
    assert allocate({"a+x": 5, "b+y": 1}, 1) == {"a+x": 1}  # zeros dropped
    assert allocate({"a+x": 1}, 0) == {}


def test_label_from_stem():
    assert label_from_stem("resistor+excess_solder_0012") == "excess_solder"
    assert label_from_stem("PCB+Missing_3") == "missing"


def test_sdg_writes_consistent_multilight_pairs(tiny_workspace):
    ws = tiny_workspace
    _, sdg_gaps = routed(ws)
    ev = _run(ws, sdg_gaps, num_sdg=12)
    REGISTRY["anomalygen"].validate({}, "iter1", ev)
    iter_dir = run_dir(ws) / "iter1"

    alloc = json.loads(Path(ev["anomalygen_allocation_json"]).read_text())
    assert sum(alloc.values()) == 12 == ev["anomalygen_amp_allocated"]
    gap_samples = pd.read_parquet(sdg_gaps).drop_duplicates("object_name")
    expected = allocate({f"{t}+{lab}": int(n) for (t, lab), n in
                         gap_samples.groupby(["comp_type_1", "label"]).size().items()}, 12)
    assert alloc == expected  # texture = the component type of the weak samples

    res = pd.read_csv(ev["anomalygen_sdg_csv"])
    assert len(res) == 12
    assert {"file", "label", "source_golden", "parameters", "psnr"} <= set(res.columns)
    assert (res["psnr"] > 10).all() and np.isfinite(res["psnr"]).all()
    rows = read_rows(ev["anomalygen_sdg_rows_csv"])
    assert Path(ev["anomalygen_sdg_rows_csv"]) == iter_dir / "mining_filter" / "sdg_rows_raw.csv"
    assert len(rows) == 12 and list(rows.columns[:4]) == ["input_path", "golden_path", "label", "object_name"]
    assert set(rows["input_path"]) == {"results/run_20260101_000000/iter1/dataset/images/synthetic_iter1_ng"}
    assert set(rows["golden_path"]) == {"results/run_20260101_000000/iter1/dataset/images/synthetic_iter1_ok"}
    assert "comp_type_1" in rows.columns  # extra columns carried from the source training row

    train_goldens = {os.path.realpath(p) for rec in read_rows(ws / "train/base/training_set.csv").to_dict("records")
                     for p in LAYOUT.golden_paths(ws / "images", rec)}
    kpi = {os.path.realpath(p) for p in kpi_capture_files(ws)}
    ious = []
    for r, row in zip(res.to_dict("records"), rows.to_dict("records")):
        stem = Path(r["file"]).stem
        assert row["object_name"] == stem and row["label"] == label_from_stem(stem) == r["label"]
        assert Path(r["file"]).parent.name == "reconstructed_image"
        assert (iter_dir / "anomalygen/sdg/original_image" / f"{stem}.png").is_file()
        sources = r["source_golden"].split(";")
        assert {os.path.realpath(s) for s in sources} <= train_goldens  # drawn on TRAINING goldens
        assert not {os.path.realpath(s) for s in sources} & kpi
        for light, src in zip(LAYOUT.lights, sources):
            ng = ws / row["input_path"] / f"{stem}_{light}.png"
            ok = ws / row["golden_path"] / f"{stem}_{light}.png"
            assert ng.is_file() and ok.is_file()
            assert np.array_equal(load(ok), load(Path(src)))  # the OK image is the untouched golden
            assert not np.array_equal(load(ng), load(ok))
        # same geometry in every light: the changed-pixel masks of the lights overlap
        recon, orig = load(Path(r["file"])), load(iter_dir / "anomalygen/sdg/original_image" / f"{stem}.png")
        w = recon.shape[1] // len(LAYOUT.lights)
        masks = [np.abs(recon[:, i * w:(i + 1) * w] - orig[:, i * w:(i + 1) * w]).sum(axis=2) > 0.1
                 for i in range(len(LAYOUT.lights))]
        assert all(m.sum() > 0 for m in masks), r["recipe"]
        ious.append((masks[0] & masks[1]).sum() / (masks[0] | masks[1]).sum())
    assert min(ious) > 0.1 and float(np.median(ious)) > 0.6


def test_training_golden_that_is_a_kpi_capture_is_refused(tiny_workspace):
    ws = tiny_workspace
    _, sdg_gaps = routed(ws)
    train = read_rows(ws / "train/base/training_set.csv")
    planted = LAYOUT.golden_paths(ws / "images", train.iloc[5])[1]
    with pytest.raises(HardStop, match=r"row 6, column 'golden_path'.*KPI capture"):
        _run(ws, sdg_gaps, kpi_capture_files=kpi_capture_files(ws) | {planted})


def test_empty_subset_is_skipped_and_rerun_replaces(tiny_workspace):
    ws = tiny_workspace
    _, sdg_gaps = routed(ws)
    ev = _run(ws, sdg_gaps, num_sdg=6)
    ng_dir = run_dir(ws) / "iter1/dataset/images/synthetic_iter1_ng"
    assert len(list(ng_dir.iterdir())) == 6 * len(LAYOUT.lights)
    ev = _run(ws, sdg_gaps, num_sdg=3)  # a re-run after a kill: replaced, not appended
    assert len(list(ng_dir.iterdir())) == 3 * len(LAYOUT.lights)
    assert len(pd.read_csv(ev["anomalygen_sdg_csv"])) == 3 and len(read_rows(ev["anomalygen_sdg_rows_csv"])) == 3
    assert len(list((run_dir(ws) / "iter1/anomalygen/sdg/reconstructed_image").iterdir())) == 3

    empty = write_parquet(pd.read_parquet(sdg_gaps).iloc[:0], ws / "empty.parquet")
    ev = _run(ws, empty)
    assert ev == {"anomalygen_skipped": True}
    REGISTRY["anomalygen"].validate({}, "iter1", ev)
    assert not (run_dir(ws) / "iter1/mining_filter/sdg_rows_raw.csv").exists()  # no stale rows for mining
