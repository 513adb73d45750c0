from __future__ import annotations

import pytest

from raypipe.metrics import ContractError, MetricContract, pick_best, validate_result


def _res(value, recall=100.0, name="far_pct", unit="%"):
    return {"name": name, "value": value, "unit": unit, "constraints": {"recall_pct": recall}}


def test_passed_is_recomputed_not_trusted():
    c = MetricContract()
    out = validate_result(c, {**_res(12.0), "passed": True})
    assert out["passed"] is False
    assert validate_result(c, _res(9.0))["passed"] is True
    assert validate_result(c, _res(9.0, recall=99.0))["passed"] is False


@pytest.mark.parametrize("bad, match", [
    (_res(5.0, name="far"), "name"),
    (_res(5.0, unit="fraction"), "unit"),
    (_res(float("nan")), "finite"),
    ({"name": "far_pct", "value": 5.0, "unit": "%", "constraints": {}}, "recall_pct"),
])
def test_invalid_results_rejected(bad, match):
    with pytest.raises(ContractError, match=match):
        validate_result(MetricContract(), bad)


@pytest.mark.parametrize("op, target, value, passed", [
    ("<", 10, 10, False), ("<=", 10, 10, True), (">", 0.9, 0.95, True), (">=", 0.9, 0.89, False)])
def test_operators(op, target, value, passed):
    c = MetricContract(name="m", operator=op, target=target, unit="%", constraints=())
    assert validate_result(c, {"name": "m", "value": value, "unit": "%"})["passed"] is passed


def _entry(value, recall=100.0, status="complete"):
    return {"status": status, "metric_result": _res(value, recall)}


def test_pick_best_prefers_constraint_satisfying_entries():
    c = MetricContract()
    entries = [("baseline", _entry(30.0)), ("iter1", _entry(5.0, recall=90.0)), ("iter2", _entry(20.0))]
    best = pick_best(c, entries)
    assert best.label == "iter2" and best.satisfies_constraints and not best.passed


def test_pick_best_falls_back_to_all_when_none_satisfy():
    c = MetricContract()
    best = pick_best(c, [("baseline", _entry(30.0, 90.0)), ("iter1", _entry(20.0, 95.0))])
    assert best.label == "iter1" and not best.satisfies_constraints and not best.passed


def test_pick_best_ties_go_to_earlier_and_direction_from_operator():
    c = MetricContract()
    best = pick_best(c, [("baseline", _entry(8.0)), ("iter1", _entry(8.0)), ("final_automl", _entry(9.0))])
    assert best.label == "baseline" and best.passed
    c_max = MetricContract(name="far_pct", operator=">=", target=50, constraints=())
    assert pick_best(c_max, [("baseline", _entry(8.0)), ("iter1", _entry(60.0))]).label == "iter1"


def test_pick_best_ignores_incomplete_entries():
    c = MetricContract()
    assert pick_best(c, [("baseline", _entry(1.0, status="in_progress"))]) is None


def test_contract_round_trip_and_validation():
    c = MetricContract()
    assert MetricContract.from_dict(c.to_dict()) == c
    with pytest.raises(ContractError, match="operator"):
        MetricContract(operator="==")
    with pytest.raises(ContractError, match="unknown key"):
        MetricContract.from_dict({"name": "far_pct", "bogus": 1})
