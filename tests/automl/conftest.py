"""Shared fixtures of the sweep tests: one tiny demo workspace, one local Ray, one KPI tripwire.

Ray is started once for this package (``num_gpus=1`` is a fake GPU resource: the scheduler's
fractional-GPU accounting is what the tests check, no CUDA is touched) and every Ray worker gets
the KPI audit hook of ``_kpi_audit``. The tripwire guards the sealed test split like the KPI set:
no sweep may open either CSV or any of their capture images.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from raypipe.spec import load_spec, set_dotted

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # `_kpi_audit` by the same name here and in the workers

import _kpi_audit  # noqa: E402

# Small and quick, but the real demo data, the real backend and every key of the demo spec.
FAST_SPEC_KEYS = {
    "train.num_epochs": 1,
    "dataset.classify.batch_size": 16,
    "dataset.classify.image_width": 32,
    "dataset.classify.image_height": 32,
    "model.classify.learnable_difference_modules": 2,
    "model.classify.embedding_vectors": 2,
    "model.classify.embed_dec": 8,
    "dataset.classify.augmentation_config.augment": False,
    "dataset.classify.fpratio_sampling": 0.5,
}


@dataclass(frozen=True)
class DemoWs:
    root: Path
    spec: dict[str, Any]

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def train_csv(self) -> Path:
        return self.root / "train" / "base" / "training_set.csv"

    @property
    def val_csv(self) -> Path:
        return self.root / "train" / "base" / "validation_set.csv"

    @property
    def kpi_csv(self) -> Path:
        return self.root / "kpi" / "testing_set.csv"

    @property
    def test_csv(self) -> Path:
        return self.root / "test" / "testing_set.csv"


@pytest.fixture(scope="package")
def demo_ws(tmp_path_factory: pytest.TempPathFactory) -> DemoWs:
    from raypipe.workspace import generate_demo

    root = generate_demo(tmp_path_factory.mktemp("automl") / "ws", seed=0, scale=0.05)  # with a test split
    spec = load_spec(root / "specs" / "baseline_spec.yaml")
    for key, value in FAST_SPEC_KEYS.items():
        set_dotted(spec, key, value)
    return DemoWs(root, spec)


class KpiGuard:
    """The forbidden KPI paths, the violation log, and the arm switch of the in-process hook."""

    def __init__(self, paths_file: Path, log: Path, forbidden: set[str]) -> None:
        self.paths_file, self.log, self.forbidden = paths_file, log, forbidden
        self._armed = False
        sys.addaudithook(_kpi_audit.make_hook(forbidden, str(log), lambda: self._armed))

    @contextlib.contextmanager
    def armed(self) -> Iterator[None]:
        self._armed = True
        try:
            yield
        finally:
            self._armed = False

    def violations(self) -> list[str]:
        return self.log.read_text(encoding="utf-8").splitlines() if self.log.exists() else []


@pytest.fixture(scope="package")
def kpi_guard(demo_ws: DemoWs, tmp_path_factory: pytest.TempPathFactory) -> KpiGuard:
    from raypipe.workspace import ImageLayout, read_rows

    layout = ImageLayout.from_spec(demo_ws.spec)
    used = set()
    for csv in (demo_ws.train_csv, demo_ws.val_csv):
        for _, row in read_rows(csv).iterrows():
            used.update(str(p.resolve()) for p in layout.capture_paths(demo_ws.images, row))
            used.update(str(p.resolve()) for p in layout.golden_paths(demo_ws.images, row))
    forbidden = {str(demo_ws.kpi_csv.resolve()), str(demo_ws.test_csv.resolve())}
    for csv in (demo_ws.kpi_csv, demo_ws.test_csv):
        for _, row in read_rows(csv).iterrows():
            forbidden.update(str(p.resolve()) for p in layout.capture_paths(demo_ws.images, row))
    forbidden -= used  # a golden shared with training rows is not KPI data
    d = tmp_path_factory.mktemp("kpi_audit")
    paths_file = d / "forbidden.txt"
    paths_file.write_text("\n".join(sorted(forbidden)) + "\n", encoding="utf-8")
    return KpiGuard(paths_file, d / "violations.log", forbidden)


@pytest.fixture(scope="package")
def ray_session(kpi_guard: KpiGuard) -> Iterator[None]:
    import ray

    if ray.is_initialized():  # another package left one running: these tests need their own hooks
        ray.shutdown()
    ray.init(
        address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False,
        runtime_env={
            "worker_process_setup_hook": "_kpi_audit.install",
            "env_vars": {"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
                         _kpi_audit.PATHS_ENV: str(kpi_guard.paths_file), _kpi_audit.LOG_ENV: str(kpi_guard.log)},
        },
    )
    try:
        yield
    finally:
        ray.shutdown()
