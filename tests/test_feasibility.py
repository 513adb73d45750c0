"""Can the cluster ever run each trial and stage: against nodes and autoscaler node types."""

from __future__ import annotations

from pathlib import Path

import yaml

from raypipe.feasibility import Demand, NodeShape, autoscaler_node_types, check, node_types_from_launcher_config

CPU_NODE = NodeShape("10.0.0.1", cpu=2, gpu=0)
GPU_NODE = NodeShape("10.0.0.2", cpu=8, gpu=2)
TRIAL = Demand("automl.resources_per_trial", 1, 0)


def _levels(findings: list) -> list[str]:
    return [f.level for f in findings]


def test_a_demand_that_fits_a_node_is_fine() -> None:
    assert check([TRIAL, Demand("phase2.resources.train", 4, 1)], [CPU_NODE, GPU_NODE], []) == []


def test_no_node_and_no_autoscaler_is_a_blocker_naming_the_key() -> None:
    (f,) = check([Demand("automl.resources_per_trial", 1, 99)], [CPU_NODE], [])
    assert f.level == "blocker"
    assert "automl.resources_per_trial {cpu: 1, gpu: 99}" in f.text and "cpu=2, gpu=0" in f.text
    assert "cannot add nodes" in f.text


def test_a_node_type_the_autoscaler_can_add_makes_it_a_warning() -> None:
    types = [NodeShape("node type gpu_worker", 8, 4)]
    (f,) = check([Demand("phase2.resources.train", 1, 1)], [CPU_NODE], types)
    assert f.level == "warn" and "gpu_worker" in f.text and "waits until it has" in f.text
    (g,) = check([Demand("phase2.resources.train", 1, 8)], [CPU_NODE], types)
    assert g.level == "blocker" and "gpu_worker" in g.text


def test_unknown_node_types_are_a_warning_not_a_blocker() -> None:
    (f,) = check([Demand("phase2.resources.train", 1, 1)], [CPU_NODE], None)
    assert f.level == "warn" and "not visible from here" in f.text


def test_concurrency_beyond_what_fits_is_a_warning_with_the_real_number() -> None:
    (f,) = check([TRIAL], [CPU_NODE], [], trial=TRIAL, max_concurrent_trials=4)
    assert f.level == "warn" and "fits 2 trial(s)" in f.text
    # half-GPU trials: two per GPU, limited by the GPUs (4 on GPU_NODE), not its 8 CPUs
    half = Demand("automl.resources_per_trial", 1, 0.5)
    (g,) = check([half], [CPU_NODE, GPU_NODE], [], trial=half, max_concurrent_trials=6)
    assert "fits 4 trial(s)" in g.text
    assert check([TRIAL], [CPU_NODE], [], trial=TRIAL, max_concurrent_trials=2) == []


def test_node_types_from_a_cluster_launcher_config(tmp_path: Path) -> None:
    config = {"available_node_types": {
        "head": {"resources": {"CPU": 4}, "max_workers": 0},
        "gpu_worker": {"resources": {"CPU": 8, "GPU": 1}, "min_workers": 0, "max_workers": 3}}}
    assert node_types_from_launcher_config(config) == [NodeShape("node type gpu_worker", 8, 1)]
    bootstrap = tmp_path / "ray_bootstrap_config.yaml"
    assert autoscaler_node_types(private=False, bootstrap=bootstrap) is None  # not on a launcher's head node
    bootstrap.write_text(yaml.safe_dump(config))
    assert autoscaler_node_types(private=False, bootstrap=bootstrap) == [NodeShape("node type gpu_worker", 8, 1)]
    assert autoscaler_node_types(private=True, bootstrap=bootstrap) == []  # a private local Ray never scales
