"""What the MLflow store must hold after a smoke run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from raypipe.tracking import (
    KEY_TAG,
    PARENT_TAG,
    RUN_DIR_TAG,
    VERDICT_TAG,
    data_digest,
    inspect_store,
)
from raypipe.tracking._client import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG
from raypipe.tracking._context import sqlite_path
from raypipe.tracking._registry import DEFAULT_MODEL_NAME, model_version_lineage


def _children(client: MlflowClient, exp_ids: list[str], parent_id: str) -> dict[str, object]:
    runs = client.search_runs(exp_ids, filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'", max_results=500)
    return {r.info.run_name: r for r in runs}


def check_store(uri: str, rd: Path, *, phase1_trials: int, epochs: int, secret: str, store_dir: Path) -> dict:
    client = MlflowClient(uri)
    db = sqlite_path(uri)
    assert db is not None and inspect_store(db).complete
    assert not list(db.parent.glob(f".{db.name}.*creating*"))  # no store left half-built
    parent = _pipeline_run(client, rd)
    assert client.get_experiment(parent.info.experiment_id).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    exp_ids = [parent.info.experiment_id]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags.get("raypipe.backend") == "builtin"

    phases = _children(client, exp_ids, parent.info.run_id)
    assert {"phase1", "phase2", "phase3"} <= set(phases), set(phases)
    trials = _children(client, exp_ids, phases["phase1"].info.run_id)
    trials = {k: v for k, v in trials.items() if k.startswith("trial_")}
    assert len(trials) == phase1_trials
    for run in trials.values():
        assert "train.optim.lr" in run.data.params
        history = client.get_metric_history(run.info.run_id, "val_far")
        assert len(history) == epochs, history
        # sorting trials by best_val_far ranks them as the sweep did (every epoch is checkpointed here)
        assert run.data.metrics["best_val_far"] == min(m.value for m in history)
        assert run.info.status == "FINISHED"
    assert len([k for k in _children(client, exp_ids, phases["phase3"].info.run_id) if k.startswith("trial_")]) >= 1

    iters = _children(client, exp_ids, phases["phase2"].info.run_id)
    assert "iter1" in iters, set(iters)
    it1 = client.get_run(iters["iter1"].info.run_id)
    assert "kpi_far_pct" in it1.data.metrics and "rows_sdg" in it1.data.metrics
    digests = {d.dataset.digest for d in it1.inputs.dataset_inputs}
    combined = next((rd / "iter1" / "dataset").glob("train_combined_iter1.csv"))
    assert data_digest(combined) in digests, digests

    # Registered model → lineage chain back to a Phase 1 trial through the DEFT iterations.
    versions = client.search_model_versions(f"name = '{DEFAULT_MODEL_NAME}'")
    assert len(versions) == 1
    chain = model_version_lineage(uri, DEFAULT_MODEL_NAME, versions[0].version)
    phases_in_chain = [r["phase"] for r in chain]
    assert phases_in_chain[-1] == "phase1" and "phase2" in phases_in_chain, chain
    assert chain[-1]["trial"]

    # No credential value anywhere in the store (database and artifacts).
    for path in store_dir.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), f"secret found in {path}"
    return {"phases": sorted(phases), "trials": len(trials), "chain": phases_in_chain}


def _pipeline_run(client: MlflowClient, rd: Path) -> Run:
    exp_ids = [e.experiment_id for e in client.search_experiments()]
    parents = [r for r in client.search_runs(exp_ids, filter_string=f"tags.`{RUN_DIR_TAG}` = '{rd}'")
               if PARENT_TAG not in r.data.tags]
    assert len(parents) == 1, [p.info.run_name for p in parents]
    return parents[0]


def check_outcome(uri: str, rd: Path) -> dict:
    """The outcome a user sees at the top of the UI, once the pipeline calls ``log_outcome`` and the
    sweep driver ``log_trial_result``: the verdict, KPI and sealed test numbers on the pipeline run
    and the registered version, each phase's outcome, and trial checkpoints under the run dir."""
    client = MlflowClient(uri, registry_uri=uri)
    best = json.loads((rd / "best_model.json").read_text())
    parent = _pipeline_run(client, rd)
    verdict = "kpi_met" if best["metric_result"]["passed"] else "kpi_not_met"
    assert parent.data.tags[VERDICT_TAG] == verdict
    assert parent.data.metrics[f"kpi_{best['metric_result']['name']}"] == best["metric_result"]["value"]
    assert parent.data.metrics["threshold"] == best["threshold"]
    for key in ("test_far_pct", "test_auroc"):  # the sealed test split's numbers (the smoke workspace has one)
        assert parent.data.metrics[key] == best[key], key

    exp = [parent.info.experiment_id]
    phases = {r.data.tags.get(KEY_TAG): r for r in client.search_runs(
        exp, f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")}
    assert "best_val_far" in phases["phase1"].data.metrics
    assert "best_kpi_far_pct" in phases["phase2"].data.metrics
    assert "kpi_far_pct" in phases["phase3"].data.metrics

    versions = client.search_model_versions(f"tags.`raypipe.pipeline_run_id` = '{parent.info.run_id}'")
    assert versions and all(v.tags[VERDICT_TAG] == verdict for v in versions)
    assert all(float(v.tags["raypipe.test_far_pct"]) == pytest.approx(best["test_far_pct"]) for v in versions)

    for phase in ("phase1", "phase3"):
        trials = client.search_runs(exp, f"tags.`{PARENT_TAG}` = '{phases[phase].info.run_id}'")
        assert trials
        for t in trials:
            assert t.data.tags["checkpoint_uri"].startswith(rd.as_uri()), t.data.tags
            assert not any("/tmp/ray/session_" in v for v in t.data.tags.values()), t.data.tags
            assert {f.path for f in client.list_artifacts(t.info.run_id)} == {"checkpoint"}
    return {"verdict": verdict, "versions": len(versions), "metrics": dict(parent.data.metrics)}
