"""The time model and the planner behind ``--time-budget``, fed given probe times (no training)."""

from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd
import pytest

from raypipe.budget import (
    MAX_TRIALS,
    MINED_POOL_PART,
    BudgetError,
    CostModel,
    Knobs,
    Timing,
    Workload,
    parse_duration,
    phase3_trials_for,
    plan_for_budget,
)
from raypipe.config import ConfigError, load_config

# The demo's shape: 600 training rows, 200 validation, 200 KPI, a 1200-row pool, 2 trials at a time.
DEMO = Workload(train_rows=600, val_rows=200, kpi_rows=200, pool_rows=1200, num_sdg=40, concurrency=2,
                warm_phase1=False)
CEILING = Knobs(phase1_trials=8, phase3_trials=4, epochs=4, loop_epochs=4, max_iterations=3)


@pytest.mark.parametrize(("text", "seconds"), [
    ("45m", 2700.0), ("1h30m", 5400.0), ("90s", 90.0), ("2h", 7200.0), ("1.5h", 5400.0), ("600", 600.0),
    (300, 300.0), ("10min", 600.0), (" 1h 5m 10s ", 3910.0),
])
def test_parse_duration(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "45x", "0", "-5m", "m"])
def test_parse_duration_refuses_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(BudgetError, match="time budget"):
        parse_duration(text)


def test_config_key_validates_the_budget() -> None:
    assert load_config(None, ["time_budget=45m"]).time_budget_s == 2700.0
    assert load_config(None, []).time_budget_s is None
    with pytest.raises(ConfigError, match="time_budget"):
        load_config(None, ["time_budget=soon"])


def test_sweep_runs_trials_in_waves_of_concurrency() -> None:
    model = CostModel(epoch_s=10.0, workload=DEMO)
    one_trial = model.trial_s(4)
    assert model.sweep_s(4, 4) == pytest.approx(model.sweep_s(3, 4))  # 3 and 4 trials: two waves of 2
    assert model.sweep_s(5, 4) - model.sweep_s(4, 4) == pytest.approx(one_trial)
    # training cost grows with the rows trained on (the loop's merges make Phase 3 slower)
    assert model.epoch_on(1200) > model.epoch_on(600) == pytest.approx(10.0)
    assert model.rows_after(2) == 600 + 2 * 40 + 2 * 1200 // MINED_POOL_PART
    # a DEFT retrain runs alone, below the probe scale of a sweep's trial; iteration 1 embeds the whole
    # pool, later ones only their synthetic rows (the rest comes from the embedding cache)
    assert model.stage_s("train", iteration=1, epochs=4) - 3.0 < 4 * model.epoch_on(model.rows_after(1))
    assert model.stage_s("data_mining", iteration=1) > model.stage_s("data_mining", iteration=2) \
        == pytest.approx(1.0 + model.infer_s(40))
    # with automl.noise_margin set a sweep may re-train its winner once, alone: one more wave where
    # counted (Phase 1's sweep), none where not (Phase 3's)
    guarded = CostModel(epoch_s=10.0, workload=replace(DEMO, noise_guard=True))
    assert guarded.sweep_s(4, 4, guard=True) - model.sweep_s(4, 4, guard=True) == pytest.approx(one_trial)
    assert guarded.sweep_s(4, 4) == pytest.approx(model.sweep_s(4, 4))
    k = replace(CEILING, phase1=True, phase3=True)
    assert guarded.estimate(k).phase1_s - model.estimate(k).phase1_s == pytest.approx(one_trial)
    assert guarded.estimate(k).phase3_s == pytest.approx(model.estimate(k).phase3_s)
    assert Workload.of(load_config(None, []), {"train": 600}).noise_guard
    assert not Workload.of(load_config(None, ["automl.noise_margin=null"]), {"train": 600}).noise_guard


@pytest.mark.parametrize("budget_min", [10, 20, 45, 90])
def test_plan_fills_the_budget_without_passing_it(budget_min: int) -> None:
    model = CostModel(epoch_s=5.0, workload=DEMO)
    plan = plan_for_budget(budget_min * 60, model, CEILING)
    assert plan.fits and plan.estimate.total_s <= budget_min * 60
    k = plan.knobs
    # configured epochs and iterations are ceilings; trials grow in whole waves
    assert k.epochs <= CEILING.epochs and 1 <= k.max_iterations <= CEILING.max_iterations
    assert k.phase1_trials % DEMO.concurrency == 0 and k.phase3_trials % DEMO.concurrency == 0
    # no single wave more would still fit (up to the trial cap): the plan uses the budget it was given
    bigger = [replace(k, phase1_trials=k.phase1_trials + 2), replace(k, phase3_trials=k.phase3_trials + 2)]
    assert all(model.estimate(b).total_s > budget_min * 60 or max(b.phase1_trials, b.phase3_trials) > MAX_TRIALS
               for b in bigger)


def test_a_bigger_budget_buys_more_work() -> None:
    model = CostModel(epoch_s=5.0, workload=DEMO)
    small, large = plan_for_budget(15 * 60, model, CEILING), plan_for_budget(60 * 60, model, CEILING)
    assert large.knobs.phase1_trials + large.knobs.phase3_trials > small.knobs.phase1_trials + \
        small.knobs.phase3_trials
    assert large.estimate.total_s > small.estimate.total_s


def test_a_slower_machine_gets_fewer_trials_for_the_same_budget() -> None:
    fast = plan_for_budget(30 * 60, CostModel(epoch_s=4.0, workload=DEMO), CEILING)
    slow = plan_for_budget(30 * 60, CostModel(epoch_s=12.0, workload=DEMO), CEILING)
    assert slow.knobs.phase1_trials < fast.knobs.phase1_trials


def test_too_small_a_budget_lowers_epochs_then_says_it_does_not_fit() -> None:
    model = CostModel(epoch_s=20.0, workload=DEMO)
    tight = plan_for_budget(5 * 60, model, CEILING)
    assert tight.fits and tight.knobs.epochs < CEILING.epochs
    assert any("train.num_epochs lowered from 4" in n for n in tight.notes)
    hopeless = plan_for_budget(60, model, CEILING)
    assert not hopeless.fits and hopeless.knobs.epochs == 1 and hopeless.knobs.max_iterations == 1
    assert any("over the budget" in n for n in hopeless.notes)


def test_disabled_phases_get_nothing() -> None:
    model = CostModel(epoch_s=5.0, workload=DEMO)
    ceiling = Knobs(phase1_trials=8, phase3_trials=4, epochs=4, loop_epochs=4, max_iterations=3, phase3=False)
    plan = plan_for_budget(30 * 60, model, ceiling)
    assert plan.estimate.phase3_s == 0.0 and plan.knobs.phase3_trials == 4  # left as configured, unused


def test_planned_knobs_land_in_the_config_the_run_records() -> None:
    cfg = load_config(None, ["time_budget=30m"])
    planned = Knobs(phase1_trials=6, phase3_trials=2, epochs=3, loop_epochs=3, max_iterations=2).apply(cfg)
    assert planned.phase1.automl_max_recommendations == 6 and planned.phase3.automl_max_recommendations == 2
    assert planned.spec_overrides["train.num_epochs"] == 3 and planned.phase2.max_iterations == 2
    assert Knobs.of(planned) == Knobs(6, 2, 3, 3, 2)
    assert Knobs.of(cfg) != Knobs.of(planned)  # the original config is left as it was


def test_timing_lines_and_record() -> None:
    model = CostModel(epoch_s=5.0, workload=DEMO)
    plan = plan_for_budget(45 * 60, model, CEILING)
    timing = Timing(model, plan.knobs, "a measured 1-epoch probe", plan)
    lines = timing.lines()
    assert lines[0].startswith("time budget 45.0 min → planned ") and "5.0 s per training epoch" in lines[0]
    assert any(line.startswith("Phase 1: ") for line in lines) and any("Phase 3: " in line for line in lines)
    record = timing.to_json()
    assert record["epoch_s"] == 5.0 and record["plan"]["fits"] is True
    assert record["estimate_total_s"] == pytest.approx(plan.estimate.total_s)
    spent = Timing(model, plan.knobs, "a measured 1-epoch probe", plan, spent_s=120.0).lines()[0]
    assert spent.startswith("time budget 47.0 min, 2.0 min already spent (start-up, probe), 45.0 min left → planned")
    unplanned = Timing(model, CEILING, "config preflight.t_trial_s").lines()
    assert "total ≈" in unplanned[0] and "--time-budget" in unplanned[1]


def test_phase3_is_planned_from_the_time_left_when_it_starts() -> None:
    model = CostModel(epoch_s=10.0, workload=DEMO)
    wave = model.trial_s(4, 900)
    base = phase3_trials_for(600.0, model, 900, 4)
    assert base % DEMO.concurrency == 0 and base >= DEMO.concurrency
    # each wave's worth of time left buys one more wave of trials; more rows make each wave dearer
    assert phase3_trials_for(600.0 + 3 * wave, model, 900, 4) == base + 3 * DEMO.concurrency
    assert phase3_trials_for(600.0, model, 1800, 4) < base
    # a spent budget still runs one wave (a sweep needs trials); a huge one stops at MAX_TRIALS
    assert phase3_trials_for(-100.0, model, 900, 4) == DEMO.concurrency
    assert phase3_trials_for(1e9, model, 900, 4) == MAX_TRIALS
    # the round trip through RD/time_plan.json keeps the model
    timing = Timing(model, CEILING, "a measured 1-epoch probe")
    assert CostModel.from_json(timing.to_json()) == model


def test_the_pipeline_plans_phase3_only_for_a_new_budgeted_run(tmp_path) -> None:
    import time

    from raypipe._io import atomic_write_json
    from raypipe.pipeline import Pipeline
    from raypipe.rundir import RunDir
    from raypipe.workspace import write_rows

    cfg = load_config(None, ["phase3.automl_max_recommendations=4", "automl.max_concurrent_trials=2"])
    rd = RunDir(tmp_path / "run")
    rd.root.mkdir()
    train_csv = write_rows(pd.DataFrame({"input_path": ["a"] * 900, "golden_path": ["g"] * 900, "label": ["PASS"] * 900,
                                         "object_name": [f"o{i}" for i in range(900)]}), tmp_path / "train.csv")
    model = CostModel(epoch_s=10.0, workload=DEMO)
    atomic_write_json(rd.time_plan, Timing(model, CEILING, "a measured 1-epoch probe").to_json())
    pipe = object.__new__(Pipeline)  # only what _phase3_trials reads: no workspace, Ray or tracking
    pipe.rd, pipe.cfg = rd, cfg
    pipe.deadline = None  # no budget, or a resumed run: as configured
    assert pipe._phase3_trials(train_csv) == 4
    pipe.deadline = time.time() + 1200  # 20 minutes left: far more than the 4 planned at approval
    got = pipe._phase3_trials(train_csv)
    assert phase3_trials_for(1100, model, 900, 4) <= got <= phase3_trials_for(1200, model, 900, 4) and got > 4
    # Phase 1's trials, timed in the run, replace the probe: twice as fast → more trials fit
    sweep = rd.sweep("phase1")
    for trial, seconds in (("trial_a", 20.0), ("trial_b", 22.0)):  # 4 epochs each: ~5 s per epoch, not 10
        (sweep.path / sweep.name / trial).mkdir(parents=True)
        (sweep.path / sweep.name / trial / "result.json").write_text(
            json.dumps({"epoch": 2, "time_total_s": seconds / 2}) + "\n" + json.dumps({"epoch": 4, "time_total_s": seconds}) + "\n")
    faster = replace(model, epoch_s=5.25)
    got = pipe._phase3_trials(train_csv)
    assert phase3_trials_for(1100, faster, 900, 4) <= got <= phase3_trials_for(1200, faster, 900, 4)
    assert got > phase3_trials_for(1200, model, 900, 4)
