"""``raypipe.trajectory``: the verdict and the closing summary's first line (pure functions)."""

from __future__ import annotations

from typing import Any

import pytest

from raypipe.trajectory import KPI_MET, KPI_NOT_MET, format_table, verdict_line, verdict_of

CONTRACT = {"name": "far_pct", "operator": "<", "target": 10.0, "unit": "%"}


def _best(value: float, passed: bool, **extra: Any) -> dict[str, Any]:
    return {"iteration": "iter2", "metric_contract": CONTRACT, "verdict": verdict_of({"passed": passed}),
            "metric_result": {"name": "far_pct", "value": value, "unit": "%", "passed": passed}, **extra}


def _traj(**row: Any) -> dict[str, Any]:
    return {"rows": [{"step": "iter2", "split": "kpi", "far_pct": 12.5, "delivered": True, **row}],
            "delivered": "iter2"}


def test_verdict_is_a_plain_string_from_passed() -> None:
    assert (verdict_of({"passed": True}), verdict_of({"passed": False})) == (KPI_MET, KPI_NOT_MET)
    with pytest.raises(ValueError, match="passed"):
        verdict_of({"passed": "yes"})  # a truthy string is not a verdict


def test_a_missed_kpi_never_reads_as_a_bare_complete() -> None:
    line = verdict_line(_best(12.5, False, test_far_pct=9.25, test_auroc=0.9876), _traj())
    assert line == ("complete, KPI not met: sealed test FAR@100%R 9.25% (AUROC 0.988) · KPI far_pct 12.50% "
                    "(target far_pct < 10%) · delivered iter2")
    assert verdict_line(_best(4.0, True, test_far_pct=3.0), _traj()).startswith(
        "complete, KPI met: sealed test FAR@100%R 3.00%")


def test_the_test_numbers_come_from_the_delivered_row_or_say_why_absent() -> None:
    assert "sealed test FAR@100%R 7.00% (AUROC 0.950)" in verdict_line(
        _best(4.0, True), _traj(test_far_pct=7.0, test_auroc=0.95))
    absent = {**_traj(), "sealed_test": {"status": "absent", "note": "no file"}}
    assert "no sealed test split: judged only on the KPI set that chose it" in verdict_line(_best(4.0, True), absent)
    failed = {**_traj(), "sealed_test": {"status": "failed", "note": "inference of iter2 failed"}}
    assert "sealed test split not scored: inference of iter2 failed" in verdict_line(_best(4.0, True), failed)


def test_table_shows_test_columns_only_once_scored() -> None:
    assert "test FAR" not in format_table(_traj())
    table = format_table(_traj(test_far_pct=7.0, test_auroc=0.95))
    assert "test FAR" in table.splitlines()[0]
    assert "7.00%" in table.splitlines()[2] and table.splitlines()[2].endswith("<== delivered")
