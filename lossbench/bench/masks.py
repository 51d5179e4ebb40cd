"""The benchmark's synthetic masks: blobs for labelling and losses, balls for scaling, lesions, noisy logits."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lossbench.bench.settings import N_COMPONENTS
from lossbench.errors import expect

__all__ = [
    "instances_mask",
    "ball_voxels",
    "blob_masks",
    "prediction_mask",
    "sparse_false",
    "lesions_mask",
    "noisy_logits",
    "metrics_subject",
]


def instances_mask(shape: Sequence[int], n: int, *, radius: float = 2.5, seed: int = 0) -> np.ndarray:
    """Exactly ``n`` separate balls in distinct cells of a regular grid (for the scaling suite).

    Cells have side ``2 * ceil(radius) + 2`` so balls never touch, even with full connectivity; centers are
    jittered inside their cells.

    Raises:
        ConfigError: if ``n`` balls do not fit.
    """
    rng = np.random.default_rng(seed)
    r = int(math.ceil(radius))
    cell = 2 * r + 2
    grid = [s // cell for s in shape]
    n_cells = int(np.prod(grid))
    if n > n_cells:
        raise expect("n", f"at most {n_cells} balls of radius {radius} in {tuple(shape)}", n)
    chosen = rng.choice(n_cells, size=n, replace=False)
    d2 = sum(o**2 for o in np.ogrid[tuple(slice(-r, r + 1) for _ in shape)])
    ball = d2 <= radius**2
    m = np.zeros(tuple(shape), dtype=bool)
    for flat in chosen:
        idx = np.unravel_index(int(flat), grid)
        c = [i * cell + r + int(rng.integers(0, cell - 2 * r)) for i in idx]
        m[tuple(slice(ci - r, ci + r + 1) for ci in c)] |= ball
    return m


def ball_voxels(radius: float, ndim: int = 3) -> int:
    """Voxels of the ball :func:`instances_mask` draws for ``radius``."""
    r = int(math.ceil(radius))
    d2 = sum(o**2 for o in np.ogrid[tuple(slice(-r, r + 1) for _ in range(ndim))])
    return int(np.count_nonzero(d2 <= radius**2))


def blob_masks(size: tuple[int, ...], batch: int) -> np.ndarray:
    """``batch`` images of about ``N_COMPONENTS`` blobs each (the labelling and loss suites' masks)."""
    from lossbench.cc.shapes import blobs_mask

    return np.stack([blobs_mask(size, N_COMPONENTS, seed=b) for b in range(batch)])


def prediction_mask(target: np.ndarray, n_false: int, seed: int) -> np.ndarray:
    """Prediction: the target shifted by one voxel along the last axis plus ``n_false`` false blobs per image."""
    from lossbench.cc.shapes import blobs_mask

    pred = np.roll(target, 1, axis=-1)
    if n_false:
        pred |= np.stack([blobs_mask(target.shape[1:], n_false, seed=seed + 1000 + b) for b in range(len(target))])
    return pred


def sparse_false(target: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` single-ball false positives per image placed where they do not touch the (dilated) target."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    out = np.zeros_like(target)
    for b in range(len(target)):
        free = ~ndimage.binary_dilation(target[b], iterations=4)
        cand = np.flatnonzero(free)
        for flat in rng.choice(cand, size=min(n, cand.size), replace=False):
            c = np.unravel_index(int(flat), target.shape[1:])
            out[(b, *tuple(slice(max(0, ci - 1), ci + 2) for ci in c))] = True
    return out & ~target


def _draw_lesions(
    rng: np.random.Generator, shape: tuple[int, ...], n_lesions: int
) -> tuple[np.ndarray, list[tuple[list[int], int]]]:
    """``n_lesions`` balls of radius 1.5..8 voxels (geometric steps) at random centers 10 voxels off the border."""
    target = np.zeros(shape, dtype=bool)
    centers = []
    radii = np.geomspace(1.5, 8.0, n_lesions)
    for r in radii:
        rr = int(math.ceil(r))
        c = [int(rng.integers(rr + 10, s - rr - 10)) for s in shape]
        d2 = sum(o**2 for o in np.ogrid[tuple(slice(-rr, rr + 1) for _ in shape)])
        target[tuple(slice(ci - rr, ci + rr + 1) for ci in c)] |= d2 <= r**2
        centers.append((c, rr))
    return target, centers


def _check_lesion_shape(shape: Sequence[int]) -> None:
    if any(s < 37 for s in shape):  # the largest ball (radius 8) 10 voxels off both borders
        raise expect("shape", "sides of at least 37 voxels for lesions of radius up to 8", tuple(shape))


def lesions_mask(shape: Sequence[int], n_lesions: int, seed: int = 0) -> np.ndarray:
    """A label of ``n_lesions`` balls of radius 1.5..8 voxels (the metrics subject's lesions; they may touch).

    Raises:
        ConfigError: if a side is shorter than 37 voxels.
    """
    _check_lesion_shape(shape)
    return _draw_lesions(np.random.default_rng(seed), tuple(shape), n_lesions)[0]


def noisy_logits(target: np.ndarray, seed: int = 0) -> np.ndarray:
    """An untrained network's logits: ``4 * target - 2 + N(0, 1)`` (float32, seeded).

    Thresholded at 0 (probability 0.5) about 2.3 % of the background is foreground, in tens of thousands of tiny
    components per ATLAS-sized image, and about 2.3 % of the label is missed.
    """
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(target.shape, dtype=np.float32)
    return (4.0 * target.astype(np.float32) - 2.0 + noise).astype(np.float32, copy=False)


def metrics_subject(shape: tuple[int, ...], n_lesions: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A subject of ``shape`` with ``n_lesions`` balls of radius 1.5..8 voxels; prediction shifted, 3 missed, 3 false.

    Returns:
        ``(prediction, target)`` bool arrays.

    Raises:
        ConfigError: if a side is shorter than 37 voxels.
    """
    _check_lesion_shape(shape)
    rng = np.random.default_rng(seed)
    target, centers = _draw_lesions(rng, shape, n_lesions)
    pred = np.roll(target, 1, axis=0)
    for c, rr in centers[:3]:  # missed lesions
        pred[tuple(slice(ci - rr - 1, ci + rr + 2) for ci in c)] = False
    for _ in range(3):  # false lesions
        c = [int(rng.integers(5, s - 5)) for s in shape]
        pred[tuple(slice(ci - 2, ci + 3) for ci in c)] = True
    return pred, target
