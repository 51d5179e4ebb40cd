"""Adversarial masks for connected-component labelling (used by tests, the gallery and the benchmark).

Each function returns a bool ndarray without batch axis.
"""

from __future__ import annotations

import numpy as np

__all__ = ["serpentine", "spiral", "diagonal_line", "corner_voxels", "blobs_mask"]


def serpentine(size: int = 64, spatial_dims: int = 2, gap: int = 1) -> np.ndarray:
    """A single one-voxel-wide snake filling a square (2D) or stacked in slices joined at alternate ends (3D).

    Its in-component geodesic length is about size^2 / (gap + 1): the worst case for propagation labelling.
    """
    if size < 3:
        raise ValueError(f"`size` must be >= 3, got {size}")
    m = np.zeros((size, size), dtype=bool)
    rows = list(range(0, size, gap + 1))
    for i, r in enumerate(rows):
        m[r, :] = True
        if i + 1 < len(rows):
            col = size - 1 if i % 2 == 0 else 0
            m[r : rows[i + 1] + 1, col] = True
    if spatial_dims == 2:
        return m
    vol = np.zeros((size, size, size), dtype=bool)
    vol[size // 2] = m
    return vol


def spiral(size: int = 64, spatial_dims: int = 2) -> np.ndarray:
    """A one-voxel-wide square spiral winding inwards with one-voxel gaps (one component, long geodesic)."""
    if size < 3:
        raise ValueError(f"`size` must be >= 3, got {size}")
    m = np.zeros((size, size), dtype=bool)
    top, bottom, left, right = 0, size - 1, 0, size - 1
    y = x = 0
    while True:
        if x > right:
            break
        m[y, x : right + 1] = True  # right
        x = right
        top += 2
        if y > bottom:
            break
        m[y : bottom + 1, x] = True  # down
        y = bottom
        right -= 2
        if x < left:
            break
        m[y, left : x + 1] = True  # left
        x = left
        bottom -= 2
        if y < top:
            break
        m[top : y + 1, x] = True  # up
        y = top
        left += 2
    if spatial_dims == 2:
        return m
    vol = np.zeros((size, size, size), dtype=bool)
    vol[:, :, size // 2] = m
    return vol


def diagonal_line(size: int = 32, spatial_dims: int = 2) -> np.ndarray:
    """A one-voxel diagonal line: one component with full connectivity, ``size`` components with face connectivity."""
    idx = np.arange(size)
    m = np.zeros((size,) * spatial_dims, dtype=bool)
    m[(idx,) * spatial_dims] = True
    return m


def corner_voxels(size: int = 16, spatial_dims: int = 2) -> np.ndarray:
    """Single voxels at every corner of the image (the flat-index-0 corner is dropped by the reference code)."""
    m = np.zeros((size,) * spatial_dims, dtype=bool)
    for corner in np.ndindex(*(2,) * spatial_dims):
        m[tuple(c * (size - 1) for c in corner)] = True
    return m


def blobs_mask(shape: tuple[int, ...], n: int, radius: float = 2.5, seed: int = 0) -> np.ndarray:
    """``n`` small balls at random, non-overlapping-ish centers (about ``n`` components), for benchmarks."""
    rng = np.random.default_rng(seed)
    m = np.zeros(shape, dtype=bool)
    r = int(np.ceil(radius))
    # squared distance to the center over the (2r+1)^d window around it (the window always fits in the image)
    d2 = sum(o**2 for o in np.ogrid[tuple(slice(-r, r + 1) for _ in shape)])
    ball = d2 <= radius**2
    for _ in range(n):
        c = [int(rng.integers(r, s - r)) for s in shape]
        sl = tuple(slice(ci - r, ci + r + 1) for ci in c)
        m[sl] |= ball
    return m
