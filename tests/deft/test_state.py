"""deft_state.json v4: the one commit function, its evidence checks, next_stage, log reconciliation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from raypipe import tao_interop as ti
from raypipe._io import read_json, read_jsonl
from raypipe.deft import EvidenceError
from raypipe.deft.state import (
    NextStep,
    commit,
    load_state,
    next_stage,
    register_final_automl,
    reopen_failed,
)
from raypipe.rundir import RunDir

from ._helpers import ckpt, eval_evidence, new_run, parquet, phase3_entry, spec_file, train_evidence

TOP_LEVEL = {"version", "started_at", "status", "kpi_target", "metric_contract", "results_dir", "max_iterations",
             "current_iteration", "execution_policy", "config", "iterations", "events"}
EVENT_KEYS = {"seq", "ts", "iter", "stage", "status", "summary", "duration_sec", "context_tokens"}


def _log(rd: Path) -> list[dict]:
    return read_jsonl(RunDir(rd).loop_log)


def test_initialise_exact_fields_and_idempotent(tmp_path):
    rd = new_run(tmp_path)
    path = RunDir(rd).deft_state
    state = read_json(path)
    assert set(state) == TOP_LEVEL
    assert state["version"] == 4 and state["status"] == "in_progress" and state["current_iteration"] == 0
    assert state["results_dir"] == str(rd.resolve()) and Path(state["results_dir"]).is_absolute()
    # TAO's parser reads this text back as the contract (the old "far_pct < 10% with ..." it misread)
    assert state["metric_contract"]["name"] == "far_pct" and state["kpi_target"] == "FAR < 10% at Recall=100%"
    assert state["execution_policy"]["network_mode"] == "airgap" and state["execution_policy"]["hf_offline"] is True
    before = path.read_bytes()
    from raypipe.deft.state import initialise_state
    from raypipe.metrics import MetricContract

    again = initialise_state(rd, config_block={"other": 1}, metric_contract=MetricContract(), max_iterations=9,
                             execution_policy={})
    assert again == path and path.read_bytes() == before


def test_the_state_writer_renders_nothing(tmp_path):
    """Presentation is not persistence: initialise and commit write the state and the log, no report."""
    rd = new_run(tmp_path, baseline=True)
    commit(RunDir(rd).deft_state, "baseline", "rca",
           {"rca_gaps_parquet": str(parquet(rd / "baseline/rca_results/T/kpi_gaps.parquet", 2)),
            "rca_threshold": 0.5, "rca_target_defects": []}, duration_s=1, summary="r")
    assert not RunDir(rd).report.exists()


def test_initialise_with_phase1_baseline(tmp_path):
    rd = new_run(tmp_path, baseline=True)
    state = load_state(RunDir(rd).deft_state)
    b = state["iterations"]["baseline"]
    assert b["stage_completed"] == "train" and b["source"] == "automl_phase1" and b["train_metric"] == 12.5
    assert Path(b["best_ckpt_path"]).is_file() and b["status"] == "in_progress"
    [ev] = state["events"]
    assert set(ev) == EVENT_KEYS and ev["seq"] == 1 and ev["stage"] == "train" and ev["iter"] == "baseline"
    assert "skipped" in ev["summary"] and "Phase 1" in ev["summary"]
    assert isinstance(ev["duration_sec"], int) and ev["duration_sec"] >= 1 and ev["context_tokens"] == 0
    assert _log(rd) == state["events"]
    assert next_stage(state) == NextStep("baseline", "evaluate")


def test_initialise_refuses_baseline_checkpoint_outside_run_dir(tmp_path):
    from raypipe.deft.state import initialise_state
    from raypipe.metrics import MetricContract

    outside = tmp_path / "elsewhere" / "model_epoch_001_step_00010.pth"
    outside.parent.mkdir(parents=True)
    outside.write_bytes(b"w")
    rd = tmp_path / "rd"
    with pytest.raises(EvidenceError, match="does not lie under"):
        initialise_state(rd, config_block={}, metric_contract=MetricContract(), max_iterations=1,
                         execution_policy=ti.execution_policy("airgap", activation_source="test"),
                         baseline={"best_ckpt_path": str(outside), "training_spec": {"a": 1}})
    assert not (RunDir(rd).deft_state).exists()


@pytest.mark.parametrize("policy,match", [
    ({"network_mode": "offline"}, "lacks"),  # raypipe's old record: TAO's tools read it as network-enabled
    ({**ti.execution_policy("airgap", activation_source="t"), "network_mode": "offline"}, "did you mean 'airgap'"),
    ({**ti.execution_policy("airgap", activation_source="t"), "allow_container_pull": True}, "cannot be true"),
    ({}, "lacks"),
])
def test_initialise_refuses_a_policy_tao_would_misread(tmp_path, policy, match):
    from raypipe.deft.state import initialise_state
    from raypipe.metrics import MetricContract

    with pytest.raises(ti.PolicyError, match=match):
        initialise_state(tmp_path / "rd", config_block={}, metric_contract=MetricContract(), max_iterations=1,
                         execution_policy=policy)
    assert not RunDir(tmp_path / "rd").deft_state.exists()


def test_commit_records_event_and_mirrors_log(tmp_path):
    rd = new_run(tmp_path)
    state = commit(RunDir(rd).deft_state, "baseline", "train", train_evidence(rd, "baseline"), duration_s=2.01,
                   summary="trained\n 1 epoch")
    ev = state["events"][-1]
    assert ev["seq"] == 1 and ev["duration_sec"] == 3 and ev["summary"] == "trained 1 epoch"
    assert ev["ts"].endswith("Z") and ev["status"] == "ok"
    assert state["iterations"]["baseline"]["stage_completed"] == "train"
    assert read_json(RunDir(rd).deft_state) == state and _log(rd) == state["events"]
    ev_eval = eval_evidence(rd, "baseline", state["iterations"]["baseline"]["best_ckpt_path"],
                            far_pass_scores=[0.1, 0.2, 0.95, 0.3])
    state = commit(RunDir(rd).deft_state, "baseline", "evaluate", ev_eval, duration_s=0.2, summary="eval")
    b = state["iterations"]["baseline"]
    assert b["status"] == "complete" and state["events"][-1]["seq"] == 2 and state["events"][-1]["duration_sec"] == 1
    assert b["metric_result"]["passed"] is False and math.isclose(b["far_pct"], 25.0)
    # stored as TAO stores it: the evaluator's file as written (threshold, diagnostics), + evidence_path, passed
    written = read_json(b["metric_result"]["evidence_path"])
    assert {"threshold", "diagnostics"} <= set(written) and "passed" not in written
    assert b["metric_result"] == {**written, "evidence_path": b["metric_result"]["evidence_path"], "passed": False}
    # RCA under the same (complete) iteration keeps it complete: pick_best only reads complete entries.
    state = commit(RunDir(rd).deft_state, "baseline", "rca",
                   {"rca_gaps_parquet": str(parquet(rd / "baseline/rca_results/T/kpi_gaps.parquet", 3)),
                    "rca_threshold": 0.5, "rca_target_defects": ["missing"]}, duration_s=1, summary="rca")
    assert state["iterations"]["baseline"]["status"] == "complete"
    assert next_stage(state) == NextStep("iter1", "routing")
    assert [e["seq"] for e in _log(rd)] == [1, 2, 3]


def test_iter_commit_sets_current_iteration(tmp_path):
    rd = new_run(tmp_path, max_iterations=3)
    p = parquet(rd / "iter2/routing_results/T/m.parquet", 2)
    state = commit(RunDir(rd).deft_state, "iter2", "routing", {"routing_mining_parquet": str(p),
                                                        "routing_anomalygen_parquet": str(p)},
                   duration_s=1, summary="r")
    assert state["current_iteration"] == 2
    state = commit(RunDir(rd).deft_state, "iter1", "routing", {"routing_mining_parquet": str(p),
                                                        "routing_anomalygen_parquet": str(p)},
                   duration_s=1, summary="r")
    assert state["current_iteration"] == 2


def _bad_cases():
    """(name, builder(rd) -> (label, stage, evidence, duration), error match)."""

    def missing_file(rd):
        ev = train_evidence(rd, "baseline")
        ev["best_ckpt_path"] = str(rd / "baseline/train/model_epoch_009_step_00090.pth")
        return "baseline", "train", ev, 1.0

    def outside_dir(rd):
        ev = train_evidence(rd, "iter1")
        ev["best_ckpt_path"] = str(ckpt(rd, "baseline", 5, 50))
        return "iter1", "train", ev, 1.0

    def reused(rd):
        ev = train_evidence(rd, "iter1")
        # iter1's own dir, but the same file as baseline's via a symlink: resolved paths compare equal
        link = rd / "iter1/train/model_epoch_002_step_00020.pth"
        link.symlink_to(read_json(RunDir(rd).deft_state)["iterations"]["baseline"]["best_ckpt_path"])
        ev["best_ckpt_path"] = str(link)
        return "iter1", "train", ev, 1.0

    def empty_ckpt(rd):
        ev = train_evidence(rd, "iter1")
        Path(ev["best_ckpt_path"]).write_bytes(b"")
        return "iter1", "train", ev, 1.0

    def zero_step(rd):
        return "iter1", "train", train_evidence(rd, "iter1", 0, 0), 1.0

    def relative(rd):
        ev = train_evidence(rd, "iter1")
        ev["best_ckpt_path"] = "iter1/train/model_epoch_001_step_00010.pth"
        return "iter1", "train", ev, 1.0

    def zero_duration(rd):
        return "iter1", "train", train_evidence(rd, "iter1"), 0.0

    def negative_duration(rd):
        return "iter1", "train", train_evidence(rd, "iter1"), -3.0

    def nan_duration(rd):
        return "iter1", "train", train_evidence(rd, "iter1"), float("nan")

    def wrong_unit(rd):
        ev = eval_evidence(rd, "baseline", read_json(RunDir(rd).deft_state)["iterations"]["baseline"]["best_ckpt_path"],
                           far_pass_scores=[0.1, 0.2])
        ev["metric_result"] = {**ev["metric_result"], "unit": "fraction"}
        return "baseline", "evaluate", ev, 1.0

    def missing_constraint(rd):
        ev = eval_evidence(rd, "baseline", read_json(RunDir(rd).deft_state)["iterations"]["baseline"]["best_ckpt_path"],
                           far_pass_scores=[0.1, 0.2])
        ev["metric_result"] = {**ev["metric_result"], "constraints": {}}
        return "baseline", "evaluate", ev, 1.0

    def wrong_name(rd):
        ev = eval_evidence(rd, "baseline", read_json(RunDir(rd).deft_state)["iterations"]["baseline"]["best_ckpt_path"],
                           far_pass_scores=[0.1, 0.2])
        ev["metric_result"] = {**ev["metric_result"], "name": "accuracy"}
        return "baseline", "evaluate", ev, 1.0

    def value_not_on_disk(rd):
        ev = eval_evidence(rd, "baseline", read_json(RunDir(rd).deft_state)["iterations"]["baseline"]["best_ckpt_path"],
                           far_pass_scores=[0.1, 0.95])
        ev["metric_result"] = {**ev["metric_result"], "value": 0.0}
        return "baseline", "evaluate", ev, 1.0

    def mined_count(rd):
        d = rd / "iter1/mining_filter"
        ev = {"mining_mined_parquet": str(parquet(d / "mined.parquet", 4)),
              "mining_candidate_parquet": str(parquet(d / "mined_candidates.parquet", 9)),
              "mining_summary": str(parquet(d / "knn.parquet", 1)),
              "mining_history_summary": str(parquet(d / "h.parquet", 1)),
              "mining_target_embeddings": str(parquet(d / "t.parquet", 2)),
              "mining_source_embeddings": str(parquet(d / "s.parquet", 9)),
              "mining_mined_count": 5}
        return "iter1", "data_mining", ev, 1.0

    def final_automl_event(rd):
        # TAO's commit script refuses the label: Phase 3 is registered without an event
        ck = ckpt(rd, "final_automl", 2, 40)
        return "final_automl", "evaluate", eval_evidence(rd, "final_automl", ck, far_pass_scores=[0.1, 0.2]), 1.0

    def unknown_key(rd):
        p = parquet(rd / "iter1/routing_results/T/m.parquet", 1)
        return "iter1", "routing", {"routing_mining_parquet": str(p), "routing_anomalygen_parquet": str(p),
                                    "routing_mining_parqet": str(p)}, 1.0

    def missing_key(rd):
        p = parquet(rd / "iter1/routing_results/T/m.parquet", 1)
        return "iter1", "routing", {"routing_mining_parquet": str(p)}, 1.0

    return [("missing file", missing_file, "does not exist"),
            ("checkpoint outside iter<N>/train", outside_dir, "does not lie under"),
            ("reused checkpoint", reused, "not new"),
            ("empty checkpoint", empty_ckpt, "empty"),
            ("zero-step checkpoint", zero_step, "step 0"),
            ("relative path", relative, "absolute"),
            ("zero duration", zero_duration, "positive"),
            ("negative duration", negative_duration, "positive"),
            ("nan duration", nan_duration, "positive"),
            ("wrong unit", wrong_unit, "unit"),
            ("missing constraint", missing_constraint, "recall_pct"),
            ("wrong metric name", wrong_name, "name"),
            ("value differs from evidence file", value_not_on_disk, "differs"),
            ("mined count mismatch", mined_count, "has 4 rows"),
            ("an event under final_automl", final_automl_event, "bad iteration label"),
            ("unknown evidence key", unknown_key, "unknown evidence"),
            ("missing evidence key", missing_key, "missing evidence")]


@pytest.mark.parametrize("name,build,match", _bad_cases(), ids=[c[0] for c in _bad_cases()])
def test_bad_evidence_leaves_state_byte_identical(tmp_path, name, build, match):
    rd = new_run(tmp_path, baseline=True)
    label, stage, ev, dur = build(rd)
    state_before = (RunDir(rd).deft_state).read_bytes()
    log_before = (RunDir(rd).loop_log).read_bytes()
    with pytest.raises(EvidenceError, match=match):
        commit(RunDir(rd).deft_state, label, stage, ev, duration_s=dur, summary=name)
    assert (RunDir(rd).deft_state).read_bytes() == state_before
    assert (RunDir(rd).loop_log).read_bytes() == log_before


def test_error_commit_fails_run_then_reopen(tmp_path):
    rd = new_run(tmp_path, baseline=True)
    state = commit(RunDir(rd).deft_state, "iter1", "routing", {"reason": "no gaps routed", "fix": "add pool rows"},
                   duration_s=0.5, summary="routing hard stop: no gaps routed", status="error")
    assert state["status"] == "failed" and state["iterations"]["iter1"]["status"] == "failed"
    assert state["iterations"]["iter1"]["errors"][0]["fix"] == "add pool rows"
    assert "stage_completed" not in state["iterations"]["iter1"]
    assert state["events"][-1]["status"] == "error" and _log(rd) == state["events"]
    assert next_stage(state) == NextStep("iter1", "halt")
    assert reopen_failed(RunDir(rd).deft_state) is True
    state = load_state(RunDir(rd).deft_state)
    assert state["status"] == "in_progress" and state["iterations"]["iter1"]["status"] == "in_progress"
    assert next_stage(state) == NextStep("iter1", "routing")
    assert reopen_failed(RunDir(rd).deft_state) is False


def _state(status="in_progress", max_iterations=3, **iters):
    return {"status": status, "max_iterations": max_iterations, "iterations": iters}


def _ev(passed=False):
    return {"stage_completed": "evaluate", "status": "complete", "metric_result": {"passed": passed}}


NEXT_TABLE = [
    ("fresh", _state(), NextStep("baseline", "train")),
    ("complete", _state("complete", baseline=_ev(True)), NextStep(None, "done")),
    ("failed", _state("failed", baseline={"status": "failed"}), NextStep("baseline", "halt")),
    ("baseline trained", _state(baseline={"stage_completed": "train"}), NextStep("baseline", "evaluate")),
    ("baseline evaluated, not passed", _state(baseline=_ev()), NextStep("baseline", "rca")),
    ("baseline evaluated, passed", _state(baseline=_ev(True)), NextStep("baseline", "loop_stop")),
    ("baseline rca", _state(baseline={"stage_completed": "rca"}), NextStep("iter1", "routing")),
    ("iter1 routing", _state(baseline={}, iter1={"stage_completed": "routing"}), NextStep("iter1", "anomalygen")),
    ("iter1 sdg", _state(iter1={"stage_completed": "anomalygen"}), NextStep("iter1", "data_mining")),
    ("iter1 mining", _state(iter1={"stage_completed": "data_mining"}), NextStep("iter1", "data_merge")),
    ("iter1 merge", _state(iter1={"stage_completed": "data_merge"}), NextStep("iter1", "train")),
    ("iter1 trained", _state(iter1={"stage_completed": "train"}), NextStep("iter1", "evaluate")),
    ("iter1 evaluated below max", _state(baseline=_ev(), iter1=_ev()), NextStep("iter1", "rca")),
    ("iter1 rca", _state(iter1={"stage_completed": "rca"}), NextStep("iter2", "routing")),
    ("iter3 evaluated at max: no RCA after the final evaluate", _state(iter3=_ev()), NextStep("iter3", "loop_stop")),
    ("iter2 evaluated, max 1 (past max)", _state(max_iterations=1, iter2=_ev()), NextStep("iter2", "loop_stop")),
    ("iter2 passed", _state(iter2=_ev(True)), NextStep("iter2", "loop_stop")),
    ("iter entry without stage (reopened)", _state(iter2={"status": "in_progress"}), NextStep("iter2", "routing")),
    ("iter10 sorts after iter9", _state(iter9={"stage_completed": "rca"}, iter10={"stage_completed": "train"}),
     NextStep("iter10", "evaluate")),
    ("final_automl ignored by the loop", _state(baseline={"stage_completed": "train"}, final_automl=_ev()),
     NextStep("baseline", "evaluate")),
]


@pytest.mark.parametrize("name,state,expected", NEXT_TABLE, ids=[r[0] for r in NEXT_TABLE])
def test_next_stage_table(name, state, expected):
    assert next_stage(state) == expected


@pytest.mark.parametrize("damage", ["missing_last", "extra_line", "torn_line", "deleted"])
def test_load_reconciles_loop_log(tmp_path, damage):
    rd = new_run(tmp_path, baseline=True)
    commit(RunDir(rd).deft_state, "baseline", "evaluate",
           eval_evidence(rd, "baseline", load_state(RunDir(rd).deft_state)["iterations"]["baseline"]["best_ckpt_path"],
                         far_pass_scores=[0.1]), duration_s=1, summary="e")
    log = RunDir(rd).loop_log
    lines = log.read_text().splitlines(keepends=True)
    if damage == "missing_last":  # SIGKILL between the state write and the log append
        log.write_text("".join(lines[:-1]))
    elif damage == "extra_line":
        log.write_text("".join(lines) + json.dumps({"seq": 3, "stage": "rca"}) + "\n")
    elif damage == "torn_line":
        log.write_text("".join(lines) + '{"seq": 3, "sta')
    else:
        log.unlink()
    state = load_state(RunDir(rd).deft_state)
    assert log.read_text() == "".join(json.dumps(e) + "\n" for e in state["events"])
    assert [e["seq"] for e in _log(rd)] == [1, 2]
    state = commit(RunDir(rd).deft_state, "baseline", "rca",
                   {"rca_gaps_parquet": str(parquet(rd / "baseline/rca_results/T/kpi_gaps.parquet", 1)),
                    "rca_threshold": 0.5, "rca_target_defects": []}, duration_s=1, summary="r")
    assert [e["seq"] for e in _log(rd)] == [1, 2, 3] == [e["seq"] for e in state["events"]]


def test_register_final_automl_writes_the_entry_without_an_event(tmp_path):
    rd = new_run(tmp_path, baseline=True)
    entry = phase3_entry(rd, far_pass_scores=[0.1, 0.2])
    before = load_state(RunDir(rd).deft_state)
    log_before = RunDir(rd).loop_log.read_bytes()
    state = register_final_automl(RunDir(rd).deft_state, entry)
    fa = state["iterations"]["final_automl"]
    assert fa["status"] == "complete" and fa["stage_completed"] == "evaluate" and fa["source"] == "automl_phase3"
    assert fa["combined_training_csv"] == entry["combined_training_csv"] and fa["far_pct"] == entry["far_pct"]
    # TAO's commit script accepts no final_automl event: none is filed, the log is untouched
    assert state["events"] == before["events"] and RunDir(rd).loop_log.read_bytes() == log_before
    assert read_json(RunDir(rd).deft_state) == state
    # the metric result as the evaluator wrote it (threshold and diagnostics kept), plus TAO's two fields
    written = read_json(fa["metric_result"]["evidence_path"])
    assert {k: fa["metric_result"][k] for k in written} == written and "threshold" in written
    assert fa["metric_result"]["passed"] is True


def test_register_final_automl_checks_like_evaluate(tmp_path):
    rd = new_run(tmp_path, baseline=True)
    entry = phase3_entry(rd, far_pass_scores=[0.1, 0.2])
    state_before = RunDir(rd).deft_state.read_bytes()
    with pytest.raises(ValueError, match="stage_completed"):
        register_final_automl(RunDir(rd).deft_state, dict(entry, stage_completed="train"))
    bad = dict(entry, training_spec=str(spec_file(rd, "x").with_name("nope.yaml")))
    with pytest.raises(EvidenceError, match="does not exist"):
        register_final_automl(RunDir(rd).deft_state, bad)
    with pytest.raises(EvidenceError, match="combined_training_csv"):
        register_final_automl(RunDir(rd).deft_state, {k: v for k, v in entry.items() if k != "combined_training_csv"})
    with pytest.raises(EvidenceError, match="does not exist"):
        register_final_automl(RunDir(rd).deft_state, dict(entry, combined_training_csv=str(tmp_path / "gone.csv")))
    assert RunDir(rd).deft_state.read_bytes() == state_before
    commit(RunDir(rd).deft_state, "baseline", "evaluate", {"reason": "x"}, duration_s=1, summary="x", status="error")
    with pytest.raises(ValueError, match="hard-stopped"):
        register_final_automl(RunDir(rd).deft_state, entry)
