"""CPU reference backends: connected-components-3d and scipy.ndimage."""

from __future__ import annotations

import numpy as np

__all__ = ["label_cc3d", "label_scipy"]

_CC3D_CONN = {1: 6, 2: 18, 3: 26}


def label_cc3d(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, np.ndarray]:
    """Label each image of ``mask`` (B, *spatial) with cc3d; raster-order numbering.

    2D images are labelled as ``(1, H, W)`` volumes (hops 1 -> 6, 2 -> 26 in a single slice are exactly 4 and
    8): cc3d's native 2D 8-connected path numbers components in a different order than scipy.
    """
    import cc3d

    spatial_dims = mask.ndim - 1
    conn = _CC3D_CONN[connectivity if spatial_dims == 3 else {1: 1, 2: 3}[connectivity]]
    out = np.empty(mask.shape, dtype=np.int64)
    counts = np.empty(mask.shape[0], dtype=np.int64)
    binary = mask if mask.dtype == np.bool_ else mask.astype(bool)
    if sum(s > 1 for s in mask.shape[1:]) <= 1:
        # A line of voxels: every connectivity is the same, and cc3d 4.1 fails on (n, 1, 1) volumes with 26.
        conn = 6
    for b in range(mask.shape[0]):
        img = binary[b] if spatial_dims == 3 else binary[b][None]
        lab, n = cc3d.connected_components(img, connectivity=conn, return_N=True)
        out[b] = lab if spatial_dims == 3 else lab[0]
        counts[b] = n
    return out, counts


def label_scipy(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, np.ndarray]:
    """Label each image of ``mask`` (B, *spatial) with ``scipy.ndimage.label``."""
    from scipy import ndimage

    spatial_dims = mask.ndim - 1
    structure = ndimage.generate_binary_structure(spatial_dims, connectivity)
    out = np.empty(mask.shape, dtype=np.int64)
    counts = np.empty(mask.shape[0], dtype=np.int64)
    for b in range(mask.shape[0]):
        n = ndimage.label(mask[b], structure=structure, output=out[b])
        counts[b] = n
    return out, counts
