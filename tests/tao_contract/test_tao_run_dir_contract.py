"""raypipe.testing.tao_contract on a run dir: silent on one written with the TAO vocabulary, and
naming the file and field of each way a writer could break it (each one a failure issue 13 found
in a real run, or a rule of TAO's commit and handoff scripts).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from tao_run_fixture import edit_json

from raypipe import tao_interop as ti
from raypipe.testing.tao_contract import assert_tao_contract, check_run_dir


def test_a_run_dir_written_with_the_vocabulary_has_no_problem(run_dir: Path) -> None:
    assert check_run_dir(run_dir) == []
    assert_tao_contract(run_dir)


def _state(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    return lambda rd: edit_json(rd / "deft_state.json", change)


def _entry(label: str, change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    return _state(lambda s: change(s["iterations"][label]))


def _phase3_event_and_second_loop_stop(s: dict[str, Any]) -> None:
    n = len(s["events"])
    for i, stage in enumerate(("evaluate", "loop_stop"), start=n + 1):
        s["events"].append(dict(s["events"][-1], seq=i, iter="final_automl", stage=stage))


def _placeholder_log(rd: Path) -> None:
    (rd / "iter1" / "mining_filter" / "nearest_neighbors.log").write_text("OK\n")


def _strip_metric_result(e: dict[str, Any]) -> None:
    e["metric_result"] = {k: e["metric_result"][k] for k in ("name", "value", "unit", "passed", "constraints",
                                                             "evidence_path")}


def _phase3_spec_names_base_csv(rd: Path) -> None:
    state = json.loads((rd / "deft_state.json").read_text())
    spec_path = Path(state["iterations"]["final_automl"]["training_spec"])
    spec = yaml.safe_load(spec_path.read_text())
    spec["dataset"]["classify"]["train_dataset"]["csv_path"] = state["config"]["training_csv"]
    spec_path.write_text(yaml.safe_dump(spec))


def _tamper_mined_parquet(rd: Path) -> None:
    import pandas as pd

    pd.DataFrame({"filepath": ["elsewhere", "another"]}).to_parquet(rd / "iter1/mining_filter/mined.parquet")


def _old_inference_spec(rd: Path) -> None:
    path = rd / "best_model_inference_spec.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["inference"] = {"checkpoint": json.loads((rd / "best_model.json").read_text())["checkpoint"]}
    spec["dataset"]["classify"]["infer_dataset"] = {}
    for key in ("encryption_key", "results_dir", "train"):
        spec.pop(key)
    path.write_text(yaml.safe_dump(spec))


def _null_backbone(bm: dict[str, Any]) -> None:
    bm["backbone"] = None
    del bm["backbone_container_path"], bm["backbone_frozen"]


BREAKS: list[tuple[str, Callable[[Path], None], str]] = [
    ("the old policy word", _state(lambda s: s["execution_policy"].update(network_mode="offline")),
     "network_mode 'offline' is not one of ['airgap', 'network-enabled']"),
    ("a policy without TAO's keys", _state(lambda s: s["execution_policy"].pop("hf_offline")),
     "execution_policy: missing 'hf_offline'"),
    ("an airgap policy that allows pulls", _state(lambda s: s["execution_policy"].update(allow_container_pull=True)),
     "'allow_container_pull' is true under airgap"),
    ("config without backbone_weight_dir", _state(lambda s: s["config"].pop("backbone_weight_dir")),
     "config: missing 'backbone_weight_dir'"),
    ("config without the anomalygen block", _state(lambda s: s["config"].pop("anomalygen")),
     "config: missing 'anomalygen'"),
    ("gpu_model null", _state(lambda s: s["config"].update(gpu_model=None)), "gpu_model must be a non-empty text"),
    ("Phase 3 filed as events", _state(_phase3_event_and_second_loop_stop),
     "iter 'final_automl' is not baseline or iter<N>"),
    ("a zero-second event", _state(lambda s: s["events"][0].update(duration_sec=0)),
     "duration_sec must be a positive int"),
    ("mining without step logs", _entry("iter1", lambda e: e.pop("mining_knn_log")),
     "(data_mining): 'mining_knn_log' must be an absolute file path"),
    ("a placeholder mining log", _placeholder_log, "mining_knn_log"),
    ("mining without the ledger path", _entry("iter1", lambda e: e.pop("mining_history")),
     "(data_mining): 'mining_history' must be an absolute file path"),
    ("a mined count that is not the parquet's", _tamper_mined_parquet, "mining_mined_count 1 but"),
    ("an evaluator result stripped of its threshold and diagnostics", _entry("iter1", _strip_metric_result),
     "metric_result drops or changes ['diagnostics', 'threshold']"),
    ("Phase 3 without the CSV it trained on", _entry("final_automl", lambda e: e.pop("combined_training_csv")),
     "combined_training_csv None, but Phase 3 trains on"),
    ("Phase 3's spec naming the base training CSV", _phase3_spec_names_base_csv,
     "names train_dataset"),
    ("the old kpi_target text", _state(lambda s: s.update(kpi_target="far_pct < 10% with recall_pct >= 100%")),
     "kpi_target 'far_pct < 10% with recall_pct >= 100%' reads as"),
    ("a ledger in raypipe's old format", lambda rd: edit_json(rd / "mining_history.json", lambda h: h.pop("version")),
     "mining_history.json: version must be 1"),
    ("best_model.json with the raw (null) backbone", lambda rd: edit_json(rd / "best_model.json", _null_backbone),
     "best_model.json: missing 'backbone_container_path'"),
    ("best_model.json pointing at a worse entry",
     lambda rd: edit_json(rd / "best_model.json", lambda b: b.update(iteration="baseline")),
     "'iteration' is 'baseline'; TAO's handoff writes 'final_automl'"),
    ("an inference spec with a host checkpoint", _old_inference_spec,
     "inference must be {checkpoint: /model/best.pth"),
]


@pytest.mark.parametrize(("what", "breaks", "problem"), BREAKS, ids=[b[0] for b in BREAKS])
def test_each_break_is_named(run_dir: Path, what: str, breaks: Callable[[Path], None], problem: str) -> None:
    breaks(run_dir)
    problems = check_run_dir(run_dir)
    assert any(problem in p for p in problems), f"{what}: {problem!r} not among {problems}"
    with pytest.raises(AssertionError, match="breaks the TAO contract"):
        assert_tao_contract(run_dir)


def test_best_model_json_stays_open_for_more_fields(run_dir: Path) -> None:
    """raypipe adds its own fields (a verdict, sealed-test numbers); TAO's consumers read theirs by key."""
    edit_json(run_dir / "best_model.json", lambda b: b.update(verdict="kpi_not_met", test_far_pct=12.5,
                                                              test_auroc=0.91))
    assert check_run_dir(run_dir) == []


def test_backbone_lookup_follows_backbone_weight_dir(run_dir: Path) -> None:
    """TAO's handoff finds a container-path backbone as backbone_weight_dir/<file name>."""
    state = json.loads((run_dir / "deft_state.json").read_text())
    staged = Path(json.loads((run_dir / "best_model.json").read_text())["backbone"])
    for label in ("baseline", "iter1", "final_automl"):
        spec_path = Path(state["iterations"][label]["training_spec"])
        spec = yaml.safe_load(spec_path.read_text())
        spec["model"]["backbone"]["pretrained_backbone_path"] = f"/data/pretrained_models/{staged.name}"
        spec_path.write_text(yaml.safe_dump(spec))
    mounted = f"/data/pretrained_models/{staged.name}"
    edit_json(run_dir / "best_model.json", lambda b: b.update(backbone_container_path=mounted))
    path = run_dir / "best_model_inference_spec.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["model"]["backbone"]["pretrained_backbone_path"] = f"/data/pretrained_models/{staged.name}"
    path.write_text(yaml.safe_dump(spec))
    assert check_run_dir(run_dir) == []
    edit_json(run_dir / "deft_state.json", lambda s: s["config"].update(backbone_weight_dir=str(run_dir / "nowhere")))
    assert any("cannot resolve the backbone" in p for p in check_run_dir(run_dir))


def test_an_in_progress_run_is_not_asked_for_handoff_files(run_dir: Path) -> None:
    (run_dir / "best_model.json").unlink()

    def reopen(s: dict[str, Any]) -> None:
        s["status"] = "in_progress"
        s["events"].pop()
        del s["final_artifacts"], s["completed_at"], s["iterations"][ti.FINAL_AUTOML]

    edit_json(run_dir / "deft_state.json", reopen)
    assert check_run_dir(run_dir) == []
