"""Embedders for mining (``phase2.mining_filter.embedder``), run as Ray tasks with the training resources.

``model`` (default): the current best checkpoint's feature extractor through ``backend.embed``.
``pixels``: the model-free embedder of :mod:`raypipe.deft.mining` (downsampled capture and
capture−golden difference per light).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raypipe.workspace._rows import ImageLayout


@dataclass(frozen=True)
class EmbedJob:
    kind: str  # model | pixels
    backend: str
    backend_options: dict[str, Any]
    spec: dict[str, Any]
    ckpt: Path | None
    layout: ImageLayout


def run_embed(job: EmbedJob, rows: pd.DataFrame, images_dir: Path) -> np.ndarray:
    """Runs inside a Ray worker."""
    if job.kind == "pixels":
        from raypipe.deft.mining import pixel_embedder

        return pixel_embedder(job.layout)(rows, Path(images_dir))
    from raypipe.backends import get_backend

    trainer = get_backend(job.backend, **job.backend_options)
    return np.asarray(trainer.embed(job.spec, job.ckpt, rows, images_dir=Path(images_dir)), dtype=np.float32)
