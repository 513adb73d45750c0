"""Docker engine access for the TAO backend: running one container, and the pre-flight helpers.

Everything goes through the docker SDK (``docker.DockerClient``); no shell, no ``docker`` CLI.
Secrets: only SET/UNSET is ever reported. No secret *value* is put into a container's
environment — the SDK can only pass a variable together with its value, which would then be
readable with ``docker inspect`` — and TAO's train/inference/evaluate need no NGC key at run time
(only the image pull does, on the host, through :func:`registry_login`).

The execution policy (``deft_state.json``'s ``execution_policy``, in TAO's words) decides what may
touch the network. Under ``network_mode: airgap`` nothing here pulls, logs in or reaches a
registry — those functions refuse before they talk to the engine — and every container runs with
TAO's offline variables. Containers are created and started rather than ``containers.run``: the
SDK's ``run`` pulls a missing image by itself, behind the policy's back.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from raypipe.backends.base import TrainingError
from raypipe.backends.tao._layout import ContainerLayout
from raypipe.tao_interop import airgapped, allows, offline_environment, policy_summary

ImageState = Literal["PRESENT", "MISSING", "UNKNOWN"]

# Names that must never be forwarded into a container's environment by value.
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH)", re.IGNORECASE)

# NVIDIA's recommended limits for PyTorch containers (pinned memory, deep recursion in data loaders).
ULIMITS = (("memlock", -1, -1), ("stack", 67108864, 67108864))


class ContainerPolicyError(RuntimeError):
    """The execution policy forbids an action (pull, login) that is needed; the message says what to set."""


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def docker_client(client: Any | None = None) -> Any:
    """``client`` or ``docker.from_env()`` (imported lazily: the docker SDK loads only when used)."""
    if client is not None:
        return client
    import docker

    return docker.from_env()


def docker_version(client: Any | None = None) -> str | None:
    """Engine version (``"27.3.1"``), or None when no engine answers (pre-flight marks a BLOCKER)."""
    try:
        info = docker_client(client).version()
    except Exception:  # any failure to reach the engine means "no docker" for pre-flight
        return None
    version = info.get("Version") if isinstance(info, Mapping) else None
    return str(version) if version else None


def image_status(client: Any, image: str) -> ImageState:
    """PRESENT / MISSING locally; UNKNOWN when the engine cannot be asked."""
    import docker.errors

    try:
        docker_client(client).images.get(image)
    except docker.errors.ImageNotFound:
        return "MISSING"
    except Exception:  # engine down or unreachable
        return "UNKNOWN"
    return "PRESENT"


def credential_status(names: Iterable[str]) -> dict[str, str]:
    """``{name: "SET" | "UNSET"}`` for each variable; never a value."""
    return {name: "SET" if os.environ.get(name) else "UNSET" for name in names}


def _policy(policy: Any, key: str, default: Any) -> Any:
    if isinstance(policy, Mapping):
        return policy.get(key, default)
    return getattr(policy, key, default)


def _airgap_reason(policy: Mapping[str, Any] | None) -> str:
    """Why raypipe treats the run as air-gapped, naming a value that is not one of TAO's two words."""
    mode = policy.get("network_mode") if isinstance(policy, Mapping) else None
    if mode == "airgap":
        return "execution_policy.network_mode is airgap"
    return (f"execution_policy.network_mode is {mode!r}, which raypipe reads as airgap (TAO's words: airgap | "
            "network-enabled)")


def pull_image(client: Any, image: str, policy: Mapping[str, Any] | None) -> str:
    """Make ``image`` present: ``"PRESENT"`` (no pull needed) or ``"PULLED"``.

    Only after the gate, and only when the policy is ``network-enabled`` with
    ``allow_container_pull: true``; otherwise a missing image is a :class:`ContainerPolicyError`
    that says how to provide it. Asking the local engine whether the image is there is no network
    call, so it happens in every mode.
    """
    from docker.utils import parse_repository_tag

    client = docker_client(client)
    if image_status(client, image) == "PRESENT":
        return "PRESENT"
    if airgapped(policy):
        raise ContainerPolicyError(
            f"container image {image} is MISSING and {_airgap_reason(policy)}: raypipe pulls "
            f"nothing; load it into this Docker engine yourself (docker save on a connected machine, then "
            f"docker load -i <file>)")
    if not allows(policy, "container_pull"):
        raise ContainerPolicyError(
            f"container image {image} is MISSING and the execution policy does not allow pulling it: set "
            f"execution_policy.allow_container_pull: true, or pull it yourself (docker pull {image})")
    repository, tag = parse_repository_tag(image)
    client.images.pull(repository, tag=tag or "latest")
    return "PULLED"


def registry_login(client: Any, policy: Mapping[str, Any] | None, *, registry: str = "nvcr.io",
                   username: str = "$oauthtoken", password_env: str = "NGC_KEY") -> str:
    """Log the engine into ``registry`` with the key in ``$password_env`` (NGC: user ``$oauthtoken``).

    Only when the policy is ``network-enabled`` with ``allow_registry_login: true``; otherwise it
    refuses before touching the engine or reading the key. The key goes to the engine only; it
    appears in no return value, message or log.
    """
    if airgapped(policy):
        raise ContainerPolicyError(f"registry login to {registry} refused: {_airgap_reason(policy)}")
    if not allows(policy, "registry_login"):
        raise ContainerPolicyError(
            f"registry login to {registry} is not allowed by the execution policy: set "
            f"execution_policy.allow_registry_login: true, or log in yourself (docker login {registry})")
    secret = os.environ.get(password_env)
    if not secret:
        raise ContainerPolicyError(f"registry login to {registry} needs {password_env} (UNSET)")
    try:
        docker_client(client).login(username=username, password=secret, registry=registry)
    except Exception as exc:  # re-raised without the secret
        text = str(exc).replace(secret, "***")
        raise ContainerPolicyError(f"registry login to {registry} as {username} failed: {text}") from None
    return "LOGGED_IN"


def device_requests(gpus: Any) -> list[Any]:
    """GPU ``DeviceRequest``s for ``gpus``: ``"auto"`` | ``"all"`` | ``"none"`` | ``"0,1"`` | [ids] | count.

    ``auto`` follows ``CUDA_VISIBLE_DEVICES`` when it is set — Ray sets it to the GPUs it assigned
    to this trial/task, so containers of trials sharing a node do not all grab every GPU — and
    requests all GPUs otherwise.
    """
    from docker.types import DeviceRequest

    if gpus in (None, "none", 0, False):
        return []
    if gpus == "auto":
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is None:
            gpus = "all"
        elif not visible.strip():
            raise ValueError(
                "the TAO backend needs a GPU but this process was given none (CUDA_VISIBLE_DEVICES is "
                "empty, as Ray sets it for tasks without GPU resources): request gpu > 0 in "
                "automl.resources_per_trial / phase2.resources.train")
        else:
            gpus = [d.strip() for d in visible.split(",") if d.strip()]
    if gpus == "all":
        return [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    if isinstance(gpus, int):
        return [DeviceRequest(count=gpus, capabilities=[["gpu"]])]
    if isinstance(gpus, str):
        gpus = [d.strip() for d in gpus.split(",") if d.strip()]
    return [DeviceRequest(device_ids=[str(d) for d in gpus], capabilities=[["gpu"]])]


@dataclass(frozen=True)
class ContainerRun:
    """What one container gets (``containers.create``); also written at the top of the task's log."""

    image: str
    command: list[str]
    layout: ContainerLayout
    shm_size: str
    device_requests: list[Any]
    environment: dict[str, str]
    user: str | None
    labels: dict[str, str]

    def under_policy(self, policy: Mapping[str, Any] | None) -> ContainerRun:
        """This run with TAO's offline variables set when the policy is air-gapped (they win over
        any forwarded host variable of the same name)."""
        offline = offline_environment(policy, container=True)
        return replace(self, environment={**self.environment, **offline}) if offline else self

    def header(self) -> str:
        lines = [f"# image: {self.image}", f"# command: {' '.join(self.command)}",
                 f"# shm_size: {self.shm_size}", f"# user: {self.user or '(image default)'}",
                 f"# gpus: {[dict(d) for d in self.device_requests]}",
                 # names only: the log is an artifact (MLflow), values have no business there
                 f"# environment (names): {sorted(self.environment)}"]
        lines += [f"# mount: {m}" for m in self.layout.describe()]
        return "\n".join(lines) + "\n"


def _missing_image(image: str, state: str, policy: Mapping[str, Any] | None) -> ContainerPolicyError:
    how = (f"{_airgap_reason(policy)}: load it yourself (docker load -i <file>)" if airgapped(policy)
           else "it is pulled only after the pre-flight gate and only when execution_policy allows "
                f"(network_mode: network-enabled, allow_container_pull: true), or pull it yourself (docker pull {image})")
    return ContainerPolicyError(f"container image {image} is {state} on this Docker engine; {how}")


def run_container(client: Any, run: ContainerRun, log_path: Path, policy: Mapping[str, Any] | None = None) -> int:
    """Run to completion, streaming logs into ``log_path``; return the exit code; always remove it.

    ``shm_size`` (not ``ipc=host``) gives PyTorch data-loader workers their shared memory without
    sharing the host's IPC namespace. The container is removed in ``finally`` — also when this
    process is interrupted (Ray cancelling a trial), so no orphan keeps a GPU busy. ``policy``: the
    run's execution policy (air-gapped when None: the safe reading).
    """
    import docker.errors
    from docker.types import Ulimit

    client = docker_client(client)
    run = run.under_policy(policy)
    state = image_status(client, run.image)
    if state != "PRESENT":
        raise _missing_image(run.image, state, policy)
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as fh:
        fh.write(run.header())

    def failed_to_start(exc: Exception) -> TrainingError:  # e.g. no NVIDIA runtime for the GPU request
        with open(log_path, "a", encoding="utf-8") as fh:
            fh.write(f"docker could not start the container: {exc}\n")
        return TrainingError(f"docker could not start {run.image} ({' '.join(run.command[:2])}): {exc}; "
                             f"log: {log_path}")

    try:
        # create + start, never containers.run: run() pulls a missing image by itself.
        container = client.containers.create(
            run.image,
            command=list(run.command),
            mounts=run.layout.docker_mounts(),
            shm_size=run.shm_size,
            device_requests=list(run.device_requests),
            environment=dict(run.environment),
            user=run.user,
            ulimits=[Ulimit(name=n, soft=s, hard=h) for n, s, h in ULIMITS],
            labels=dict(run.labels),
        )
    except docker.errors.ImageNotFound:  # removed since the check above: still no implicit pull
        raise _missing_image(run.image, "MISSING", policy) from None
    except docker.errors.DockerException as exc:
        raise failed_to_start(exc) from None
    try:
        try:
            container.start()
        except docker.errors.DockerException as exc:
            raise failed_to_start(exc) from None
        with open(log_path, "ab") as out:
            for chunk in container.logs(stream=True, follow=True):
                out.write(chunk if isinstance(chunk, bytes) else str(chunk).encode())
                out.flush()
        status = container.wait()
        return int(status.get("StatusCode", -1)) if isinstance(status, Mapping) else int(status)
    finally:
        try:
            container.remove(force=True)
        except Exception:  # already gone; nothing else to clean up
            pass


# -- pre-flight -----------------------------------------------------------------------------------

PreflightLevel = Literal["info", "ok", "warn", "blocker"]


@dataclass(frozen=True)
class PreflightLine:
    """One line of the pre-flight summary: its section (1 platform, 2 credentials, 3 images) and level."""

    section: int
    level: PreflightLevel
    text: str


def preflight_lines(policy: Mapping[str, Any], *, images: Mapping[str, ImageState] | None = None,
                    credentials: Mapping[str, str] | None = None,
                    endpoints: Mapping[str, str | None] | None = None) -> list[PreflightLine]:
    """What the execution policy means for this run, as pre-flight lines (no engine or network call).

    ``images``: image → its :func:`image_status`; ``credentials``: name → SET/UNSET
    (:func:`credential_status`); ``endpoints``: config key → URI raypipe will talk to (e.g.
    ``tracking.tracking_uri``). Air-gapped: credentials are not used (TAO records them as
    "N/A (offline)"), a missing image is a BLOCKER (nothing will pull it), and an http(s) endpoint
    is flagged: it must lie inside the air gap.
    """
    offline = airgapped(policy)
    out = [PreflightLine(1, "info", policy_summary(policy))]
    for name, state in (credentials or {}).items():
        if offline:
            out.append(PreflightLine(2, "info", f"{name}: N/A (offline: no registry login)"))
        else:
            out.append(PreflightLine(2, "ok" if state == "SET" else "warn", f"{name}: {state}"))
    for image, state in (images or {}).items():
        line = f"{image}: {state}"
        if state == "PRESENT":
            out.append(PreflightLine(3, "ok", line))
        elif state == "UNKNOWN":
            out.append(PreflightLine(3, "blocker", line + " (the Docker engine could not be asked)"))
        elif offline:
            out.append(PreflightLine(3, "blocker", line + " and network_mode is airgap: load it with docker load"))
        elif allows(policy, "container_pull"):
            out.append(PreflightLine(3, "warn", line + " (will be pulled after approval)"))
        else:
            out.append(PreflightLine(3, "blocker", line + " and execution_policy.allow_container_pull is false"))
    for key, uri in (endpoints or {}).items():
        if offline and uri and str(uri).lower().startswith(("http://", "https://")):
            out.append(PreflightLine(1, "warn", f"{key}: {uri} is a network endpoint; with network_mode airgap it "
                                                "must lie inside the air gap"))
    return out
