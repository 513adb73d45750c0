"""``raypipe._ray``: one way to run a task with declared resources, recording where it ran."""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Iterator

import pytest

from raypipe._ray import ray_session, run_task, submit_task, unwrap_task_error
from raypipe.config import load_config
from raypipe.deft.errors import HardStop
from raypipe.placement import Placement, read_placements


@pytest.fixture(scope="module")
def session() -> Iterator[None]:
    import ray

    if ray.is_initialized():  # a driver joins one Ray at a time
        ray.shutdown()
    with ray_session(num_cpus=2) as started:
        assert started and ray.is_initialized()
        yield
    assert not ray.is_initialized()  # started here, so stopped here


# Task bodies must be importable in the workers (tests/ is not on their path): package functions.
def test_run_task_returns_and_records_placement(session: None, tmp_path: Path) -> None:
    res = load_config(None, ["phase2.resources.cpu_stage.cpu=0.5"]).phase2.resources.cpu_stage
    assert run_task(operator.add, 2, 3, resources=res, placement=Placement(str(tmp_path), "phase2", "iter1/rca")) == 5
    import ray

    refs = [submit_task(operator.neg, i, resources={"cpu": 0.5}) for i in range(3)]
    assert ray.get(refs) == [0, -1, -2]
    [record] = read_placements(tmp_path)  # only the task given a placement recorded one
    assert record["what"] == "iter1/rca" and record["assigned_resources"] == {"CPU": 0.5}


def test_a_task_error_comes_back_as_the_stage_raised_it(session: None, tmp_path: Path) -> None:
    from raypipe.deft.rca import run_rca
    from raypipe.workspace import ImageLayout

    with pytest.raises(Exception) as info:  # Ray's wrapper around the stage's own error
        run_task(run_rca, tmp_path / "no_inference.csv", tmp_path / "rca", layout=ImageLayout(("L",)),
                 images_dir=tmp_path, resources={"cpu": 1})
    stop = unwrap_task_error(info.value)
    assert isinstance(stop, HardStop) and stop.stage == "rca" and "not found" in stop.reason


def test_a_joined_session_leaves_an_existing_connection_alone(session: None) -> None:
    import ray

    with ray_session("auto") as started:  # already connected: nothing is started, joined or stopped
        assert not started
    assert ray.is_initialized()
