"""What the MLflow store must hold after a smoke run (issue: MLflow tracking)."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from raypipe.tracking import PARENT_TAG, RUN_DIR_TAG, data_digest
from raypipe.tracking._registry import DEFAULT_MODEL_NAME, model_version_lineage


def _children(client: MlflowClient, exp_ids: list[str], parent_id: str) -> dict[str, object]:
    runs = client.search_runs(exp_ids, filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'", max_results=500)
    return {r.info.run_name: r for r in runs}


def check_store(uri: str, rd: Path, *, phase1_trials: int, epochs: int, secret: str, store_dir: Path) -> dict:
    client = MlflowClient(uri)
    exp_ids = [e.experiment_id for e in client.search_experiments()]
    parents = [r for r in client.search_runs(exp_ids, filter_string=f"tags.`{RUN_DIR_TAG}` = '{rd}'")
               if PARENT_TAG not in r.data.tags]
    assert len(parents) == 1, [p.info.run_name for p in parents]
    parent = parents[0]
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
