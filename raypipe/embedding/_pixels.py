"""Model-free embedders: the pooled images (``pixels``) and the pooled capture-vs-golden
comparison (``difference``). Deterministic, numpy only, fast enough for a large pool on CPU.
"""

from __future__ import annotations

import numpy as np

from raypipe.embedding._base import RowEmbedder, params_version
from raypipe.embedding._images import (
    adaptive_pool,
    aligned_difference,
    dihedral_mean,
    standardise,
)
from raypipe.workspace._rows import ImageLayout


class PixelEmbedder(RowEmbedder):
    """``pixels``: per light, the capture pooled to ``size``×``size`` and (``with_difference``) the pooled
    ``2·(capture − golden)``, the whole vector mean-centred — the embedder mining has used so far.

    ``standardise`` first scales each image to zero mean and unit spread per channel, so exposure
    differences between boards do not dominate the distance.
    """

    name = "pixels"

    def __init__(self, layout: ImageLayout, size: int = 16, standardise: bool = False,
                 with_difference: bool = True) -> None:
        super().__init__(layout)
        self.size, self.standardise, self.with_difference = int(size), bool(standardise), bool(with_difference)

    @property
    def version(self) -> str:
        return params_version("1", size=self.size, standardise=self.standardise,
                              with_difference=self.with_difference)

    @property
    def dim(self) -> int:
        return len(self.layout.lights) * (2 if self.with_difference else 1) * self.size * self.size * 3

    def features(self, captures: np.ndarray, goldens: np.ndarray) -> np.ndarray:
        if self.standardise:
            captures, goldens = standardise(captures), standardise(goldens)
        c = adaptive_pool(captures, self.size)
        parts = [c]
        if self.with_difference:
            parts.append(2.0 * (c - adaptive_pool(goldens, self.size)))
        # light-major order: [light0 capture, light0 difference, light1 capture, …]
        v = np.concatenate([np.stack([p[i] for p in parts]).ravel() for i in range(c.shape[0])])
        return (v - v.mean()).astype(np.float32)


class DifferenceEmbedder(RowEmbedder):
    """``difference``: what changed between the capture and its golden, per light, pooled.

    Each image is standardised per channel (exposure gain/offset removed), the golden is aligned
    to the capture by the best integer shift within ±``max_shift`` px (the line's placement
    jitter), ``|capture − golden|`` is taken with a ±``tolerance`` px neighbourhood (sub-pixel edge
    residue is not change), and the map is pooled to ``size``×``size`` cells, mean and max (``pool=
    "mean"``: mean only; the max keeps a one-speck difference from being averaged away). With
    ``dihedral`` the grid is averaged over the component's possible orientations
    (:func:`~raypipe.embedding._images.dihedral_mean`).

    Why: a defect *is* a difference. An embedding of the component's look clusters rows by
    component type and board, so a target's neighbours are the same part, defective or not; an
    embedding of the difference clusters by what went wrong, where it went wrong.
    """

    name = "difference"

    def __init__(self, layout: ImageLayout, size: int = 4, max_shift: int = 3, tolerance: int = 1,
                 pool: str = "meanmax", dihedral: bool = True) -> None:
        super().__init__(layout)
        if pool not in ("mean", "meanmax"):
            raise ValueError(f"difference embedder: pool must be 'mean' or 'meanmax', got {pool!r}")
        if max_shift < 0 or tolerance < 0:
            raise ValueError("difference embedder: max_shift and tolerance must be >= 0")
        self.size, self.max_shift, self.tolerance, self.pool = int(size), int(max_shift), int(tolerance), pool
        self.dihedral = bool(dihedral)

    @property
    def version(self) -> str:
        return params_version("1", size=self.size, max_shift=self.max_shift, tolerance=self.tolerance,
                              pool=self.pool, dihedral=self.dihedral)

    @property
    def dim(self) -> int:
        return len(self.layout.lights) * (2 if self.pool == "meanmax" else 1) * self.size * self.size * 3

    def features(self, captures: np.ndarray, goldens: np.ndarray) -> np.ndarray:
        diff = aligned_difference(standardise(captures), standardise(goldens), self.max_shift, self.tolerance)
        parts = [adaptive_pool(diff, self.size, "mean")]
        if self.pool == "meanmax":
            parts.append(adaptive_pool(diff, self.size, "max"))
        if self.dihedral:
            parts = [dihedral_mean(p) for p in parts]
        return np.concatenate([np.stack([p[i] for p in parts]).ravel() for i in range(diff.shape[0])])
