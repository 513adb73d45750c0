"""raypipe.tracking against a real MLflow sqlite store in tmp_path (and a real local Ray)."""

from __future__ import annotations

import json
import logging
import multiprocessing
import secrets
import warnings
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts

from raypipe.tracking import (
    KEY_TAG,
    PARENT_TAG,
    RUN_DIR_TAG,
    LineageError,
    TrackingContext,
    child_run,
    data_digest,
    end_open_runs,
    end_pipeline_run,
    is_credential_name,
    lineage_chain,
    model_version_lineage,
    pipeline_logger,
    read_lineage,
    record_lineage,
    register_model,
    resolve_tracking_uri,
    secret_values,
    start_pipeline_run,
)


@pytest.fixture(autouse=True)
def _no_global_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Every call must go to the context's URI: MLflow's global default (./mlflow.db in the
    cwd) must never appear — that would mean some call fell back to process-global state."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield
    assert not (cwd / "mlflow.db").exists() and not (cwd / "mlruns").exists()


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One default-layout store for the module: creating MLflow's tables costs seconds."""
    return resolve_tracking_uri(None, tmp_path_factory.mktemp("cwd"))


@pytest.fixture
def store(tracking_uri: str, tmp_path: Path) -> tuple[str, Path]:
    """(tracking uri, a fresh run dir: each test gets its own pipeline run)."""
    run_dir = tmp_path / "ws" / "results" / "run_20250101_000000"
    run_dir.mkdir(parents=True)
    return tracking_uri, run_dir


def _client(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _children(client: MlflowClient, ctx_or_exp: str, parent: str) -> list:
    return client.search_runs([ctx_or_exp], filter_string=f"tags.`{PARENT_TAG}` = '{parent}'")


# --------------------------------------------------------------------------- tracking URIs
def test_resolve_tracking_uri(tmp_path: Path) -> None:
    assert resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    assert resolve_tracking_uri("sqlite:///db/x.db", tmp_path) == f"sqlite:///{tmp_path}/db/x.db"
    assert resolve_tracking_uri("sqlite:////abs/x.db", tmp_path) == "sqlite:////abs/x.db"
    assert resolve_tracking_uri("./mlruns", tmp_path) == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    assert resolve_tracking_uri("store.db", tmp_path) == f"sqlite:///{tmp_path}/store.db"
    assert resolve_tracking_uri("http://10.0.0.5:5000", tmp_path) == "http://10.0.0.5:5000"
    with pytest.raises(ValueError, match="maintenance mode.*sqlite"):
        resolve_tracking_uri("file:///tmp/mlruns", tmp_path)
    with pytest.raises(ValueError, match="in-memory"):
        resolve_tracking_uri("sqlite:///:memory:", tmp_path)


# --------------------------------------------------------------------------- run structure
def test_nested_parent_phase_trials_with_epoch_histories(store: tuple[str, Path]) -> None:
    uri, run_dir = store
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ctx = start_pipeline_run(uri, "raypipe-aoi", run_dir, {"raypipe.backend": "builtin"})
        with child_run(ctx, "phase1", key="phase1", tags={"raypipe.phase": "phase1"}) as phase:
            for trial in range(3):
                hps = {"train": {"optim": {"lr": 1e-4 * (trial + 1)}}, "train.classify.cls_weight[1]": 3.0 + trial}
                with child_run(phase.context(), f"trial_{trial:05d}", key=f"phase1/trial_{trial:05d}", params=hps) as t:
                    for epoch in range(3):
                        t.log_metrics({"val_loss": 1.0 / (epoch + 1) + trial, "far_pct": None, "acc": float("nan")}, step=epoch)
            phase.log_metrics({"best_far_pct": 4.5})
        end_pipeline_run(ctx, "FINISHED")
    bad = [w for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning, PendingDeprecationWarning))]
    assert not bad, [str(w.message) for w in bad]

    client = _client(uri)
    parent = client.get_run(ctx.parent_run_id)
    assert parent.data.tags[RUN_DIR_TAG] == str(run_dir)
    assert parent.data.tags["raypipe.backend"] == "builtin"
    assert parent.info.run_name == run_dir.name and parent.info.status == "FINISHED"

    phases = _children(client, ctx.experiment_id, ctx.parent_run_id)
    assert [r.info.run_name for r in phases] == ["phase1"]
    phase_run = phases[0]
    assert phase_run.data.metrics == {"best_far_pct": 4.5}
    trials = sorted(_children(client, ctx.experiment_id, phase_run.info.run_id), key=lambda r: r.info.run_name)
    assert [r.info.run_name for r in trials] == ["trial_00000", "trial_00001", "trial_00002"]
    for i, run in enumerate(trials):
        assert run.info.status == "FINISHED"
        assert run.data.tags[KEY_TAG] == f"phase1/trial_{i:05d}"
        assert float(run.data.params["train.optim.lr"]) == pytest.approx(1e-4 * (i + 1))
        assert run.data.params["train.classify.cls_weight.1"] == str(3.0 + i)
        history = client.get_metric_history(run.info.run_id, "val_loss")
        assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
            (e, pytest.approx(1.0 / (e + 1) + i)) for e in range(3)
        ]
        # None and NaN are skipped, not stored as 0 or NaN
        assert "far_pct" not in run.data.metrics and "acc" not in run.data.metrics


def test_key_reopens_instead_of_duplicating(store: tuple[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    uri, run_dir = store
    ctx = start_pipeline_run(uri, "raypipe-aoi", run_dir, {})
    with child_run(ctx, "iter1", key="phase2/iter1", params={"lr": 0.1}) as first:
        first.log_metrics({"far_pct": 9.0}, step=1)
    # a resumed pipeline finds the same parent by its run dir ...
    ctx2 = start_pipeline_run(uri, "raypipe-aoi", run_dir, {})
    assert ctx2 == ctx
    client = _client(uri)
    assert client.get_run(ctx.parent_run_id).info.status == "RUNNING"
    # ... and the same child by its key: same run, still one child, history continued
    with caplog.at_level(logging.WARNING, logger="raypipe.tracking"), \
            child_run(ctx2, "iter1", key="phase2/iter1", params={"lr": 0.1, "momentum": 0.9}) as again:
        assert client.get_run(again.run_id).info.status == "RUNNING"
        again.log_metrics({"far_pct": 7.0}, step=2)
        again.log_params({"lr": 0.2})  # params are write-once: kept, with a warning
    assert again.run_id == first.run_id
    assert "already logged with another value" in caplog.text
    kids = _children(client, ctx.experiment_id, ctx.parent_run_id)
    assert len(kids) == 1
    run = client.get_run(first.run_id)
    assert run.data.params == {"lr": "0.1", "momentum": "0.9"}
    assert run.info.status == "FINISHED"
    assert [m.value for m in sorted(client.get_metric_history(run.info.run_id, "far_pct"), key=lambda m: m.step)] == [9.0, 7.0]
    # the same key under ANOTHER parent is another run; another run dir is another parent
    with child_run(ctx, "phase2", key="phase2") as phase, \
            child_run(phase.context(), "iter1", key="phase2/iter1") as nested:
        pass
    assert nested.run_id != first.run_id
    other = start_pipeline_run(uri, "raypipe-aoi", run_dir.parent / "run_2", {})
    assert other.parent_run_id != ctx.parent_run_id and other.experiment_id == ctx.experiment_id


def test_child_run_status_on_exceptions(store: tuple[str, Path]) -> None:
    uri, run_dir = store
    ctx = start_pipeline_run(uri, "raypipe-aoi", run_dir, {})
    with pytest.raises(RuntimeError, match="boom"), child_run(ctx, "trial_00001") as failed:
        raise RuntimeError("boom")
    with pytest.raises(KeyboardInterrupt), child_run(ctx, "trial_00002") as killed:
        raise KeyboardInterrupt
    with child_run(ctx, "phase1") as phase, child_run(phase.context(), "trial_00003") as stale:
        pass
    client = _client(uri)
    client.update_run(stale.run_id, status="RUNNING")  # as if its worker was SIGKILLed
    assert end_open_runs(phase.context(), "KILLED") == 1
    assert client.get_run(stale.run_id).info.status == "KILLED"
    assert client.get_run(phase.run_id).info.status == "FINISHED"
    client.update_run(stale.run_id, status="RUNNING")
    assert client.get_run(failed.run_id).info.status == "FAILED"
    assert client.get_run(killed.run_id).info.status == "KILLED"
    end_pipeline_run(ctx, "FAILED")
    assert client.get_run(stale.run_id).info.status == "KILLED"
    assert client.get_run(ctx.parent_run_id).info.status == "FAILED"
    with pytest.raises(ValueError, match="FINISHED"):
        end_pipeline_run(ctx, "DONE")


def test_disabled_tracking_is_a_noop(tmp_path: Path) -> None:
    csv = tmp_path / "train.csv"
    csv.write_text("input_path,label\na,PASS\n")
    uri = resolve_tracking_uri(None, tmp_path)
    ctx = start_pipeline_run(uri, "raypipe-aoi", tmp_path / "rd", {}, enabled=False)
    assert ctx.enabled is False
    for c in (None, ctx, TrackingContext(uri, "1", "abc", enabled=False)):
        with child_run(c, "trial_00000", key="k", params={"lr": 1}) as t:
            assert t.run_id is None and t.context() is None
            t.log_metrics({"x": 1.0}, step=0)
            t.set_tags({"a": "b"})
            t.log_artifact(csv)
            assert t.log_dataset(csv, "train", "training") == data_digest(csv)
    assert pipeline_logger(ctx).run_id is None
    end_pipeline_run(ctx, "FINISHED")
    assert register_model(ctx, csv, "m", [], {}) == ""
    assert not (tmp_path / "mlruns").exists()


# --------------------------------------------------------------------------- Ray workers
@pytest.mark.slow  # a local Ray start dominates (~10-30 s on 2 shared cores)
def test_logging_from_a_ray_task(store: tuple[str, Path]) -> None:
    import ray

    def _ray_trial(ctx: TrackingContext, trial: int, epochs: int) -> str:
        # defined here so Ray ships it by value (a test module is not importable in a worker)
        with child_run(ctx, f"trial_{trial:05d}", key=f"phase1/trial_{trial:05d}", params={"trial": trial}) as run:
            for epoch in range(epochs):
                run.log_metrics({"val_loss": 1.0 / (epoch + 1)}, step=epoch)
            return str(run.run_id)

    uri, run_dir = store
    ctx = start_pipeline_run(uri, "raypipe-aoi", run_dir, {})
    with child_run(ctx, "phase1", key="phase1") as phase:
        phase_ctx = phase.context()
    assert phase_ctx is not None and phase_ctx.parent_run_id == phase.run_id
    # address="local": never join a cluster someone else started on this machine
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=0.5)(_ray_trial)  # two trials at once into one sqlite store
        first, other = ray.get([remote.remote(phase_ctx, 3, 2), remote.remote(phase_ctx, 4, 2)])
        rerun = ray.get(remote.remote(phase_ctx, 3, 3))  # a retried trial reopens its run
    finally:
        ray.shutdown()
    assert first == rerun and other != first
    client = _client(uri)
    assert client.get_run(other).data.tags[PARENT_TAG] == phase.run_id
    run = client.get_run(first)
    assert run.data.tags[PARENT_TAG] == phase.run_id
    assert run.info.status == "FINISHED" and run.data.params == {"trial": "3"}
    # the retry re-logs epochs 0-1: MLflow keeps both points per step (the history is honest)
    assert sorted(m.step for m in client.get_metric_history(first, "val_loss")) == [0, 0, 1, 1, 2]
    assert len(_children(client, ctx.experiment_id, phase.run_id)) == 2


# --------------------------------------------------------------------------- datasets
def test_datasets_are_run_inputs_with_digests(store: tuple[str, Path]) -> None:
    uri, run_dir = store
    csv = run_dir / "train_combined_iter1.csv"
    csv.write_text("input_path,golden_path,object_name,label\nimg/a,gold/a,C1,PASS\nimg/b,gold/b,C2,missing\n")
    ctx = start_pipeline_run(uri, "raypipe-aoi", run_dir, {})
    with child_run(ctx, "iter1") as run:
        digest = run.log_dataset(csv, "train_combined_iter1", "training")
        run.log_dataset(csv, "train_combined_iter1", "training")  # twice: still one input
    assert digest == data_digest(csv) and len(digest) == 16
    inputs = _client(uri).get_run(run.run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    ds = inputs[0].dataset
    assert (ds.name, ds.digest) == ("train_combined_iter1", digest)
    assert json.loads(ds.source)["uri"] == str(csv)
    assert json.loads(ds.profile)["num_rows"] == 2
    assert [c["name"] for c in json.loads(ds.schema)["mlflow_colspec"]] == ["input_path", "golden_path", "object_name", "label"]
    assert {t.key: t.value for t in inputs[0].tags}["mlflow.data.context"] == "training"
    csv.write_text(csv.read_text() + "img/c,gold/c,C3,PASS\n")
    assert data_digest(csv) != digest


# --------------------------------------------------------------------------- lineage
def _rec(ckpt: Path, phase: str, parent: Path | None, digest: str, value: float, run_id: str | None, **which: object) -> dict:
    return {
        "checkpoint": str(ckpt),
        "phase": phase,
        **which,
        "parent_checkpoint": str(parent) if parent else None,
        "training_data_digest": digest,
        "metric": {"name": "far_pct", "value": value, "split": "validation" if phase != "phase2" else "kpi"},
        "mlflow_run_id": run_id,
    }


def test_lineage_records_are_validated_and_idempotent(tmp_path: Path) -> None:
    rd = tmp_path / "rd"
    good = _rec(rd / "a.pth", "phase1", None, "d1", 5.0, "r1", trial=3)
    record_lineage(rd, good)
    record_lineage(rd, good)
    assert read_lineage(rd) == [good]
    record_lineage(rd, {**good, "metric": {"name": "far_pct", "value": 4.0, "split": "validation"}})
    assert [r["metric"]["value"] for r in read_lineage(rd)] == [4.0]
    with pytest.raises(LineageError, match="phase 'phase9'"):
        record_lineage(rd, {**good, "phase": "phase9"})
    with pytest.raises(LineageError, match="trial|iteration"):
        record_lineage(rd, {k: v for k, v in good.items() if k != "trial"})
    with pytest.raises(LineageError, match="metric"):
        record_lineage(rd, {**good, "metric": {"name": "far_pct", "value": float("nan"), "split": "x"}})
    with pytest.raises(LineageError, match="names itself"):
        record_lineage(rd, {**good, "parent_checkpoint": good["checkpoint"]})
    assert len(read_lineage(rd)) == 1
    record_lineage(rd, _rec(rd / "b.pth", "phase2", rd / "missing.pth", "d2", 3.0, None, iteration=1))
    with pytest.raises(LineageError, match="missing.pth of .*b.pth has no record"):
        lineage_chain(rd, rd / "b.pth")
    with pytest.raises(LineageError, match="no record for checkpoint"):
        lineage_chain(rd, rd / "nope.pth")


def _record_many(rd: str, worker: int) -> None:
    for i in range(10):
        record_lineage(Path(rd), _rec(Path(rd) / f"w{worker}_{i}.pth", "phase1", None, "d", float(i), None, trial=i))


def test_record_lineage_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")  # children only touch files; spawn would re-import mlflow (~5 s each)
    procs = [ctx.Process(target=_record_many, args=(str(tmp_path), w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len({r["checkpoint"] for r in read_lineage(tmp_path)}) == 30


def test_registered_model_lineage_back_to_phase1(store: tuple[str, Path]) -> None:
    uri, rd = store
    train = rd / "train.csv"
    train.write_text("input_path,label\na,PASS\n")
    combined = rd / "train_combined_iter2.csv"
    combined.write_text("input_path,label\na,PASS\nb,missing\n")
    ckpts = {}
    for name in ("trial3", "baseline", "iter1", "iter2", "final"):
        ckpts[name] = rd / name / "model_epoch_004_step_00040.pth"
        ckpts[name].parent.mkdir()
        ckpts[name].write_bytes(name.encode() * 100)
    (rd / "best_model_inference_spec.yaml").write_text("model: {classify: {eval_margin: 0.5}}\n")

    ctx = start_pipeline_run(uri, "raypipe-aoi", rd, {})
    with child_run(ctx, "phase1", key="phase1") as p1, child_run(p1.context(), "trial_00003", key="phase1/trial_00003") as t3:
        d_train = t3.log_dataset(train, "train", "training")
    with child_run(ctx, "phase2", key="phase2") as p2:
        run_ids = {}
        for it in ("iter1", "iter2"):
            with child_run(p2.context(), it, key=f"phase2/{it}") as r:
                run_ids[it] = r.run_id
    record_lineage(rd, _rec(ckpts["trial3"], "phase1", None, d_train, 6.0, t3.run_id, trial=3))
    record_lineage(rd, _rec(ckpts["baseline"], "phase2", ckpts["trial3"], d_train, 12.0, p2.run_id, iteration="baseline"))
    record_lineage(rd, _rec(ckpts["iter1"], "phase2", ckpts["baseline"], d_train, 8.0, run_ids["iter1"], iteration=1))
    record_lineage(rd, _rec(ckpts["iter2"], "phase2", ckpts["iter1"], data_digest(combined), 5.0, run_ids["iter2"], iteration=2))
    record_lineage(rd, _rec(ckpts["final"], "phase3", ckpts["iter2"], data_digest(combined), 4.0, None, trial=1))

    chain = lineage_chain(rd, ckpts["final"])
    assert [r["phase"] for r in chain] == ["phase3", "phase2", "phase2", "phase2", "phase1"]
    assert chain[-1]["checkpoint"] == str(ckpts["trial3"])

    version = register_model(ctx, ckpts["final"], "raypipe-aoi-changenet", chain, {"raypipe.kpi_met": "true"})
    assert register_model(ctx, ckpts["final"], "raypipe-aoi-changenet", chain, {}) == version  # resume
    end_pipeline_run(ctx, "FINISHED")

    client = _client(uri)
    mv = client.get_model_version("raypipe-aoi-changenet", version)
    assert mv.tags["raypipe.checkpoint"] == str(ckpts["final"])
    assert mv.tags["raypipe.pipeline_run_id"] == ctx.parent_run_id
    assert mv.tags["raypipe.lineage.root_checkpoint"] == str(ckpts["trial3"])
    assert mv.tags["raypipe.lineage.run_ids"].split(",") == [run_ids["iter2"], run_ids["iter1"], p2.run_id, t3.run_id]
    assert mv.tags["raypipe.kpi_met"] == "true" and mv.tags["raypipe.metric.far_pct"] == "4.0"
    assert len(client.search_model_versions("name = 'raypipe-aoi-changenet'")) == 1
    # from the registry back to a Phase 1 record, through the iterations
    walked = model_version_lineage(uri, "raypipe-aoi-changenet", version)
    assert walked == chain
    assert walked[-1]["phase"] == "phase1" and walked[-1]["trial"] == 3
    assert client.get_run(walked[-1]["mlflow_run_id"]).info.run_name == "trial_00003"
    # the version's files are the checkpoint itself plus the inference spec and the lineage
    # (models:/ URIs resolve through MLflow's *global* registry URI, so go through the client)
    source = client.get_model_version_download_uri("raypipe-aoi-changenet", version)
    got = Path(download_artifacts(artifact_uri=source, dst_path=str(rd.parent / "dl"), tracking_uri=uri))
    assert (got / ckpts["final"].name).read_bytes() == ckpts["final"].read_bytes()
    assert (got / "best_model_inference_spec.yaml").is_file()
    assert json.loads((got / "lineage.json").read_text())["chain"][-1]["checkpoint"] == str(ckpts["trial3"])
    # RD/lineage.json is also an artifact of the pipeline run
    parent_files = {f.path for f in client.list_artifacts(ctx.parent_run_id)}
    assert "lineage.json" in parent_files


# --------------------------------------------------------------------------- secrets
def test_credential_names() -> None:
    for name in ("NGC_KEY", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "tao.ngc_key", "hub.Api_Token", "db.password", "MY_PASSWD"):
        assert is_credential_name(name), name
    for name in ("raypipe.key", "train.optim.lr", "model.classify.learnable_difference_modules", "tokenizer"):
        assert not is_credential_name(name), name
    env = {"NGC_KEY": "abcdefgh1234", "HF_TOKEN": "1", "SSH_KEY": "/", "PATH": "/usr/bin:/bin", "MY_SECRET": "zzzzzzzz"}
    assert secret_values(env) == {"abcdefgh1234": "NGC_KEY", "zzzzzzzz": "MY_SECRET"}


def test_no_secret_value_reaches_the_store(store: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    uri, rd = store
    secret = "nvapi-" + secrets.token_hex(16)
    monkeypatch.setenv("NGC_KEY", secret)
    config = {
        "train": {"optim": {"lr": 1e-4}},
        "tao": {"credentials": ["NGC_KEY"], "docker_env": f"NGC_KEY={secret}", "ngc_key": secret},
        "notes": [f"token was {secret}"],
    }
    leaky_file = rd / "config_with_secret.yaml"
    leaky_file.write_text(f"tao:\n  ngc_key: {secret}\n")
    clean_file = rd / "config.yaml"
    clean_file.write_text("train: {optim: {lr: 0.0001}}\n")
    leaky_csv = rd / "pool.csv"
    leaky_csv.write_text(f"input_path,label\n{secret},PASS\n")
    ckpt = rd / "model.pth"
    ckpt.write_bytes(b"\x00weights")

    ctx = start_pipeline_run(uri, "raypipe-aoi", rd, {"raypipe.cmd": f"--ngc {secret}", "NGC_KEY": secret})
    log = pipeline_logger(ctx)
    log.log_params(config)
    log.log_artifact(clean_file)
    log.log_artifact(leaky_file)
    log.log_artifact(rd)  # a whole directory holding a leaky file: refused as a whole
    with child_run(ctx, f"trial {secret}", key=f"phase1/{secret}", tags={"HF_TOKEN": secret, "ok": "yes"}) as t:
        t.log_metrics({"val_loss": 0.5, "ngc_key": 1.0, f"m_{secret}": 2.0}, step=0)
        t.log_dataset(leaky_csv, "pool", "mining")
        t.log_dataset(clean_file, f"name {secret}", "training")
    record_lineage(rd, _rec(ckpt, "phase1", None, "d", 1.0, t.run_id, trial=0))
    register_model(ctx, ckpt, "raypipe-secret-check", [], {"deploy.token_note": secret, "note": f"k={secret}"})
    end_pipeline_run(ctx, "FINISHED")

    client = _client(uri)
    params = client.get_run(ctx.parent_run_id).data.params
    assert params["train.optim.lr"] == "0.0001"  # ordinary values are logged ...
    assert params["tao.credentials"] == '["NGC_KEY"]'  # ... names of variables too
    assert params["tao.docker_env"].startswith("<redacted>") and "tao.ngc_key" not in params
    assert {f.path for f in client.list_artifacts(ctx.parent_run_id)} == {"config.yaml", "lineage.json"}
    assert client.get_run(t.run_id).data.metrics == {"val_loss": 0.5, "best_val_loss": 0.5}

    mlruns = Path(uri.removeprefix("sqlite:///")).parent
    files = [p for p in mlruns.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in files) and any(p.suffix == ".pth" for p in files)
    needle = secret.encode()
    leaks = [str(p) for p in files if needle in p.read_bytes()]
    assert leaks == []


# --------------------------------------------------------------------------- package
def test_package_exports_match_their_modules() -> None:
    import ast
    import importlib

    import raypipe.tracking as tr

    tree = ast.parse(Path(tr.__file__).read_text(encoding="utf-8"))
    typed = {alias.asname for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
             and (node.module or "").startswith("raypipe.tracking.") for alias in node.names}
    assert typed == set(tr._MODULE_OF)  # the type checkers' view and the runtime's agree
    for name, module in tr._MODULE_OF.items():
        assert getattr(tr, name) is getattr(importlib.import_module(f"raypipe.tracking.{module}"), name)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = tr.nope
