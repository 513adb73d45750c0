"""A recording fake of the subset of ``docker.DockerClient`` the TAO backend uses.

No Docker engine runs on the dev/CI machines, so the TAO backend is tested by recording the exact
SDK calls it makes. Like the real SDK, ``containers.create`` of a missing image raises
``ImageNotFound``; ``containers.run`` (which would pull it implicitly) fails the test outright.
The fake also *acts* like TAO's ``visual_changenet`` so the rest of the code path is real: it
reads the spec through the recorded bind mounts (a path no mount covers, or a write into a
read-only mount, fails the "container" as it would in Docker), checks that every image file of
every row exists through the mounts, and writes what TAO writes: JSONL ``status.json``,
zero-based ``model_epoch_<EEE>_step_<SSS>.pth`` files plus a ``*_latest.pth`` link, and
``inference.csv`` (input rows + ``siamese_score``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import docker.errors
import pandas as pd
import yaml


@dataclass
class Call:
    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class ContainerFailed(Exception):
    """What would make the real process in the container exit non-zero."""


def default_score(ckpt_name: str, row: dict[str, str]) -> float:
    return 0.1 if str(row["label"]).strip().upper() == "PASS" else 0.9


@dataclass
class FakeTao:
    """Knobs for what the simulated ``visual_changenet`` does."""

    exit_code: int | None = None  # force this exit code (with a log line) for every run
    fail_status_message: str | None = None  # exit 0 but write a FAILURE record
    write_checkpoints: bool = True
    val_losses: list[float] | None = None  # per validation event
    score: Callable[[str, dict[str, str]], float] = default_score
    log_line: str = "visual_changenet: done"
    runs: list[dict[str, Any]] = field(default_factory=list)  # parsed spec + argv of every run


class FakeContainer:
    """A created container; ``start`` runs the simulated ``visual_changenet`` against its mounts."""

    def __init__(self, client: FakeDockerClient, command: list[str], mounts: list[Any]) -> None:
        self._client, self._command, self._mounts = client, command, mounts
        self._logs: list[bytes] = []
        self._exit_code = -1

    def start(self, **kwargs: Any) -> None:
        self._client.calls.append(Call("container.start", (), kwargs))
        if self._client.run_error:
            raise docker.errors.APIError(self._client.run_error)
        tao = self._client.tao
        sim = _Simulation(self._mounts, tao, self._client.last_environment)
        try:
            sim.execute(self._command)
            self._exit_code = 0 if tao.exit_code is None else tao.exit_code
            self._logs = [f"{line}\n".encode() for line in sim.log] + [f"{tao.log_line}\n".encode()]
            if self._exit_code:
                self._logs.append(b"RuntimeError: CUDA out of memory (simulated)\n")
        except ContainerFailed as exc:
            self._exit_code = 1
            self._logs = [f"{line}\n".encode() for line in sim.log] + [f"Error: {exc}\n".encode()]

    def logs(self, **kwargs: Any) -> Any:
        self._client.calls.append(Call("container.logs", (), kwargs))
        return iter(self._logs) if kwargs.get("stream") else b"".join(self._logs)

    def wait(self, **kwargs: Any) -> dict[str, Any]:
        self._client.calls.append(Call("container.wait", (), kwargs))
        return {"StatusCode": self._exit_code, "Error": None}

    def remove(self, **kwargs: Any) -> None:
        self._client.calls.append(Call("container.remove", (), kwargs))


class FakeContainers:
    def __init__(self, client: FakeDockerClient) -> None:
        self._client = client

    def create(self, image: str, command: Any = None, **kwargs: Any) -> FakeContainer:
        """Like the SDK's ``create``: a missing image is ``ImageNotFound``, never a pull."""
        self._client.calls.append(Call("containers.create", (image,), dict(kwargs, command=command)))
        if image not in self._client.present:
            raise docker.errors.ImageNotFound(f"No such image: {image}")
        self._client.last_environment = dict(kwargs.get("environment") or {})
        return FakeContainer(self._client, list(command), kwargs.get("mounts") or [])

    def run(self, image: str, command: Any = None, **kwargs: Any) -> FakeContainer:
        raise AssertionError("containers.run pulls a missing image by itself (behind the execution policy); "
                             "the backend must use containers.create + container.start")


class FakeImages:
    def __init__(self, client: FakeDockerClient) -> None:
        self._client = client

    def get(self, name: str) -> Any:
        self._client.calls.append(Call("images.get", (name,), {}))
        if not self._client.engine_up:
            raise docker.errors.DockerException("Error while fetching server API version (simulated)")
        if name not in self._client.present:
            raise docker.errors.ImageNotFound(f"No such image: {name}")
        return {"Id": "sha256:fake", "RepoTags": [name]}

    def pull(self, repository: str, tag: str | None = None, **kwargs: Any) -> Any:
        self._client.calls.append(Call("images.pull", (repository,), dict(kwargs, tag=tag)))
        self._client.present.add(f"{repository}:{tag}")
        return {"Id": "sha256:pulled"}


class FakeDockerClient:
    def __init__(self, present: tuple[str, ...] = (), *, engine_up: bool = True, tao: FakeTao | None = None,
                 login_error: str | None = None, run_error: str | None = None) -> None:
        self.calls: list[Call] = []
        self.run_error = run_error
        self.present = set(present)
        self.engine_up = engine_up
        self.tao = tao or FakeTao()
        self.last_environment: dict[str, str] = {}
        self.login_error = login_error
        self.containers = FakeContainers(self)
        self.images = FakeImages(self)

    def version(self) -> dict[str, Any]:
        self.calls.append(Call("version", (), {}))
        if not self.engine_up:
            raise docker.errors.DockerException("Error while fetching server API version (simulated)")
        return {"Version": "27.3.1", "ApiVersion": "1.47"}

    def login(self, username: str, password: str | None = None, email: str | None = None,
              registry: str | None = None, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(Call("login", (), dict(kwargs, username=username, password=password, registry=registry)))
        if self.login_error:
            raise docker.errors.APIError(self.login_error)
        return {"Status": "Login Succeeded"}

    def named(self, name: str) -> list[Call]:
        return [c for c in self.calls if c.name == name]


class _Simulation:
    """The part of ``visual_changenet`` the backend depends on, run against the bind mounts."""

    def __init__(self, mounts: list[Any], tao: FakeTao, environment: dict[str, str]) -> None:
        self.mounts = [(PurePosixPath(m["Target"]), Path(m["Source"]), bool(m.get("ReadOnly"))) for m in mounts]
        self.tao = tao
        self.environment = environment
        self.log: list[str] = []

    def host(self, container_path: str, *, write: bool = False) -> Path:
        cp = PurePosixPath(container_path)
        best = None
        for target, source, ro in self.mounts:
            if cp == target or target in cp.parents:
                if best is None or len(target.parts) > len(best[0].parts):
                    best = (target, source, ro)
        if best is None:
            raise ContainerFailed(f"FileNotFoundError: {container_path} (not mounted)")
        if write and best[2]:
            raise ContainerFailed(f"OSError: [Errno 30] Read-only file system: '{container_path}'")
        return best[1].joinpath(*cp.relative_to(best[0]).parts)

    def read_file(self, container_path: str) -> Path:
        p = self.host(container_path)
        if not p.is_file():
            raise ContainerFailed(f"FileNotFoundError: {container_path}")
        return p

    def execute(self, argv: list[str]) -> None:
        if argv[:1] != ["visual_changenet"] or len(argv) < 4 or argv[2] != "-e":
            raise ContainerFailed(f"usage: visual_changenet <subtask> -e <spec> [overrides]; got {argv}")
        task = argv[1]
        spec = yaml.safe_load(self.read_file(argv[3]).read_text())
        for forbidden in ("automl_policy", "workflow"):
            if forbidden in spec:
                raise ContainerFailed(f"hydra: key '{forbidden}' is not in the schema")
        for override in argv[4:]:
            key, _, value = override.partition("=")
            node = spec
            parts = key.split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = yaml.safe_load(value)
        self.tao.runs.append({"task": task, "argv": argv, "spec": spec, "environment": dict(self.environment)})
        if task == "train":
            self.train(spec)
        elif task in ("inference", "evaluate"):
            self.predict(spec, task)
        else:
            raise ContainerFailed(f"unknown subtask {task}")

    def rows(self, spec: dict[str, Any], key: str) -> tuple[pd.DataFrame, str]:
        ds = spec["dataset"]["classify"][key]
        df = pd.read_csv(self.read_file(ds["csv_path"]), dtype=str, keep_default_na=False)
        cls = spec["dataset"]["classify"]
        lights = sorted(cls["input_map"], key=lambda k: cls["input_map"][k])
        for i, row in enumerate(df.to_dict("records"), start=1):
            for col in ("input_path", "golden_path"):
                for light in lights:
                    base = PurePosixPath(row[col])
                    base = base if base.is_absolute() else PurePosixPath(ds["images_dir"]) / base
                    self.read_file(str(base / f"{row['object_name']}_{light}{cls['image_ext']}"))
        return df, ds["csv_path"]

    def status_writer(self, results_dir: str) -> Callable[[dict[str, Any]], None]:
        out = self.host(results_dir, write=True)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "status.json"

        def write(rec: dict[str, Any]) -> None:
            with open(path, "a") as fh:
                fh.write(json.dumps(dict(rec, date="1/1/2026", time="0:0:0", verbosity="INFO")) + "\n")
        return write

    def train(self, spec: dict[str, Any]) -> None:
        tr = spec["train"]
        results_dir = tr.get("results_dir") or spec["results_dir"]
        out = self.host(results_dir, write=True)
        out.mkdir(parents=True, exist_ok=True)
        if list(out.glob("model_epoch_*_step_*.pth")):  # TAO's get_latest_checkpoint → silent resume
            raise AssertionError(f"stale checkpoints in {out}: TAO would resume from them")
        n_train = len(self.rows(spec, "train_dataset")[0])
        self.rows(spec, "validation_dataset")
        if n_train == 0:  # TAO's monitor_status writes FAILURE with the exception, then exits 1
            self.status_writer(results_dir)({"status": "FAILURE", "message": "ValueError: empty training set"})
            raise ContainerFailed("ValueError: empty training set")
        if tr.get("pretrained_model_path"):
            self.read_file(tr["pretrained_model_path"])
        if spec["model"]["backbone"].get("pretrained_backbone_path"):
            self.read_file(spec["model"]["backbone"]["pretrained_backbone_path"])
        epochs, ck_int = int(tr["num_epochs"]), int(tr.get("checkpoint_interval", 1))
        val_int = int(tr.get("validation_interval", 1))
        assert ck_int <= epochs and val_int <= epochs, "TAO asserts intervals <= num_epochs"
        steps = math.ceil(n_train / int(spec["dataset"]["classify"]["batch_size"]))
        status = self.status_writer(results_dir)
        status({"status": "STARTED", "message": "Starting Training Loop."})
        n_val = 0
        last = None
        for e in range(epochs):  # Lightning's zero-based current_epoch
            if (e + 1) % val_int == 0:
                loss = self.tao.val_losses[n_val] if self.tao.val_losses else 1.0 / (e + 1)
                n_val += 1
                status({"status": "RUNNING", "message": "Eval metrics generated.",
                        "kpi": {"val_loss": loss, "val_acc": 0.5, "val_fpr": 0.1}})
            status({"status": "RUNNING", "message": "Training loop in progress", "epoch": e + 1,
                    "max_epoch": epochs})
            status({"status": "RUNNING", "message": "Train metrics generated.",
                    "kpi": {"train_loss": 2.0 / (e + 1), "train_acc": 0.5, "train_fpr": 0.1}})
            if self.tao.write_checkpoints and (e + 1) % ck_int == 0:
                last = out / f"model_epoch_{e:03d}_step_{(e + 1) * steps:05d}.pth"
                last.write_bytes(f"fake weights epoch {e} init={tr.get('pretrained_model_path')}".encode())
            self.log.append(f"Epoch {e}: train_loss={2.0 / (e + 1):.3f}")
        if last is not None:
            link = out / "changenet_model_classify_latest.pth"
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(last.name)
        if self.tao.fail_status_message:
            status({"status": "FAILURE", "message": self.tao.fail_status_message})
        else:
            status({"status": "SUCCESS", "message": "Train finished successfully."})

    def predict(self, spec: dict[str, Any], task: str) -> None:
        key = "infer_dataset" if task == "inference" else "test_dataset"
        ckpt = spec[task]["checkpoint"]
        self.read_file(ckpt)
        df, _ = self.rows(spec, key)
        results_dir = spec[task].get("results_dir") or spec["results_dir"]
        status = self.status_writer(results_dir)
        status({"status": "STARTED", "message": f"Starting {task}."})
        if task == "inference":
            name = PurePosixPath(ckpt).name
            df["siamese_score"] = [self.tao.score(name, r) for r in df.to_dict("records")]
            df.to_csv(self.host(results_dir, write=True) / "inference.csv", index=False)
        else:
            status({"status": "RUNNING", "message": "Test metrics generated.",
                    "kpi": {"test_acc": 0.75, "test_fpr": 0.25, "test_fnr": 0.0, "defect_acc": 1.0}})
        if self.tao.fail_status_message:
            status({"status": "FAILURE", "message": self.tao.fail_status_message})
        else:
            status({"status": "SUCCESS", "message": f"{task} finished successfully."})
