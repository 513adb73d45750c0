"""Spec → typed config of the built-in backend: backbone substitution, lr policy, sampler, optimiser."""

from __future__ import annotations

import copy

import pytest
import torch

from raypipe.backends.builtin import (
    DEFAULT_BACKBONE,
    BuiltinTrainer,
    SpecValueError,
    architecture_from_spec,
    lr_at_epoch,
    resolve_backbone,
    sampler_weights,
)
from raypipe.backends.builtin._config import train_from_spec
from raypipe.backends.builtin._data import epoch_order
from raypipe.backends.builtin._engine import make_optimizer
from raypipe.spec import ARCHITECTURE_KEYS, nest_dotted
from raypipe.testing import tiny_spec

SPEC = tiny_spec(("a", "b"), 32)


def test_default_backbone_is_supported() -> None:
    t = BuiltinTrainer(device="cpu")
    assert t.default_backbone() == DEFAULT_BACKBONE == "changenet_cnn"
    assert t.supports_backbone("changenet_cnn") and t.supports_backbone("changenet_cnn_wide")
    assert not t.supports_backbone("c_radio_v2_vit_base_patch16_224")


def test_resolve_backbone_substitutes_unknown_type_and_drops_its_weights() -> None:
    spec = nest_dotted({"model.backbone.type": "c_radio_v2_vit_base_patch16_224",
                        "model.backbone.pretrained_backbone_path": "/data/pretrained/c_radio.safetensors"}, SPEC)
    before = copy.deepcopy(spec)
    out, note = resolve_backbone(spec)
    assert spec == before, "resolve_backbone must not change its input"
    assert out["model"]["backbone"]["type"] == DEFAULT_BACKBONE
    assert out["model"]["backbone"]["pretrained_backbone_path"] is None
    assert note is not None and "c_radio_v2_vit_base_patch16_224" in note and DEFAULT_BACKBONE in note
    assert "pretrained_backbone_path" in note


def test_resolve_backbone_keeps_supported_type() -> None:
    spec = nest_dotted({"model.backbone.type": "changenet_cnn_wide"}, SPEC)
    out, note = resolve_backbone(spec)
    assert note is None and out == spec


def test_unknown_backbone_is_refused_when_building() -> None:
    spec = nest_dotted({"model.backbone.type": "fan_small_12_p4_hybrid"}, SPEC)
    from raypipe.backends.builtin._config import ModelConfig

    with pytest.raises(SpecValueError, match="fan_small_12_p4_hybrid.*resolve_backbone"):
        ModelConfig.from_architecture(architecture_from_spec(spec))


def test_architecture_has_every_key_with_defaults() -> None:
    spec = copy.deepcopy(SPEC)
    del spec["model"]["classify"]
    arch = architecture_from_spec(spec)
    assert set(arch) == set(ARCHITECTURE_KEYS)
    assert arch["model.classify.learnable_difference_modules"] == 4
    assert arch["model.classify.difference_module"] == "learnable"
    assert arch["dataset.classify.grid_map"] is None  # linear fusion: grid_map is not architecture
    assert arch["dataset.classify.input_map"] == {"a": 0, "b": 1}


def test_num_input_must_match_input_map() -> None:
    spec = nest_dotted({"dataset.classify.num_input": 3}, SPEC)
    with pytest.raises(SpecValueError, match="num_input"):
        architecture_from_spec(spec)


def test_linear_lr_policy_matches_spec_formula() -> None:
    # TAO's linear policy: lr_epoch = lr * (1 - epoch/(num_epochs+1)), epoch 0-based as its LambdaLR steps it.
    got = [lr_at_epoch("linear", 1e-3, e, 4) for e in range(4)]
    assert got == pytest.approx([1e-3, 8e-4, 6e-4, 4e-4])


def test_step_lr_policy_decays_by_ten_every_third_of_training() -> None:
    got = [lr_at_epoch("step", 1.0, e, 6) for e in range(6)]
    assert got == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01, 0.01])


def test_sampler_weights_follow_fpratio_formula() -> None:
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1])
    w = sampler_weights(labels, 0.5)
    assert w is not None
    assert w.tolist() == pytest.approx([1.0] * 6 + [(6 / 2) * 0.5] * 2)
    assert sampler_weights(labels, None) is None
    assert sampler_weights(torch.zeros(5, dtype=torch.long), 0.5) is None  # no defect: formula undefined


def test_weighted_sampler_changes_the_defect_share_of_an_epoch() -> None:
    labels = torch.tensor([0] * 90 + [1] * 10)
    gen = torch.Generator().manual_seed(0)
    draws = torch.cat([epoch_order(100, sampler_weights(labels, 2.0), gen) for _ in range(50)])
    share = float(labels[draws].float().mean())
    # defect weight (90/10)*2 = 18 → expected share 10*18 / (90 + 10*18) = 2/3 (vs 0.1 unweighted)
    assert share == pytest.approx(2 / 3, abs=0.03)


def test_intervals_are_clamped_to_num_epochs() -> None:
    spec = nest_dotted({"train.num_epochs": 3, "train.checkpoint_interval": 10, "train.validation_interval": 7}, SPEC)
    cfg = train_from_spec(spec)
    assert (cfg.checkpoint_interval, cfg.validation_interval) == (3, 3)


@pytest.mark.parametrize("name,cls", [("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)])
def test_optimiser_from_spec(name: str, cls: type) -> None:
    spec = nest_dotted({"train.optim.optim": name, "train.optim.lr": 0.01, "train.optim.momentum": 0.8,
                        "train.optim.weight_decay": 0.05}, SPEC)
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(2))], train_from_spec(spec))
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["lr"] == 0.01 and group["weight_decay"] == 0.05
    if name == "sgd":
        assert group["momentum"] == 0.8


@pytest.mark.parametrize("key,value,match", [
    ("train.optim.optim", "lamb", "one of adamw, adam, sgd"),
    ("train.optim.policy", "cosine", "one of linear, step"),
    ("train.classify.loss", "contrastive", "one of ce, got 'contrastive'"),
    ("train.classify.cls_weight", [1.0], r"\[w_pass, w_defect\]"),
])
def test_bad_train_values_name_the_key(key: str, value: object, match: str) -> None:
    with pytest.raises(SpecValueError, match=match):
        train_from_spec(nest_dotted({key: value}, SPEC))
