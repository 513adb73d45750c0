"""Conformance checks every :class:`~raypipe.backends.base.Trainer` must pass.

Two ways to use it:

* Subclass :class:`TrainerConformance` in a test module and implement ``make_trainer`` (optionally
  ``spec_overrides``); pytest collects its ``test_*`` methods. The class trains once per class.
* Call the ``check_*`` functions on outputs you produced yourself (e.g. a backend whose container is
  faked), so every backend is held to the same artifacts.

>>> class TestMyBackend(TrainerConformance):          # doctest: +SKIP
...     def make_trainer(self): return MyTrainer()
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from raypipe.backends.base import EpochMetrics, Trainer, TrainingError, TrainResult, parse_checkpoint_name
from raypipe.spec import nest_dotted
from raypipe.testing._tiny import TinyWorkspace, make_tiny_workspace
from raypipe.workspace._rows import normalise_label, read_rows

INFERENCE_HEAD = ("input_path", "golden_path", "object_name", "label", "siamese_score")
#: TAO (Lightning) names checkpoints with the zero-based epoch index: the file of 1-based
#: ``EpochMetrics.epoch`` e is ``model_epoch_<e-1>_step_<step>.pth`` (one epoch → ``model_epoch_000_…``).
FILE_EPOCH_OFFSET = 1


def read_status(out_dir: Path) -> list[dict[str, Any]]:
    """The JSON lines of ``out_dir/status.json`` (TAO style: one object per line)."""
    text = (Path(out_dir) / "status.json").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def check_protocol(trainer: Any) -> None:
    """The object has the protocol's name and methods, and its default backbone is one it supports."""
    assert isinstance(trainer, Trainer), f"{type(trainer).__name__} does not implement the Trainer protocol"
    assert isinstance(trainer.name, str) and trainer.name, "Trainer.name must be a non-empty string"
    default = trainer.default_backbone()
    assert isinstance(default, str) and default
    assert trainer.supports_backbone(default), f"default backbone {default!r} is not supported by its own backend"


def check_train_outputs(result: TrainResult, out_dir: Path, num_epochs: int) -> None:
    """Checkpoint names, status.json (JSONL ending in SUCCESS), experiment.yaml and a consistent TrainResult."""
    out_dir = Path(out_dir)
    assert result.status == "SUCCESS"
    assert [e.epoch for e in result.epochs] == list(range(1, num_epochs + 1)), "epochs must be 1..num_epochs"
    steps = [e.step for e in result.epochs]
    assert steps == sorted(steps) and steps[0] > 0, f"steps must grow from > 0, got {steps}"
    assert result.checkpoints, "no checkpoint written"
    for ckpt in result.checkpoints:
        assert Path(ckpt).is_file() and Path(ckpt).stat().st_size > 0, f"{ckpt}: missing or empty"
        assert Path(ckpt).parent.resolve() == out_dir.resolve(), f"{ckpt}: not in {out_dir}"
        file_epoch, step = parse_checkpoint_name(ckpt)  # raises on a wrong name
        match = [e for e in result.epochs if e.epoch == file_epoch + FILE_EPOCH_OFFSET]
        assert match and match[0].step == step, f"{Path(ckpt).name}: epoch/step do not match the epoch metrics"
    last = result.epochs[-1]
    assert parse_checkpoint_name(result.latest_ckpt) == (last.epoch - FILE_EPOCH_OFFSET, last.step), \
        "latest_ckpt is not the last epoch's"
    assert Path(result.best_val_ckpt) in [Path(c) for c in result.checkpoints]
    best_file_epoch, best_step = parse_checkpoint_name(result.best_val_ckpt)
    assert (best_file_epoch + FILE_EPOCH_OFFSET, best_step) == (result.best_epoch, result.best_step)
    ckpt_epochs = [e for e in result.epochs if e.checkpoint]
    assert ckpt_epochs, "EpochMetrics.checkpoint is never set"
    lowest = min(e.val_far for e in ckpt_epochs)
    assert math.isclose(result.best_val_far, lowest), "best_val_ckpt does not have the lowest val FAR"
    for e in result.epochs:
        assert math.isfinite(e.train_loss)
        if e.checkpoint:
            assert 0.0 <= e.val_far <= 100.0 and math.isfinite(e.val_loss)
            assert set(e.pred_counts) == {"PASS", "NO_PASS"}
    lines = read_status(out_dir)
    assert lines and lines[-1]["status"] == "SUCCESS", "status.json must end with a SUCCESS line"
    assert all("status" in line for line in lines)
    spec = yaml.safe_load((out_dir / "experiment.yaml").read_text(encoding="utf-8"))
    assert isinstance(spec, dict) and "train" in spec and "automl_policy" not in spec and "workflow" not in spec


def check_inference_csv(path: Path, input_csv: Path) -> pd.DataFrame:
    """Columns in order, one row per input row in order, scores in [0, 1], extra columns preserved."""
    path = Path(path)
    assert path.name == "inference.csv" and path.is_file()
    out = read_rows(path)
    src = read_rows(input_csv)
    assert tuple(out.columns[:5]) == INFERENCE_HEAD, f"columns start {list(out.columns[:5])}"
    extra = [c for c in src.columns if c not in INFERENCE_HEAD]
    assert set(extra) <= set(out.columns), f"dropped columns: {sorted(set(extra) - set(out.columns))}"
    assert len(out) == len(src)
    for col in ("input_path", "golden_path", "object_name", *extra):
        assert out[col].tolist() == src[col].tolist(), f"column {col} changed or reordered"
    assert out["label"].tolist() == [normalise_label(v) for v in src["label"]], "labels not normalised"
    scores = out["siamese_score"].astype(float)
    assert scores.between(0.0, 1.0).all() and np.isfinite(scores).all()
    return out


def check_embeddings(vectors: np.ndarray, n_rows: int) -> None:
    assert isinstance(vectors, np.ndarray) and vectors.dtype == np.float32
    assert vectors.ndim == 2 and vectors.shape[0] == n_rows and vectors.shape[1] > 0
    assert np.isfinite(vectors).all()


@dataclass
class ConformanceRun:
    trainer: Any
    workspace: TinyWorkspace
    spec: dict[str, Any]
    result: TrainResult
    out_dir: Path
    reported: list[EpochMetrics]


class TrainerConformance:
    """Base class of a backend's conformance tests; subclass it and implement :meth:`make_trainer`."""

    #: dotted spec overrides applied to the tiny workspace's spec (e.g. a smaller network)
    spec_overrides: dict[str, Any] = {}
    num_epochs: int = 2

    def make_trainer(self) -> Any:
        raise NotImplementedError("subclasses return the Trainer under test")

    @pytest.fixture(scope="class")
    def conformance_run(self, tmp_path_factory: pytest.TempPathFactory) -> ConformanceRun:
        base = tmp_path_factory.mktemp("trainer_conformance")
        ws = make_tiny_workspace(base / "ws", n_train=24, n_val=12, size=32, num_epochs=self.num_epochs)
        spec = nest_dotted({"train.num_epochs": self.num_epochs, **self.spec_overrides}, ws.spec)
        trainer = self.make_trainer()
        reported: list[EpochMetrics] = []
        out = base / "train"
        result = trainer.train(spec, ws.train_csv, ws.val_csv, out, images_dir=ws.images_dir, seed=0,
                               on_epoch=reported.append)
        return ConformanceRun(trainer, ws, spec, result, out, reported)

    def test_protocol(self) -> None:
        check_protocol(self.make_trainer())

    def test_train_outputs(self, conformance_run: ConformanceRun) -> None:
        check_train_outputs(conformance_run.result, conformance_run.out_dir, self.num_epochs)

    def test_on_epoch_reports_every_epoch(self, conformance_run: ConformanceRun) -> None:
        assert [m.epoch for m in conformance_run.reported] == list(range(1, self.num_epochs + 1))
        assert [m.to_dict() for m in conformance_run.reported] == [m.to_dict() for m in conformance_run.result.epochs]

    def test_status_json_has_a_line_per_epoch(self, conformance_run: ConformanceRun) -> None:
        lines = read_status(conformance_run.out_dir)
        epochs = [line["epoch"] for line in lines if "epoch" in line]
        assert epochs == list(range(1, self.num_epochs + 1))

    def test_infer(self, conformance_run: ConformanceRun, tmp_path: Path) -> None:
        r = conformance_run
        path = r.trainer.infer(r.spec, r.result.best_val_ckpt, r.workspace.val_csv, tmp_path / "inference",
                               images_dir=r.workspace.images_dir)
        assert Path(path) == tmp_path / "inference" / "inference.csv"
        check_inference_csv(Path(path), r.workspace.val_csv)

    def test_embed(self, conformance_run: ConformanceRun) -> None:
        r = conformance_run
        rows = read_rows(r.workspace.val_csv)
        vectors = r.trainer.embed(r.spec, r.result.latest_ckpt, rows, images_dir=r.workspace.images_dir)
        check_embeddings(vectors, len(rows))
        again = r.trainer.embed(r.spec, r.result.latest_ckpt, rows.iloc[:3], images_dir=r.workspace.images_dir)
        np.testing.assert_allclose(again, vectors[:3], rtol=1e-4, atol=1e-5)

    def test_warm_start_has_fresh_epoch_counter(self, conformance_run: ConformanceRun, tmp_path: Path) -> None:
        r = conformance_run
        spec = nest_dotted({"train.num_epochs": 1}, r.spec)
        out = tmp_path / "warm"
        res = r.trainer.train(spec, r.workspace.train_csv, r.workspace.val_csv, out, r.result.latest_ckpt,
                              images_dir=r.workspace.images_dir, seed=1)
        assert [e.epoch for e in res.epochs] == [1]
        assert parse_checkpoint_name(res.latest_ckpt)[0] == 1 - FILE_EPOCH_OFFSET
        assert Path(res.latest_ckpt).parent.resolve() == out.resolve()
        check_train_outputs(res, out, 1)

    def test_empty_training_csv_is_a_failure(self, conformance_run: ConformanceRun, tmp_path: Path) -> None:
        r = conformance_run
        empty = tmp_path / "empty.csv"
        read_rows(r.workspace.train_csv).iloc[:0].to_csv(empty, index=False)
        with pytest.raises(TrainingError):
            r.trainer.train(r.spec, empty, r.workspace.val_csv, tmp_path / "t", images_dir=r.workspace.images_dir)
        assert read_status(tmp_path / "t")[-1]["status"] == "FAILURE"
