"""The built-in backend on the embedded demo workspace (its TAO spec as written by the generator)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from raypipe.backends.builtin import BuiltinTrainer, resolve_backbone
from raypipe.spec import load_spec, nest_dotted
from raypipe.testing.trainer_conformance import check_embeddings, check_inference_csv, check_train_outputs
from raypipe.workspace import read_rows


def test_train_infer_embed_on_the_demo_workspace(tiny_workspace_template: Path, tmp_path: Path) -> None:
    ws = tiny_workspace_template  # read only: outputs go to tmp_path
    spec, note = resolve_backbone(load_spec(ws / "specs" / "baseline_spec.yaml"))
    assert note is None, "the demo spec names a backbone the builtin backend builds"
    spec = nest_dotted({"train.num_epochs": 1}, spec)
    trainer = BuiltinTrainer(device="cpu", num_threads=1)
    images = ws / "images"
    res = trainer.train(spec, ws / "train/base/training_set.csv", ws / "train/base/validation_set.csv",
                        tmp_path / "train", images_dir=images, seed=0)
    check_train_outputs(res, tmp_path / "train", 1)
    kpi = ws / "kpi/testing_set.csv"
    check_inference_csv(trainer.infer(spec, res.best_val_ckpt, kpi, tmp_path / "inf", images_dir=images), kpi)
    pool = read_rows(ws / "augmentation/mining_pool/mining_pool.csv").iloc[:40]
    vectors = trainer.embed(spec, res.latest_ckpt, pool, images_dir=images)
    check_embeddings(vectors, len(pool))
    assert vectors.shape[1] == 5 * 30 and np.linalg.matrix_rank(vectors) > 1
