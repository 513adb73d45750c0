"""torch CPU threads follow Ray's CPU assignment inside a Ray task (one trial, one core)."""

from __future__ import annotations

import os

import pytest
import ray

from raypipe.backends.builtin import default_num_threads


def test_threads_outside_ray_use_every_core() -> None:
    if not ray.is_initialized():
        assert default_num_threads() == (os.cpu_count() or 1)


@pytest.mark.slow  # starts a local Ray (workers import torch): ~10 s idle, more on a busy box
def test_threads_inside_ray_task_follow_assigned_cpus() -> None:
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        @ray.remote(num_cpus=1)
        def one() -> int:
            return default_num_threads()

        assert ray.get(one.remote()) == 1
        if started:
            @ray.remote(num_cpus=2)
            def two() -> int:
                return default_num_threads()

            assert ray.get(two.remote()) == 2
    finally:
        if started:
            ray.shutdown()
