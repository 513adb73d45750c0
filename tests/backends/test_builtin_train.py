"""BuiltinTrainer.train: reproducibility, warm start, spec keys honoured, failures reported."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from raypipe.backends.base import TrainingError, TrainResult, checkpoint_name
from raypipe.backends.builtin import (
    BuiltinTrainer,
    CheckpointError,
    lr_at_epoch,
    read_checkpoint_architecture,
    save_untrained_checkpoint,
)
from raypipe.backends.builtin._checkpoint import load_weights
from raypipe.backends.builtin._config import ModelConfig, architecture_from_spec
from raypipe.backends.builtin._model import build_model
from raypipe.spec import ARCHITECTURE_KEYS, nest_dotted
from raypipe.testing import TinyWorkspace
from raypipe.testing.trainer_conformance import read_status as status_lines


@pytest.fixture(scope="module")
def trainer() -> BuiltinTrainer:
    return BuiltinTrainer(device="cpu", num_threads=1)


@pytest.fixture(scope="module")
def source_run(trainer: BuiltinTrainer, tiny_ws: TinyWorkspace, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """A 2-epoch run that warm-start tests start from."""
    return trainer.train(tiny_ws.spec, tiny_ws.train_csv, tiny_ws.val_csv, tmp_path_factory.mktemp("src"),
                         images_dir=tiny_ws.images_dir, seed=0)


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_same_seed_reproduces_checkpoints_and_metrics(trainer, tiny_ws, source_run, tmp_path) -> None:
    again = trainer.train(tiny_ws.spec, tiny_ws.train_csv, tiny_ws.val_csv, tmp_path / "a",
                          images_dir=tiny_ws.images_dir, seed=0)
    assert [e.to_dict() | {"checkpoint": None} for e in again.epochs] == \
           [e.to_dict() | {"checkpoint": None} for e in source_run.epochs]
    a, b = _state(again.latest_ckpt), _state(source_run.latest_ckpt)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    other = trainer.train(tiny_ws.spec, tiny_ws.train_csv, tiny_ws.val_csv, tmp_path / "b",
                          images_dir=tiny_ws.images_dir, seed=1)
    c = _state(other.latest_ckpt)
    assert any(not torch.equal(a[k], c[k]) for k in a), "a different seed must give different weights"


def test_checkpoint_records_architecture_and_metrics(source_run, tiny_ws) -> None:
    payload = torch.load(source_run.latest_ckpt, map_location="cpu", weights_only=True)
    assert set(payload) >= {"state_dict", "architecture", "epoch", "step", "val_far", "val_loss", "backbone"}
    last = source_run.epochs[-1]
    assert (payload["epoch"], payload["step"]) == (last.epoch, last.step)
    assert payload["val_far"] == pytest.approx(last.val_far) and payload["backbone"] == "changenet_cnn"
    arch = read_checkpoint_architecture(source_run.latest_ckpt)
    assert set(arch) == set(ARCHITECTURE_KEYS) and arch == architecture_from_spec(tiny_ws.spec)


def test_warm_start_loads_weights_with_fresh_counter(trainer, tiny_ws, source_run, tmp_path) -> None:
    spec = nest_dotted({"train.num_epochs": 1}, tiny_ws.spec)
    res = trainer.train(spec, tiny_ws.train_csv, tiny_ws.val_csv, tmp_path / "warm", source_run.latest_ckpt,
                        images_dir=tiny_ws.images_dir, seed=5)
    # The weights are the source's: its validation numbers before any step equal the source's last epoch.
    last = source_run.epochs[-1]
    init = res.extra["init_val"]
    assert init["val_loss"] == pytest.approx(last.val_loss, rel=1e-6)
    assert init["val_far"] == pytest.approx(last.val_far) and init["pred_counts"] == last.pred_counts
    assert [e.epoch for e in res.epochs] == [1]
    assert res.latest_ckpt == tmp_path / "warm" / checkpoint_name(0, res.epochs[0].step)  # TAO: zero-based file epoch
    assert res.epochs[0].step == math.ceil(24 / 8), "step counter must restart (fresh optimiser, new phase)"
    assert not any((tmp_path / "warm").glob("model_epoch_001_*"))


def test_warm_start_from_spec_pretrained_model_path(trainer, tiny_ws, source_run, tmp_path) -> None:
    spec = nest_dotted({"train.num_epochs": 1, "train.pretrained_model_path": str(source_run.latest_ckpt)}, tiny_ws.spec)
    res = trainer.train(spec, tiny_ws.train_csv, tiny_ws.val_csv, tmp_path / "w", images_dir=tiny_ws.images_dir)
    assert res.extra["init_val"]["val_loss"] == pytest.approx(source_run.epochs[-1].val_loss, rel=1e-6)
    written = yaml.safe_load((tmp_path / "w" / "experiment.yaml").read_text())
    assert written["train"]["pretrained_model_path"] == str(source_run.latest_ckpt)
    assert written["dataset"]["classify"]["train_dataset"]["csv_path"] == str(tiny_ws.train_csv.resolve())


def test_warm_start_with_other_architecture_names_the_keys(trainer, tiny_ws, source_run, tmp_path) -> None:
    spec = nest_dotted({"model.classify.learnable_difference_modules": 3, "dataset.classify.image_width": 40},
                       tiny_ws.spec)
    with pytest.raises(TrainingError) as info:
        trainer.train(spec, tiny_ws.train_csv, tiny_ws.val_csv, tmp_path / "x", source_run.latest_ckpt,
                      images_dir=tiny_ws.images_dir)
    msg = str(info.value)
    assert "model.classify.learnable_difference_modules: spec 3, checkpoint 2" in msg
    assert "dataset.classify.image_width: spec 40, checkpoint 32" in msg
    assert status_lines(tmp_path / "x")[-1]["status"] == "FAILURE"


def test_weight_mismatch_names_the_tensors(tiny_ws, source_run, tmp_path) -> None:
    payload = torch.load(source_run.latest_ckpt, map_location="cpu", weights_only=True)
    payload["state_dict"]["head.weight"] = torch.zeros(3, 3)
    del payload["state_dict"]["head.bias"]
    bad = tmp_path / "bad.pth"
    torch.save(payload, bad)
    arch = architecture_from_spec(tiny_ws.spec)
    with pytest.raises(CheckpointError, match=r"head\.weight \(model \(2, 16\), checkpoint \(3, 3\)\).*missing in checkpoint: head\.bias"):
        load_weights(build_model(ModelConfig.from_architecture(arch)), bad, arch)


def test_val_loss_uses_cls_weight(trainer, tiny_ws, source_run, tmp_path) -> None:
    out = trainer.infer(tiny_ws.spec, source_run.latest_ckpt, tiny_ws.val_csv, tmp_path, images_dir=tiny_ws.images_dir)
    df = pd.read_csv(out)
    p = df["siamese_score"].to_numpy()
    y = (df["label"] != "PASS").to_numpy()
    w = np.where(y, 4.0, 1.0)  # tiny spec: cls_weight [1, 4]
    nll = -np.log(np.where(y, p, 1 - p))
    assert source_run.epochs[-1].val_loss == pytest.approx(float((w * nll).sum() / w.sum()), rel=1e-4)
    assert source_run.epochs[-1].val_loss != pytest.approx(float(nll.mean()), rel=1e-4)


def test_status_lines_carry_linear_lr_and_end_in_success(source_run) -> None:
    lines = status_lines(source_run.out_dir)
    epochs = [x for x in lines if x.get("status") == "RUNNING"]
    assert [x["kpi"]["lr"] for x in epochs] == pytest.approx([lr_at_epoch("linear", 3e-3, e, 2) for e in range(2)])
    assert lines[0]["status"] == "STARTED" and lines[-1]["status"] == "SUCCESS"
    assert (source_run.out_dir / "train.log").read_text().count("epoch ") >= 2


def test_intervals_decide_checkpoints_and_validation(trainer, tiny_ws, tmp_path) -> None:
    spec = nest_dotted({"train.num_epochs": 3, "train.checkpoint_interval": 2, "train.validation_interval": 2},
                       tiny_ws.spec)
    res = trainer.train(spec, tiny_ws.train_csv, tiny_ws.val_csv, tmp_path, images_dir=tiny_ws.images_dir)
    assert [Path(c).name for c in res.checkpoints] == [checkpoint_name(e.epoch - 1, e.step) for e in res.epochs[1:]]
    assert math.isnan(res.epochs[0].val_far) and res.epochs[0].checkpoint is None
    assert all(math.isfinite(e.val_far) for e in res.epochs[1:])
    best = min(res.epochs[1:], key=lambda e: (e.val_far, e.val_loss, -e.epoch))
    assert (res.best_epoch, res.best_step) == (best.epoch, best.step)


class _Stop(Exception):
    pass


def test_on_epoch_exception_propagates_unchanged(trainer, tiny_ws, tmp_path) -> None:
    seen = []

    def stop(m):
        seen.append(m.epoch)
        raise _Stop("enough")

    with pytest.raises(_Stop):
        trainer.train(tiny_ws.spec, tiny_ws.train_csv, tiny_ws.val_csv, tmp_path, images_dir=tiny_ws.images_dir,
                      on_epoch=stop)
    assert seen == [1]
    last = status_lines(tmp_path)[-1]
    assert last["status"] == "FAILURE" and "enough" in last["message"]


def test_validation_without_defects_is_refused(trainer, tiny_ws, tmp_path) -> None:
    rows = pd.read_csv(tiny_ws.val_csv, dtype=str)
    only_pass = tmp_path / "val_pass.csv"
    rows[rows["label"] == "PASS"].to_csv(only_pass, index=False)
    with pytest.raises(TrainingError, match="no defect"):
        trainer.train(tiny_ws.spec, tiny_ws.train_csv, only_pass, tmp_path / "o", images_dir=tiny_ws.images_dir)


def test_zero_epochs_is_a_failure(trainer, tiny_ws, tmp_path) -> None:
    with pytest.raises(TrainingError, match="num_epochs: must be ≥ 1, got 0"):
        trainer.train(nest_dotted({"train.num_epochs": 0}, tiny_ws.spec), tiny_ws.train_csv, tiny_ws.val_csv,
                      tmp_path, images_dir=tiny_ws.images_dir)


@pytest.mark.parametrize("overrides", [
    {"dataset.classify.concat_type": "grid", "dataset.classify.grid_map": {"x": 1, "y": 2},
     "model.classify.difference_module": "euclidean"},
    {"model.backbone.type": "changenet_cnn_wide", "train.optim.optim": "sgd", "train.optim.policy": "step",
     "model.backbone.freeze_backbone": True,
     "dataset.classify.augmentation_config.augment": True,
     "dataset.classify.augmentation_config.random_flip": {"enable": True, "hflip_probability": 0.5, "vflip_probability": 0.5},
     "dataset.classify.augmentation_config.random_rotate": {"enable": True, "rotate_probability": 0.5, "angle_list": [90, 180, 270]}},
])
def test_variants_train_end_to_end(trainer, tiny_ws, tmp_path, overrides) -> None:
    spec = nest_dotted({"train.num_epochs": 1, **overrides}, tiny_ws.spec)
    init = save_untrained_checkpoint(spec, tmp_path / "init.pth", seed=0)
    res = trainer.train(spec, tiny_ws.train_csv, tiny_ws.val_csv, tmp_path / "t", images_dir=tiny_ws.images_dir)
    assert res.status == "SUCCESS" and math.isfinite(res.epochs[0].train_loss)
    after = _state(res.latest_ckpt)
    if overrides.get("model.backbone.freeze_backbone"):
        before = _state(init)
        assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("stem."))
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("head."))


def test_pretrained_backbone_path_loads_the_stem(trainer, tiny_ws, source_run, tmp_path) -> None:
    spec = nest_dotted({"train.num_epochs": 1, "model.backbone.pretrained_backbone_path": str(source_run.latest_ckpt),
                        "model.backbone.freeze_backbone": True, "model.classify.learnable_difference_modules": 1},
                       tiny_ws.spec)
    res = trainer.train(spec, tiny_ws.train_csv, tiny_ws.val_csv, tmp_path, images_dir=tiny_ws.images_dir)
    src, got = _state(source_run.latest_ckpt), _state(res.latest_ckpt)
    stem = [k for k in src if k.startswith("stem.")]
    assert stem and all(torch.equal(src[k], got[k]) for k in stem)


def test_threads_are_restored_after_a_call(tiny_ws, tmp_path) -> None:
    before = torch.get_num_threads()
    BuiltinTrainer(device="cpu", num_threads=1).embed(tiny_ws.spec, None, pd.read_csv(tiny_ws.val_csv, dtype=str),
                                                      images_dir=tiny_ws.images_dir)
    assert torch.get_num_threads() == before


def test_divergence_is_a_training_error(trainer, tiny_ws, tmp_path) -> None:
    spec = nest_dotted({"train.num_epochs": 1, "train.optim.optim": "sgd", "train.optim.lr": 1e12}, tiny_ws.spec)
    with pytest.raises(TrainingError, match="diverged.*lower train.optim.lr"):
        trainer.train(spec, tiny_ws.train_csv, tiny_ws.val_csv, tmp_path, images_dir=tiny_ws.images_dir)
    assert status_lines(tmp_path)[-1]["status"] == "FAILURE"
