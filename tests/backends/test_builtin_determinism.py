"""Same spec, data and seed give bit-identical checkpoints and scores on CPU, with every source of
randomness switched on: weighted sampling, paired flip/rotate augmentation, a warm start."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from raypipe.backends.base import TrainResult
from raypipe.backends.builtin import BuiltinTrainer
from raypipe.spec import nest_dotted
from raypipe.testing import TinyWorkspace

_RANDOM_EVERYTHING = {
    "train.num_epochs": 2,
    "dataset.classify.fpratio_sampling": 0.3,
    "dataset.classify.augmentation_config.augment": True,
    "dataset.classify.augmentation_config.random_flip": {"enable": True, "hflip_probability": 0.5,
                                                         "vflip_probability": 0.5},
    "dataset.classify.augmentation_config.random_rotate": {"enable": True, "rotate_probability": 0.5,
                                                           "angle_list": [90, 180, 270]},
}


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _run(tiny_ws: TinyWorkspace, out: Path, seed: int, init: Path | None = None) -> TrainResult:
    spec = nest_dotted(_RANDOM_EVERYTHING, tiny_ws.spec)
    return BuiltinTrainer(device="cpu", num_threads=1).train(spec, tiny_ws.train_csv, tiny_ws.val_csv, out, init,
                                                             images_dir=tiny_ws.images_dir, seed=seed)


def _same_weights(a: Path, b: Path) -> bool:
    sa, sb = _state(a), _state(b)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _scores(tiny_ws: TinyWorkspace, ckpt: Path, out: Path) -> pd.Series:
    spec = nest_dotted(_RANDOM_EVERYTHING, tiny_ws.spec)
    csv = BuiltinTrainer(device="cpu", num_threads=1).infer(spec, ckpt, tiny_ws.val_csv, out,
                                                            images_dir=tiny_ws.images_dir)
    return pd.read_csv(csv)["siamese_score"]


@pytest.fixture(scope="module")
def first(tiny_ws: TinyWorkspace, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return _run(tiny_ws, tmp_path_factory.mktemp("first"), seed=3)


def test_same_seed_is_bit_identical_with_sampling_and_augmentation(tiny_ws, first, tmp_path) -> None:
    again = _run(tiny_ws, tmp_path / "again", seed=3)
    assert [e.to_dict() | {"checkpoint": None} for e in again.epochs] == \
           [e.to_dict() | {"checkpoint": None} for e in first.epochs]
    for a, b in zip(again.checkpoints, first.checkpoints, strict=True):
        assert _same_weights(a, b)
    assert _scores(tiny_ws, again.best_val_ckpt, tmp_path / "s1").equals(
        _scores(tiny_ws, first.best_val_ckpt, tmp_path / "s2"))


def test_warm_started_runs_are_bit_identical(tiny_ws, first, tmp_path) -> None:
    a = _run(tiny_ws, tmp_path / "a", seed=4, init=first.latest_ckpt)
    b = _run(tiny_ws, tmp_path / "b", seed=4, init=first.latest_ckpt)
    assert _same_weights(a.latest_ckpt, b.latest_ckpt)
    assert a.extra["init_val"] == b.extra["init_val"]


def test_another_seed_changes_the_weights(tiny_ws, first, tmp_path) -> None:
    other = _run(tiny_ws, tmp_path / "other", seed=5)
    assert not _same_weights(other.latest_ckpt, first.latest_ckpt)


def test_deterministic_kernels_only_during_training(tiny_ws, tmp_path) -> None:
    seen: list[bool] = []
    spec = nest_dotted({**_RANDOM_EVERYTHING, "train.num_epochs": 1}, tiny_ws.spec)
    assert not torch.are_deterministic_algorithms_enabled()
    BuiltinTrainer(device="cpu", num_threads=1).train(
        spec, tiny_ws.train_csv, tiny_ws.val_csv, tmp_path, images_dir=tiny_ws.images_dir,
        on_epoch=lambda m: seen.append(torch.are_deterministic_algorithms_enabled()))
    assert seen == [True]
    assert not torch.are_deterministic_algorithms_enabled()  # the caller's setting is restored
