"""The built-in backend's staged backbone file: the spec names it, and training really starts from it.

TAO's handoff and its consumers need the file a model's backbone was built from. The built-in
backbone has no pretraining, so raypipe stages its seeded initial weights and points the spec at
them; this is honest only if training loads them, which a frozen backbone makes observable.
"""

from __future__ import annotations

from pathlib import Path

import torch

from raypipe import tao_interop as ti
from raypipe.backends.builtin import BuiltinTrainer
from raypipe.spec import nest_dotted
from raypipe.testing import make_tiny_workspace


def _stem(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("stem.")}


def test_training_starts_from_the_staged_backbone_file(tmp_path: Path) -> None:
    ws = make_tiny_workspace(tmp_path / "ws", n_train=16, n_val=8, size=32, num_epochs=1)
    rd = tmp_path / "results" / "run_1"
    spec, weight_dir = ti.stage_builtin_backbone(rd, ws.spec, seed=11)
    staged = Path(spec["model"]["backbone"]["pretrained_backbone_path"])
    assert staged == (rd / "backbone" / "changenet_cnn_init_seed11.pth").resolve() and weight_dir == staged.parent
    assert ws.spec["model"]["backbone"]["pretrained_backbone_path"] is None  # the caller's spec is not changed
    assert ti.resolve_backbone(spec, weight_dir).host == staged  # what TAO's handoff will find

    frozen = nest_dotted({"model.backbone.freeze_backbone": True}, spec)
    result = BuiltinTrainer(device="cpu", num_threads=1).train(
        frozen, ws.train_csv, ws.val_csv, tmp_path / "train", images_dir=ws.images_dir, seed=0)
    before, after = _stem(staged), _stem(result.latest_ckpt)
    assert before and before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert f"from {staged}" in (tmp_path / "train" / "train.log").read_text()

    written = staged.stat().st_mtime_ns
    again, _ = ti.stage_builtin_backbone(rd, ws.spec, seed=11)
    assert again == spec and staged.stat().st_mtime_ns == written  # written once per run, then reused
    kept, kept_dir = ti.stage_builtin_backbone(tmp_path / "other", spec, seed=3)  # a spec naming a file keeps it
    assert kept == spec and kept_dir == weight_dir and not (tmp_path / "other").exists()
