"""cluster.yaml and experiments/cluster.yaml, checked offline.

``cluster.yaml`` goes through Ray's own code path that ``ray up`` uses before touching a cloud:
``prepare_config`` (merges the AWS provider defaults; no network, no boto3) then
``validate_config`` (Ray's JSON schema + extra rules).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from raypipe.spec import flatten

ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _ray_up_check(cfg: dict[str, Any]) -> dict[str, Any]:
    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    return prepared


def test_cluster_yaml_passes_rays_own_validation() -> None:
    prepared = _ray_up_check(_load(ROOT / "cluster.yaml"))
    nodes = prepared["available_node_types"]
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] == "head"
    # Resources are declared, so scheduling does not depend on an EC2 instance-type lookup.
    assert nodes["head"]["resources"] == {"CPU": 4, "GPU": 0}
    assert nodes["gpu_worker"]["resources"]["GPU"] >= 1
    assert 1 <= nodes["gpu_worker"]["min_workers"] <= nodes["gpu_worker"]["max_workers"] <= prepared["max_workers"]


def test_cluster_yaml_installs_raypipe_mounts_shared_fs_and_uses_one_auth_mode() -> None:
    cfg = _load(ROOT / "cluster.yaml")
    setup = "\n".join(cfg["setup_commands"])
    assert "/mnt/shared" in setup and "nfs4" in setup
    assert "~/raypipe" in setup and cfg["file_mounts"]["~/raypipe"] == "."
    starts = cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]
    ray_starts = [c for c in starts if "ray start" in c]
    assert len(ray_starts) == 2 and all("RAY_AUTH_MODE=token" in c for c in ray_starts)
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert "docker" not in cfg  # Ray on the host: the TAO backend drives the node's Docker engine


@pytest.mark.parametrize("mutate, error", [
    (lambda c: c.__setitem__("max_wrokers", 4), jsonschema.ValidationError),  # typo'd top-level key
    (lambda c: c["available_node_types"]["gpu_worker"].__setitem__("min_worker", 1), jsonschema.ValidationError),
    (lambda c: c.__setitem__("head_node_type", "ray.head.default"), ValueError),  # head type not declared
])
def test_cluster_yaml_typos_are_rejected(mutate: Any, error: type[Exception]) -> None:
    cfg = _load(ROOT / "cluster.yaml")
    mutate(cfg)
    with pytest.raises(error):
        _ray_up_check(cfg)


def test_experiments_cluster_yaml_uses_only_known_keys_and_shared_paths() -> None:
    from raypipe.config import load_config

    defaults = flatten(_load(ROOT / "raypipe" / "defaults.yaml"))
    cfg = _load(ROOT / "experiments" / "cluster.yaml")
    unknown = sorted(set(flatten(cfg)) - set(defaults))
    assert unknown == [], f"keys not in raypipe/defaults.yaml (the config loader refuses them): {unknown}"
    merged = load_config(ROOT / "experiments" / "cluster.yaml")  # the loader `raypipe.run --config` uses
    assert merged.automl.resources_per_trial.as_dict() == {"cpu": 8.0, "gpu": 1.0}
    assert cfg["ray_address"] == "auto"
    assert cfg["workspace"].startswith("/mnt/shared/") and cfg["storage_path"].startswith("/mnt/shared/")
    assert cfg["automl"]["resources_per_trial"]["gpu"] > 0 and cfg["phase2"]["resources"]["train"]["gpu"] >= 1
    # the tracking server cluster.yaml starts is the one the pipeline logs to
    head_cmds = "\n".join(_load(ROOT / "cluster.yaml")["head_start_ray_commands"])
    assert "--port 5000" in head_cmds and cfg["tracking"]["tracking_uri"] == "http://raypipe-head:5000"
