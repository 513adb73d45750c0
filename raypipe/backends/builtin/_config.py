"""Typed views of the TAO Visual ChangeNet classify spec keys the built-in backend honours.

The spec stays a plain nested dict everywhere else; here it is read once, at the boundary, into small
dataclasses with TAO's defaults filled in, so the training loop never guesses at a missing key.
:func:`spec_problems` is the same reading done for the pre-flight gate: every bad value at once,
each with its dotted key, instead of the first one failing inside a training task.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from raypipe.backends._spec_rules import COMMON_RULES, Check, SpecProblem, check_rules, integer, one_of
from raypipe.spec import ARCHITECTURE_KEYS, get_dotted, set_dotted
from raypipe.workspace._rows import ImageLayout

DEFAULT_BACKBONE = "changenet_cnn"
# Backbone type → (stem width, difference-module width). Both are plain-PyTorch CNNs: torchvision/timm
# do not load beside the CPU torch build this project pins, so TAO's ViT backbones are not built.
BACKBONE_WIDTHS: dict[str, tuple[int, int]] = {
    "changenet_cnn": (8, 16),
    "changenet_cnn_wide": (16, 32),
}
SUPPORTED_BACKBONES = tuple(BACKBONE_WIDTHS)

# TAO's defaults for the architecture keys a spec may leave out.
ARCHITECTURE_DEFAULTS: dict[str, Any] = {
    "model.backbone.type": DEFAULT_BACKBONE,
    "model.classify.difference_module": "learnable",
    "model.classify.learnable_difference_modules": 4,
    "model.classify.embedding_vectors": 5,
    "model.classify.embed_dec": 30,
    "dataset.classify.concat_type": "linear",
    "dataset.classify.grid_map": None,
    "dataset.classify.image_width": 64,
    "dataset.classify.image_height": 64,
}


class SpecValueError(ValueError):
    """A spec value the built-in backend cannot use; the message names the dotted key."""


def _right_angles(value: Any) -> str | None:
    angles = value if isinstance(value, (list, tuple)) else [value]
    bad = [a for a in angles if integer(a) is None or (integer(a) or 0) % 90]
    # Only multiples of 90 keep capture and golden pixel-aligned without resampling.
    return f"only multiples of 90 are supported, got {bad}" if bad else None


# What only the built-in backend cannot do (TAO's own choices are wider).
BUILTIN_RULES: dict[str, Check] = {
    "train.classify.loss": one_of("ce"),
    "train.optim.optim": one_of("adamw", "adam", "sgd"),
    "train.optim.policy": one_of("linear", "step"),
    "dataset.classify.augmentation_config.random_rotate.angle_list": _right_angles,
}
RULES: dict[str, Check] = {**COMMON_RULES, **BUILTIN_RULES}
_KEY = re.compile(r"^((?:[A-Za-z_]+\.)+[A-Za-z_]+)")


def _require_rules(spec: dict[str, Any]) -> None:
    """Refuse a spec that breaks a value rule (the training task's last line of defence)."""
    problems = check_rules(spec, RULES)
    if problems:
        raise SpecValueError("; ".join(str(p) for p in problems))


def spec_problems(spec: dict[str, Any]) -> list[SpecProblem]:
    """Every value the built-in backend cannot train with, each with its dotted key.

    The rules first; when they pass, the backend's own readers (which also check what the rules
    cannot: ``num_input`` against ``input_map``, a grid map's cells, the backbone) — the very code
    a training task runs, so the gate and the task never disagree.
    """
    problems = check_rules(spec, RULES)
    if problems:
        return problems
    try:
        ModelConfig.from_architecture(architecture_from_spec(spec))
        data_from_spec(spec)
        train_from_spec(spec)
    except (ValueError, TypeError) as exc:
        text = str(exc)
        m = _KEY.match(text)
        problems.append(SpecProblem(m.group(1), text[m.end():].lstrip(" :")) if m else SpecProblem("spec", text))
    return problems


def _get(spec: dict[str, Any], key: str, default: Any) -> Any:
    value = get_dotted(spec, key, default)
    return default if value is None else value


def architecture_from_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The ARCHITECTURE_KEYS of ``spec`` as a flat dotted dict, TAO defaults filled in.

    This is what a checkpoint records and what a warm start must match.
    """
    arch: dict[str, Any] = {}
    for key in ARCHITECTURE_KEYS:
        default = ARCHITECTURE_DEFAULTS.get(key)
        value = get_dotted(spec, key, None)
        arch[key] = copy.deepcopy(default if value is None else value)
    input_map = arch["dataset.classify.input_map"]
    if not isinstance(input_map, dict) or not input_map:
        raise SpecValueError("dataset.classify.input_map must map light names to channel indices, "
                             f"got {input_map!r}")
    arch["dataset.classify.input_map"] = {str(k): int(v) for k, v in input_map.items()}
    if arch["dataset.classify.num_input"] is None:
        arch["dataset.classify.num_input"] = len(input_map)
    for key in ("dataset.classify.num_input", "dataset.classify.image_width", "dataset.classify.image_height",
                "model.classify.learnable_difference_modules", "model.classify.embedding_vectors",
                "model.classify.embed_dec"):
        try:
            arch[key] = int(arch[key])
        except (TypeError, ValueError):
            raise SpecValueError(f"{key} must be an integer, got {arch[key]!r}") from None
    arch["dataset.classify.concat_type"] = str(arch["dataset.classify.concat_type"]).lower()
    if arch["dataset.classify.concat_type"] != "grid":
        arch["dataset.classify.grid_map"] = None  # unused by linear fusion: must not block a warm start
    if arch["dataset.classify.num_input"] != len(input_map):
        raise SpecValueError(f"dataset.classify.num_input is {arch['dataset.classify.num_input']} but "
                             f"dataset.classify.input_map names {len(input_map)} lights {sorted(input_map)}")
    return arch


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes the network's shape (built from the architecture dict alone)."""

    backbone: str
    lights: tuple[str, ...]
    image_height: int
    image_width: int
    difference_module: str  # learnable | euclidean
    learnable_difference_modules: int
    embedding_vectors: int
    embed_dec: int
    concat_type: str  # linear | grid
    grid_x: int
    grid_y: int

    @property
    def embedding_dim(self) -> int:
        # TAO's embed_dec is the decoder width and embedding_vectors the number of such vectors the
        # embedding holds; their product is the width of the feature `embed` returns.
        return self.embedding_vectors * self.embed_dec

    @classmethod
    def from_architecture(cls, arch: dict[str, Any]) -> "ModelConfig":
        backbone = str(arch["model.backbone.type"])
        if backbone not in BACKBONE_WIDTHS:
            raise SpecValueError(
                f"model.backbone.type '{backbone}' is not built by the builtin backend "
                f"(supported: {', '.join(SUPPORTED_BACKBONES)}); pre-flight substitutes the default via "
                "raypipe.backends.builtin.resolve_backbone(spec)")
        diff = str(arch["model.classify.difference_module"]).lower()
        if diff not in ("learnable", "euclidean"):
            raise SpecValueError(f"model.classify.difference_module must be 'learnable' or 'euclidean', got {diff!r}")
        concat = str(arch["dataset.classify.concat_type"]).lower()
        if concat not in ("linear", "grid"):
            raise SpecValueError(f"dataset.classify.concat_type must be 'linear' or 'grid', got {concat!r}")
        input_map = arch["dataset.classify.input_map"]
        lights = tuple(name for name, _ in sorted(input_map.items(), key=lambda kv: int(kv[1])))
        gx, gy = len(lights), 1
        if concat == "grid":
            grid = arch.get("dataset.classify.grid_map") or {}
            try:
                gx, gy = int(grid["x"]), int(grid["y"])
            except (KeyError, TypeError, ValueError):
                raise SpecValueError("dataset.classify.grid_map must be {x: int, y: int} when concat_type is "
                                     f"'grid', got {grid!r}") from None
            if gx * gy < len(lights):
                raise SpecValueError(f"dataset.classify.grid_map {gx}x{gy} has fewer cells than the "
                                     f"{len(lights)} lights of input_map")
        for key in ("model.classify.embedding_vectors", "model.classify.embed_dec",
                    "dataset.classify.image_width", "dataset.classify.image_height"):
            if int(arch[key]) < 1:
                raise SpecValueError(f"{key} must be ≥ 1, got {arch[key]}")
        if int(arch["model.classify.learnable_difference_modules"]) < 0:
            raise SpecValueError("model.classify.learnable_difference_modules must be ≥ 0")
        return cls(
            backbone=backbone, lights=lights,
            image_height=int(arch["dataset.classify.image_height"]),
            image_width=int(arch["dataset.classify.image_width"]),
            difference_module=diff,
            learnable_difference_modules=int(arch["model.classify.learnable_difference_modules"]),
            embedding_vectors=int(arch["model.classify.embedding_vectors"]),
            embed_dec=int(arch["model.classify.embed_dec"]),
            concat_type=concat, grid_x=gx, grid_y=gy,
        )


@dataclass(frozen=True)
class AugmentConfig:
    enabled: bool = False
    hflip_probability: float = 0.0
    vflip_probability: float = 0.0
    rotate_probability: float = 0.0
    angle_list: tuple[int, ...] = ()
    color_probability: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0


@dataclass(frozen=True)
class DataConfig:
    layout: ImageLayout
    image_height: int
    image_width: int
    batch_size: int
    workers: int
    fpratio_sampling: float | None
    rgb_mean: tuple[float, float, float]
    rgb_std: tuple[float, float, float]
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class TrainConfig:
    num_epochs: int
    checkpoint_interval: int
    validation_interval: int
    lr: float
    optim: str  # adamw | adam | sgd
    policy: str  # linear | step
    momentum: float
    weight_decay: float
    cls_weight: tuple[float, float]
    pretrained_model_path: str | None
    pretrained_backbone_path: str | None
    freeze_backbone: bool


def _triple(value: Any, key: str, default: tuple[float, float, float]) -> tuple[float, float, float]:
    if value is None:
        return default
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    vals = [float(v) for v in value]
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3:
        raise SpecValueError(f"{key} must have 3 values (RGB), got {value!r}")
    return (vals[0], vals[1], vals[2])


def _section(spec: dict[str, Any], key: str) -> dict[str, Any]:
    value = get_dotted(spec, key, None)
    return value if isinstance(value, dict) else {}


def augment_from_spec(spec: dict[str, Any]) -> AugmentConfig:
    aug = _section(spec, "dataset.classify.augmentation_config")
    if not aug or not bool(aug.get("augment", False)):
        return AugmentConfig(enabled=False)
    flip = aug.get("random_flip") or {}
    rot = aug.get("random_rotate") or {}
    color = aug.get("random_color") or {}
    flip_on = bool(flip.get("enable", True)) if flip else False
    rot_on = bool(rot.get("enable", True)) if rot else False
    color_on = bool(color.get("enable", color.get("enabled", True))) if color else False
    angles = tuple(int(a) % 360 for a in (rot.get("angle_list") or [90, 180, 270])) if rot_on else ()
    bad = [a for a in angles if a % 90]
    if bad:
        raise SpecValueError(f"dataset.classify.augmentation_config.random_rotate.angle_list: only multiples "
                             f"of 90 are supported (they keep capture and golden pixel-aligned), got {bad}")
    return AugmentConfig(
        enabled=True,
        hflip_probability=float(flip.get("hflip_probability", 0.5)) if flip_on else 0.0,
        vflip_probability=float(flip.get("vflip_probability", 0.5)) if flip_on else 0.0,
        rotate_probability=float(rot.get("rotate_probability", 0.5)) if rot_on else 0.0,
        angle_list=angles,
        color_probability=float(color.get("color_probability", 0.5)) if color_on else 0.0,
        brightness=float(color.get("brightness", 0.0) or 0.0) if color_on else 0.0,
        contrast=float(color.get("contrast", 0.0) or 0.0) if color_on else 0.0,
    )


def data_from_spec(spec: dict[str, Any]) -> DataConfig:
    _require_rules(spec)
    arch = architecture_from_spec(spec)
    aug = _section(spec, "dataset.classify.augmentation_config")
    fpr = get_dotted(spec, "dataset.classify.fpratio_sampling", None)
    batch = int(_get(spec, "dataset.classify.batch_size", 32))
    if batch < 1:
        raise SpecValueError(f"dataset.classify.batch_size must be ≥ 1, got {batch}")
    return DataConfig(
        layout=ImageLayout.from_spec(spec),
        image_height=arch["dataset.classify.image_height"],
        image_width=arch["dataset.classify.image_width"],
        batch_size=batch,
        workers=max(0, int(_get(spec, "dataset.classify.workers", 0))),
        fpratio_sampling=None if fpr is None else float(fpr),
        rgb_mean=_triple(aug.get("rgb_input_mean"), "dataset.classify.augmentation_config.rgb_input_mean",
                         (0.485, 0.456, 0.406)),
        rgb_std=_triple(aug.get("rgb_input_std"), "dataset.classify.augmentation_config.rgb_input_std",
                        (0.229, 0.224, 0.225)),
        augment=augment_from_spec(spec),
    )


def train_from_spec(spec: dict[str, Any]) -> TrainConfig:
    _require_rules(spec)
    epochs = int(_get(spec, "train.num_epochs", 1))
    loss = str(_get(spec, "train.classify.loss", "ce")).lower()
    if loss != "ce":
        raise SpecValueError(f"train.classify.loss '{loss}' is not supported by the builtin backend (use 'ce')")
    cls_weight = _get(spec, "train.classify.cls_weight", [1.0, 1.0])
    if not isinstance(cls_weight, (list, tuple)) or len(cls_weight) != 2:
        raise SpecValueError(f"train.classify.cls_weight must be [w_pass, w_defect], got {cls_weight!r}")
    optim = str(_get(spec, "train.optim.optim", "adamw")).lower()
    if optim not in ("adamw", "adam", "sgd"):
        raise SpecValueError(f"train.optim.optim must be adamw, adam or sgd, got {optim!r}")
    policy = str(_get(spec, "train.optim.policy", "linear")).lower()
    if policy not in ("linear", "step"):
        raise SpecValueError(f"train.optim.policy must be linear or step, got {policy!r}")
    # Both intervals are clamped to ≤ num_epochs (as TAO does), so a short run still checkpoints/validates.
    ckpt_int = min(max(1, int(_get(spec, "train.checkpoint_interval", 1))), max(epochs, 1))
    val_int_raw = get_dotted(spec, "train.validation_interval", None)
    if val_int_raw is None:
        val_int_raw = get_dotted(spec, "train.val_interval", 1)  # older TAO spelling
    val_int = min(max(1, int(val_int_raw or 1)), max(epochs, 1))
    pretrained = get_dotted(spec, "train.pretrained_model_path", None)
    backbone_path = get_dotted(spec, "model.backbone.pretrained_backbone_path", None)
    return TrainConfig(
        num_epochs=epochs, checkpoint_interval=ckpt_int, validation_interval=val_int,
        lr=float(_get(spec, "train.optim.lr", 1e-4)), optim=optim, policy=policy,
        momentum=float(_get(spec, "train.optim.momentum", 0.9)),
        weight_decay=float(_get(spec, "train.optim.weight_decay", 0.01)),
        cls_weight=(float(cls_weight[0]), float(cls_weight[1])),
        pretrained_model_path=str(pretrained) if pretrained else None,
        pretrained_backbone_path=str(backbone_path) if backbone_path else None,
        freeze_backbone=bool(_get(spec, "model.backbone.freeze_backbone", False)),
    )


def resolve_backbone(spec: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """Return ``(spec', note)``: ``spec'`` builds on the builtin backend; ``note`` says what was substituted.

    A TAO backbone (e.g. ``c_radio_v2_vit_base_patch16_224``) is replaced by :data:`DEFAULT_BACKBONE`
    and its ``pretrained_backbone_path`` dropped (those weights belong to the other network). Pre-flight
    records ``note`` in ``RD/config.yaml`` and the report. ``spec`` itself is not changed.
    """
    out = copy.deepcopy(spec)
    current = get_dotted(out, "model.backbone.type", None)
    if current is None:
        set_dotted(out, "model.backbone.type", DEFAULT_BACKBONE)
        return out, None
    if str(current) in BACKBONE_WIDTHS:
        return out, None
    set_dotted(out, "model.backbone.type", DEFAULT_BACKBONE)
    note = (f"model.backbone.type '{current}' cannot be built by the builtin backend; substituted "
            f"'{DEFAULT_BACKBONE}'")
    if get_dotted(out, "model.backbone.pretrained_backbone_path", None):
        note += (f" and dropped model.backbone.pretrained_backbone_path "
                 f"'{get_dotted(out, 'model.backbone.pretrained_backbone_path')}' (weights of the other backbone)")
        set_dotted(out, "model.backbone.pretrained_backbone_path", None)
    return out, note
