from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from raypipe.metrics import (
    MetricUndefinedError,
    auroc,
    best_f1_threshold,
    evaluate_inference_csv,
    far_at_recall,
)


def test_threshold_is_largest_score_below_lowest_defect():
    # PASS scores 0.1 0.2 0.3 0.6; defects 0.5 0.9 → t = 0.3, one false alarm (0.6) of four PASS.
    r = far_at_recall([0, 0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.5, 0.9])
    assert r.threshold == pytest.approx(0.3)
    assert (r.tp, r.fp, r.tn, r.fn) == (2, 1, 3, 0)
    assert r.far == pytest.approx(0.25)
    assert r.recall == 1.0


def test_pass_tied_with_lowest_defect_is_false_alarm():
    # A PASS at exactly the lowest defect score cannot be separated with a strict '>' rule.
    r = far_at_recall([0, 0, 1], [0.2, 0.5, 0.5])
    assert r.threshold == pytest.approx(0.2)
    assert (r.fp, r.tn) == (1, 1)
    assert r.far == pytest.approx(0.5)


def test_lowest_defect_is_global_minimum_uses_nextafter_candidate():
    r = far_at_recall([1, 0, 0], [0.1, 0.3, 0.7])
    assert r.threshold == np.nextafter(0.1, -np.inf)
    assert r.far == 1.0


def test_single_defect_perfect_separation():
    r = far_at_recall([0, 0, 0, 1], [0.1, 0.2, 0.3, 0.95])
    assert r.far == 0.0
    assert r.threshold == pytest.approx(0.3)
    assert r.precision == 1.0


def test_all_pass_is_undefined():
    with pytest.raises(MetricUndefinedError, match="no defect"):
        far_at_recall([0, 0, 0], [0.1, 0.2, 0.3])


def test_lower_recall_target_lowers_far():
    y = [0] * 10 + [1] * 10
    s = list(np.linspace(0, 0.5, 10)) + [0.05] + list(np.linspace(0.6, 1, 9))
    assert far_at_recall(y, s, 1.0).far > far_at_recall(y, s, 0.9).far


def test_best_f1_threshold_unreachable_returns_none():
    assert best_f1_threshold([0, 1], [0.2, 0.9], min_recall=1.0) is not None
    # min_recall above 1 can never be met
    assert best_f1_threshold([0, 1], [0.2, 0.9], min_recall=1.5) is None


def test_auroc_ties_count_half():
    assert auroc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == pytest.approx(1.0)


def _inference_csv(path, labels, scores):
    pd.DataFrame({"input_path": "a", "golden_path": "b", "object_name": [f"C{i}" for i in range(len(labels))],
                  "label": labels, "siamese_score": scores}).to_csv(path, index=False)


def test_evaluate_writes_contract_shaped_json_and_side_files(tmp_path):
    csv = tmp_path / "inference.csv"
    _inference_csv(csv, ["PASS", "pass ", "missing", "PASS", "Bridge"], [0.1, 0.4, 0.5, 0.6, 0.9])
    out = tmp_path / "metric_result.json"
    r = evaluate_inference_csv(csv, out)
    on_disk = json.loads(out.read_text())
    assert on_disk == json.loads(json.dumps(r))
    assert set(on_disk) == {"name", "value", "unit", "threshold", "constraints", "diagnostics"}
    assert on_disk["name"] == "far_pct" and on_disk["unit"] == "%"
    assert on_disk["value"] == pytest.approx(100 / 3)
    assert on_disk["constraints"]["recall_pct"] == 100.0
    assert set(on_disk["diagnostics"]) == {"precision", "f1", "tp", "fp", "tn", "fn", "n_pass", "n_nopass",
                                           "auroc", "far_at_recall_99_pct", "far_at_recall_95_pct"}
    table = pd.read_csv(tmp_path / "threshold_metrics.csv")
    assert len(table) == 6  # nextafter(min) + 5 distinct scores
    assert "FAR at 100% recall" in (tmp_path / "summary.txt").read_text()


def test_cli_errors_without_defects(tmp_path):
    csv = tmp_path / "inference.csv"
    _inference_csv(csv, ["PASS", "PASS"], [0.1, 0.2])
    proc = subprocess.run([sys.executable, "-m", "raypipe.metrics", "--inference-csv", str(csv),
                           "--output-json", str(tmp_path / "m.json")], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "undefined" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "m.json").exists()


def test_bad_score_names_row(tmp_path):
    csv = tmp_path / "inference.csv"
    _inference_csv(csv, ["PASS", "missing"], ["0.1", "abc"])
    with pytest.raises(ValueError, match="row 2, column 'siamese_score'"):
        evaluate_inference_csv(csv, tmp_path / "m.json")
