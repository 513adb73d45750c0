from __future__ import annotations

from pathlib import Path

import pytest

from raypipe.workspace import ImageLayout, read_rows

LAYOUT = ImageLayout(("LowAngleLight", "SolderLight"), ".png")


def pool_rows(ws: Path):
    return read_rows(ws / "augmentation" / "mining_pool" / "mining_pool.csv")


@pytest.fixture(scope="module")
def ray_local():
    import ray

    # address="local": a fresh cluster of our own, never someone else's `ray start` on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
