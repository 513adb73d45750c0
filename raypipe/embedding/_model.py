"""``model``: the current checkpoint's own features, through the backend's ``embed``.

This is what the trained classifier attends to; early in the loop that is mostly the component's
appearance, which is why it is not the default (see ``benchmarks/mining_quality.py``). It stays
available for backends whose features are known to separate defect kinds.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raypipe.embedding._base import Embedder, params_version
from raypipe.workspace._rows import ImageLayout

_READ_CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_READ_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class ModelEmbedder(Embedder):
    """The backend's embedding of ``ckpt`` (None: the backend's fixed untrained network)."""

    name = "model"

    def __init__(self, layout: ImageLayout, *, backend: str, spec: dict[str, Any], ckpt: Path | None,
                 backend_options: dict[str, Any] | None = None) -> None:
        super().__init__(layout)
        self.backend, self.spec, self.ckpt = backend, spec, Path(ckpt) if ckpt is not None else None
        self.backend_options = dict(backend_options or {})
        # the weights' bytes, not the path: a re-trained checkpoint written to the same path is new
        self._weights = file_digest(self.ckpt)[:16] if self.ckpt is not None else "untrained"
        self._spec = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]

    @property
    def version(self) -> str:
        return params_version("1", backend=self.backend, weights=self._weights, spec=self._spec)

    def _embed(self, rows: pd.DataFrame, images_dir: Path) -> np.ndarray:
        from raypipe.backends import get_backend

        if self.ckpt is not None and file_digest(self.ckpt)[:16] != self._weights:
            # the version (and so every cache entry) names the weights read at construction
            raise ValueError(f"checkpoint {self.ckpt} changed since this model embedder was made; make a new one")

        trainer = get_backend(self.backend, **self.backend_options)
        return np.asarray(trainer.embed(self.spec, self.ckpt, rows, images_dir=Path(images_dir)), dtype=np.float32)
