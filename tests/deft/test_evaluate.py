"""The evaluate stage's scoring: a KPI set the evaluator cannot score stops the loop with a clear
reason naming the file, and what to fix (no traceback from the evaluator)."""

from __future__ import annotations

from pathlib import Path

import pytest

from raypipe.deft.errors import HardStop
from raypipe.deft.evaluate import score_inference
from raypipe.metrics import MetricContract


@pytest.mark.parametrize("rows,reason", [
    ("PASS,0.1\nPASS,0.7\n", "defect"),  # no defect rows: recall undefined
    ("MISSING,0.9\nSHORT,0.2\n", "PASS"),  # no PASS rows: FAR undefined
    ("PASS,0.1\nSHORT,fast\n", "row 2"),  # a score that is no number
])
def test_unscorable_kpi_set_is_a_hard_stop(tmp_path: Path, rows: str, reason: str) -> None:
    csv = tmp_path / "inference.csv"
    csv.write_text("label,siamese_score\n" + rows, encoding="utf-8")
    with pytest.raises(HardStop) as err:
        score_inference(MetricContract(), csv, tmp_path / "metric_result.json", "iter_1")
    stop = err.value
    assert stop.stage == "evaluate" and str(csv) in stop.reason and reason in stop.reason
    assert stop.fix == "the KPI set needs PASS and defect rows"
    assert not (tmp_path / "metric_result.json").exists()


def test_scorable_kpi_set_gives_the_contract_result(tmp_path: Path) -> None:
    csv = tmp_path / "inference.csv"
    csv.write_text("label,siamese_score\nPASS,0.1\nPASS,0.6\nSHORT,0.5\n", encoding="utf-8")
    res = score_inference(MetricContract(), csv, tmp_path / "metric_result.json", "iter_1")
    assert res["value"] == pytest.approx(50.0)  # 1 of 2 PASS rows above the threshold that catches 0.5
