"""The embedder interface: rows + their images dir → one float32 vector per row.

An embedder is a small picklable object (it travels to Ray workers) with a ``name`` (what the
config selects) and a ``version`` (what its vectors mean: the code revision, its parameters and,
for learned embedders, the weights). Two vectors are comparable only when both came from the same
:attr:`Embedder.identity`; the embedding cache keys on it, so a changed embedder never reuses a
stale vector.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from raypipe.embedding._images import row_stacks
from raypipe.workspace._rows import ImageLayout, iter_records


class Embedder(ABC):
    """Turns rows (``input_path``, ``golden_path``, ``object_name``, …) into an ``(n, d)`` float32 matrix."""

    name: ClassVar[str]

    def __init__(self, layout: ImageLayout) -> None:
        self.layout = layout

    @property
    @abstractmethod
    def version(self) -> str:
        """Changes whenever the same images would give different vectors."""

    @property
    def identity(self) -> str:
        """Name, version and image layout, as one stable string (the cache's namespace)."""
        return json.dumps({"name": self.name, "version": self.version, "lights": list(self.layout.lights),
                           "image_ext": self.layout.image_ext}, sort_keys=True)

    @property
    def identity_digest(self) -> str:
        return hashlib.sha256(self.identity.encode()).hexdigest()[:16]

    def embed(self, rows: pd.DataFrame, images_dir: Path) -> np.ndarray:
        """``(len(rows), d)`` float32; raises naming the embedder when the output is malformed."""
        vecs = np.asarray(self._embed(rows, Path(images_dir)), dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[0] != len(rows):
            raise ValueError(f"embedder {self.name} returned shape {vecs.shape} for {len(rows)} rows")
        if not np.isfinite(vecs).all():
            bad = int(np.flatnonzero(~np.isfinite(vecs).all(axis=1))[0])
            raise ValueError(f"embedder {self.name} returned NaN/inf for row {bad} "
                             f"({rows.iloc[bad].get('object_name', '?')})")
        return vecs

    @abstractmethod
    def _embed(self, rows: pd.DataFrame, images_dir: Path) -> np.ndarray: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.version})"


class RowEmbedder(Embedder):
    """An embedder that looks at one row at a time: its captures and goldens, ``(L, H, W, 3)`` each."""

    def _embed(self, rows: pd.DataFrame, images_dir: Path) -> np.ndarray:
        vecs = [self.features(*row_stacks(self.layout, images_dir, rec)) for rec in iter_records(rows)]
        if not vecs:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack(vecs)

    @property
    @abstractmethod
    def dim(self) -> int:
        """Length of one vector (known without reading an image: an empty frame still has a shape)."""

    @abstractmethod
    def features(self, captures: np.ndarray, goldens: np.ndarray) -> np.ndarray: ...


def params_version(code: str, **params: Any) -> str:
    """``<code>;k=v;…`` with sorted keys: a version string that changes with any parameter."""
    return ";".join([code] + [f"{k}={params[k]}" for k in sorted(params)])
