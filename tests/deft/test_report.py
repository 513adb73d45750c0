"""DEFT_Loop_Report.html: self-contained, every section, rendered from the files on disk."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
from PIL import Image

from raypipe._io import atomic_write_json
from raypipe.deft import finalize
from raypipe.deft.report import render_report
from raypipe.deft.state import commit, load_state
from raypipe.rundir import RunDir

from ._helpers import eval_evidence, new_run, parquet, train_evidence


def _png(path, shade):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((48, 48, 3), shade, dtype=np.uint8)).save(path)
    return path


def test_report_sections_and_self_contained(tmp_path):
    rd = new_run(tmp_path, baseline=True)
    sp = RunDir(rd).deft_state
    base_ck = load_state(sp)["iterations"]["baseline"]["best_ckpt_path"]
    commit(sp, "baseline", "evaluate", eval_evidence(rd, "baseline", base_ck, far_pass_scores=[0.1, 0.95, 0.2, 0.97]),
           duration_s=1, summary="e")
    rca = rd / "baseline/rca_results/20260101_000000"
    atomic_write_json(rca / "metrics.json", {"per_label": {"missing": {"total": 4, "n_misclassified": 1,
                                                                       "mean_weakness": 0.31, "median_weakness": 0.2,
                                                                       "max_weakness": 0.6}}})
    _png(rca / "rca_images" / "missing_0.png", 80)
    commit(sp, "baseline", "rca", {"rca_gaps_parquet": str(parquet(rca / "kpi_gaps.parquet", 3)),
                                   "rca_threshold": 0.5, "rca_target_defects": ["missing"]}, duration_s=1, summary="r")
    # an SDG output pair and a merged iteration with provenance
    sdg = rd / "iter1/anomalygen/sdg"
    _png(sdg / "reconstructed_image" / "texture+missing_0.png", 200)
    _png(sdg / "original_image" / "texture+missing_0.png", 30)
    pd.DataFrame({"file": ["texture+missing_0.png"], "label": ["missing"]}).to_csv(sdg / "SDG_result.csv", index=False)
    atomic_write_json(sdg / "allocation.json", {"texture+missing": 1})
    commit(sp, "iter1", "routing", {"routing_mining_parquet": str(parquet(rd / "iter1/r/m.parquet", 1)),
                                    "routing_anomalygen_parquet": str(parquet(rd / "iter1/r/a.parquet", 1))},
           duration_s=1, summary="r")
    commit(sp, "iter1", "anomalygen", {"anomalygen_sdg_csv": str((sdg / "SDG_result.csv").resolve()),
                                       "anomalygen_allocation_json": str((sdg / "allocation.json").resolve()),
                                       "anomalygen_amp_allocated": 1}, duration_s=7, summary="sdg")
    ds = rd / "iter1/dataset"
    ds.mkdir(parents=True)
    combined = pd.DataFrame({"input_path": ["a", "b", "c"], "golden_path": "g", "label": "PASS", "object_name": "o"})
    combined.to_csv(ds / "train_combined_iter1.csv", index=False)
    combined.assign(source=["base_train", "base_train", "sdg"]).to_csv(ds / "prov.csv", index=False)
    atomic_write_json(ds / "merge_validation.json", {"status": "ok", "rows_checked": 3, "missing_file_count": 0,
                                                     "train_val_leakage_overlap_count": 0, "kpi_overlap_count": 0})
    commit(sp, "iter1", "data_mining", {"data_mining_skipped": True}, duration_s=1, summary="skip")
    commit(sp, "iter1", "data_merge", {"combined_training_csv": str((ds / "train_combined_iter1.csv").resolve()),
                                       "provenance_csv": str((ds / "prov.csv").resolve()),
                                       "merge_validation_report": str((ds / "merge_validation.json").resolve())},
           duration_s=1, summary="m")
    ev = train_evidence(rd, "iter1", 1, 5)
    commit(sp, "iter1", "train", ev, duration_s=12, summary="t")
    commit(sp, "iter1", "evaluate", eval_evidence(rd, "iter1", ev["best_ckpt_path"], far_pass_scores=[0.1, 0.2, 0.3, 0.97]),
           duration_s=1, summary="e")
    atomic_write_json(rd / "phase1_automl" / "best_rec.json", {"best": {"score": 33.0}})
    atomic_write_json(rd / "lineage.json", [{"checkpoint": ev["best_ckpt_path"], "phase": "phase2",
                                             "parent": base_ck, "data_digest": "abc"}])
    finalize(rd)

    html = render_report(rd).read_text()
    for heading in ("Run configuration", "KPI dataset label counts", "Metric trajectory", "Per-iteration results",
                    "Training-set growth", "Root-cause analysis", "Generated sample pair", "Stage timings",
                    "Final status", "Lineage"):
        assert heading in html, heading
    # self-contained: no external fetches, no scripts; images inline
    assert not re.search(r"""(src|href)=['"](?!data:)""", html)
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert html.count("data:image/png;base64,") >= 3  # rca thumbnail + SDG pair
    assert "<svg" in html and "target 10" in html
    import xml.etree.ElementTree as ET

    svgs = re.findall(r"<svg.*?</svg>", html, flags=re.S)
    assert len(svgs) >= 4 and all(ET.fromstring(svg).tag.endswith("svg") for svg in svgs)  # well-formed charts
    # trajectory covers Phase 1 (validation) and both loop entries; iter1 delivered
    assert "phase1_best" in html and "33" in html and "iter1" in html and "FAR@95% recall" in html
    # per-iteration table: iter1 has 3 training rows, 1 synthetic (ratio 0.3333), FAR 25 vs 50 → Δ -25
    assert "0.3333" in html and "-25" in html
    assert "texture+missing_0.png" in html


def test_report_renders_for_fresh_and_failed_state(tmp_path):
    rd = new_run(tmp_path)
    html = render_report(rd).read_text()
    assert "not finalized yet" in html and "no events yet" in html
    commit(RunDir(rd).deft_state, "baseline", "train", {"reason": "CUDA out of memory", "fix": "lower batch_size"},
           duration_s=3, summary="train failed", status="error")
    html = render_report(rd).read_text()
    assert "hard stop" in html and "lower batch_size" in html
    assert f"python -m raypipe.run --resume {rd}" in html


def test_broken_stage_output_degrades_one_section(tmp_path):
    rd = new_run(tmp_path, baseline=True)
    (tmp_path / "kpi.csv").write_bytes(b"\x00\xff garbage")
    state = json.loads((RunDir(rd).deft_state).read_text())
    state["config"]["kpi_test_csv"] = str(tmp_path / "missing.csv")
    (RunDir(rd).deft_state).write_text(json.dumps(state))
    html = render_report(rd).read_text()
    assert "KPI CSV not readable" in html and "Stage timings" in html
