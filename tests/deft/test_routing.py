"""Routing rules: mining by pool labels, SDG by supported labels, DROPPED, both-empty stop."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from raypipe.deft._stage_io import write_parquet
from raypipe.deft.errors import HardStop
from raypipe.deft.routing import run_routing
from raypipe.deft.sdg import supported_sdg_labels
from raypipe.deft.stages import REGISTRY


def _gaps(tmp_path: Path, labels: list[str], lights: int = 2) -> Path:
    rows = []
    for i, lab in enumerate(labels):
        for k in range(lights):
            rows.append({"filepath": f"/ws/images/c/{lab}{i}_L{k}.png", "label": lab, "siamese_score": 0.5,
                         "weakness": 0.1, "input_path": "/ws/images/c", "golden_path": "/ws/images/g",
                         "object_name": f"{lab}{i}", "light": f"L{k}"})
    return write_parquet(pd.DataFrame(rows), tmp_path / "kpi_gaps.parquet")


def _pool(tmp_path: Path, labels: list[str]) -> Path:
    p = tmp_path / "pool.csv"
    pd.DataFrame({"input_path": "c", "golden_path": "g", "label": labels,
                  "object_name": [f"o{i}" for i in range(len(labels))]}).to_csv(p, index=False)
    return p


def test_labels_go_to_mining_sdg_both_or_dropped(tmp_path):
    gaps = _gaps(tmp_path, ["PASS", "bridge", "bridge", "missing", "weird"])
    pool = _pool(tmp_path, ["PASS", "Bridge ", "PASS"])  # upper-cased and stripped for the comparison
    out = tmp_path / "routing" / "T1"
    ev = run_routing(gaps, pool, out, supported_labels={"bridge", "MISSING"})
    REGISTRY["routing"].validate({}, "iter1", ev)
    mining = pd.read_parquet(ev["routing_mining_parquet"])
    sdg = pd.read_parquet(ev["routing_anomalygen_parquet"])
    assert sorted(set(mining["label"])) == ["PASS", "bridge"]  # PASS: hard negatives from the pool
    assert sorted(set(sdg["label"])) == ["bridge", "missing"]  # never PASS
    assert len(mining) == 3 * 2 and len(sdg) == 3 * 2  # every light row of the routed samples
    assert list(mining.columns) == list(pd.read_parquet(gaps).columns)
    summary = (out / "routing_summary.txt").read_text()
    assert "DROPPED labels: WEIRD" in summary
    assert "BRIDGE" in summary and "MINING + SDG" in summary


def test_pass_never_goes_to_sdg_even_if_listed(tmp_path):
    gaps = _gaps(tmp_path, ["PASS", "missing"])
    ev = run_routing(gaps, None, tmp_path / "r", supported_labels={"PASS", "missing"})
    assert set(pd.read_parquet(ev["routing_anomalygen_parquet"])["label"]) == {"missing"}


def test_missing_pool_is_listed_and_leaves_mining_empty(tmp_path):
    gaps = _gaps(tmp_path, ["PASS", "missing"])
    out = tmp_path / "r"
    ev = run_routing(gaps, tmp_path / "no_such_pool.csv", out, supported_labels={"MISSING"})
    mining = pd.read_parquet(ev["routing_mining_parquet"])
    assert mining.empty and list(mining.columns) == list(pd.read_parquet(gaps).columns)
    assert len(pd.read_parquet(ev["routing_anomalygen_parquet"])) == 2
    summary = (out / "routing_summary.txt").read_text()
    assert "POOL UNUSABLE" in summary and "does not exist" in summary
    assert "DROPPED labels: PASS" in summary


def test_both_empty_is_a_hard_stop_with_summary(tmp_path):
    gaps = _gaps(tmp_path, ["weird", "odd"])
    pool = _pool(tmp_path, ["PASS"])
    out = tmp_path / "r"
    with pytest.raises(HardStop) as err:
        run_routing(gaps, pool, out, supported_labels=supported_sdg_labels({}, None))
    assert err.value.stage == "routing" and "recipes" in err.value.fix
    assert "DROPPED labels: ODD, WEIRD" in (out / "routing_summary.txt").read_text()


def test_empty_pool_file(tmp_path):
    gaps = _gaps(tmp_path, ["bridge"])
    pool = tmp_path / "pool.csv"
    pool.write_text("input_path,golden_path,label,object_name\n")
    ev = run_routing(gaps, pool, tmp_path / "r", supported_labels={"BRIDGE"})
    assert pd.read_parquet(ev["routing_mining_parquet"]).empty
    assert "has no rows" in (tmp_path / "r" / "routing_summary.txt").read_text()


def test_supported_labels_default_and_configured():
    default = supported_sdg_labels({"solder_ball": "excess_solder"}, None)
    assert {"BRIDGE", "MISSING", "POLARITY", "FOREIGN_MATERIAL", "SOLDER_BALL"} <= default
    assert "TEXTURE" not in default and "PASS" not in default
    assert supported_sdg_labels({}, ["scratch", "PASS"]) == {"SCRATCH"}
    with pytest.raises(ValueError, match="unknown recipe"):
        supported_sdg_labels({"x": "laser"}, None)


def test_rerun_replaces_outputs(tmp_path):
    out = tmp_path / "r"
    run_routing(_gaps(tmp_path, ["bridge", "missing"]), None, out, supported_labels={"BRIDGE", "MISSING"})
    (out / "stale.parquet").write_bytes(b"x")
    ev = run_routing(_gaps(tmp_path, ["bridge"]), None, out, supported_labels={"BRIDGE"})
    assert not (out / "stale.parquet").exists()
    assert set(pd.read_parquet(ev["routing_anomalygen_parquet"])["label"]) == {"bridge"}


def test_labels_the_pool_holds_enough_of_are_mined_not_synthesised(tmp_path):
    gaps = _gaps(tmp_path, ["bridge", "missing", "polarity"])
    pool = _pool(tmp_path, ["bridge"] * 3 + ["missing"] * 2 + ["PASS"] * 4)  # no polarity row
    out = tmp_path / "routing" / "T1"
    ev = run_routing(gaps, pool, out, supported_labels={"BRIDGE", "MISSING", "POLARITY"}, synthesise_below_pool_rows=3)
    assert set(pd.read_parquet(ev["routing_mining_parquet"])["label"]) == {"bridge", "missing"}
    assert set(pd.read_parquet(ev["routing_anomalygen_parquet"])["label"]) == {"missing", "polarity"}
    summary = (out / "routing_summary.txt").read_text()
    assert "MINING (not synthesised: 3 pool rows, at least 3)" in summary
    # without the threshold every supported label is synthesised, however many pool rows it has
    ev = run_routing(gaps, pool, tmp_path / "r2", supported_labels={"BRIDGE", "MISSING", "POLARITY"})
    assert set(pd.read_parquet(ev["routing_anomalygen_parquet"])["label"]) == {"bridge", "missing", "polarity"}
