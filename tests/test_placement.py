"""``raypipe.placement``: one JSON line per Ray task / trial saying where it ran and with what.

A real local Ray with two declared (fake) GPUs: the records must carry the resources Ray assigned
(fractional GPUs included) and the GPU ids it chose, as seen from inside the task.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import ray

from raypipe.placement import Placement, placement_path, read_placements, record_placement


@pytest.fixture(scope="module")
def ray_two_gpus() -> Iterator[None]:
    if ray.is_initialized():  # a driver joins one Ray at a time
        ray.shutdown()
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@ray.remote
def _record_in_task(placement: Placement, extra: dict[str, Any]) -> dict[str, Any] | None:
    return placement.record(extra=extra)


def test_outside_ray_records_process_facts_and_no_resources(tmp_path: Path) -> None:
    # A fresh interpreter: this test process may be connected to another test module's Ray.
    rd = tmp_path / "run"
    code = ("import json, os, sys; from raypipe.placement import record_placement as r; "
            "a = r(sys.argv[1], phase='phase1', what='trial abc', extra={'params': {'lr': 0.1}}); "
            "r(sys.argv[1], phase='phase2', what='iter1/rca'); print(json.dumps({'pid': os.getpid(), 'first': a}))")
    proc = subprocess.run([sys.executable, "-c", code, str(rd)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": "3"})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])

    lines = placement_path(rd).read_text().splitlines()
    assert len(lines) == 2
    recs = read_placements(rd)
    assert recs[0] == out["first"]
    assert recs[0]["phase"] == "phase1" and recs[0]["what"] == "trial abc"
    assert recs[0]["extra"] == {"params": {"lr": 0.1}} and "extra" not in recs[1]
    assert recs[0]["pid"] == out["pid"] and recs[0]["cuda_visible_devices"] == "3"
    assert recs[0]["node_id"] is None and recs[0]["assigned_resources"] is None and recs[0]["gpu_ids"] == []
    assert recs[0]["ts"] <= recs[1]["ts"]


def test_unwritable_run_dir_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the run dir should be")
    assert record_placement(blocker, phase="phase2", what="iter1/train") is None
    assert "could not record the placement of phase2/iter1/train" in caplog.text
    assert blocker.read_text() == "a file where the run dir should be"


def test_child_extends_what_and_keeps_run_and_phase() -> None:
    p = Placement("/rd", "phase2", "iter1/inference")
    assert p.child("best_val") == Placement("/rd", "phase2", "iter1/inference/best_val")


def test_tasks_record_node_assigned_resources_and_gpus(ray_two_gpus: None, tmp_path: Path) -> None:
    rd = tmp_path / "run"
    node = ray.get_runtime_context().get_node_id()
    half = _record_in_task.options(num_cpus=0.5, num_gpus=0.5)
    cpu_only = _record_in_task.options(num_cpus=1, num_gpus=0)
    refs = [half.remote(Placement(str(rd), "phase1", f"trial {i}"), {"i": i}) for i in range(4)]
    refs.append(cpu_only.remote(Placement(str(rd), "phase2", "iter1/rca"), {}))
    returned = ray.get(refs)

    recs = read_placements(rd)
    assert len(recs) == 5 and all(r is not None for r in returned)
    assert sorted(r["what"] for r in recs) == sorted(r["what"] for r in returned)  # one whole line per task
    assert {r["node_id"] for r in recs} == {node}
    trials = [r for r in recs if r["phase"] == "phase1"]
    for r in trials:
        assert r["assigned_resources"] == {"CPU": 0.5, "GPU": 0.5}
        assert len(r["gpu_ids"]) == 1 and r["cuda_visible_devices"] == r["gpu_ids"][0]
        assert r["gpu_ids"][0] in ("0", "1")
    rca = next(r for r in recs if r["what"] == "iter1/rca")
    assert rca["assigned_resources"] == {"CPU": 1.0} and rca["gpu_ids"] == []
    assert rca["cuda_visible_devices"] in (None, "")  # no GPU was assigned to it
