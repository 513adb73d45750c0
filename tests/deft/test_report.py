"""DEFT_Loop_Report.html: self-contained, every section, numbers that match the files they come from."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from raypipe._io import atomic_write_json
from raypipe.automl._outputs import write_trials_csv
from raypipe.automl._ranking import TrialRecord
from raypipe.deft import finalize, register_final_automl
from raypipe.deft._report_data import data_added
from raypipe.deft._report_html import delta
from raypipe.deft.report import render_report
from raypipe.deft.state import commit, load_state
from raypipe.metrics import MetricContract, run_evaluator
from raypipe.rundir import RunDir
from raypipe.workspace._rows import normalise_label

from ._helpers import ckpt, eval_evidence, new_run, parquet, phase3_entry, spec_file, train_evidence

LIGHTS = ("LowAngleLight", "SolderLight")  # the input_map of the helpers' spec


class _Tables(HTMLParser):
    """``{table id: (header texts, [[cell texts]], [[cell inner html classes]])}`` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, tuple[list[str], list[list[str]], list[list[str]]]] = {}
        self._id: str | None = None
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._row_cls: list[str] = []
        self._cls: list[str] = []
        self._in_head = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and a.get("id"):
            self._id = a["id"]
            self.tables[self._id] = ([], [], [])
        elif self._id and tag == "thead":
            self._in_head = True
        elif self._id and tag == "tr":
            self._row, self._row_cls = [], []
        elif self._id and tag in ("td", "th"):
            self._cell, self._cls = [], []
        elif self._cell is not None and tag == "span" and a.get("class"):
            self._cls.append(a["class"])

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if not self._id:
            return
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._row_cls.append(" ".join(self._cls))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            head, rows, classes = self.tables[self._id]
            if self._in_head:
                head.extend(self._row)
            else:
                rows.append(self._row)
                classes.append(self._row_cls)
            self._row = None
        elif tag == "thead":
            self._in_head = False
        elif tag == "table":
            self._id = None


def tables(html: str) -> dict[str, tuple[list[str], list[list[str]], list[list[str]]]]:
    p = _Tables()
    p.feed(html)
    return p.tables


def column(table, name: str) -> list[str]:
    head, rows, _ = table
    i = head.index(name)
    return [r[i] for r in rows]


def _png(path, shade):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((48, 48, 3), shade, dtype=np.uint8)).save(path)
    return path


def _eval_from(rd, label, rows: list[tuple[str, str, float]]):
    """Real inference.csv (input_path, object_name, label, score) scored by the real evaluator."""
    out = rd / label / "inference" / "best_val"
    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame({"input_path": "b", "golden_path": "g", "object_name": [r[0] for r in rows],
                       "label": [r[1] for r in rows], "siamese_score": [r[2] for r in rows]})
    csv = out / "inference.csv"
    df.to_csv(csv, index=False)
    res = run_evaluator(MetricContract(), csv, out / "metric_result.json", label)
    return {"best_ckpt_path": str(ckpt(rd, label, 3, 30) if label == "baseline" else ckpt(rd, label)),
            "inference_csv": str(csv.resolve()), "metric_result": res, "threshold": res["threshold"],
            "far_pct": res["value"], "training_spec": str(spec_file(rd, label))}


def _evaluated_baseline(tmp_path, pass_scores: list[float]):
    """A run whose baseline is evaluated: four defects at 0.9, PASS rows at ``pass_scores``."""
    rd = new_run(tmp_path, baseline=True)
    sp = RunDir(rd).deft_state
    base_ck = load_state(sp)["iterations"]["baseline"]["best_ckpt_path"]
    commit(sp, "baseline", "evaluate", eval_evidence(rd, "baseline", base_ck, far_pass_scores=pass_scores),
           duration_s=1, summary="e")
    return rd, sp, base_ck


def test_report_sections_and_self_contained(tmp_path):
    rd, sp, base_ck = _evaluated_baseline(tmp_path, [0.1, 0.95, 0.2, 0.97])
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
    combined = pd.DataFrame({"input_path": ["a", "b", "c"], "golden_path": "g", "label": ["PASS", "PASS", "missing"],
                             "object_name": "o"})
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
    for heading in ("Outcome", "Metric trajectory", "Results per defect kind at the operating point",
                    "Per-iteration results", "Training data per iteration", "AutoML sweeps", "Root-cause analysis",
                    "Generated sample pair", "Stage timings", "Run configuration", "Lineage"):
        assert f"<h2>{heading}" in html, heading
    # self-contained: no external fetches, no scripts; images inline
    assert not re.search(r"""(src|href)=['"](?!data:)""", html)
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert html.count("data:image/png;base64,") >= 3  # rca thumbnail + SDG pair
    svgs = re.findall(r"<svg.*?</svg>", html, flags=re.DOTALL)
    assert len(svgs) >= 4 and all(ET.fromstring(svg).tag.endswith("svg") for svg in svgs)  # well-formed charts
    assert "target &lt; 10 %" in html  # the contract's target, with its operator and unit, in the chart legend

    t = tables(html)
    traj = t["trajectory"]
    assert column(traj, "step") == ["Phase 1 best", "baseline", "iter1"]
    assert column(traj, "set") == ["validation", "KPI", "KPI"]
    assert column(traj, "FAR at 100% recall") == ["33", "50", "25"]
    assert column(traj, "delivered") == ["–", "–", "★ delivered"]
    # per-iteration: iter1 trained on 3 rows, 1 synthetic (33.33 %), FAR 25 vs 50 → a green "−25.00 pp"
    it = t["iterations"]
    i = column(it, "iteration").index("iter1")
    assert column(it, "training rows")[i] == "3" and column(it, "synthetic rows")[i] == "1"
    assert column(it, "synthetic %")[i] == "33.33"
    assert column(it, "Δ vs baseline")[i] == "−25.00 pp"
    assert it[2][i][it[0].index("Δ vs baseline")] == "better"
    # data per kind: base rows by label from the provenance, the SDG row under iter1
    head, rows, _ = t["data-added"]
    assert head == ["kind", "base", "iter1 mined", "iter1 SDG", "total"]
    assert rows == [["PASS", "2", "0", "0", "2"], ["missing", "0", "0", "1", "1"], ["all kinds", "2", "0", "1", "3"]]
    assert "texture+missing_0.png" in html


def test_per_kind_results_match_the_inference_csv(tmp_path):
    rd = new_run(tmp_path, baseline=True)
    sp = RunDir(rd).deft_state
    rows = [("p1", "PASS", 0.10), ("p2", "PASS", 0.20), ("p3", "PASS", 0.35), ("p4", "PASS", 0.50), ("p5", "PASS", 0.62),
            ("m1", "missing", 0.90), ("m2", "Missing ", 0.80), ("b1", "bridge", 0.40), ("b2", "bridge", 0.95),
            ("d1", "polarity", 0.30), ("d2", "polarity", 0.70)]
    evidence = _eval_from(rd, "baseline", rows)
    commit(sp, "baseline", "evaluate", evidence, duration_s=1, summary="e")
    images = tmp_path / "images" / "b"
    for light, shade in zip(LIGHTS, (60, 120)):  # the hardest defect's capture/golden per light
        _png(images / f"d1_{light}.png", shade)
        _png(tmp_path / "images" / "g" / f"d1_{light}.png", shade + 40)
    finalize(rd)
    best = json.loads((rd / "best_model.json").read_text())
    html = render_report(rd).read_text()

    # independent computation from the CSV the state names, at best_model.json's threshold
    df = pd.read_csv(evidence["inference_csv"])
    df["label"] = df["label"].map(normalise_label)
    t = best["threshold"]
    head, body, _ = tables(html)["per-kind"]
    assert head == ["kind", "rows", "caught", "missed", "recall %", "lowest score", "margin over threshold"]
    got = {r[0]: r for r in body}
    defects = df[df["label"] != "PASS"]
    assert set(got) == set(defects["label"])
    for kind, g in defects.groupby("label"):
        caught = int((g["siamese_score"] > t).sum())
        assert got[kind][1:5] == [str(len(g)), str(caught), str(len(g) - caught), f"{100 * caught / len(g):.4g}"]
        assert float(got[kind][5]) == pytest.approx(g["siamese_score"].min(), abs=5e-5)
    # hardest kind first: polarity (0.30), then bridge (0.40), then missing (0.80)
    assert [r[0] for r in body] == ["polarity", "bridge", "missing"]
    passes = df[df["label"] == "PASS"]
    _, pass_rows, _ = tables(html)["per-kind-pass"]
    fa = int((passes["siamese_score"] > t).sum())
    assert pass_rows == [[str(len(passes)), str(fa), f"{100 * fa / len(passes):.4g}", "0.62"]]
    assert fa / len(passes) * 100 == pytest.approx(best["far_pct"])  # the table explains the headline
    # the hardest defect is named, with what catching it costs and what the next one would
    callout = re.search(r"<div class='callout' id='hardest'>(.*?)</div>", html, flags=re.DOTALL).group(1)
    assert "polarity <code>d1</code> (KPI row 10" in callout and "scores <b>0.3</b>" in callout
    assert "3 of 5 PASS rows" in callout and "60.00 %" in callout
    assert "bridge" in callout and "40.00 %" in callout  # without d1 only 0.50 and 0.62 would be false alarms
    for light in LIGHTS:
        for what in ("capture", "golden", "|difference|"):
            assert f"<figcaption>{light} {what}</figcaption>" in html
    assert "image not readable" not in html


def test_signed_coloured_delta_follows_the_contract_direction(tmp_path):
    rd, sp, _ = _evaluated_baseline(tmp_path, [0.1, 0.2, 0.3, 0.97])
    register_final_automl(sp, phase3_entry(rd, far_pass_scores=[0.95, 0.96, 0.3, 0.97]))  # worse
    finalize(rd)
    html = render_report(rd).read_text()
    it = tables(html)["iterations"]
    i = column(it, "iteration").index("Phase 3 best")
    d = it[0].index("Δ vs baseline")
    assert it[1][i][d] == "+50.00 pp" and it[2][i][d] == "worse"  # 75 % vs 25 %: worse for a "<" contract
    assert it[1][0][d] == "±0 pp" and it[2][0][d] == "same"
    # the direction comes from the contract, never from the metric's name
    assert str(delta(-3.0, minimize=False, unit="%")) == "<span class='worse' title='worse than baseline'>−3.00 pp</span>"
    assert "better" in delta(2.5, minimize=False) and "+2.50" in delta(2.5, minimize=False)
    assert "class" not in delta(2.5, minimize=None)  # unknown direction: a sign, no colour


def test_trial_tables_rank_trials_and_expand_hyper_parameters(tmp_path):
    rd = new_run(tmp_path)
    recs = [TrialRecord("t1", 0, "complete", {"train.optim.lr": 1e-3, "train.classify.cls_weight[1]": 4.0},
                        val_far=60.0, val_loss=0.5, pred_counts={"PASS": 10, "NO_PASS": 5}, checkpoint="/c1.pth",
                        checkpoint_epoch=2, checkpoint_step=30, epochs_run=4, compute_s=12.5),
            TrialRecord("t2", 1, "complete", {"train.optim.lr": 3e-4, "train.classify.cls_weight[1]": 8.0},
                        val_far=20.0, val_loss=0.4, pred_counts={"PASS": 12, "NO_PASS": 3}, checkpoint="/c2.pth",
                        checkpoint_epoch=0, checkpoint_step=10, epochs_run=4, compute_s=11.0),
            TrialRecord("t3", 2, "failed", {"train.optim.lr": 1e-2, "train.classify.cls_weight[1]": 2.0},
                        error="training diverged")]
    write_trials_csv(rd / "phase1_automl" / "trials.csv", recs, "far_pct")
    atomic_write_json(rd / "phase1_automl" / "best_rec.json", {"best": {"rec_id": "t2", "score": 20.0}})
    html = render_report(rd).read_text()
    head, rows, _ = tables(html)["trials-phase1_automl"]
    assert head[:4] == ["trial", "status", "cls_weight[1]", "lr"]
    assert [r[0] for r in rows] == ["★ t2", "t1", "t3"]  # best first, the failed trial last
    t2 = dict(zip(head, rows[0]))
    assert t2["lr"] == "0.0003" and t2["cls_weight[1]"] == "8" and t2["best val FAR %"] == "20"
    assert t2["best epoch"] == "1" and t2["epochs run"] == "4" and t2["pred PASS / NO_PASS"] == "12 / 3"
    assert "training diverged" in rows[2][-1]
    assert "final_automl/trials.csv not written yet" in html


def test_data_added_per_kind_and_source(tmp_path):
    def prov(path, rows):
        pd.DataFrame(rows, columns=["source", "origin", "origin_iteration", "label"]).to_csv(path, index=False)
        return path

    base = [("base_train", "base_train", 0, "PASS")] * 3 + [("base_train", "base_train", 0, "Missing")]
    p1 = prov(tmp_path / "p1.csv", base + [("mined", "mined", 1, "bridge"), ("sdg", "sdg", 1, "bridge"),
                                            ("mined", "mined", 1, "PASS")])
    carried = [("previous_iter_train", o, n, lb) for _, o, n, lb in pd.read_csv(p1).itertuples(index=False)]
    p2 = prov(tmp_path / "p2.csv", carried + [("sdg", "sdg", 2, "missing"), ("sdg", "sdg", 2, "missing")])
    head, rows = data_added([("iter1", 1, p1), ("iter2", 2, p2)], base_csv=None)
    assert head == ["kind", "base", "iter1 mined", "iter1 SDG", "iter2 mined", "iter2 SDG", "total"]
    assert rows == [["PASS", 3, 1, 0, 0, 0, 4], ["bridge", 0, 1, 1, 0, 0, 2], ["missing", 1, 0, 0, 0, 2, 3],
                    ["all kinds", 4, 2, 1, 0, 2, 9]]
    assert rows[-1][-1] == len(pd.read_csv(p2))  # the totals add up to the last combined set


def test_sealed_test_column_and_verdict_badge_render_when_present(tmp_path):
    rd, _, _ = _evaluated_baseline(tmp_path, [0.1, 0.2, 0.3, 0.97])
    finalize(rd)
    html = render_report(rd).read_text()
    assert "test FAR" not in html and "sealed test" not in html  # absent: no empty column, no broken card
    # 25 % misses "< 10 %": finalize wrote the verdict into best_model.json, and the badge reads it.
    assert "KPI not met" in html and "KPI not met (KPI set)" not in html

    bm = json.loads((rd / "best_model.json").read_text())
    assert bm["verdict"] == "kpi_not_met"
    atomic_write_json(rd / "best_model.json", {k: v for k, v in bm.items() if k != "verdict"})
    assert "KPI not met (KPI set)" in render_report(rd).read_text()  # an older run: falls back to the KPI set
    atomic_write_json(rd / "best_model.json", {**bm, "verdict": "kpi_met", "test_far_pct": 4.5, "test_auroc": 0.991})
    atomic_write_json(rd / "trajectory.json", {"rows": [{"step": "baseline", "split": "kpi", "far_pct": 25.0,
                                                         "test_far_pct": 4.5, "test_auroc": 0.991}]})
    html = render_report(rd).read_text()
    traj = tables(html)["trajectory"]
    assert column(traj, "test FAR@100%R") == ["4.5"] and column(traj, "test AUROC") == ["0.991"]
    assert "<span class='badge ok'>KPI met</span>" in html and "sealed test FAR" in html
    assert "sealed test FAR@100% recall" in html  # the chart's test series


def test_layout_fits_a_laptop_screen(tmp_path):
    """What can be checked without a browser (tools/render_report.py measures it in Chromium)."""
    rd, _, _ = _evaluated_baseline(tmp_path, [0.1, 0.95, 0.2, 0.97])
    atomic_write_json(rd / "lineage.json", [{"checkpoint": "/very/long/" + "x" * 300 + ".pth", "phase": "phase2"}])
    html = render_report(rd).read_text()
    assert re.search(r"main\{max-width:1240px", html)
    # every table scrolls inside its own box instead of widening the page
    assert html.count("<table") == html.count("<div class='tw'><table") > 3
    assert re.search(r"\.tw\{overflow-x:auto", html)
    # charts shrink with the page; long paths may break anywhere
    svgs = re.findall(r"<svg [^>]*>", html)
    assert svgs and all("class='chart'" in s for s in svgs)
    assert re.search(r"svg\.chart\{[^}]*max-width:100%", html)
    assert re.search(r"td\.path\{[^}]*overflow-wrap:anywhere", html)


def test_report_renders_for_fresh_and_failed_state(tmp_path):
    rd = new_run(tmp_path)
    html = render_report(rd).read_text()
    assert "not finalized yet" in html and "no events yet" in html
    assert "KPI dataset label counts (3 rows)" in html  # before any evaluation, the KPI set's make-up
    commit(RunDir(rd).deft_state, "baseline", "train", {"reason": "CUDA out of memory", "fix": "lower batch_size"},
           duration_s=3, summary="train failed", status="error")
    html = render_report(rd).read_text()
    assert "hard stop" in html and "lower batch_size" in html
    assert f"python -m raypipe.run --resume {rd}" in html
    assert "section unavailable" not in html


def test_broken_stage_output_degrades_one_section(tmp_path):
    rd = new_run(tmp_path, baseline=True)
    (tmp_path / "kpi.csv").write_bytes(b"\x00\xff garbage")
    state = json.loads((RunDir(rd).deft_state).read_text())
    state["config"]["kpi_test_csv"] = str(tmp_path / "missing.csv")
    (RunDir(rd).deft_state).write_text(json.dumps(state))
    html = render_report(rd).read_text()
    assert "KPI CSV not readable" in html and "Stage timings" in html
