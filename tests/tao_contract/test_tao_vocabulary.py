"""raypipe.tao_interop: each function writes TAO's field set and vocabulary, checked against the
rules TAO's DEFT AOI skill documents (restated in raypipe.testing.tao_contract)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from raypipe import tao_interop as ti
from raypipe.testing.tao_contract import (
    check_execution_policy,
    check_state_config,
    parse_kpi_target,
)

FAR = {"name": "far_pct", "display_name": "FAR at 100% recall", "operator": "<", "target": 10.0, "unit": "%",
       "evaluator": {"type": "builtin", "id": "far_at_recall", "parameters": {"recall_target_pct": 100}},
       "constraints": [{"name": "recall_pct", "display_name": "Recall", "operator": ">=", "target": 100.0,
                        "unit": "%"}]}


# -- execution policy ----------------------------------------------------------------------------

def test_policy_has_taos_nine_keys_in_taos_order_and_words() -> None:
    air = ti.execution_policy("airgap", activation_source="default", python_executable="/usr/bin/python3")
    assert list(air) == list(ti.POLICY_KEYS)
    assert air == {"network_mode": "airgap", "activation_source": "default", "allow_package_install": False,
                   "allow_remote_fetch": False, "allow_container_pull": False, "allow_registry_login": False,
                   "python_launcher": "python -m raypipe.run", "python_executable": "/usr/bin/python3",
                   "hf_offline": True}
    net = ti.execution_policy("network-enabled", activation_source="config", allow_container_pull=True)
    assert (net["allow_package_install"], net["allow_remote_fetch"], net["allow_container_pull"],
            net["allow_registry_login"], net["hf_offline"]) == (True, True, True, False, False)
    assert check_execution_policy(air) == [] and check_execution_policy(net) == []


@pytest.mark.parametrize(("word", "hint"), [("offline", "did you mean 'airgap'"),
                                            ("online", "did you mean 'network-enabled'"), ("AIRGAP", "")])
def test_words_tao_does_not_know_are_refused_with_the_right_one(word: str, hint: str) -> None:
    with pytest.raises(ti.PolicyError, match="not one of airgap, network-enabled") as err:
        ti.execution_policy(word, activation_source="config")
    assert hint in str(err.value)
    assert any("is not one of" in p for p in check_execution_policy({"network_mode": word}))


def test_airgap_refuses_the_network_switches_instead_of_dropping_them() -> None:
    with pytest.raises(ti.PolicyError, match="allow_container_pull, allow_registry_login cannot be true"):
        ti.execution_policy("airgap", activation_source="c", allow_container_pull=True, allow_registry_login=True)
    with pytest.raises(ti.PolicyError, match="activation_source"):
        ti.execution_policy("airgap", activation_source=" ")


def test_python_executable_keeps_the_virtualenv_path(tmp_path: Path) -> None:
    link = tmp_path / "venv" / "bin" / "python"
    link.parent.mkdir(parents=True)
    link.symlink_to(sys.executable)
    policy = ti.execution_policy("airgap", activation_source="c", python_executable=link)
    assert policy["python_executable"] == str(link)  # resolving would name a Python without the venv's packages


def test_network_mode_resolution() -> None:
    assert ti.resolve_network_mode(None, source="config", environ={}) == ("airgap", "default")
    assert ti.resolve_network_mode("network-enabled", source="config", environ={}) == ("network-enabled", "config")
    assert ti.resolve_network_mode(None, source="config", environ={"AIR_GAPPED": "1"}) == \
           ("airgap", "environment:AIR_GAPPED")
    with pytest.raises(ti.PolicyError, match="AIR_GAPPED=1 is set"):
        ti.resolve_network_mode("network-enabled", source="config", environ={"AIR_GAPPED": "1"})
    with pytest.raises(ti.PolicyError, match="did you mean 'airgap'"):
        ti.resolve_network_mode("offline", source="config", environ={})


def test_anything_but_network_enabled_is_airgapped_for_raypipe() -> None:
    net = ti.execution_policy("network-enabled", activation_source="c", allow_container_pull=True)
    assert not ti.airgapped(net) and ti.allows(net, "container_pull") and not ti.allows(net, "registry_login")
    for policy in (None, {}, {"network_mode": "offline", "allow_container_pull": True},
                   {"network_mode": "online", "allow_container_pull": True}):
        assert ti.airgapped(policy) and not ti.allows(policy, "container_pull")
    assert not ti.allows({"network_mode": "network-enabled", "allow_container_pull": "yes"}, "container_pull")


def test_offline_environment() -> None:
    air = ti.execution_policy("airgap", activation_source="c")
    container = ti.offline_environment(air, container=True)
    assert container == {"AIR_GAPPED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PIP_NO_INDEX": "1"}
    process = ti.offline_environment(air)
    assert process == container | {"RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true",
                                   "DO_NOT_TRACK": "true"}
    assert ti.offline_environment(ti.execution_policy("network-enabled", activation_source="c")) == {}


# -- kpi_target ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("contract", "text"), [
    (FAR, "FAR < 10% at Recall=100%"),
    (FAR | {"evaluator": {"type": "builtin", "id": "far_at_recall", "parameters": {"recall_target_pct": 99.5}},
            "target": 2.5}, "FAR < 2.5% at Recall=99.5%"),
    ({"name": "quality_score", "display_name": "Quality score", "operator": ">=", "target": 0.9, "unit": "",
      "constraints": []}, "Quality score >= 0.9"),
    ({"name": "escape_rate", "display_name": "Escapes (weighted)", "operator": "<=", "target": 1e-05,
      "unit": "cost/board", "constraints": [{"name": "recall_pct", "operator": ">=", "target": 99.0, "unit": "%"}]},
     "escape_rate <= 0.00001 cost/board at recall_pct >= 99%"),
    ({"name": "margin_gain", "display_name": "margin gain", "operator": ">", "target": -3.0, "unit": "pp",
      "constraints": []}, "margin gain > -3 pp"),
])
def test_kpi_target_reads_back_as_the_contract(contract: dict, text: str) -> None:
    assert ti.kpi_target_text(contract) == text
    assert parse_kpi_target(text) == {k: (float(contract[k]) if k == "target" else contract[k])
                                      for k in ("name", "operator", "target", "unit")}


def test_the_old_kpi_text_does_not_read_back() -> None:
    parsed = parse_kpi_target("far_pct < 10% with recall_pct >= 100%")
    assert parsed is None or parsed["name"] != "far_pct"


def test_a_unit_with_a_space_is_left_out_of_the_text() -> None:
    contract = {"name": "cost", "operator": "<", "target": 2.0, "unit": "per board", "constraints": []}
    assert ti.kpi_target_text(contract) == "cost < 2"


# -- state.config ------------------------------------------------------------------------------

def test_anomalygen_block_has_taos_keys_for_both_generators(tmp_path: Path) -> None:
    builtin = ti.anomalygen_block("builtin", 16, images_dir=tmp_path / "images")
    assert tuple(builtin) == ti.ANOMALYGEN_KEYS
    assert builtin["num_SDG"] == 16 and builtin["mode"] == "procedural" and builtin["container"] is None
    ag = ti.anomalygen_block("anomalygen", 20, images_dir=tmp_path, workspace_root=tmp_path, project="nvpcb",
                             step=14000, container="nvcr.io/x:1")
    assert tuple(ag) == ti.ANOMALYGEN_KEYS
    assert ag["defect_spec"] == str(tmp_path / "augmentation/anomalygen/datasets/nvpcb/defect_spec.jsonl")
    assert ag["checkpoint_dir"] == str(tmp_path / "augmentation/anomalygen/checkpoints/nvpcb")
    with pytest.raises(ValueError, match="needs workspace_root and project"):
        ti.anomalygen_block("anomalygen", 20, images_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown SDG kind"):
        ti.anomalygen_block("gan", 20, images_dir=tmp_path)


def test_state_config_additions_complete_a_config_block(tmp_path: Path) -> None:
    rd = tmp_path / "results" / "run_1"
    adds = ti.state_config_additions(run_dir=rd, backbone_weight_dir=rd / "backbone", train_container=None,
                                     anomalygen=ti.anomalygen_block("builtin", 4, images_dir=tmp_path))
    assert adds["resolved_mining_pool_csv"] == str(rd.resolve() / "inputs" / "mining_pool.resolved.csv")
    assert set(adds) == {"backbone_weight_dir", "resolved_mining_pool_csv", "train_container", "anomalygen"}
    base = {k: str(tmp_path / k) for k in ("specs_file", "training_csv", "validation_csv", "kpi_test_csv",
                                           "images_dir", "mining_pool_csv", "mining_images_root")}
    config = base | adds | {"num_gpus": 0, "gpu_model": ti.gpu_model_text(None), "batch_size": 8, "num_epochs": 1,
                            "mining_filter": {"top_k_per_target": 5, "metric": "cosine", "min_similarity": 0.8,
                                              "history_aware": {"enabled": True, "identity": "filepath",
                                                                "history_file": str(rd / "mining_history.json")}}}
    assert check_state_config(config) == []
    assert check_state_config({k: v for k, v in config.items() if k != "train_container"}) == [
        "deft_state.json config: missing 'train_container'"]
    with pytest.raises(ValueError, match="lacks"):
        ti.state_config_additions(run_dir=rd, backbone_weight_dir=rd, train_container=None, anomalygen={})
    assert ti.gpu_model_text("  NVIDIA H100 80GB ") == "NVIDIA H100 80GB"


def test_resolved_mining_pool_names_each_row_file_or_refuses(tmp_path: Path) -> None:
    images = tmp_path / "images"
    rows = pd.DataFrame([{"input_path": "pool/cap", "golden_path": "pool/gold", "label": "PASS", "object_name": "A@1"},
                         {"input_path": "pool/cap", "golden_path": "pool/gold", "label": "bridge",
                          "object_name": "B@1"}])
    for rec in rows.to_dict("records"):
        for col in ("input_path", "golden_path"):
            f = images / rec[col] / f"{rec['object_name']}_Solder.png"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(b"x")
    pool = tmp_path / "pool.csv"
    rows.to_csv(pool, index=False)
    out = ti.write_resolved_mining_pool(pool, images, tmp_path / "rd/inputs/mining_pool.resolved.csv", light="Solder",
                                        image_ext=".png")
    resolved = pd.read_csv(out, dtype=str)
    assert list(resolved["filepath"]) == ["pool/cap/A@1_Solder.png", "pool/cap/B@1_Solder.png"]
    assert list(resolved.columns) == list(rows.columns) + ["filepath"]
    (images / "pool/gold/B@1_Solder.png").unlink()
    with pytest.raises(ValueError, match=r"pool\.csv: 1 pool file\(s\) .*row 2, column 'golden_path'"):
        ti.write_resolved_mining_pool(pool, images, tmp_path / "again.csv", light="Solder", image_ext=".png")
    assert not (tmp_path / "again.csv").exists()


# -- mining records ------------------------------------------------------------------------------

def test_mining_logs_and_records(tmp_path: Path) -> None:
    text = ti.mining_log_text("target_embeddings", {"embedder": "model", "rows": 3})
    assert text.splitlines() == ["raypipe data_mining: target_embeddings", "embedder: model", "rows: 3",
                                 "Execution status: PASS"]
    with pytest.raises(ValueError, match="placeholder"):
        ti.mining_log_text("knn", {})
    paths = ti.write_mining_logs(tmp_path / "iter2", {k: {"rows": 1} for k in ti.MINING_LOG_FILES})
    assert paths == {k: str((tmp_path / "iter2/mining_filter" / n).resolve()) for k, n in ti.MINING_LOG_FILES.items()}
    records = ti.mining_records(tmp_path / "iter2", tmp_path)
    assert set(records) == set(ti.MINING_LOG_FILES) | {"mining_history"}
    assert records["mining_history"] == str(tmp_path.resolve() / "mining_history.json")
    with pytest.raises(ValueError, match="no facts for"):
        ti.write_mining_logs(tmp_path, {"mining_target_log": {"rows": 1}})


def test_ledger_entries_carry_digests_of_their_files(tmp_path: Path) -> None:
    files = {}
    for name in ("cand.parquet", "mined.parquet", "summary.json"):
        files[name] = tmp_path / name
        files[name].write_bytes(name.encode())
    entry = ti.mining_ledger_entry(iteration=2, topn=5, candidate_parquet=files["cand.parquet"],
                                   output_parquet=files["mined.parquet"], summary_file=files["summary.json"],
                                   candidate_unique_count=4, already_mined_count=1, selected_filepaths=["b", "a"])
    first = ti.mining_ledger_entry(iteration=1, topn=5, candidate_parquet=files["cand.parquet"],
                                   output_parquet=files["mined.parquet"], summary_file=files["summary.json"],
                                   candidate_unique_count=1, already_mined_count=0, selected_filepaths=["c"])
    assert entry["selected_filepaths"] == ["a", "b"] and entry["selected_count"] == 2
    assert entry["candidate_sha256"] == ti.file_sha256(files["cand.parquet"]) != entry["output_sha256"]
    ledger = ti.mining_ledger([entry, first])
    assert [e["iteration"] for e in ledger["iterations"]] == [1, 2]
    assert (ledger["version"], ledger["identity"], ledger["cumulative_unique_count"]) == (1, "filepath", 3)
    with pytest.raises(ValueError, match="duplicates"):
        ti.mining_ledger_entry(iteration=1, topn=5, candidate_parquet=files["cand.parquet"],
                               output_parquet=files["mined.parquet"], summary_file=files["summary.json"],
                               candidate_unique_count=1, already_mined_count=0, selected_filepaths=["a", "a"])


def test_metric_result_keeps_the_evaluator_output(tmp_path: Path) -> None:
    written = {"name": "far_pct", "value": 12.0, "unit": "%", "threshold": 0.4, "constraints": {"recall_pct": 100.0},
               "diagnostics": {"auroc": 0.93}}
    record = ti.metric_result_record(written, evidence_path=tmp_path / "metric_result.json", passed=False)
    assert record == written | {"evidence_path": str((tmp_path / "metric_result.json").resolve()), "passed": False}


# -- Phase 3 -------------------------------------------------------------------------------------

def test_phase3_trains_on_the_last_iterations_csv_not_the_best() -> None:
    state = {"config": {"training_csv": "/ws/train/base/training_set.csv"},
             "iterations": {"baseline": {}, "iter1": {"combined_training_csv": "/rd/iter1/c1.csv"},
                            "iter2": {"combined_training_csv": "/rd/iter2/c2.csv"}, "iter10": {},
                            "final_automl": {"combined_training_csv": "/rd/iter1/c1.csv"}}}
    assert ti.phase3_training_csv(state) == Path("/rd/iter2/c2.csv")
    assert ti.phase3_training_csv({"config": state["config"], "iterations": {"baseline": {}}}) == \
           Path("/ws/train/base/training_set.csv")


def test_final_automl_entry_and_recorded_training_data(tmp_path: Path) -> None:
    base = {"csv_path": "/data/base.csv", "images_dir": "/data/img"}
    spec: dict[str, Any] = {"dataset": {"classify": {"train_dataset": base, "image_ext": ".png"}}}
    recorded = ti.record_training_data(spec, train_csv=tmp_path / "c.csv", images_dir=tmp_path,
                                       val_csv=tmp_path / "v.csv", val_images_dir=tmp_path / "img")
    cls = recorded["dataset"]["classify"]
    assert cls["train_dataset"] == {"csv_path": str((tmp_path / "c.csv").resolve()),
                                    "images_dir": str(tmp_path.resolve())}
    assert cls["validation_dataset"]["csv_path"] == str((tmp_path / "v.csv").resolve()) and cls["image_ext"] == ".png"
    assert spec["dataset"]["classify"]["train_dataset"]["csv_path"] == "/data/base.csv"  # input untouched
    entry = ti.final_automl_entry(best_ckpt_path=tmp_path / "m.pth", training_spec=tmp_path / "s.yaml",
                                  metric_result={"name": "far_pct", "value": 7.5, "unit": "%"}, threshold=0.3,
                                  training_csv=tmp_path / "c.csv", metric_name="far_pct")
    assert entry["status"] == "complete" and entry["stage_completed"] == "evaluate" and entry["far_pct"] == 7.5
    assert entry["combined_training_csv"] == str((tmp_path / "c.csv").resolve()) and entry["source"] == "automl_phase3"
    other = ti.final_automl_entry(best_ckpt_path="m", training_spec="s", metric_result={"value": 1.0}, threshold=None,
                                  training_csv="c", metric_name="escape_rate")
    assert "far_pct" not in other and "inference_csv" not in other


# -- backbone, best_model.json, inference spec ----------------------------------------------------

def _spec(value: str | None, **backbone: object) -> dict:
    return {"encryption_key": "k", "task": "classify",
            "train": {"num_epochs": 3, "classify": {"loss": "contrastive", "cls_weight": [1, 9]},
                      "optim": {"lr": 1e-4}},
            "model": {"backbone": {"type": "vit_large_dinov3", "pretrained_backbone_path": value, **backbone},
                      "classify": {"eval_margin": 0.5, "difference_module": "euclidean"}},
            "dataset": {"classify": {"train_dataset": {"csv_path": "a"}, "validation_dataset": {"csv_path": "b"},
                                     "test_dataset": {"csv_path": "c"}, "infer_dataset": {"csv_path": "d"},
                                     "batch_size": 16, "workers": 8, "image_ext": ".jpg", "concat_type": "grid",
                                     "augmentation_config": {"augment": True, "random_flip": {"enable": True}}}}}


def test_backbone_resolves_as_a_host_file_or_through_backbone_weight_dir(tmp_path: Path) -> None:
    weights = tmp_path / "augmentation/backbone/vit_large_dinov3.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"dino")
    host = ti.resolve_backbone(_spec(str(weights), freeze_backbone=True), None)
    assert (host.host, host.container_path, host.frozen) == (weights.resolve(), str(weights), True)
    mounted = ti.resolve_backbone(_spec("/data/pretrained_models/vit_large_dinov3.safetensors"), weights.parent)
    assert mounted.host == weights.resolve() and mounted.container_path.startswith("/data/pretrained_models/")
    assert (mounted.backbone_type, mounted.frozen) == ("vit_large_dinov3", False)
    for value, message in ((None, "names no backbone weights"), ("", "names no backbone weights"),
                           ("hf://timm/vit", "no URL or hub id"),
                           ("/data/pretrained_models/other.safetensors", "missing or empty")):
        with pytest.raises(ti.BackboneError, match=message):
            ti.resolve_backbone(_spec(value), weights.parent)
    with pytest.raises(ti.BackboneError, match="no backbone_weight_dir"):
        ti.resolve_backbone(_spec("/data/pretrained_models/vit_large_dinov3.safetensors"), None)


def test_best_model_record_has_taos_fields_in_taos_order(tmp_path: Path) -> None:
    weights = tmp_path / "backbone.pth"
    weights.write_bytes(b"w")
    entry = {"best_ckpt_path": "/rd/iter1/train/m.pth", "threshold": 0.25, "training_spec": "/rd/iter1/train/e.yaml",
             "metric_result": {"name": "far_pct", "value": 4.0, "unit": "%", "passed": True}}
    record = ti.best_model_record(label="iter1", entry=entry, spec=_spec(str(weights), freeze_backbone=True),
                                  metric_contract=FAR, images_dir="/ws/images", backbone_weight_dir=None)
    assert list(record) == list(ti.BEST_MODEL_KEYS) + ["far_pct"]
    assert record["backbone"] == str(weights.resolve()) and record["backbone_container_path"] == str(weights)
    assert (record["backbone_type"], record["backbone_frozen"], record["far_pct"]) == ("vit_large_dinov3", True, 4.0)
    assert json.loads(json.dumps(record)) == record  # plain JSON
    custom = FAR | {"name": "escape_rate", "unit": ""}
    assert "far_pct" not in ti.best_model_record(label="iter1", entry=entry | {"threshold": None},
                                                 spec=_spec(str(weights)), metric_contract=custom,
                                                 images_dir="/ws/images", backbone_weight_dir=None)


def test_inference_spec_is_what_tao_runs_with_four_fields_to_fill() -> None:
    training = _spec("/data/pretrained_models/x.pth", freeze_backbone=True)
    out = ti.inference_spec(training, threshold=0.31, backbone_container_path="/data/pretrained_models/x.pth")
    assert list(out) == list(ti.INFERENCE_SPEC_TOP_KEYS)
    assert (out["encryption_key"], out["task"], out["results_dir"]) == ("k", "classify", "")
    assert out["train"] == {"classify": {"loss": "contrastive"}}  # the TAO 7.1 stub, nothing else of train
    assert out["inference"] == {"checkpoint": "/model/best.pth", "batch_size": 1, "results_dir": ""}
    cls = out["dataset"]["classify"]
    assert cls["infer_dataset"] == {"csv_path": "", "images_dir": ""}
    assert not {"train_dataset", "validation_dataset", "test_dataset"} & set(cls)
    assert (cls["batch_size"], cls["workers"], cls["augmentation_config"]["augment"]) == (1, 1, False)
    assert (cls["concat_type"], cls["image_ext"]) == ("grid", ".jpg")  # verbatim: they must match the checkpoint
    assert out["model"]["classify"] == {"eval_margin": 0.31, "difference_module": "euclidean"}
    assert out["model"]["backbone"]["freeze_backbone"] is True
    assert training["model"]["classify"]["eval_margin"] == 0.5  # the training spec is not changed
    kept = ti.inference_spec(training, threshold=None, backbone_container_path="/b.pth")
    assert kept["model"]["classify"]["eval_margin"] == 0.5 and yaml.safe_load(yaml.safe_dump(kept)) == kept
    bare: dict[str, Any] = {"model": {"backbone": {}}}
    assert ti.inference_spec(bare, threshold=None, backbone_container_path="/b.pth")["encryption_key"] == "tlt_encode"
    with pytest.raises(ValueError, match="no model block"):
        ti.inference_spec({}, threshold=None, backbone_container_path="/b.pth")
