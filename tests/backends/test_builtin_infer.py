"""BuiltinTrainer.infer / embed outputs, and the model's full-resolution comparison."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import raypipe.backends.builtin._trainer as trainer_mod
from raypipe.backends.builtin import UNTRAINED_EMBED_SEED, BuiltinTrainer, save_untrained_checkpoint
from raypipe.backends.builtin._config import ModelConfig, architecture_from_spec
from raypipe.backends.builtin._model import build_model
from raypipe.spec import nest_dotted
from raypipe.testing import TinyWorkspace
from raypipe.testing.trainer_conformance import check_embeddings, check_inference_csv
from raypipe.workspace._rows import read_rows


@pytest.fixture(scope="module")
def ckpt(tiny_ws: TinyWorkspace, tmp_path_factory: pytest.TempPathFactory):
    return save_untrained_checkpoint(tiny_ws.spec, tmp_path_factory.mktemp("ck") / "init.pth", seed=3)


def test_infer_writes_required_then_preserved_columns(tiny_ws, ckpt, tmp_path) -> None:
    rows = read_rows(tiny_ws.val_csv)
    rows["label"] = [" Pass " if lab == "PASS" else lab.title() + " " for lab in rows["label"]]  # messy labels
    rows["zz_note"] = [f"n{i}" for i in range(len(rows))]
    messy = tmp_path / "messy.csv"
    rows.to_csv(messy, index=False)
    path = BuiltinTrainer(device="cpu", num_threads=1).infer(tiny_ws.spec, ckpt, messy, tmp_path / "inf",
                                                             images_dir=tiny_ws.images_dir)
    out = check_inference_csv(path, messy)
    assert list(out.columns) == ["input_path", "golden_path", "object_name", "label", "siamese_score",
                                 "boardname", "comp_type_1", "zz_note"]
    assert set(out["label"]) <= {"PASS", "speck", "missing", "bridge"}


def test_infer_in_chunks_gives_the_same_scores(tiny_ws, ckpt, tmp_path, monkeypatch) -> None:
    t = BuiltinTrainer(device="cpu", num_threads=1)
    whole = pd.read_csv(t.infer(tiny_ws.spec, ckpt, tiny_ws.val_csv, tmp_path / "a", images_dir=tiny_ws.images_dir))
    monkeypatch.setattr(trainer_mod, "_CHUNK_ROWS", 5)
    parts = pd.read_csv(t.infer(tiny_ws.spec, ckpt, tiny_ws.val_csv, tmp_path / "b", images_dir=tiny_ws.images_dir))
    np.testing.assert_allclose(parts["siamese_score"], whole["siamese_score"], rtol=1e-5)


def test_infer_refuses_a_spec_of_another_architecture(tiny_ws, ckpt, tmp_path) -> None:
    spec = nest_dotted({"model.classify.embed_dec": 12}, tiny_ws.spec)
    with pytest.raises(ValueError, match="model.classify.embed_dec: spec 12, checkpoint 8"):
        BuiltinTrainer(device="cpu").infer(spec, ckpt, tiny_ws.val_csv, tmp_path, images_dir=tiny_ws.images_dir)


def test_embed_shape_and_untrained_determinism(tiny_ws) -> None:
    rows = read_rows(tiny_ws.val_csv).drop(columns=["label"])  # pool/target rows need no label to be embedded
    t = BuiltinTrainer(device="cpu", num_threads=1)
    a = t.embed(tiny_ws.spec, None, rows, images_dir=tiny_ws.images_dir)
    b = BuiltinTrainer(device="cpu", num_threads=1).embed(tiny_ws.spec, None, rows.iloc[::-1], images_dir=tiny_ws.images_dir)
    check_embeddings(a, len(rows))
    assert a.shape[1] == 2 * 8  # embedding_vectors × embed_dec of the tiny spec
    np.testing.assert_allclose(b[::-1], a, rtol=1e-5, atol=1e-6)
    assert np.linalg.matrix_rank(a) > 1, "embeddings must differ between rows"


def test_embed_with_checkpoint_differs_from_untrained(tiny_ws, ckpt) -> None:
    rows = read_rows(tiny_ws.val_csv)
    t = BuiltinTrainer(device="cpu", num_threads=1)
    assert UNTRAINED_EMBED_SEED != 3
    assert not np.allclose(t.embed(tiny_ws.spec, ckpt, rows, images_dir=tiny_ws.images_dir),
                           t.embed(tiny_ws.spec, None, rows, images_dir=tiny_ws.images_dir))


@pytest.mark.parametrize("overrides", [{}, {"model.classify.difference_module": "euclidean"},
                                       {"dataset.classify.concat_type": "grid", "dataset.classify.grid_map": {"x": 2, "y": 1}}])
def test_one_pixel_change_reaches_the_embedding(tiny_ws, overrides) -> None:
    """Capture == golden and capture with ONE changed pixel give different features: the model
    compares before it pools, so nothing averages a tiny defect away before the comparison."""
    spec = nest_dotted(overrides, tiny_ws.spec)
    model = build_model(ModelConfig.from_architecture(architecture_from_spec(spec)), seed=0).eval()
    golden = torch.randn(1, 2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    capture = golden.clone()
    with torch.no_grad():
        same = model.features(capture, golden)
        capture[0, 1, :, 17, 9] += 3.0
        changed = model.features(capture, golden)
    assert not torch.allclose(same, changed)
    assert model(capture, golden).shape == (1, 2)
