"""A small finished run dir written the way the TAO contract says, with raypipe.tao_interop only.

Each check can be broken here one field at a time (a real run is checked too: ``test_smoke_run.py``).
Files whose content no check reads (checkpoints, images) hold a few bytes; parquets,
CSVs, JSON and specs are real. One baseline, one iteration that synthesised, mined and merged,
Phase 3 registered as ``final_automl``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from raypipe import tao_interop as ti
from raypipe.testing import tiny_spec
from raypipe.testing.tao_contract import best_entry

LIGHT, EXT = "SolderLight", ".png"
CONTRACT = {"name": "far_pct", "display_name": "FAR at 100% recall", "operator": "<", "target": 10.0, "unit": "%",
            "evaluator": {"type": "builtin", "id": "far_at_recall", "parameters": {"recall_target_pct": 100}},
            "constraints": [{"name": "recall_pct", "display_name": "Recall", "operator": ">=", "target": 100.0,
                             "unit": "%"}]}


def _rows(prefix: str, labels: list[str]) -> pd.DataFrame:
    return pd.DataFrame([{"input_path": f"{prefix}/cap", "golden_path": f"{prefix}/gold", "label": lab,
                          "object_name": f"{prefix.upper()}{i}@1", "boardname": "b0"} for i, lab in enumerate(labels)])


def _csv(df: pd.DataFrame, path: Path, images: Path | None = None) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    for rec in df.to_dict("records") if images is not None else []:
        for col in ("input_path", "golden_path"):
            f = images / rec[col] / f"{rec['object_name']}_{LIGHT}{EXT}"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(b"png")
    return str(path)


def _file(path: Path, data: bytes = b"w") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def _json(path: Path, obj: Any) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))
    return str(path)


def _parquet(path: Path, df: pd.DataFrame) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False)
    return str(path)


def _evaluation(rd: Path, label: str, value: float, threshold: float) -> dict[str, Any]:
    out = rd / label / "inference" / "best_val"
    written = {"name": "far_pct", "value": value, "unit": "%", "threshold": threshold,
               "constraints": {"recall_pct": 100.0}, "diagnostics": {"auroc": 0.9, "tp": 2, "fp": 1}}
    evidence = _json(out / "metric_result.json", written)
    scores = b"input_path,golden_path,object_name,label,siamese_score\nk/c,k/g,K0@1,PASS,0.2\nk/c,k/g,K1@1,bridge,0.9\n"
    return {"inference_csv": _file(out / "inference.csv", scores),
            "metric_result": ti.metric_result_record(written, evidence_path=evidence, passed=value < 10.0),
            "threshold": threshold, "far_pct": value}


def build_run_dir(root: Path) -> Path:
    ws = root / "ws"
    images = ws / "images"
    rd = ws / "results" / "run_20260101_000000"
    config: dict[str, Any] = {
        "specs_file": _file(ws / "specs" / "baseline_spec.yaml", b"{}"),
        "training_csv": _csv(_rows("train", ["PASS", "bridge", "PASS"]), ws / "train/base/training_set.csv", images),
        "validation_csv": _csv(_rows("val", ["PASS", "bridge"]), ws / "train/base/validation_set.csv", images),
        "kpi_test_csv": _csv(_rows("kpi", ["PASS", "bridge"]), ws / "kpi/testing_set.csv", images),
        "images_dir": str(images),
        "mining_pool_csv": _csv(_rows("pool", ["bridge", "PASS"]), ws / "augmentation/mining_pool/mining_pool.csv",
                                images),
        "mining_images_root": str(images), "num_gpus": 0, "gpu_model": ti.gpu_model_text(None), "batch_size": 8,
        "num_epochs": 1, "backend": "builtin",
        "mining_filter": {"top_k_per_target": 5, "metric": "cosine", "min_similarity": 0.8,
                          "history_aware": {"enabled": True, "identity": "filepath",
                                            "history_file": str(rd / ti.MINING_HISTORY_FILE)}},
    }
    spec, weight_dir = ti.stage_builtin_backbone(rd, tiny_spec((LIGHT,), 32), seed=7)
    config.update(ti.state_config_additions(run_dir=rd, backbone_weight_dir=weight_dir, train_container=None,
                                            anomalygen=ti.anomalygen_block("builtin", 2, images_dir=images)))
    ti.write_resolved_mining_pool(config["mining_pool_csv"], images, config["resolved_mining_pool_csv"], light=LIGHT,
                                  image_ext=EXT)

    def train(label: str, csv: str, images_dir: Path, ckpt: str) -> dict[str, Any]:
        spec_file = rd / label / "train" / "experiment.yaml"
        spec_file.parent.mkdir(parents=True, exist_ok=True)
        recorded = ti.record_training_data(spec, train_csv=csv, images_dir=images_dir,
                                           val_csv=config["validation_csv"], val_images_dir=images)
        spec_file.write_text(yaml.safe_dump(recorded, sort_keys=False))
        return {"best_ckpt_path": _file(rd / label / "train" / ckpt), "training_spec": str(spec_file)}

    baseline = {**train("baseline", config["training_csv"], images, "model_epoch_001_step_00003.pth"),
                "source": "automl_phase1", **_evaluation(rd, "baseline", 50.0, 0.6)}
    baseline.update(status="complete", stage_completed="rca",
                    rca_gaps_parquet=_parquet(rd / "baseline/rca_results/T/kpi_gaps.parquet",
                                              pd.DataFrame({"filepath": ["kpi/cap/KPI1@1"], "label": ["bridge"]})),
                    rca_threshold=0.6, rca_target_defects=["bridge"])

    it = rd / "iter1"
    mining = it / "mining_filter"
    pool_ids = [str(images / "pool/cap/POOL0@1"), str(images / "pool/cap/POOL1@1")]
    candidates = _parquet(mining / "mined_candidates.parquet", pd.DataFrame({"filepath": pool_ids}))
    mined = _parquet(mining / "mined.parquet", pd.DataFrame({"filepath": [str(images / "pool/cap/POOL0@1")]}))
    summary = _json(mining / "mining_history_summary.json", {
        "iteration": 1, "topn": 5, "candidate_unique_count": 2, "already_mined_count": 0, "selected_count": 1,
        "cumulative_unique_count": 1})
    ledger = ti.mining_ledger([ti.mining_ledger_entry(
        iteration=1, topn=5, candidate_parquet=candidates, output_parquet=mined, summary_file=summary,
        candidate_unique_count=2, already_mined_count=0, selected_filepaths=[str(images / "pool/cap/POOL0@1")])])
    _json(rd / ti.MINING_HISTORY_FILE, ledger)
    logs = ti.write_mining_logs(it, {"mining_target_log": {"embedder": "model", "rows": 1, "dim": 16},
                                     "mining_source_log": {"embedder": "model", "rows": 2, "dim": 16},
                                     "mining_knn_log": {"index": "IndexFlatIP", "k": 5, "candidates": 2, "kept": 1}})
    # workspace-root coordinates, as every generated CSV
    base = _rows("train", ["PASS", "bridge", "PASS"])
    base[["input_path", "golden_path"]] = "images/" + base[["input_path", "golden_path"]]
    combined = _csv(base, it / "dataset" / "train_combined_iter1.csv")
    empty = pd.DataFrame({"filepath": pd.Series([], dtype=str)})
    iter1 = {
        "routing_mining_parquet": _parquet(it / "routing_results/T/mining_gaps.parquet",
                                           pd.DataFrame({"filepath": ["kpi/cap/KPI1@1"]})),
        "routing_anomalygen_parquet": _parquet(it / "routing_results/T/anomalygen_gaps.parquet", empty),
        "anomalygen_sdg_csv": _file(it / "anomalygen/sdg/SDG_result.csv", b"file,label\nT+bridge_0.png,bridge\n"),
        "anomalygen_allocation_json": _json(it / "anomalygen/sdg/allocation.json", {"T+bridge": 2}),
        "anomalygen_amp_allocated": 2,
        "mining_mined_parquet": mined, "mining_candidate_parquet": candidates,
        "mining_summary": _file(mining / "knn_summary.csv", b"candidate_count,kept_count\n2,1\n"),
        "mining_history_summary": summary,
        "mining_target_embeddings": _parquet(mining / "target_embeddings.parquet", pd.DataFrame({"filepath": ["t"]})),
        "mining_source_embeddings": _parquet(mining / "source_embeddings.parquet", pd.DataFrame({"filepath": ["s"]})),
        **logs, **ti.mining_records(it, rd), "mining_mined_count": 1,
        "combined_training_csv": combined,
        "provenance_csv": _file(it / "dataset/train_combined_iter1_provenance.csv", b"source\nbase_train\n"),
        "merge_validation_report": _json(it / "dataset/merge_validation.json", {"status": "ok"}),
        **train("iter1", combined, ws, "model_epoch_001_step_00006.pth"), **_evaluation(rd, "iter1", 25.0, 0.55),
        "status": "complete", "stage_completed": "evaluate",
    }

    p3_csv = combined
    p3_spec = rd / "final_automl" / "best_spec.yaml"
    p3_spec.parent.mkdir(parents=True, exist_ok=True)
    p3_spec.write_text(yaml.safe_dump(ti.record_training_data(spec, train_csv=p3_csv, images_dir=ws,
                                                              val_csv=config["validation_csv"], val_images_dir=images)))
    p3 = _evaluation(rd, "final_automl", 12.5, 0.52)
    final = ti.final_automl_entry(
        best_ckpt_path=_file(rd / "final_automl/final_automl/trial_a/model_epoch_000_step_00003.pth"),
        training_spec=p3_spec, metric_result=p3["metric_result"], threshold=p3["threshold"], training_csv=p3_csv,
        metric_name="far_pct", inference_csv=p3["inference_csv"], parent_ckpt_path=iter1["best_ckpt_path"])

    events = [("baseline", "train"), ("baseline", "evaluate"), ("baseline", "rca"), ("iter1", "routing"),
              ("iter1", "anomalygen"), ("iter1", "data_mining"), ("iter1", "data_merge"), ("iter1", "train"),
              ("iter1", "evaluate"), ("iter1", "loop_stop")]
    mode, source = ti.resolve_network_mode(None, source="config", environ={})
    state: dict[str, Any] = {
        "version": 4, "started_at": "2026-01-01T00:00:00Z", "status": "complete",
        "kpi_target": ti.kpi_target_text(CONTRACT), "metric_contract": CONTRACT, "results_dir": str(rd.resolve()),
        "max_iterations": 1, "current_iteration": 1,
        "execution_policy": ti.execution_policy(mode, activation_source=source), "config": config,
        "iterations": {"baseline": baseline, "iter1": iter1, ti.FINAL_AUTOML: final},
        "events": [{"seq": i, "ts": f"2026-01-01T00:00:{i:02d}Z", "iter": label, "stage": stage, "status": "ok",
                    "summary": f"{stage} done", "duration_sec": 1, "context_tokens": 0}
                   for i, (label, stage) in enumerate(events, start=1)],
        "completed_at": "2026-01-01T00:01:00Z",
    }
    pick = best_entry(state)
    assert pick is not None
    label, entry = pick
    training = yaml.safe_load(Path(entry["training_spec"]).read_text())
    record = ti.best_model_record(label=label, entry=entry, spec=training, metric_contract=CONTRACT,
                                  images_dir=images, backbone_weight_dir=config["backbone_weight_dir"])
    bm = _json(rd / "best_model.json", record)
    inference = rd / "best_model_inference_spec.yaml"
    inference.write_text(yaml.safe_dump(ti.inference_spec(training, threshold=record["threshold"],
                                                          backbone_container_path=record["backbone_container_path"]),
                                        sort_keys=False))
    state["final_artifacts"] = {"best_model_json": bm, "inference_spec": str(inference)}
    _json(rd / "deft_state.json", state)
    return rd


def edit_json(path: Path, change: Callable[[Any], None]) -> None:
    """Load, change in place, write back (a test's way to break one field of a file)."""
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))
