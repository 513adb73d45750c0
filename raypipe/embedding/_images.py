"""Image primitives shared by the embedders: decode a row's files, standardise, align, pool.

Everything here is plain numpy on ``float32`` arrays shaped ``(H, W, C)`` or ``(L, H, W, C)`` (one
image per light), so the embedders stay cheap to import in a Ray worker that never needs torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from raypipe.workspace._rows import ImageLayout

STD_FLOOR = 0.02  # on [0, 1] intensities: a flat image (a bare board) must not blow up to noise


def load_rgb(path: Path) -> np.ndarray:
    """``(H, W, 3)`` float32 in [0, 1]; a missing or undecodable file raises naming the path."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, ValueError) as exc:  # PIL raises OSError subclasses (and ValueError) for bad files
        raise ValueError(f"{path}: cannot read image ({exc})") from None


def row_stacks(layout: ImageLayout, images_dir: Path, row: Any) -> tuple[np.ndarray, np.ndarray]:
    """(captures, goldens) of one row, each ``(L, H, W, 3)`` in light order."""
    caps = np.stack([load_rgb(p) for p in layout.capture_paths(Path(images_dir), row)])
    golds = np.stack([load_rgb(p) for p in layout.golden_paths(Path(images_dir), row)])
    if caps.shape != golds.shape:
        raise ValueError(f"row {row.get('object_name', '?')}: capture images {caps.shape[1:]} and golden images "
                         f"{golds.shape[1:]} differ in size")
    return caps, golds


def standardise(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit spread per image and channel over the two spatial axes (``(..., H, W, C)``).

    The line's exposure differs between a capture and its golden (a gain and an offset per light and
    channel); standardising each image removes that, so what is left of a difference is content.
    """
    mean = x.mean(axis=(-3, -2), keepdims=True)
    std = x.std(axis=(-3, -2), keepdims=True)
    return ((x - mean) / (std + STD_FLOOR)).astype(np.float32)


def best_shift(capture: np.ndarray, golden: np.ndarray, max_shift: int) -> tuple[int, int]:
    """Integer (dy, dx) within ±``max_shift`` that best aligns ``golden`` to ``capture``.

    Both are ``(L, H, W, C)``; one shift for all lights (a row's lights come from one camera pose).
    Cost: mean absolute difference over the central window that every shift covers.
    """
    if max_shift <= 0:
        return 0, 0
    m = max_shift
    h, w = capture.shape[1:3]
    centre = capture[:, m:h - m, m:w - m]
    best, best_cost = (0, 0), np.inf
    for dy in range(-m, m + 1):
        for dx in range(-m, m + 1):
            cost = float(np.abs(centre - golden[:, m + dy:h - m + dy, m + dx:w - m + dx]).mean())
            # strict "<" over a fixed scan order: ties keep the smaller shift scanned first (deterministic)
            if cost < best_cost - 1e-9:
                best, best_cost = (dy, dx), cost
    return best


def aligned_difference(capture: np.ndarray, golden: np.ndarray, max_shift: int, tolerance: int) -> np.ndarray:
    """``|capture − golden|`` after a global integer alignment, then a per-pixel tolerance.

    ``max_shift`` absorbs the global misalignment; ``tolerance`` (px) takes, per pixel, the smallest
    difference to any golden pixel within ±``tolerance`` of the aligned position, so the residual
    sub-pixel shift of every edge does not read as change while a speck absent from the whole
    neighbourhood still does. Returns ``(L, H − 2·(max_shift + tolerance), W − …, C)``.
    """
    dy, dx = best_shift(capture, golden, max_shift)
    m = max_shift + tolerance
    h, w = capture.shape[1:3]
    cap = capture[:, m:h - m, m:w - m]
    out = np.full(cap.shape, np.inf, dtype=np.float32)
    for ty in range(-tolerance, tolerance + 1):
        for tx in range(-tolerance, tolerance + 1):
            y0, x0 = m + dy + ty, m + dx + tx
            np.minimum(out, np.abs(cap - golden[:, y0:y0 + cap.shape[1], x0:x0 + cap.shape[2]]), out=out)
    return out


def adaptive_pool(x: np.ndarray, size: int, how: str = "mean") -> np.ndarray:
    """Pool the two spatial axes of ``(..., H, W, C)`` to ``size``×``size`` cells (``mean`` or ``max``).

    Cells follow adaptive pooling's rule (cell i spans ``floor(i·H/size)`` to ``ceil((i+1)·H/size)``),
    so any input size works, overlapping by a pixel when ``H`` is not a multiple of ``size``.
    """
    h, w = x.shape[-3], x.shape[-2]
    if size > min(h, w):
        raise ValueError(f"cannot pool {h}x{w} images to {size}x{size}")
    ys = [(i * h // size, -(-(i + 1) * h // size)) for i in range(size)]
    xs = [(j * w // size, -(-(j + 1) * w // size)) for j in range(size)]
    reduce = np.mean if how == "mean" else np.max
    if h % size == 0 and w % size == 0:  # the common case: whole blocks, one reshape
        blocks = x.reshape(*x.shape[:-3], size, h // size, size, w // size, x.shape[-1])
        return reduce(blocks, axis=(-4, -2)).astype(np.float32)
    rows = [np.stack([reduce(x[..., y0:y1, x0:x1, :], axis=(-3, -2)) for x0, x1 in xs], axis=-2)
            for y0, y1 in ys]
    return np.stack(rows, axis=-3).astype(np.float32)


def dihedral_mean(grid: np.ndarray) -> np.ndarray:
    """Average of a square ``(..., S, S, C)`` grid over its 8 rotations and mirror images.

    Components sit on the board at any of four orientations, mirrored or not; a defect of one kind
    then lands in different cells of a pooled grid. Averaging over the symmetry group keeps *how
    far from the centre* a difference lies (centre, edges, corners) and drops *which side*, so rows
    of one defect kind match whatever the component's orientation.
    """
    if grid.shape[-3] != grid.shape[-2]:
        raise ValueError(f"dihedral_mean needs a square grid, got {grid.shape[-3]}x{grid.shape[-2]}")
    acc = np.zeros_like(grid, dtype=np.float64)
    for k in range(4):
        rot = np.rot90(grid, k, axes=(-3, -2))
        acc += rot + rot[..., ::-1, :]
    return (acc / 8.0).astype(np.float32)
