"""What the MLflow UI shows: trial ranking, trial checkpoints, phase and pipeline outcomes, the
registered version's verdict, the experiment's view. Real sqlite store, real MlflowClient."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from raypipe.tracking import (
    KEY_TAG,
    KPI_MET,
    KPI_NOT_MET,
    PARENT_TAG,
    VERDICT_TAG,
    TrackingContext,
    child_run,
    log_outcome,
    log_trial_result,
    register_model,
    resolve_tracking_uri,
    start_pipeline_run,
    trial_run_names,
    ui_command,
    ui_url,
)
from raypipe.tracking._client import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return resolve_tracking_uri(None, tmp_path_factory.mktemp("cwd"))


def _client(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


# --------------------------------------------------------------------------- experiment view
def test_experiment_opens_in_the_model_training_view(uri: str, tmp_path: Path) -> None:
    client = _client(uri)
    ctx = start_pipeline_run(uri, "raypipe-kind", tmp_path / "rd1", {})
    assert client.get_experiment(ctx.experiment_id).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    # an experiment an older raypipe created without the tag gets it on the next run ...
    old = client.create_experiment("raypipe-old")
    start_pipeline_run(uri, "raypipe-old", tmp_path / "rd2", {})
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    # ... and a kind the user chose stays
    client.set_experiment_tag(old, EXPERIMENT_KIND_TAG, "finetuning")
    start_pipeline_run(uri, "raypipe-old", tmp_path / "rd3", {})
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == "finetuning"


# --------------------------------------------------------------------------- trials
def _sweep(uri: str, rd: Path, epochs: dict[str, list[float]]) -> tuple[Any, dict[str, str]]:
    ctx = start_pipeline_run(uri, "raypipe-aoi", rd, {})
    ids: dict[str, str] = {}
    with child_run(ctx, "phase1", key="phase1") as phase:
        for trial, fars in epochs.items():
            name, key = trial_run_names("phase1", trial)
            with child_run(phase.context(), name, key=key) as run:
                for epoch, far in enumerate(fars, start=1):
                    run.log_metrics({"val_far": far, "val_loss": 1.0 / epoch}, step=epoch)
            ids[trial] = str(run.run_id)
    return phase, ids


def test_trials_sort_by_the_value_that_ranked_them(uri: str, tmp_path: Path) -> None:
    # "a" had the best epoch (10) but ended worse than "b" (30 > 15): sorting by the last epoch
    # ranks the loser first; best_val_far ranks the winner first.
    phase, ids = _sweep(uri, tmp_path / "rd", {"a": [50.0, 10.0, 30.0], "b": [20.0, 15.0, 15.0]})
    client = _client(uri)
    trials = f"tags.`{PARENT_TAG}` = '{phase.run_id}'"
    exp = [phase.context().experiment_id]
    by_last = client.search_runs(exp, trials, order_by=["metrics.val_far ASC"])
    by_best = client.search_runs(exp, trials, order_by=["metrics.best_val_far ASC"])
    assert [r.info.run_name for r in by_last] == ["trial_b", "trial_a"]
    assert [r.info.run_name for r in by_best] == ["trial_a", "trial_b"]
    assert _history(client, ids["a"], "best_val_far") == [(1, 50.0), (2, 10.0), (3, 10.0)]
    assert _history(client, ids["a"], "val_far") == [(1, 50.0), (2, 10.0), (3, 30.0)]  # the history stays
    assert client.get_run(ids["a"]).data.metrics["best_val_loss"] == pytest.approx(1 / 3)

    # A resumed trial reopens its run in a new process: the best continues from what was logged.
    name, key = trial_run_names("phase1", "a")
    with child_run(phase.context(), name, key=key) as again:
        again.log_metrics({"val_far": 40.0}, step=4)
        again.log_metrics({"val_far": 45.0, "best_val_far": 9.0}, step=5)  # a caller's own value wins
    assert again.run_id == ids["a"]
    assert _history(client, ids["a"], "best_val_far")[-2:] == [(4, 10.0), (5, 9.0)]


def test_trial_result_names_its_durable_checkpoint(uri: str, tmp_path: Path) -> None:
    rd = tmp_path / "ws" / "results" / "run_1"
    phase, ids = _sweep(uri, rd, {"c": [30.0, 12.0]})
    trial_dir = rd / "phase1_automl" / "phase1" / "trial_c"
    ckpt_dir = trial_dir / "checkpoint_000001"
    ckpt_dir.mkdir(parents=True)
    ckpt = ckpt_dir / "model_epoch_001_step_00006.pth"
    ckpt.write_bytes(b"\x00" * 4096)
    (ckpt_dir / "model_epoch_000_step_00003.pth").write_bytes(b"\x01" * 4096)  # another epoch's weights
    (ckpt_dir / "trial_meta.json").write_text('{"val_far": 14.0}')
    (ckpt_dir / "experiment.yaml").write_text("train: {num_epochs: 2}\n")
    client = _client(uri)
    name, key = trial_run_names("phase1", "c")
    with child_run(phase.context(), name, key=key) as run:  # what the trainable tags today
        run.set_tags({"trial_dir": "/tmp/ray/session_2026-01-01_00-00-00_1/artifacts/x/phase1/driver_artifacts/trial_c"})

    # The sweep ranked it by its kept checkpoint (14.0): a better epoch (12.0) had no checkpoint.
    for _ in range(2):  # again on --resume: nothing changes
        log_trial_result(phase.context(), "phase1", "c", status="complete", best_val_far=14.0, best_val_loss=0.5,
                         checkpoint=str(ckpt), trial_dir=str(trial_dir))
    run = client.get_run(ids["c"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["best_val_far"] == 14.0 and run.data.metrics["val_far"] == 12.0
    assert _history(client, ids["c"], "best_val_far") == [(1, 30.0), (2, 12.0), (2, 14.0)]
    tags = run.data.tags
    assert tags["status"] == "complete"
    assert tags["checkpoint"] == str(ckpt)
    assert tags["checkpoint_uri"] == ckpt_dir.as_uri()
    assert tags["trial_dir"] == str(trial_dir)
    assert not any("/tmp/ray/session_" in v for v in tags.values())
    files = {f.path for f in client.list_artifacts(ids["c"], "checkpoint")}
    assert files == {"checkpoint/trial_meta.json", "checkpoint/experiment.yaml"}  # the weights stay where Tune keeps them


# --------------------------------------------------------------------------- outcome
BEST_MODEL: dict[str, Any] = {
    "checkpoint": "",
    "threshold": 0.5105903540439372,
    "metric_contract": {
        "name": "far_pct", "display_name": "FAR at 100% recall", "operator": "<", "target": 10.0, "unit": "%",
        "constraints": [{"name": "recall_pct", "operator": ">=", "target": 100.0, "unit": "%"}],
    },
    "metric_result": {"name": "far_pct", "value": 7.5, "unit": "%", "passed": True,
                      "constraints": {"recall_pct": 100.0}},
    "iteration": "iter2",
    "far_pct": 7.5,
}
TRAJECTORY: dict[str, Any] = {"delivered": "iter2", "rows": [
    {"step": "phase1_best", "split": "validation", "far_pct": 22.2, "delivered": False},
    {"step": "baseline", "label": "baseline", "split": "kpi", "far_pct": 30.0, "auroc": 0.81, "delivered": False},
    {"step": "iter1", "label": "iter1", "split": "kpi", "far_pct": 12.5, "auroc": 0.9, "delivered": False},
    {"step": "iter2", "label": "iter2", "split": "kpi", "far_pct": 7.5, "auroc": 0.95,
     "far_at_recall_95_pct": 2.5, "delivered": True},
    {"step": "phase3_best", "label": "final_automl", "split": "kpi", "far_pct": 9.0, "auroc": 0.93, "delivered": False},
]}


def _pipeline(uri: str, rd: Path) -> tuple[Any, dict[str, str], Path]:
    ctx = start_pipeline_run(uri, "raypipe-aoi", rd, {})
    phases = {}
    for phase in ("phase1", "phase2", "phase3"):
        with child_run(ctx, phase, key=phase) as run:
            phases[phase] = str(run.run_id)
    ckpt = rd / "iter2" / "train" / "model.pth"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"weights")
    return ctx, phases, ckpt


def test_outcome_on_pipeline_phases_and_model_version(uri: str, tmp_path: Path) -> None:
    ctx, phases, ckpt = _pipeline(uri, tmp_path / "rd")
    version = register_model(ctx, ckpt, "raypipe-outcome", [], {})
    best = {**copy.deepcopy(BEST_MODEL), "checkpoint": str(ckpt), "test_far_pct": 8.25, "test_auroc": 0.94}
    for _ in range(2):  # again on --resume: nothing new is logged
        assert log_outcome(ctx, best, TRAJECTORY) == KPI_MET

    client = _client(uri)
    parent = client.get_run(ctx.parent_run_id)
    assert parent.data.metrics == {
        "kpi_far_pct": 7.5, "kpi_recall_pct": 100.0, "threshold": pytest.approx(0.5105903540439372),
        "kpi_auroc": 0.95, "kpi_far_at_recall_95_pct": 2.5, "test_far_pct": 8.25, "test_auroc": 0.94,
    }
    assert parent.data.tags[VERDICT_TAG] == "kpi_met"
    assert parent.data.tags["raypipe.kpi_target"] == "far_pct < 10% and recall_pct >= 100%"
    assert parent.data.tags["raypipe.delivered"] == "iter2"
    summary = ("KPI met: far_pct 7.5% on the KPI set (target far_pct < 10% and recall_pct >= 100%); delivered iter2 "
               "at threshold 0.5106; sealed test split: far_pct 8.25, auroc 0.94.")
    assert parent.data.tags["mlflow.note.content"] == summary  # the run's description
    for key in parent.data.metrics:
        assert len(client.get_metric_history(ctx.parent_run_id, key)) == 1, key

    assert client.get_run(phases["phase1"]).data.metrics == {"best_val_far": 22.2}
    assert _history(client, phases["phase2"], "kpi_far_pct") == [(0, 30.0), (1, 12.5), (2, 7.5)]
    assert client.get_run(phases["phase2"]).data.metrics["best_kpi_far_pct"] == 7.5
    assert client.get_run(phases["phase3"]).data.metrics == {"kpi_far_pct": 9.0}

    mv = client.get_model_version("raypipe-outcome", version)
    assert mv.tags[VERDICT_TAG] == "kpi_met"
    assert mv.tags["raypipe.kpi_target"] == "far_pct < 10% and recall_pct >= 100%"
    assert float(mv.tags["raypipe.kpi_far_pct"]) == 7.5 and float(mv.tags["raypipe.test_far_pct"]) == 8.25
    assert float(mv.tags["raypipe.threshold"]) == pytest.approx(0.51059, abs=1e-5)
    assert mv.description == f"{summary}\n\nraypipe checkpoint model.pth (0 lineage records)"


def test_outcome_before_registration_and_a_missed_kpi(uri: str, tmp_path: Path) -> None:
    ctx, _, ckpt = _pipeline(uri, tmp_path / "rd")
    best = copy.deepcopy(BEST_MODEL)
    best["metric_result"].update(value=30.0, passed=False)
    best["iteration"] = "baseline"
    trajectory = copy.deepcopy(TRAJECTORY)
    for row in trajectory["rows"]:
        row["delivered"] = row.get("label") == "baseline"
    assert log_outcome(ctx, best, trajectory) == KPI_NOT_MET
    version = register_model(ctx, ckpt, "raypipe-outcome-2", [], {})

    client = _client(uri)
    parent = client.get_run(ctx.parent_run_id)
    assert parent.data.tags[VERDICT_TAG] == "kpi_not_met"
    assert parent.data.metrics["kpi_far_pct"] == 30.0 and parent.data.metrics["kpi_auroc"] == 0.81
    assert not any(k.startswith("test_") for k in parent.data.metrics)  # no sealed test split measured
    mv = client.get_model_version("raypipe-outcome-2", version)
    assert mv.tags[VERDICT_TAG] == "kpi_not_met" and float(mv.tags["raypipe.kpi_far_pct"]) == 30.0
    assert mv.description.startswith("KPI not met: far_pct 30% on the KPI set")
    assert mv.description == parent.data.tags["mlflow.note.content"] + "\n\nraypipe checkpoint model.pth (0 lineage records)"
    phase_keys = {r.data.tags[KEY_TAG] for r in client.search_runs(
        [ctx.experiment_id], f"tags.`{PARENT_TAG}` = '{ctx.parent_run_id}'")}
    assert {"phase1", "phase2", "phase3"} <= phase_keys


def test_outcome_needs_a_verdict(uri: str, tmp_path: Path) -> None:
    ctx, _, _ = _pipeline(uri, tmp_path / "rd")
    best = copy.deepcopy(BEST_MODEL)
    del best["metric_result"]["passed"]
    with pytest.raises(ValueError, match="metric_result.passed"):
        log_outcome(ctx, best, TRAJECTORY)
    assert VERDICT_TAG not in _client(uri).get_run(ctx.parent_run_id).data.tags
    # with tracking off the verdict still comes back
    assert log_outcome(None, BEST_MODEL, TRAJECTORY) == KPI_MET


def test_ui_command_and_link(uri: str, tmp_path: Path) -> None:
    ctx = start_pipeline_run(uri, "raypipe-aoi", tmp_path / "rd", {})
    db = uri.removeprefix("sqlite:///")
    assert ui_command(uri, 5001) == (f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --backend-store-uri "
                                     f"sqlite:///{db} --host 127.0.0.1 --port 5001 --workers 1")
    assert ui_url(ctx, port=5001) == (f"http://127.0.0.1:5001/#/experiments/{ctx.experiment_id}/runs/"
                                      f"{ctx.parent_run_id}?workflowType=machine_learning")
    server = TrackingContext("http://mlflow.lan:5000/", "7", None)
    assert ui_command(server.tracking_uri) is None  # a server already serves its UI
    assert ui_url(server) == "http://mlflow.lan:5000/#/experiments/7?workflowType=machine_learning"
    assert ui_url(TrackingContext(uri, "", None, enabled=False)) is None
