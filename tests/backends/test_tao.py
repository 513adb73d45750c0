"""TAO container backend.

No Docker engine runs on the dev/CI machines: the container path is tested by asserting the exact
docker SDK calls against a recording fake client (tests/backends/tao_fake_docker.py) that also
writes what a real TAO run writes, so checkpoint discovery, status parsing and inference-CSV
normalisation run for real. The kwargs are also fed through the docker SDK's own
``_create_container_args`` to prove the real SDK accepts them and builds the intended HostConfig.
"""

from __future__ import annotations

import math
import os
import re
import secrets
from pathlib import Path, PurePosixPath

import docker
import pandas as pd
import pytest
import yaml
from docker.models.containers import _create_container_args
from docker.types import DeviceRequest, Mount

from raypipe.backends import TrainingError, backend_options, get_backend
from raypipe.backends.tao import (
    BackboneError,
    ContainerLayout,
    ContainerPolicyError,
    ContainerRun,
    MountPoint,
    StagedBackbone,
    TaoEmbedUnsupported,
    TaoTrainer,
    backbone_blocker,
    credential_status,
    docker_version,
    find_staged_backbone,
    image_status,
    preflight_lines,
    pull_image,
    registry_login,
    run_container,
)
from raypipe.spec import SpecError
from raypipe.tao_interop import execution_policy

from tao_fake_docker import FakeDockerClient, FakeTao

IMAGE = "nvcr.io/nvidia/tao/tao-toolkit:6.25.9-pyt"
OFFLINE = {"AIR_GAPPED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PIP_NO_INDEX": "1"}
LIGHTS = {"SolderLight": 0, "UniformLight": 1}
RUN = "run_20260101_000000"


def _rows(prefix: str, labels: list[str], extra: bool = False) -> pd.DataFrame:
    recs = []
    for i, label in enumerate(labels):
        rec = {"input_path": f"{prefix}/cap", "golden_path": f"{prefix}/gold", "label": label,
               "object_name": f"C{i}@1"}
        if extra:
            rec["boardname"] = f"board{i % 2}"
        recs.append(rec)
    return pd.DataFrame(recs)


def _write_images(images: Path, df: pd.DataFrame) -> None:
    for rec in df.to_dict("records"):
        for col in ("input_path", "golden_path"):
            for light in LIGHTS:
                p = images / rec[col] / f"{rec['object_name']}_{light}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(b"png")


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """A tiny workspace in the standard AOI layout (image bytes are placeholders: the fake only checks paths)."""
    ws = tmp_path / "ws"
    train = _rows("train", ["PASS", "PASS", "PASS", "missing", "PASS", "bridge"])
    val = _rows("val", ["PASS", "PASS", "Missing ", "bridge"])
    kpi = _rows("kpi", ["pass", "PASS", "bridge", "PASS"], extra=True)
    for df in (train, val, kpi):
        _write_images(ws / "images", df)
    (ws / "train" / "base").mkdir(parents=True)
    train.to_csv(ws / "train/base/training_set.csv", index=False)
    val.to_csv(ws / "train/base/validation_set.csv", index=False)
    (ws / "kpi").mkdir()
    kpi.to_csv(ws / "kpi/testing_set.csv", index=False)
    (ws / "backbone").mkdir()
    (ws / "backbone/c_radio_v2_b.safetensors").write_bytes(b"weights")
    (ws / "results" / RUN).mkdir(parents=True)
    return ws


def _spec(ws: Path) -> dict:
    container_side = {"csv_path": "/data/datasets/NV_PCB_Siamese/train.csv", "images_dir": "/data/datasets/images"}
    return {
        "encryption_key": "tlt_encode", "task": "classify",
        "train": {"num_epochs": 3, "checkpoint_interval": 1, "validation_interval": 5,
                  "pretrained_model_path": "/data/old/model.pth",
                  "resume_training_checkpoint_path": "/data/old/resume.pth",
                  "classify": {"loss": "ce", "cls_weight": [1.0, 10.0]},
                  "optim": {"lr": 1e-4, "optim": "adamw", "policy": "linear"}},
        "model": {"backbone": {"type": "c_radio_v2_vit_base_patch16_224",
                               "pretrained_backbone_path": str(ws / "backbone/c_radio_v2_b.safetensors")},
                  "classify": {"difference_module": "learnable", "learnable_difference_modules": 4}},
        "dataset": {"classify": {key: dict(container_side) for key in
                                 ("train_dataset", "validation_dataset", "test_dataset", "infer_dataset")}
                    | {"image_ext": ".png", "batch_size": 2, "workers": 1, "num_input": 2,
                       "input_map": dict(LIGHTS), "concat_type": "linear", "num_classes": 2}},
    }


def _trainer(ws: Path, client: FakeDockerClient, **kw) -> TaoTrainer:
    return TaoTrainer(IMAGE, client=client, workspace_root=ws, run_dir=ws / "results" / RUN, **kw)


def _score_plan(ckpt_name: str, row: dict) -> float:
    """Epoch file 001 separates perfectly; the others put one PASS above every defect (FAR 50 %)."""
    defect = str(row["label"]).strip().upper() != "PASS"
    if "model_epoch_001_" in ckpt_name:
        return 0.9 if defect else 0.1
    if row["object_name"] == "C0@1":
        return 0.95
    return 0.8 if defect else 0.2


@pytest.fixture(autouse=True)
def _no_ray_gpu_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def _mount(target: str, source: Path, ro: bool) -> Mount:
    return Mount(target=target, source=str(source.resolve()), type="bind", read_only=ro)


def _expected_ulimits() -> list[docker.types.Ulimit]:
    return [docker.types.Ulimit(name="memlock", soft=-1, hard=-1),
            docker.types.Ulimit(name="stack", soft=67108864, hard=67108864)]


def _train(ws: Path, client: FakeDockerClient, **kw):
    rd = ws / "results" / RUN
    trainer = _trainer(ws, client, **kw)
    seen: list[object] = []
    result = trainer.train(_spec(ws), ws / "train/base/training_set.csv", ws / "train/base/validation_set.csv",
                           rd / "baseline" / "train", images_dir=ws / "images", seed=7, on_epoch=seen.append)
    return result, seen


def test_train_makes_exactly_the_expected_docker_sdk_calls(ws: Path) -> None:
    client = FakeDockerClient(present=(IMAGE,), tao=FakeTao(score=_score_plan))
    rd = (ws / "results" / RUN).resolve()
    _train(ws, client, val_scoring="status")

    # create + start, never containers.run (which would pull a missing image by itself)
    assert [c.name for c in client.calls] == [
        "images.get", "containers.create", "container.start", "container.logs", "container.wait",
        "container.remove"]
    run = client.named("containers.create")[0]
    assert run.args == (IMAGE,)
    assert run.kwargs == {
        "command": ["visual_changenet", "train", "-e", "/results/baseline/train/experiment.yaml",
                    "results_dir=/results/baseline/train"],
        "mounts": [_mount("/data/workspace", ws, True), _mount("/results", rd, False),
                   _mount("/data/images", ws / "images", True), _mount("/data/train_base", ws / "train/base", True),
                   _mount("/data/kpi", ws / "kpi", True),
                   _mount("/data/pretrained_models/c_radio_v2_b.safetensors", ws / "backbone/c_radio_v2_b.safetensors",
                          True)],
        "shm_size": "8g",
        "device_requests": [DeviceRequest(count=-1, capabilities=[["gpu"]])],
        # no policy passed: air-gapped (the safe reading), so TAO's offline variables are set
        "environment": OFFLINE | ({} if os.getuid() == 0 else {"HOME": "/tmp"}),  # an arbitrary uid has no home
        "user": f"{os.getuid()}:{os.getgid()}",
        "ulimits": _expected_ulimits(),
        "labels": {"raypipe.backend": "tao", "raypipe.task": "train"},
    }
    assert client.named("container.logs")[0].kwargs == {"stream": True, "follow": True}
    assert client.named("container.remove")[0].kwargs == {"force": True}

    # The real SDK accepts these kwargs and builds the intended HostConfig (8 GiB /dev/shm, no host IPC).
    create = _create_container_args(dict(run.kwargs, image=IMAGE, version="1.45"))
    host_config = create["host_config"]
    assert host_config["ShmSize"] == 8 * 1024 ** 3
    assert "IpcMode" not in host_config and "Privileged" not in host_config
    assert host_config["DeviceRequests"] == [{"Driver": "", "Count": -1, "DeviceIDs": [], "Capabilities": [["gpu"]],
                                              "Options": {}}]
    assert [m["ReadOnly"] for m in host_config["Mounts"]] == [True, False, True, True, True, True]


def test_container_spec_has_container_paths_only(ws: Path) -> None:
    client = FakeDockerClient(present=(IMAGE,))
    result, _ = _train(ws, client, val_scoring="status")
    spec = yaml.safe_load((result.out_dir / "experiment.yaml").read_text())
    cls = spec["dataset"]["classify"]
    assert cls["train_dataset"] == {"csv_path": "/data/train_base/training_set.csv", "images_dir": "/data/images"}
    for key in ("validation_dataset", "test_dataset", "infer_dataset"):
        assert cls[key] == {"csv_path": "/data/train_base/validation_set.csv", "images_dir": "/data/images"}
    assert spec["results_dir"] == spec["train"]["results_dir"] == "/results/baseline/train"
    assert spec["train"]["pretrained_model_path"] is None  # no init_ckpt: nothing from the old spec survives
    assert spec["train"]["resume_training_checkpoint_path"] is None
    assert spec["train"]["validation_interval"] == 3  # clamped to num_epochs (TAO asserts it)
    assert spec["train"]["seed"] == 7
    assert spec["model"]["backbone"]["pretrained_backbone_path"] == "/data/pretrained_models/c_radio_v2_b.safetensors"
    assert "automl_policy" not in spec and "workflow" not in spec
    assert str(ws) not in (result.out_dir / "experiment.yaml").read_text()  # no host path leaks in


def test_train_result_best_val_by_far_and_latest(ws: Path) -> None:
    client = FakeDockerClient(present=(IMAGE,), tao=FakeTao(score=_score_plan))
    result, seen = _train(ws, client)
    out = result.out_dir
    names = [p.name for p in result.checkpoints]
    assert names == ["model_epoch_000_step_00003.pth", "model_epoch_001_step_00006.pth",
                     "model_epoch_002_step_00009.pth"]  # the *_latest.pth link is not a checkpoint
    assert result.best_val_ckpt == out / "model_epoch_001_step_00006.pth"
    assert result.latest_ckpt == out / "model_epoch_002_step_00009.pth"
    assert (result.best_epoch, result.best_step, result.best_val_far) == (2, 6, 0.0)
    assert [e.epoch for e in seen] == [1, 2, 3] and [e.val_far for e in seen] == [50.0, 0.0, 50.0]
    assert seen[1].pred_counts == {"PASS": 2, "NO_PASS": 2}
    assert [e.train_loss for e in seen] == [2.0, 1.0, pytest.approx(2 / 3)]
    assert math.isnan(seen[0].val_loss) and seen[2].val_loss == pytest.approx(1 / 3)  # validation every 3rd epoch
    # one train container + one validation-scoring inference container per checkpoint
    commands = [c.kwargs["command"][:2] for c in client.named("containers.create")]
    assert commands == [["visual_changenet", "train"]] + [["visual_changenet", "inference"]] * 3
    scoring = client.named("containers.create")[2].kwargs["command"]
    assert scoring == ["visual_changenet", "inference", "-e",
                       "/results/baseline/train/val_scoring/model_epoch_001_step_00006/tao_inference/inference_spec.yaml",
                       "results_dir=/results/baseline/train/val_scoring/model_epoch_001_step_00006/tao_inference"]
    assert client.tao.runs[2]["spec"]["inference"]["checkpoint"] == "/results/baseline/train/model_epoch_001_step_00006.pth"
    assert len(client.named("container.remove")) == 4


def test_val_scoring_status_picks_lowest_val_loss(ws: Path) -> None:
    client = FakeDockerClient(present=(IMAGE,), tao=FakeTao(val_losses=[0.7, 0.2, 0.5]))
    rd = ws / "results" / RUN
    spec = _spec(ws)
    spec["train"]["validation_interval"] = 1
    result = _trainer(ws, client, val_scoring="status").train(
        spec, ws / "train/base/training_set.csv", ws / "train/base/validation_set.csv", rd / "it" / "train",
        images_dir=ws / "images")
    assert result.best_val_ckpt.name == "model_epoch_001_step_00006.pth" and result.best_val_loss == 0.2
    assert math.isnan(result.best_val_far)
    assert len(client.named("containers.create")) == 1


def test_secret_values_never_reach_docker(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = secrets.token_hex(16)
    monkeypatch.setenv("NGC_KEY", secret)
    monkeypatch.setenv("TZ", "UTC")
    client = FakeDockerClient(present=(IMAGE,), tao=FakeTao(score=_score_plan))
    result, _ = _train(ws, client, env_allowlist=["TZ"], user="1000:1000")
    _trainer(ws, client).infer(_spec(ws), result.best_val_ckpt, ws / "kpi/testing_set.csv",
                               ws / "results" / RUN / "baseline/inference/best_val", images_dir=ws / "images")
    first = client.named("containers.create")[0].kwargs
    assert first["environment"] == {"TZ": "UTC", "HOME": "/tmp"} | OFFLINE and first["user"] == "1000:1000"
    assert secret not in repr(client.calls)
    for p in (ws / "results").rglob("*"):
        if p.is_file():
            assert secret.encode() not in p.read_bytes(), p
    with pytest.raises(ValueError, match="refusing to forward NGC_KEY") as err:
        TaoTrainer(IMAGE, client=client, env_allowlist=["NGC_KEY"])
    assert secret not in str(err.value)


def test_nonzero_exit_raises_with_log_tail_and_removes_container(ws: Path) -> None:
    client = FakeDockerClient(present=(IMAGE,), tao=FakeTao(exit_code=137))
    with pytest.raises(TrainingError, match="exit code 137") as err:
        _train(ws, client)
    assert "CUDA out of memory (simulated)" in str(err.value)
    assert client.named("container.remove")[0].kwargs == {"force": True}


def test_docker_refusing_to_start_is_a_training_error(ws: Path) -> None:
    client = FakeDockerClient(present=(IMAGE,), run_error="could not select device driver \"\" with capabilities: [[gpu]]")
    with pytest.raises(TrainingError, match=r"docker could not start .*capabilities: \[\[gpu\]\]"):
        _train(ws, client)
    log = (ws / "results" / RUN / "baseline" / "train" / "train.log").read_text()
    assert log.startswith("# image: " + IMAGE) and "could not select device driver" in log


def test_failure_in_status_json_raises_even_with_exit_code_zero(ws: Path) -> None:
    client = FakeDockerClient(present=(IMAGE,), tao=FakeTao(fail_status_message="Visual ChangeNet train failed"))
    with pytest.raises(TrainingError, match="FAILURE.*Visual ChangeNet train failed"):
        _train(ws, client)


def test_success_without_checkpoint_is_a_failure(ws: Path) -> None:
    client = FakeDockerClient(present=(IMAGE,), tao=FakeTao(write_checkpoints=False))
    with pytest.raises(TrainingError, match="no model_epoch_<EEE>_step_<SSS>.pth"):
        _train(ws, client)


def test_missing_image_is_refused_before_containers_run(ws: Path) -> None:
    client = FakeDockerClient(present=())  # containers.run would pull it implicitly, bypassing the gate
    with pytest.raises(ContainerPolicyError, match="MISSING"):
        _train(ws, client)
    assert client.named("containers.create") == [] and client.named("images.pull") == []


def test_stale_checkpoints_are_cleared_so_tao_does_not_resume(ws: Path) -> None:
    out = ws / "results" / RUN / "baseline" / "train"
    out.mkdir(parents=True)
    (out / "model_epoch_009_step_00999.pth").write_bytes(b"old")
    (out / "status.json").write_text('{"status": "FAILURE"}\n')
    result, _ = _train(ws, FakeDockerClient(present=(IMAGE,)), val_scoring="status")
    assert [p.name for p in result.checkpoints][-1] == "model_epoch_002_step_00009.pth"
    assert not (out / "model_epoch_009_step_00999.pth").exists()


def test_init_ckpt_and_out_dir_outside_the_run_dir_get_their_own_mounts(ws: Path, tmp_path: Path) -> None:
    init = tmp_path / "elsewhere" / "model_epoch_004_step_00100.pth"
    init.parent.mkdir()
    init.write_bytes(b"w")
    out = tmp_path / "trial_0001"
    client = FakeDockerClient(present=(IMAGE,))
    result = _trainer(ws, client, val_scoring="status").train(
        _spec(ws), ws / "train/base/training_set.csv", ws / "train/base/validation_set.csv", out, init,
        images_dir=ws / "images")
    mounts = client.named("containers.create")[0].kwargs["mounts"]
    assert _mount("/data/extra/0_trial_0001", out, False) in mounts
    assert _mount("/data/extra/1_model_epoch_004_step_00100.pth", init, True) in mounts
    spec = client.tao.runs[0]["spec"]
    assert spec["train"]["pretrained_model_path"] == "/data/extra/1_model_epoch_004_step_00100.pth"
    assert result.checkpoints[0].read_bytes().endswith(b"init=/data/extra/1_model_epoch_004_step_00100.pth")


def test_infer_normalises_to_spec_columns(ws: Path) -> None:
    rd = ws / "results" / RUN
    ckpt = rd / "baseline" / "train" / "model_epoch_002_step_00009.pth"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"w")
    client = FakeDockerClient(present=(IMAGE,))
    out = _trainer(ws, client).infer(_spec(ws), ckpt, ws / "kpi/testing_set.csv", rd / "baseline/inference/latest",
                                     images_dir=ws / "images")
    assert out == (rd / "baseline/inference/latest/inference.csv").resolve()
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(df.columns) == ["input_path", "golden_path", "object_name", "label", "siamese_score", "boardname"]
    assert list(df["label"]) == ["PASS", "PASS", "bridge", "PASS"]
    assert list(df["siamese_score"].astype(float)) == [0.1, 0.1, 0.9, 0.1]
    assert list(df["boardname"]) == ["board0", "board1", "board0", "board1"]
    run = client.named("containers.create")[0]
    assert run.kwargs["command"] == ["visual_changenet", "inference", "-e",
                                     "/results/baseline/inference/latest/tao_inference/inference_spec.yaml",
                                     "results_dir=/results/baseline/inference/latest/tao_inference"]
    spec = client.tao.runs[0]["spec"]
    assert spec["inference"]["checkpoint"] == "/results/baseline/train/model_epoch_002_step_00009.pth"
    assert spec["dataset"]["classify"]["infer_dataset"] == {"csv_path": "/data/kpi/testing_set.csv",
                                                            "images_dir": "/data/images"}


def test_absolute_row_paths_are_rewritten_to_container_paths(ws: Path) -> None:
    rd = ws / "results" / RUN
    kpi = pd.read_csv(ws / "kpi/testing_set.csv", dtype=str)
    kpi["input_path"] = [str((ws / "images" / p).resolve()) for p in kpi["input_path"]]
    abs_csv = rd / "inputs" / "kpi_abs.csv"
    abs_csv.parent.mkdir(parents=True)
    kpi.to_csv(abs_csv, index=False)
    ckpt = rd / "m" / "model_epoch_000_step_00001.pth"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"w")
    client = FakeDockerClient(present=(IMAGE,))
    out = _trainer(ws, client).infer(_spec(ws), ckpt, abs_csv, rd / "inf", images_dir=ws / "images")
    staged = client.tao.runs[0]["spec"]["dataset"]["classify"]["infer_dataset"]["csv_path"]
    assert staged == "/results/inf/tao_inference/kpi_abs.container.csv"
    assert set(pd.read_csv(rd / "inf/tao_inference/kpi_abs.container.csv")["input_path"]) == {"/data/images/kpi/cap"}
    # our inference.csv keeps the caller's (host) paths
    assert list(pd.read_csv(out)["input_path"]) == list(kpi["input_path"])


def test_row_path_outside_every_mount_names_file_row_column(ws: Path, tmp_path: Path) -> None:
    kpi = pd.read_csv(ws / "kpi/testing_set.csv", dtype=str)
    kpi.loc[2, "golden_path"] = str(tmp_path / "nowhere")
    bad = ws / "results" / RUN / "bad.csv"
    kpi.to_csv(bad, index=False)
    ckpt = ws / "results" / RUN / "model_epoch_000_step_00001.pth"
    ckpt.write_bytes(b"w")
    client = FakeDockerClient(present=(IMAGE,))
    with pytest.raises(ValueError, match=r"bad\.csv: row 3, column 'golden_path'.*outside every directory mounted"):
        _trainer(ws, client).infer(_spec(ws), ckpt, bad, ws / "results" / RUN / "inf", images_dir=ws / "images")
    assert client.named("containers.create") == []


def test_evaluate_returns_tao_kpis(ws: Path) -> None:
    ckpt = ws / "results" / RUN / "model_epoch_000_step_00001.pth"
    ckpt.write_bytes(b"w")
    client = FakeDockerClient(present=(IMAGE,))
    kpi = _trainer(ws, client).evaluate(_spec(ws), ckpt, ws / "kpi/testing_set.csv", ws / "results" / RUN / "ev",
                                        images_dir=ws / "images")
    assert kpi == {"test_acc": 0.75, "test_fpr": 0.25, "test_fnr": 0.0, "defect_acc": 1.0}
    assert client.named("containers.create")[0].kwargs["command"][:2] == ["visual_changenet", "evaluate"]
    assert client.tao.runs[0]["spec"]["evaluate"]["checkpoint"] == "/results/model_epoch_000_step_00001.pth"


def test_forbidden_spec_keys_are_refused_before_any_container(ws: Path) -> None:
    client = FakeDockerClient(present=(IMAGE,))
    spec = _spec(ws) | {"automl_policy": {"x": 1}}
    with pytest.raises(SpecError, match="automl_policy"):
        _trainer(ws, client).train(spec, ws / "train/base/training_set.csv", ws / "train/base/validation_set.csv",
                                   ws / "results" / RUN / "t", images_dir=ws / "images")
    assert client.named("containers.create") == []


def test_gpus_follow_ray_assignment(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    client = FakeDockerClient(present=(IMAGE,))
    _train(ws, client, val_scoring="status")
    assert client.named("containers.create")[0].kwargs["device_requests"] == [
        DeviceRequest(device_ids=["1"], capabilities=[["gpu"]])]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ValueError, match="needs a GPU"):
        _train(ws, FakeDockerClient(present=(IMAGE,)))
    client = FakeDockerClient(present=(IMAGE,))
    _train(ws, client, val_scoring="status", gpus="all")
    assert client.named("containers.create")[0].kwargs["device_requests"] == [
        DeviceRequest(count=-1, capabilities=[["gpu"]])]


def test_embed_says_which_embedder_to_configure(ws: Path) -> None:
    with pytest.raises(TaoEmbedUnsupported, match=r"phase2\.mining_filter\.embedder: pixels"):
        _trainer(ws, FakeDockerClient()).embed(_spec(ws), None, pd.DataFrame(), images_dir=ws / "images")


def test_backbones_and_get_backend() -> None:
    trainer = get_backend("tao", image=IMAGE, shm_size="8g", gpus="auto", credentials=["NGC_KEY"],
                          anomalygen_image=None)
    assert isinstance(trainer, TaoTrainer) and trainer.name == "tao"
    assert trainer.default_backbone() == "c_radio_v2_vit_base_patch16_224"
    assert trainer.supports_backbone("fan_small_12_p4_hybrid") and trainer.supports_backbone("vit_large_nvdinov2")
    assert not trainer.supports_backbone("resnet18")


# -- pre-flight helpers -----------------------------------------------------------------------------

def test_docker_version_and_image_status() -> None:
    assert docker_version(FakeDockerClient()) == "27.3.1"
    assert docker_version(FakeDockerClient(engine_up=False)) is None
    assert image_status(FakeDockerClient(present=(IMAGE,)), IMAGE) == "PRESENT"
    assert image_status(FakeDockerClient(), IMAGE) == "MISSING"
    assert image_status(FakeDockerClient(engine_up=False), IMAGE) == "UNKNOWN"


def test_docker_version_without_an_engine_is_none(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The real SDK against a socket nothing listens on: pre-flight reports "no docker", never a traceback.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    assert docker_version(None) is None


def test_credential_status_is_set_unset_only(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = secrets.token_hex(8)
    monkeypatch.setenv("NGC_KEY", secret)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    status = credential_status(["NGC_KEY", "HF_TOKEN"])
    assert status == {"NGC_KEY": "SET", "HF_TOKEN": "UNSET"}
    assert secret not in repr(status)


AIRGAP = execution_policy("airgap", activation_source="test")
ONLINE = execution_policy("network-enabled", activation_source="test", allow_container_pull=True,
                          allow_registry_login=True)


def test_pull_only_when_policy_allows() -> None:
    client = FakeDockerClient()
    with pytest.raises(ContainerPolicyError, match="network_mode is airgap.*docker load"):
        pull_image(client, IMAGE, AIRGAP)
    # raypipe's old word: TAO's tools would read it as network-enabled, raypipe fails closed and says why
    with pytest.raises(ContainerPolicyError, match="network_mode is 'online', which raypipe reads as airgap"):
        pull_image(client, IMAGE, {"network_mode": "online", "allow_container_pull": True})
    with pytest.raises(ContainerPolicyError, match="allow_container_pull: true"):
        pull_image(client, IMAGE, execution_policy("network-enabled", activation_source="test"))
    assert client.named("images.pull") == []
    assert {c.name for c in client.calls} == {"images.get"}  # asking the local engine only
    assert pull_image(client, IMAGE, ONLINE) == "PULLED"
    pull = client.named("images.pull")
    assert [(c.args, c.kwargs) for c in pull] == [(("nvcr.io/nvidia/tao/tao-toolkit",), {"tag": "6.25.9-pyt"})]
    assert pull_image(client, IMAGE, AIRGAP) == "PRESENT"  # present: nothing to do, in any mode
    assert len(client.named("images.pull")) == 1


def test_registry_login_only_when_allowed_and_never_leaks(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = secrets.token_hex(16)
    monkeypatch.setenv("NGC_KEY", secret)
    client = FakeDockerClient()
    with pytest.raises(ContainerPolicyError, match="refused: execution_policy.network_mode is airgap"):
        registry_login(client, AIRGAP)
    with pytest.raises(ContainerPolicyError, match="allow_registry_login: true"):
        registry_login(client, execution_policy("network-enabled", activation_source="test"))
    assert client.calls == []  # refused before the engine is even asked
    assert registry_login(client, ONLINE) == "LOGGED_IN"
    assert client.named("login")[0].kwargs == {"username": "$oauthtoken", "password": secret, "registry": "nvcr.io"}
    failing = FakeDockerClient(login_error=f"unauthorized: bad key {secret}")
    with pytest.raises(ContainerPolicyError) as err:
        registry_login(failing, ONLINE)
    assert secret not in str(err.value) and "***" in str(err.value)
    monkeypatch.delenv("NGC_KEY")
    with pytest.raises(ContainerPolicyError, match="NGC_KEY \\(UNSET\\)"):
        registry_login(client, ONLINE)


def _bare_run(env: dict[str, str]) -> ContainerRun:
    # Not a visual_changenet command: the fake "container" exits 1 at once; only the SDK calls matter here.
    return ContainerRun(image=IMAGE, command=["true"], layout=ContainerLayout(), shm_size="8g", device_requests=[],
                        environment=env, user=None, labels={})


def test_airgapped_containers_run_with_taos_offline_variables(tmp_path: Path) -> None:
    client = FakeDockerClient(present=(IMAGE,))
    forwarded = {"TZ": "UTC", "HF_HUB_OFFLINE": "0"}  # a forwarded host value must not undo the air gap
    assert run_container(client, _bare_run(forwarded), tmp_path / "a.log", policy=AIRGAP) == 1
    assert client.named("containers.create")[0].kwargs["environment"] == {"TZ": "UTC"} | OFFLINE
    assert run_container(client, _bare_run(forwarded), tmp_path / "b.log", policy=ONLINE) == 1
    assert client.named("containers.create")[1].kwargs["environment"] == forwarded
    assert "HF_HUB_OFFLINE" in (tmp_path / "a.log").read_text()  # names in the log header, never values
    assert client.named("images.pull") == [] and client.named("login") == []


def test_missing_image_under_airgap_names_docker_load(ws: Path) -> None:
    client = FakeDockerClient(present=())
    with pytest.raises(ContainerPolicyError, match="MISSING.*airgap.*docker load"):
        _train(ws, client)
    assert client.named("containers.create") == [] and client.named("images.pull") == []


def test_image_gone_between_check_and_create_is_still_not_pulled(tmp_path: Path) -> None:
    client = FakeDockerClient(present=(IMAGE,))
    real_create = client.containers.create

    def vanish(image: str, command: object = None, **kwargs: object) -> object:
        client.present.discard(image)  # `docker rmi` by someone else after the presence check
        return real_create(image, command, **kwargs)

    client.containers.create = vanish  # type: ignore[method-assign,assignment]
    with pytest.raises(ContainerPolicyError, match="MISSING"):
        run_container(client, _bare_run({}), tmp_path / "c.log", policy=ONLINE)
    assert client.named("images.pull") == [] and client.named("container.start") == []


# -- backbone staging (TAO's layout: <ws>/augmentation/backbone/<file> -> /data/pretrained_models/<file>) ---

def _backbone_spec(value: str | None, btype: str = "c_radio_v2_vit_base_patch16_224", **extra: object) -> dict:
    return {"model": {"backbone": {"type": btype, "pretrained_backbone_path": value, **extra}}}


def test_tao_style_backbone_path_resolves_to_the_staged_file_and_mounts_read_only(ws: Path) -> None:
    staged = ws / "augmentation" / "backbone" / "c_radio_v2_b.safetensors"
    staged.parent.mkdir(parents=True)
    staged.write_bytes(b"radio")
    layout = ContainerLayout.for_workspace(ws, ws / "results" / RUN)
    spec = _backbone_spec("/data/pretrained_models/c_radio_v2_b.safetensors")
    assert layout.stage_backbone(spec) == "/data/pretrained_models/c_radio_v2_b.safetensors"
    target = PurePosixPath("/data/pretrained_models/c_radio_v2_b.safetensors")
    assert layout.mounts[-1] == MountPoint(staged.resolve(), target, True)
    found = find_staged_backbone(spec, ws)
    assert found is not None and found.weight_dir == staged.parent.resolve()  # config.backbone_weight_dir
    # a host path elsewhere is staged under its own name, at the same container directory
    other = ws / "backbone" / "c_radio_v2_b.safetensors"
    assert find_staged_backbone(_backbone_spec(str(other)), ws) == StagedBackbone(
        other.resolve(), PurePosixPath("/data/pretrained_models/c_radio_v2_b.safetensors"))
    assert backbone_blocker(spec, ws) is None and layout.stage_backbone(_backbone_spec(None)) is None


@pytest.mark.parametrize(("value", "message"), [
    (None, (r"names no backbone weights .*augmentation/backbone/c_radio_v2_b\.safetensors.*"
           r"pretrained_backbone_path: /data/pretrained_models/c_radio_v2_b\.safetensors")),
    ("", "names no backbone weights"),
    ("https://huggingface.co/nvidia/C-RADIOv2-B/model.safetensors", "no URL, no hub id"),
    ("nvidia/C-RADIOv2-B", "not a local"),
    ("/data/pretrained_models/missing.safetensors", r"not staged \(looked for .*augmentation/backbone/missing"),
])
def test_backbone_blocker_names_what_to_stage(ws: Path, value: str | None, message: str) -> None:
    blocker = backbone_blocker(_backbone_spec(value), ws)
    assert blocker is not None and re.search(message, blocker), blocker
    if value:
        with pytest.raises(BackboneError):
            ContainerLayout.for_workspace(ws, None).stage_backbone(_backbone_spec(value))


def test_unfrozen_dinov3_backbone_is_a_blocker(ws: Path) -> None:
    staged = ws / "augmentation" / "backbone" / "vit_large_dinov3.safetensors"
    staged.parent.mkdir(parents=True)
    staged.write_bytes(b"dino")
    spec = _backbone_spec("/data/pretrained_models/vit_large_dinov3.safetensors", "vit_large_dinov3")
    assert "freeze_backbone: true" in str(backbone_blocker(spec, ws))
    spec["model"]["backbone"]["freeze_backbone"] = True
    assert backbone_blocker(spec, ws) is None


def test_trainer_mounts_a_tao_style_backbone_from_the_workspace_staging_dir(ws: Path) -> None:
    """TAO's spec names ``/data/pretrained_models/<file>``; the file is the one staged in
    ``<ws>/augmentation/backbone/`` and goes into every container read-only."""
    staged = ws / "augmentation" / "backbone" / "c_radio_v2_b.safetensors"
    staged.parent.mkdir(parents=True)
    staged.write_bytes(b"radio")
    spec = _spec(ws)
    spec["model"]["backbone"]["pretrained_backbone_path"] = "/data/pretrained_models/c_radio_v2_b.safetensors"
    client = FakeDockerClient(present=(IMAGE,))
    rd = ws / "results" / RUN
    result = _trainer(ws, client, val_scoring="status").train(
        spec, ws / "train/base/training_set.csv", ws / "train/base/validation_set.csv", rd / "baseline" / "train",
        images_dir=ws / "images", seed=7)
    mounts = client.named("containers.create")[0].kwargs["mounts"]
    assert _mount("/data/pretrained_models/c_radio_v2_b.safetensors", staged, True) in mounts
    written = yaml.safe_load((result.out_dir / "experiment.yaml").read_text())
    assert written["model"]["backbone"]["pretrained_backbone_path"] == "/data/pretrained_models/c_radio_v2_b.safetensors"

    spec["model"]["backbone"]["pretrained_backbone_path"] = "/data/pretrained_models/not_staged.safetensors"
    with pytest.raises(BackboneError, match="not staged"):  # before any container: TAO would torch.load nothing
        _trainer(ws, client, val_scoring="status").train(
            spec, ws / "train/base/training_set.csv", ws / "train/base/validation_set.csv",
            rd / "iter1" / "train", images_dir=ws / "images", seed=7)
    assert len(client.named("containers.create")) == 1


def test_the_runs_execution_policy_reaches_every_container_through_the_trainer(ws: Path) -> None:
    from raypipe.config import load_config

    home = {} if os.getuid() == 0 else {"HOME": "/tmp"}
    for policy, env in ((ONLINE, home), (AIRGAP, OFFLINE | home)):
        cfg = load_config(None, ["backend=tao", "phase2.mining_filter.embedder=pixels", "tao.val_scoring=status"])
        options = backend_options(cfg, workspace_root=ws, run_dir=ws / "results" / RUN, execution_policy=policy)
        assert options["execution_policy"] == policy
        client = FakeDockerClient(present=(IMAGE,))
        trainer = get_backend("tao", **options, client=client)
        trainer.train(_spec(ws), ws / "train/base/training_set.csv", ws / "train/base/validation_set.csv",
                      ws / "results" / RUN / "baseline" / "train", images_dir=ws / "images", seed=7)
        assert client.named("containers.create")[0].kwargs["environment"] == env, policy["network_mode"]


# -- pre-flight lines of the execution policy -----------------------------------------------------

def test_preflight_lines_say_what_an_airgapped_run_will_not_do() -> None:
    lines = preflight_lines(AIRGAP, images={IMAGE: "MISSING", "other:1": "PRESENT"}, credentials={"NGC_KEY": "SET"},
                            endpoints={"tracking.tracking_uri": "https://mlflow.example:5000", "local": "sqlite:///x"})
    by = [(ln.section, ln.level, ln.text) for ln in lines]
    assert by[0][:2] == (1, "info") and "no image pull, no registry login and no network call" in by[0][2]
    assert (2, "info", "NGC_KEY: N/A (offline: no registry login)") in by
    assert (3, "blocker", f"{IMAGE}: MISSING and network_mode is airgap: load it with docker load") in by
    assert (3, "ok", "other:1: PRESENT") in by
    assert [t for s, lv, t in by if lv == "warn"] == [
        ("tracking.tracking_uri: https://mlflow.example:5000 is a network endpoint; with network_mode airgap it "
        "must lie inside the air gap")]


def test_preflight_lines_when_network_enabled() -> None:
    lines = preflight_lines(ONLINE, images={IMAGE: "MISSING"}, credentials={"NGC_KEY": "UNSET"},
                            endpoints={"tracking.tracking_uri": "https://mlflow.example:5000"})
    by = [(ln.section, ln.level, ln.text) for ln in lines]
    assert by == [(1, "info", ("network_mode: network-enabled (source: test): image pull allowed after approval; "
                              "registry login allowed after approval")),
                  (2, "warn", "NGC_KEY: UNSET"),
                  (3, "warn", f"{IMAGE}: MISSING (will be pulled after approval)")]
    no_pull = preflight_lines(execution_policy("network-enabled", activation_source="t"), images={IMAGE: "UNKNOWN"})
    assert no_pull[-1].level == "blocker" and "could not be asked" in no_pull[-1].text
