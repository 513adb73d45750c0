"""``python -m raypipe.status RD``: read from the run dir's files only, while running and after."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from raypipe._io import atomic_write_json
from raypipe._lock import WorkspaceLock
from raypipe.budget import CostModel, Knobs, Timing, Workload
from raypipe.metrics import MetricContract
from raypipe.rundir import RunDir
from raypipe.status import epoch_seconds, main, render, snapshot, stage_line

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc).timestamp()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="seconds")


def _pipeline_state(rd: RunDir, status: str, phases: dict[str, str], completed: float | None = None) -> None:
    atomic_write_json(rd.pipeline_state, {
        "version": 1, "status": status, "started_at": _iso(T0), "completed_at": _iso(completed) if completed else None,
        "phases": {p: {"status": s, "started_at": None, "completed_at": None} for p, s in phases.items()}})


def _run_in_phase2(tmp_path: Path) -> RunDir:
    """Phase 1 done; the loop evaluated and analysed the baseline and is in iter1's anomalygen."""
    rd = RunDir(tmp_path / "results" / "run_20260101_120000")
    rd.root.mkdir(parents=True)
    rd.config_yaml.write_text("automl: {max_concurrent_trials: 2}\nspec_overrides: {train.num_epochs: 2}\n"
                              "phase1: {automl_max_recommendations: 4}\nphase2: {max_iterations: 2}\n"
                              "phase3: {automl_max_recommendations: 2, enabled: true}\n")
    _pipeline_state(rd, "in_progress", {"phase1": "complete", "phase2": "in_progress", "phase3": "pending"})
    workload = Workload(train_rows=600, val_rows=200, kpi_rows=200, pool_rows=1200, num_sdg=40, concurrency=2,
                        warm_phase1=False)
    knobs = Knobs(phase1_trials=4, phase3_trials=2, epochs=2, loop_epochs=2, max_iterations=2)
    atomic_write_json(rd.time_plan, Timing(CostModel(5.0, workload), knobs, "a measured 1-epoch probe").to_json())
    contract = MetricContract().to_dict()
    events = [(1, "baseline", "train", 1), (2, "baseline", "evaluate", 12), (3, "baseline", "rca", 2),
              (4, "iter1", "routing", 1)]
    atomic_write_json(rd.deft_state, {
        "version": 4, "status": "in_progress", "metric_contract": contract, "max_iterations": 2,
        "iterations": {
            "baseline": {"stage_completed": "rca", "status": "complete", "threshold": 0.5, "far_pct": 20.0,
                         "metric_result": {"name": "far_pct", "value": 20.0, "unit": "%", "passed": False,
                                           "constraints": [], "evidence_path": None}},
            "iter1": {"stage_completed": "routing", "status": "in_progress"}},
        "events": [{"seq": s, "ts": _iso(T0 + 100 + 10 * s), "iter": lb, "stage": st, "status": "ok",
                    "summary": f"{lb} {st} summary", "duration_sec": d} for s, lb, st, d in events]})
    return rd


def test_running_phase2_names_the_stage_and_estimates(tmp_path: Path) -> None:
    rd = _run_in_phase2(tmp_path)
    now = T0 + 140 + 5
    snap = snapshot(rd.root, now=now)
    assert snap.phase == "phase2" and snap.status == "in progress" and not snap.notes  # no lock file: no claim
    stage = snap.stage
    assert stage is not None and (stage.label, stage.name, stage.index, stage.count) == ("iter1", "anomalygen", 2, 7)
    assert stage.started == T0 + 140 and snap.elapsed_s == 145
    # Phase 2 is left with the rest of iter1 and all of iter2; Phase 3 still to come
    assert snap.phase_eta_s is not None and snap.eta_s is not None and snap.eta_s > snap.phase_eta_s > 0
    later = snapshot(rd.root, now=now + 30)
    assert later.phase_eta_s is not None and later.phase_eta_s <= snap.phase_eta_s
    assert "Phase 2 best on the KPI set: baseline FAR at 100% recall 20.00%" in " ".join(snap.best)
    text = render(snap)
    assert "iter1 / anomalygen (stage 2 of 7" in text and "ETA" in text and "2:25" in text


def test_measured_stage_times_replace_the_model(tmp_path: Path) -> None:
    """The evaluate stage took 12 s in this run: iter1's and iter2's evaluations are counted at 12 s."""
    rd = _run_in_phase2(tmp_path)
    base = snapshot(rd.root, now=T0 + 145).phase_eta_s
    state = json.loads(rd.deft_state.read_text())
    state["events"][1]["duration_sec"] = 112
    atomic_write_json(rd.deft_state, state)
    slower = snapshot(rd.root, now=T0 + 145).phase_eta_s
    assert base is not None and slower is not None and slower - base == pytest.approx(2 * 100)


def test_finished_run_shows_what_was_delivered(tmp_path: Path) -> None:
    rd = _run_in_phase2(tmp_path)
    _pipeline_state(rd, "complete", {"phase1": "complete", "phase2": "complete", "phase3": "complete"},
                    completed=T0 + 3600)
    atomic_write_json(rd.best_model, {"iteration": "final_automl", "far_pct": 6.25, "verdict": "kpi_met",
                                      "test_far_pct": 8.0})
    snap = snapshot(rd.root, now=T0 + 99999)
    assert snap.status == "complete" and snap.phase is None and snap.eta_s is None and snap.elapsed_s == 3600
    assert snap.best[-1] == "Delivered: Phase 3 winner (final_automl), KPI FAR 6.25% (KPI met), sealed test FAR 8.00%"
    assert "ETA" not in render(snap) and "1:00:00" in render(snap)


def test_cli_json_and_not_a_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rd = _run_in_phase2(tmp_path)
    assert main([str(rd.root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["phase"] == "phase2" and out["stage"]["name"] == "anomalygen"
    assert main([str(tmp_path)]) == 1
    assert "not a raypipe run dir" in capsys.readouterr().err


def test_status_never_writes(tmp_path: Path) -> None:
    rd = _run_in_phase2(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in rd.root.rglob("*")}
    snapshot(rd.root)
    assert {p: p.stat().st_mtime_ns for p in rd.root.rglob("*")} == before


def test_stage_line() -> None:
    line = stage_line({"iter": "iter1", "stage": "data_mining", "status": "ok", "duration_sec": 6,
                       "summary": "mined 150 novel pool rows"})
    assert line == "iter1    data_mining    6 s  mined 150 novel pool rows"
    assert "FAILED" in stage_line({"iter": "iter1", "stage": "train", "status": "error", "summary": "x"})


def test_a_run_nobody_holds_the_lock_for_says_how_to_resume(tmp_path: Path) -> None:
    rd = _run_in_phase2(tmp_path)
    lock = WorkspaceLock(tmp_path)  # the run dir is <tmp_path>/results/run_…: tmp_path is the workspace
    lock.acquire(run_dir=rd.root)
    try:
        held = snapshot(rd.root, now=T0 + 145)
    finally:
        lock.release()
    assert held.status == "running" and held.holder is not None and not held.notes
    stopped = snapshot(rd.root, now=T0 + 145)  # the lock file stays; nobody holds it
    assert stopped.status == "in progress" and any("--resume" in n for n in stopped.notes)


def test_epoch_seconds_per_trial_from_its_result_file(tmp_path: Path) -> None:
    # What Phase 3's time-budget re-plan times its trials by: each trial's time so far ÷ its epochs.
    sweep = RunDir(tmp_path).sweep("phase1")
    lines = {"trial_a": [{"epoch": 1, "time_total_s": 12.0}, {"epoch": 3, "time_total_s": 30.0}],
             "trial_b": [{"epoch": 2, "time_total_s": 16.0, "done": True}],
             "trial_c": []}  # started, no epoch reported yet: no measurement
    for name, results in lines.items():
        d = sweep.path / sweep.name / name
        d.mkdir(parents=True)
        (d / "result.json").write_text("".join(json.dumps(r) + "\n" for r in results), encoding="utf-8")
    assert epoch_seconds(sweep) == [10.0, 8.0]
