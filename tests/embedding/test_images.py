"""The image primitives the embedders are built from, on arrays with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from raypipe.embedding._images import (
    adaptive_pool,
    aligned_difference,
    best_shift,
    dihedral_mean,
    standardise,
)


def _scene(seed: int = 0, size: int = 40, lights: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.uniform(0.1, 0.3, (lights, size, size, 3)).astype(np.float32)
    img[:, 12:28, 10:30] = rng.uniform(0.6, 0.9, 3)  # a bright component with sharp edges
    return img


def test_standardise_removes_exposure_gain_and_offset():
    img = _scene()
    assert np.allclose(standardise(img), standardise(img + 0.1), atol=1e-5)  # an offset: exactly
    # a gain: up to the spread floor that keeps flat images from blowing up (a few % here)
    assert np.allclose(standardise(img), standardise(1.3 * img + 0.1), atol=0.05)
    s = standardise(img)
    assert np.allclose(s.mean(axis=(1, 2)), 0, atol=1e-5)


@pytest.mark.parametrize("dy,dx", [(0, 0), (2, -1), (-3, 3)])
def test_best_shift_recovers_a_known_misalignment(dy, dx):
    golden = _scene()
    capture = np.roll(golden, (-dy, -dx), axis=(1, 2))  # capture[y, x] = golden[y + dy, x + dx]
    assert best_shift(capture, golden, 3) == (dy, dx)


def test_aligned_difference_ignores_shift_and_keeps_a_speck():
    golden = _scene()
    capture = np.roll(golden, (2, -2), axis=(1, 2)).copy()
    assert float(aligned_difference(capture, golden, 3, 1).max()) < 1e-6
    capture[:, 20:22, 5:7] = 1.0  # a 2-px speck on the board, absent from the golden's neighbourhood
    diff = aligned_difference(capture, golden, 3, 1)
    assert diff.shape == (2, 32, 32, 3)  # cropped by max_shift + tolerance on every side
    ys, xs = np.nonzero(diff.max(axis=(0, 3)) > 0.3)
    assert set(ys + 4) <= {20, 21} and set(xs + 4) <= {5, 6} and len(ys) > 0


def test_adaptive_pool_matches_block_means_and_handles_uneven_sizes():
    x = np.arange(2 * 8 * 8 * 3, dtype=np.float32).reshape(2, 8, 8, 3)
    pooled = adaptive_pool(x, 4)
    assert pooled.shape == (2, 4, 4, 3)
    assert np.allclose(pooled[1, 2, 3], x[1, 4:6, 6:8].mean(axis=(0, 1)))
    uneven = adaptive_pool(x[:, :7, :7], 3, "max")
    assert uneven.shape == (2, 3, 3, 3)
    assert np.allclose(uneven[0, 2, 2], x[0, 4:7, 4:7].max(axis=(0, 1)))  # cells span floor..ceil
    with pytest.raises(ValueError, match="cannot pool"):
        adaptive_pool(x, 9)


def test_dihedral_mean_is_invariant_to_rotation_and_mirroring():
    grid = np.random.default_rng(2).normal(size=(2, 4, 4, 3)).astype(np.float32)
    sym = dihedral_mean(grid)
    for turned in (np.rot90(grid, 1, axes=(1, 2)), grid[:, :, ::-1], np.rot90(grid, 3, axes=(1, 2))[:, ::-1]):
        assert np.allclose(dihedral_mean(np.ascontiguousarray(turned)), sym, atol=1e-6)
    # what is kept: the mean over each orbit (corners, edge cells, centre)
    assert np.allclose(sym[:, 0, 0], grid[:, [0, 0, 3, 3], [0, 3, 0, 3]].mean(axis=1), atol=1e-6)
    assert np.allclose(sym[:, 1, 1], grid[:, [1, 1, 2, 2], [1, 2, 1, 2]].mean(axis=1), atol=1e-6)
    with pytest.raises(ValueError, match="square"):
        dihedral_mean(grid[:, :3])
