"""Finalize: best_model.json, best_model_inference_spec.yaml, then loop_stop."""

from __future__ import annotations

import pytest
import yaml

from raypipe._io import read_json
from raypipe.deft import finalize
from raypipe.deft.state import commit, load_state, register_final_automl
from raypipe.rundir import RunDir

from ._helpers import ckpt, eval_evidence, new_run, train_evidence

BEST_MODEL_KEYS = {"checkpoint", "threshold", "metric_contract", "metric_result", "iteration", "backbone",
                   "backbone_type", "images_dir", "training_spec", "far_pct", "verdict"}


def _evaluated_run(tmp_path):
    """baseline FAR 50 %, iter1 FAR 25 % (better), both complete."""
    rd = new_run(tmp_path, baseline=True)
    sp = RunDir(rd).deft_state
    base_ck = load_state(sp)["iterations"]["baseline"]["best_ckpt_path"]
    commit(sp, "baseline", "evaluate", eval_evidence(rd, "baseline", base_ck, far_pass_scores=[0.1, 0.95, 0.2, 0.97]),
           duration_s=1, summary="e")
    ev = train_evidence(rd, "iter1", 2, 20)
    commit(sp, "iter1", "train", ev, duration_s=1, summary="t")
    commit(sp, "iter1", "evaluate", eval_evidence(rd, "iter1", ev["best_ckpt_path"],
                                                  far_pass_scores=[0.1, 0.95, 0.2, 0.3]), duration_s=1, summary="e")
    return rd


def test_finalize_writes_handoff_then_loop_stop(tmp_path):
    rd = _evaluated_run(tmp_path)
    out = finalize(rd)
    assert out.best_label == "iter1" and out.passed is False
    bm = read_json(rd / "best_model.json")
    assert set(bm) == BEST_MODEL_KEYS
    state = load_state(RunDir(rd).deft_state)
    it = state["iterations"]["iter1"]
    assert bm["checkpoint"] == it["best_ckpt_path"] and bm["iteration"] == "iter1"
    assert bm["threshold"] == it["threshold"] and bm["far_pct"] == 25.0
    assert bm["verdict"] == "kpi_not_met"  # the KPI was missed: a plain string TAO's scripts read as is
    assert bm["metric_result"] == it["metric_result"] and bm["metric_contract"] == state["metric_contract"]
    assert bm["backbone_type"] == "builtin_siamese" and bm["images_dir"] == state["config"]["images_dir"]
    spec = yaml.safe_load((rd / "best_model_inference_spec.yaml").read_text())
    assert spec["model"]["classify"]["eval_margin"] == pytest.approx(it["threshold"])
    assert spec["model"]["classify"]["difference_module"] == "learnable"
    cls = spec["dataset"]["classify"]
    assert not {"train_dataset", "validation_dataset", "test_dataset"} & set(cls)
    assert cls["infer_dataset"] == {} and cls["batch_size"] == 1 and cls["augmentation_config"]["augment"] is False
    assert cls["input_map"] == {"LowAngleLight": 0, "SolderLight": 1}
    assert spec["inference"]["checkpoint"] == it["best_ckpt_path"]
    assert "automl_policy" not in spec and "workflow" not in spec
    assert state["status"] == "complete" and state["completed_at"]
    assert state["final_artifacts"] == {"best_model_json": str(rd.resolve() / "best_model.json"),
                                        "inference_spec": str(rd.resolve() / "best_model_inference_spec.yaml")}
    last = state["events"][-1]
    assert last["stage"] == "loop_stop" and "max_iterations" in last["summary"] and "best=iter1" in last["summary"]


def test_finalize_rerun_after_phase3_picks_overall_best(tmp_path):
    rd = _evaluated_run(tmp_path)
    finalize(rd)
    sp = RunDir(rd).deft_state
    ck = ckpt(rd, "final_automl", 3, 60)
    # Phase 3 regressed (FAR 75 %): the loop's best stays delivered
    ev = eval_evidence(rd, "final_automl", ck, far_pass_scores=[0.95, 0.96, 0.2, 0.97])
    register_final_automl(sp, {k: ev[k] for k in ("best_ckpt_path", "training_spec", "metric_result",
                                                  "threshold", "far_pct", "inference_csv")})
    assert finalize(rd).best_label == "iter1"
    # Phase 3 improved (FAR 0 %): it becomes the deliverable
    ev = eval_evidence(rd, "final_automl", ck, far_pass_scores=[0.1, 0.2, 0.3, 0.4])
    register_final_automl(sp, {k: ev[k] for k in ("best_ckpt_path", "training_spec", "metric_result",
                                                  "threshold", "far_pct")})
    out = finalize(rd)
    assert out.best_label == "final_automl" and out.passed is True
    bm = read_json(rd / "best_model.json")
    assert bm["checkpoint"] == str(ck) and bm["far_pct"] == 0.0
    state = load_state(sp)
    assert state["status"] == "complete" and [e["stage"] for e in state["events"]].count("loop_stop") == 3


def test_finalize_refuses_failed_or_unevaluated(tmp_path):
    rd = new_run(tmp_path, baseline=True)
    with pytest.raises(ValueError, match="no complete iteration"):
        finalize(rd)
    assert not (rd / "best_model.json").exists()
    commit(RunDir(rd).deft_state, "baseline", "evaluate", {"reason": "x"}, duration_s=1, summary="x", status="error")
    with pytest.raises(ValueError, match="hard-stopped"):
        finalize(rd)
