"""NVIDIA TAO container backend (``backend: tao``, SPEC §10).

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
    credential_status,
    device_requests,
    docker_version,
    image_status,
    pull_image,
    registry_login,
    run_container,
)
from raypipe.backends.tao._layout import (
    CONTAINER_RESULTS,
    CONTAINER_WORKSPACE,
    ContainerLayout,
    ContainerPathError,
    MountPoint,
)
from raypipe.backends.tao._trainer import DEFAULT_BACKBONE, DEFAULT_IMAGE, TaoEmbedUnsupported, TaoTrainer

__all__ = [
    "CONTAINER_RESULTS", "CONTAINER_WORKSPACE", "ContainerLayout", "ContainerPathError", "ContainerPolicyError",
    "ContainerRun", "DEFAULT_BACKBONE", "DEFAULT_IMAGE", "MountPoint", "TaoEmbedUnsupported", "TaoTrainer",
    "credential_status", "device_requests", "docker_version", "image_status", "pull_image", "registry_login",
    "run_container",
]
