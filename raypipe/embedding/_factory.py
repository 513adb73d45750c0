"""Embedders by config name: ``pixels``, ``difference``, ``imagenet``, ``model``."""

from __future__ import annotations

from typing import Any

from raypipe.embedding._base import Embedder
from raypipe.workspace._rows import ImageLayout

EMBEDDERS = ("imagenet", "difference", "pixels", "model")
DEFAULT_EMBEDDER = "imagenet"  # measured: see benchmarks/mining_quality.py


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
