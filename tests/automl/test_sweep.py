"""End-to-end sweeps on a local Ray with the real builtin backend on the tiny demo workspace."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import pytest
import ray
from ray import tune

from raypipe._io import read_json
from raypipe.automl import (
    SearchSpaceError,
    SweepConfig,
    SweepFailedError,
    SweepInputs,
    SweepInterruptedError,
    best_rec_schema,
    run_sweep,
)
from raypipe.backends.base import parse_checkpoint_name
from raypipe.backends.builtin import read_checkpoint_architecture
from raypipe.config import load_config
from raypipe.rundir import SweepDir
from raypipe.spec import flatten, get_dotted, load_spec

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]

PHASE1_SPACE = {
    "train.optim.lr": {"valid_min": 1e-3, "valid_max": 2e-2, "log": True},
    "train.classify.cls_weight[1]": {"valid_min": 0.05, "valid_max": 3.0, "log": True},
    "model.classify.learnable_difference_modules": {"valid_options": [2, 3]},
}


def _inputs(ws: Any, **kw: Any) -> SweepInputs:
    return SweepInputs(base_spec=kw.pop("base_spec", ws.spec), train_csv=ws.train_csv, train_images_dir=ws.images,
                       val_csv=ws.val_csv, val_images_dir=ws.images, backend_options={"device": "cpu"}, **kw)


def _trial_results(exp_path: str) -> dict[str, list[dict[str, Any]]]:
    """Every reported result of every trial, read from the trial dirs Tune wrote."""
    out = {}
    for d in Path(exp_path).glob("trial_*"):
        rows = [json.loads(ln) for ln in (d / "result.json").read_text().splitlines() if ln.strip()]
        out[rows[0]["trial_id"]] = rows
    return out


def _nested_keys(d: Any) -> list[str]:
    if not isinstance(d, dict):
        return []
    return [k for k in d] + [k2 for v in d.values() for k2 in _nested_keys(v)]


# -- Phase 1: 4 trials, 2 at a time, half a (fake) GPU each --------------------------------------------
@pytest.fixture(scope="module")
def phase1(demo_ws: Any, kpi_guard: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    sweep_dir = tmp_path_factory.mktemp("rd") / "phase1_automl"
    cfg = SweepConfig(algorithm="bayesian", num_trials=4, max_concurrent_trials=2, n_startup_trials=2,
                      resources_per_trial={"cpu": 1, "gpu": 0.5}, search_space=PHASE1_SPACE,
                      spec_overrides={"train.num_epochs": 1, "dataset.classify.batch_size": 16}, seed=7,
                      noise_margin=None)
    before = kpi_guard.violations()
    t0 = time.time()
    with kpi_guard.armed():
        result = run_sweep(cfg, _inputs(demo_ws), sweep_dir, "phase1")
    return {"cfg": cfg, "result": result, "dir": sweep_dir, "wall": time.time() - t0,
            "kpi_before": before, "kpi_after": kpi_guard.violations()}


def test_phase1_sweep_completes_and_writes_spec_outputs(phase1: dict[str, Any], demo_ws: Any) -> None:
    res, sweep_dir = phase1["result"], phase1["dir"]
    trials = pd.read_csv(res.trials_csv)
    assert len(trials) == 4
    assert list(trials["status"]) == ["complete"] * 4
    assert {"trial_id", "status", "params", "metric", "checkpoint", "error"} <= set(trials.columns)
    doc = read_json(res.best_rec_path)
    jsonschema.validate(doc, best_rec_schema())  # the shipped schema, with the real jsonschema
    assert set(doc) == {"schema_version", "experiment_id", "metric_name", "direction", "best", "all_recs"}
    assert doc["metric_name"] == "far_pct" and doc["direction"] == "minimize"
    assert sorted(r["rec_id"] for r in doc["all_recs"]) == sorted(trials["trial_id"])
    best = doc["best"]
    assert best["rec_id"] == res.best_trial_id == res.ranked[0].trial_id
    assert best["score"] == pytest.approx(trials["metric"].min())
    assert "num_epochs" not in best["specs"].get("train", {}) and best["observed_budget"] == {"num_epochs": 1}
    assert not any("." in k or "[" in k for k in _nested_keys(best["specs"]))
    # The winner's swept values are in specs (cls_weight as the whole list it trained with).
    assert get_dotted(best["specs"], "train.optim.lr") == pytest.approx(res.best_params["train.optim.lr"])
    assert get_dotted(best["specs"], "train.classify.cls_weight")[1] == pytest.approx(
        res.best_params["train.classify.cls_weight[1]"])
    # Every ranked trial's kept checkpoint is a real, loadable file under the sweep's storage.
    scores = [t.score for t in res.ranked]
    assert scores == sorted(scores)
    for t in res.ranked:
        trial_id, ckpt, pred = t.trial_id, t.checkpoint, t.pred_counts
        assert Path(ckpt).is_file() and Path(ckpt).stat().st_size > 0
        assert Path(ckpt).resolve().is_relative_to(sweep_dir.resolve())
        assert sum(pred.values()) == len(pd.read_csv(demo_ws.val_csv))  # pred counts over the validation set
        arch = read_checkpoint_architecture(ckpt)
        params = json.loads(trials.set_index("trial_id").loc[trial_id, "params"])
        assert arch["model.classify.learnable_difference_modules"] == params["model.classify.learnable_difference_modules"]
    assert Path(best["checkpoint_uri"]) == res.best_checkpoint
    assert (best["checkpoint_epoch"], best["checkpoint_step"]) == parse_checkpoint_name(best["checkpoint_uri"])
    assert res.best_spec["train"]["num_epochs"] == 1 and res.failed == []


def test_optuna_study_received_every_result(phase1: dict[str, Any]) -> None:
    """What the sampler learned, from its own log (Optuna's public after_trial hook), matches trials.csv."""
    from raypipe.automl._sampler import sampler_log

    res = phase1["result"]
    learned = sampler_log(SweepDir(phase1["dir"], "phase1").sampler_log)
    complete = [r for r in learned.values() if r["state"] == "COMPLETE"]
    assert len(complete) == 4
    trials = pd.read_csv(res.trials_csv)
    by_lr = {round(json.loads(p)["train.optim.lr"], 12): m for p, m in zip(trials["params"], trials["metric"])}
    for t in complete:
        assert by_lr[round(t["params"]["train.optim.lr"], 12)] == pytest.approx(t["values"][0])


def test_optuna_is_asked_in_batches(phase1: dict[str, Any]) -> None:
    """Determinism: Optuna is asked for trials 3-4 (the second batch of 2) only once it was told both
    results of trials 1-2, so its suggestions cannot depend on which trial happened to finish first."""
    from raypipe.automl._sampler import sampler_asks

    asks = sampler_asks(SweepDir(phase1["dir"], "phase1").sampler_log)
    assert asks == {0: 0, 1: 0, 2: 2, 3: 2}


def test_fractional_gpu_trials_share_the_gpu(phase1: dict[str, Any]) -> None:
    results = _trial_results(phase1["result"].experiment_path)
    assert len(results) == 4
    spans = []
    for rows in results.values():
        assert {r["gpu_ids"] for r in rows} == {"0"}  # Ray assigned the one (fake) GPU to every trial
        spans.append((rows[0]["started_at"], rows[-1]["timestamp"] + 1))
    # With gpu=0.5 two trials hold the single GPU at once; at gpu=1 they would run one after another.
    overlapping = [(a, b) for i, a in enumerate(spans) for b in spans[i + 1:] if a[0] < b[1] and b[0] < a[1]]
    assert overlapping, f"no two trials ran at the same time: {sorted(spans)}"


def test_kpi_set_and_sealed_test_split_never_read(phase1: dict[str, Any], kpi_guard: Any, demo_ws: Any) -> None:
    assert phase1["kpi_after"] == phase1["kpi_before"], "a sweep opened a KPI or sealed test file"
    # The tripwire is live in the workers: a task that opens the KPI CSV, the test CSV or a test
    # capture image is refused and logged.
    @ray.remote(num_cpus=0)
    def peek(path: str) -> str:
        try:
            open(path).close()
        except PermissionError as exc:
            return f"refused: {exc}"
        return "read"

    from raypipe.workspace import ImageLayout, read_rows

    test_row = read_rows(demo_ws.test_csv).iloc[0]
    test_capture = ImageLayout.from_spec(demo_ws.spec).capture_paths(demo_ws.images, test_row)[0].resolve()
    for path in (demo_ws.kpi_csv.resolve(), demo_ws.test_csv.resolve(), test_capture):
        assert ray.get(peek.remote(str(path))).startswith("refused"), path
        assert any(str(path) in line for line in kpi_guard.violations()), path


# -- Phase 3 style: warm start from the Phase 1 winner ----------------------------------------------------
def test_warm_started_sweep_pins_architecture_and_starts_at_the_centre(phase1: dict[str, Any], demo_ws: Any,
                                                                       tmp_path: Path) -> None:
    p1 = phase1["result"]
    init = p1.best_checkpoint
    arch = read_checkpoint_architecture(init)
    base = json.loads(json.dumps(demo_ws.spec))
    base["model"]["classify"]["learnable_difference_modules"] = 5  # not the checkpoint's: must be pinned back
    centre = flatten(read_json(p1.best_rec_path)["best"]["specs"])
    run = load_config()
    run = run.replace(automl=run.automl.replace(algorithm="asha", max_concurrent_trials=2, noise_margin=None,
                                                max_failures=0, search_space=PHASE1_SPACE),
                      phase3=run.phase3.replace(automl_max_recommendations=2), seed=3,
                      spec_overrides={"train.num_epochs": 2})
    cfg = SweepConfig.from_config(run, "phase3")
    assert cfg.dropped_keys == ("model.classify.learnable_difference_modules",)
    from raypipe.tracking import resolve_tracking_uri, start_pipeline_run

    ctx = start_pipeline_run(resolve_tracking_uri(str(tmp_path / "mlruns" / "mlflow.db"), tmp_path), "raypipe-test",
                             tmp_path, {})
    res = run_sweep(cfg, _inputs(demo_ws, base_spec=base, init_ckpt=init, centre=centre, tracking=ctx),
                    tmp_path / "final_automl", "final_automl")
    # Baseline: the starting checkpoint scored on the validation set, beside the trials.
    assert res.baseline_eval is not None and res.baseline_eval["checkpoint"] == str(init)
    n_val = len(pd.read_csv(demo_ws.val_csv))
    assert sum(res.baseline_eval["pred_counts"].values()) == n_val
    trials = pd.read_csv(res.trials_csv)
    assert trials.iloc[0]["trial_id"] == "baseline" and trials.iloc[0]["metric"] == pytest.approx(
        res.baseline_eval["far_pct"])
    # Every trial trained from the checkpoint with its architecture (the backend loads strictly:
    # a trial with the base spec's 5 modules could not have loaded 2- or 3-module weights).
    assert len(_trial_results(res.experiment_path)) == 2
    first = json.loads(trials.iloc[1]["params"])  # the first trial Tune created (rows follow creation order)
    assert first == {k: pytest.approx(v) for k, v in p1.best_params.items() if k in first}
    assert set(first) == {"train.optim.lr", "train.classify.cls_weight[1]"}
    for d in Path(res.experiment_path).glob("trial_*/checkpoint_*"):
        spec = load_spec(d / "experiment.yaml")
        assert spec["train"]["pretrained_model_path"] == str(init.resolve())
        for key, value in arch.items():
            if value is not None:
                assert get_dotted(spec, key) == value, key
    assert res.best_spec["model"]["classify"]["learnable_difference_modules"] == arch[
        "model.classify.learnable_difference_modules"]
    # One MLflow child run per trial under the phase's context, with its HPs and per-epoch metrics.
    from mlflow import MlflowClient

    client = MlflowClient(ctx.tracking_uri)
    runs = client.search_runs([ctx.experiment_id], f"tags.`mlflow.parentRunId` = '{ctx.parent_run_id}'")
    by_name = {r.info.run_name: r for r in runs}
    assert set(by_name) == {f"trial_{t}" for t in trials["trial_id"] if t != "baseline"}
    for r in runs:
        # ASHA stops a trial inside its last report (at max_t or at a rung): still a finished run,
        # closed by the driver with the trial's final status and kept checkpoint.
        assert r.info.status == "FINISHED" and r.data.tags["status"] == "complete"
        tid = r.info.run_name[len("trial_"):]
        assert r.data.tags["checkpoint"] == trials.set_index("trial_id").loc[tid, "checkpoint"]
        assert {"train.optim.lr", "train.classify.cls_weight.1"} <= set(r.data.params)  # MLflow-safe key
        epochs = int(trials.set_index("trial_id").loc[r.info.run_name[len("trial_"):], "epochs_run"])
        assert [m.step for m in client.get_metric_history(r.info.run_id, "val_far")] == list(range(1, epochs + 1))


def test_space_varying_an_architecture_key_is_refused_before_launch(phase1: dict[str, Any], demo_ws: Any,
                                                                   tmp_path: Path) -> None:
    cfg = SweepConfig(num_trials=2, search_space=PHASE1_SPACE, spec_overrides={"train.num_epochs": 1})
    sweep_dir = tmp_path / "final_automl"
    with pytest.raises(SearchSpaceError, match=r"model\.classify\.learnable_difference_modules.*pinned"):
        run_sweep(cfg, _inputs(demo_ws, init_ckpt=phase1["result"].best_checkpoint), sweep_dir, "final_automl")
    assert not sweep_dir.exists()  # refused before any storage or Ray work


# -- interruption and restore ------------------------------------------------------------------------------
class InterruptAfter(tune.Callback):
    """Sends the driver SIGUSR1 (Tune's 'stop and save' signal) once ``k`` trials have completed."""

    def __init__(self, k: int) -> None:
        self.k, self.done = k, 0

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.done += 1
        if self.done == self.k:
            os.kill(os.getpid(), signal.SIGUSR1)


class LaunchLog(tune.Callback):
    """Appends the id of every trial Tune launches (a trainable invocation) to a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(trial.trial_id + "\n")


def test_interrupted_sweep_restores_without_rerunning_finished_trials(demo_ws: Any, tmp_path: Path) -> None:
    cfg = SweepConfig(algorithm="grid", max_concurrent_trials=1, noise_margin=0.0,
                      search_space={"train.optim.lr": {"valid_options": [1e-9, 1e-2, 3e-3]}},
                      spec_overrides={"train.num_epochs": 2, "dataset.classify.batch_size": 8,
                                      "train.classify.cls_weight": [1.0, 0.05]})
    sweep_dir, launches = tmp_path / "phase1_automl", tmp_path / "launches.txt"
    with pytest.raises(SweepInterruptedError, match="resume"):
        run_sweep(cfg, _inputs(demo_ws), sweep_dir, "phase1", callbacks=[LaunchLog(launches), InterruptAfter(1)])
    exp = str(sweep_dir / "phase1")
    first = launches.read_text().split()
    done_before = {tid: rows for tid, rows in _trial_results(exp).items() if rows[-1]["epoch"] == 2}
    assert len(done_before) >= 1
    saved = {tid: (Path(exp) / f"trial_{tid}" / "result.json").read_bytes() for tid in done_before}

    res = run_sweep(cfg, _inputs(demo_ws), sweep_dir, "phase1", callbacks=[LaunchLog(launches)])
    second = launches.read_text().split()[len(first):]
    assert not set(second) & set(done_before), "a finished trial was launched again after restore"
    for tid, content in saved.items():  # no epoch was appended to its results either
        assert (Path(exp) / f"trial_{tid}" / "result.json").read_bytes() == content
    trials = pd.read_csv(res.trials_csv)
    sweep_rows = trials[trials["status"] != "rerun"]
    assert len(sweep_rows) == 3 and set(sweep_rows["status"]) == {"complete"}
    # Noise guard (margin 0: any strict win is re-checked): the winner was re-trained with a fresh seed
    # and the pick used the re-run's score.
    ng = res.noise_guard
    assert ng is not None and ng["relative_gap"] > 0, f"precondition: the grid points must differ: {ng}"
    assert ng["triggered"] and ng["rerun_status"] == "complete" and ng["rerun_seed"] == cfg.seed + 1
    rerun = trials[trials["status"] == "rerun"]
    assert len(rerun) == 1 and ng["winner_trial_id"] in rerun.iloc[0]["note"]
    winner_row = trials.set_index("trial_id").loc[ng["winner_trial_id"]]
    assert winner_row["val_far"] == pytest.approx(ng["rerun_score"])
    assert res.best_trial_id == ng["picked_trial_id"]


# -- failures ------------------------------------------------------------------------------------------
def test_all_trials_failing_stops_the_sweep_with_the_root_cause(demo_ws: Any, tmp_path: Path) -> None:
    cfg = SweepConfig(num_trials=6, max_concurrent_trials=2, max_failures=1, noise_margin=None,
                      search_space={"train.optim.lr": {"valid_min": 1e-4, "valid_max": 1e-2, "log": True}},
                      spec_overrides={"train.num_epochs": 1, "train.optim.optim": "no_such_optimizer"})
    sweep_dir = tmp_path / "phase1_automl"
    with pytest.raises(SweepFailedError, match="no_such_optimizer") as info:
        run_sweep(cfg, _inputs(demo_ws), sweep_dir, "phase1")
    assert "no further trials were launched" in str(info.value)
    analysis = tune.ExperimentAnalysis(str(sweep_dir / "phase1"))
    launched = [t for t in analysis.trials if t.status == "ERROR"]
    assert 2 <= len(launched) < 6  # stopped early: the rest would have failed the same way
    assert all(t.run_metadata.num_failures == 2 for t in launched)  # 1 try + max_failures retries
    trials = pd.read_csv(sweep_dir / "trials.csv")
    failed = trials[trials["status"] == "failed"]
    assert len(failed) == len(launched) and failed["error"].str.contains("no_such_optimizer").all()


def test_val_loss_policy_discards_collapsed_trials(demo_ws: Any, tmp_path: Path) -> None:
    # One epoch on 41 rows: every configuration predicts a single class on the validation set.
    # (Random search, seeded; Tune storage on a separate "shared" path as on a cluster.)
    cfg = SweepConfig(algorithm="random", metric="val_loss", num_trials=2, max_concurrent_trials=2, noise_margin=None,
                      search_space={"train.classify.cls_weight[1]": {"valid_min": 0.5, "valid_max": 3.0}},
                      spec_overrides={"train.num_epochs": 1}, storage_path=str(tmp_path / "shared"))
    sweep_dir = tmp_path / "run_x" / "phase1_automl"
    with pytest.raises(SweepFailedError, match="collapsed"):
        run_sweep(cfg, _inputs(demo_ws), sweep_dir, "phase1")
    assert len(list((tmp_path / "shared" / "run_x" / "phase1_automl" / "phase1").glob("trial_*"))) == 2
    trials = pd.read_csv(sweep_dir / "trials.csv")
    assert list(trials["status"]) == ["discarded", "discarded"]
    for counts in trials["pred_counts"]:
        assert sum(1 for v in json.loads(counts).values() if v > 0) == 1
