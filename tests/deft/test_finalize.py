"""Finalize: best_model.json and best_model_inference_spec.yaml in TAO's words, then one loop_stop;
after Phase 3, the handoff is re-picked without a second loop_stop."""

from __future__ import annotations

import pytest
import yaml

from raypipe import tao_interop as ti
from raypipe._io import read_json
from raypipe.deft import finalize
from raypipe.deft.finalize import refresh_handoff
from raypipe.deft.state import commit, load_state, register_final_automl
from raypipe.rundir import RunDir

from ._helpers import BACKBONE, eval_evidence, new_run, phase3_entry, train_evidence


def _evaluated_run(tmp_path):
    """baseline FAR 50 %, iter1 FAR 25 % (better), both complete; iter1 is the last iteration allowed."""
    rd = new_run(tmp_path, baseline=True, max_iterations=1)
    sp = RunDir(rd).deft_state
    base_ck = load_state(sp)["iterations"]["baseline"]["best_ckpt_path"]
    commit(sp, "baseline", "evaluate", eval_evidence(rd, "baseline", base_ck, far_pass_scores=[0.1, 0.95, 0.2, 0.97]),
           duration_s=1, summary="e")
    ev = train_evidence(rd, "iter1", 2, 20)
    commit(sp, "iter1", "train", ev, duration_s=1, summary="t")
    commit(sp, "iter1", "evaluate", eval_evidence(rd, "iter1", ev["best_ckpt_path"],
                                                  far_pass_scores=[0.1, 0.95, 0.2, 0.3]), duration_s=1, summary="e")
    return rd


def test_finalize_writes_the_handoff_in_taos_words_then_loop_stop(tmp_path):
    rd = _evaluated_run(tmp_path)
    out = finalize(rd)
    assert out.best_label == "iter1" and out.passed is False
    bm = read_json(rd / "best_model.json")
    assert set(bm) == set(ti.BEST_MODEL_KEYS) | {"far_pct", "verdict"}  # verdict: raypipe's headline, beside TAO's fields
    state = load_state(RunDir(rd).deft_state)
    it = state["iterations"]["iter1"]
    assert bm["checkpoint"] == it["best_ckpt_path"] and bm["iteration"] == "iter1"
    assert bm["threshold"] == it["threshold"] and bm["far_pct"] == 25.0
    assert bm["verdict"] == "kpi_not_met"  # the KPI was missed: a plain string TAO's scripts read as is
    assert bm["metric_result"] == it["metric_result"] and bm["metric_contract"] == state["metric_contract"]
    assert bm["backbone_type"] == "builtin_siamese" and bm["images_dir"] == state["config"]["images_dir"]
    # TAO's consumer mounts `backbone` (a host file, found through config.backbone_weight_dir) at
    # `backbone_container_path` (the spec's value)
    assert bm["backbone"] == str((rd / "backbone" / BACKBONE).resolve())
    assert bm["backbone_container_path"] == f"/data/pretrained_models/{BACKBONE}" and bm["backbone_frozen"] is False

    spec = yaml.safe_load((rd / "best_model_inference_spec.yaml").read_text())
    assert list(spec) == list(ti.INFERENCE_SPEC_TOP_KEYS) and spec["results_dir"] == ""
    assert spec["inference"] == {"checkpoint": "/model/best.pth", "batch_size": 1, "results_dir": ""}
    assert spec["train"] == {"classify": {"loss": "ce"}} and spec["encryption_key"] == "tlt_encode"
    assert spec["model"]["classify"]["eval_margin"] == pytest.approx(it["threshold"])
    assert spec["model"]["classify"]["difference_module"] == "learnable"
    assert spec["model"]["backbone"]["pretrained_backbone_path"] == bm["backbone_container_path"]
    cls = spec["dataset"]["classify"]
    assert not {"train_dataset", "validation_dataset", "test_dataset"} & set(cls)
    assert cls["infer_dataset"] == {"csv_path": "", "images_dir": ""} and cls["batch_size"] == 1
    assert cls["workers"] == 1 and cls["augmentation_config"]["augment"] is False
    assert cls["input_map"] == {"LowAngleLight": 0, "SolderLight": 1}
    assert "automl_policy" not in spec and "workflow" not in spec
    assert state["status"] == "complete" and state["completed_at"]
    assert state["final_artifacts"] == {"best_model_json": str(rd.resolve() / "best_model.json"),
                                        "inference_spec": str(rd.resolve() / "best_model_inference_spec.yaml")}
    last = state["events"][-1]
    # TAO: one loop_stop, under the last loop iteration, with metric_met or max_iterations
    assert (last["iter"], last["stage"]) == ("iter1", "loop_stop")
    assert last["summary"].startswith("max_iterations:") and "best=iter1" in last["summary"]


def test_refresh_handoff_after_phase3_picks_the_overall_best_without_a_second_loop_stop(tmp_path):
    rd = _evaluated_run(tmp_path)
    finalize(rd)
    sp = RunDir(rd).deft_state
    artifacts = load_state(sp)["final_artifacts"]
    # Phase 3 regressed (FAR 75 %): the loop's best stays delivered
    register_final_automl(sp, phase3_entry(rd, far_pass_scores=[0.95, 0.96, 0.2, 0.97]))
    assert refresh_handoff(rd).best_label == "iter1"
    assert read_json(rd / "best_model.json")["iteration"] == "iter1"
    # Phase 3 improved (FAR 0 %): it becomes the deliverable
    entry = phase3_entry(rd, far_pass_scores=[0.1, 0.2, 0.3, 0.4])
    register_final_automl(sp, entry)
    out = refresh_handoff(rd)
    assert out.best_label == "final_automl" and out.passed is True
    bm = read_json(rd / "best_model.json")
    assert bm["checkpoint"] == entry["best_ckpt_path"] and bm["far_pct"] == 0.0 and bm["iteration"] == "final_automl"
    spec = yaml.safe_load((rd / "best_model_inference_spec.yaml").read_text())
    assert spec["model"]["classify"]["eval_margin"] == pytest.approx(entry["threshold"])
    state = load_state(sp)
    assert state["status"] == "complete" and state["final_artifacts"] == artifacts
    assert [e["stage"] for e in state["events"]].count("loop_stop") == 1
    assert not [e for e in state["events"] if e["iter"] == "final_automl"]


def test_a_backbone_that_no_longer_resolves_is_an_error_not_a_null(tmp_path):
    rd = _evaluated_run(tmp_path)
    (rd / "backbone" / BACKBONE).unlink()
    with pytest.raises(ti.BackboneError, match=BACKBONE):
        finalize(rd)
    assert not (rd / "best_model.json").exists() and load_state(RunDir(rd).deft_state)["status"] == "in_progress"


def test_finalize_refuses_failed_or_unevaluated(tmp_path):
    rd = new_run(tmp_path, baseline=True)
    with pytest.raises(ValueError, match="no complete iteration"):
        finalize(rd)
    assert not (rd / "best_model.json").exists()
    commit(RunDir(rd).deft_state, "baseline", "evaluate", {"reason": "x"}, duration_s=1, summary="x", status="error")
    with pytest.raises(ValueError, match="hard-stopped"):
        finalize(rd)
    with pytest.raises(ValueError, match="hard-stopped"):
        refresh_handoff(rd)
