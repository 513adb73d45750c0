"""NVIDIA TAO container backend (``backend: tao``).

Runs ``visual_changenet {train,inference,evaluate} -e <spec>`` in the TAO PyTorch container via
the docker SDK, with the workspace, run dir, image root, base CSVs, KPI dir and backbone file
bind-mounted and every spec path rewritten to its container path.

Testing note: no Docker engine runs on the development/CI machines, so this backend is tested by
checking the exact docker SDK calls it makes (image, argv, mounts, shm_size, device requests,
environment) against a recording fake client that also writes the files a real TAO run writes
(tests/backends/test_tao.py). See docs/tao_backend.md.
"""

from raypipe.backends.tao._docker import (
    ContainerPolicyError,
    ContainerRun,
    PreflightLine,
    credential_status,
    device_requests,
    docker_version,
    image_status,
    preflight_lines,
    pull_image,
    registry_login,
    run_container,
)
from raypipe.backends.tao._layout import (
    CONTAINER_BACKBONE,
    CONTAINER_RESULTS,
    CONTAINER_WORKSPACE,
    ContainerLayout,
    ContainerPathError,
    MountPoint,
    StagedBackbone,
    backbone_blocker,
    find_staged_backbone,
)
from raypipe.backends.tao._trainer import (
    DEFAULT_BACKBONE,
    DEFAULT_IMAGE,
    TaoEmbedUnsupported,
    TaoTrainer,
)
from raypipe.tao_interop import BackboneError

__all__ = [
    "CONTAINER_BACKBONE",
    "CONTAINER_RESULTS",
    "CONTAINER_WORKSPACE",
    "DEFAULT_BACKBONE",
    "DEFAULT_IMAGE",
    "BackboneError",
    "ContainerLayout",
    "ContainerPathError",
    "ContainerPolicyError",
    "ContainerRun",
    "MountPoint",
    "PreflightLine",
    "StagedBackbone",
    "TaoEmbedUnsupported",
    "TaoTrainer",
    "backbone_blocker",
    "credential_status",
    "device_requests",
    "docker_version",
    "find_staged_backbone",
    "image_status",
    "preflight_lines",
    "pull_image",
    "registry_login",
    "run_container",
]
