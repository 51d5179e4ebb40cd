"""Test-only oracles and renderers: slow, obvious implementations that the package's fast code is checked against."""

from __future__ import annotations

import torch

from lossbench.instances import centroids_ceil_from_positions

__all__ = ["render_boxes", "component_last_voxel", "component_centroids_ceil"]


def render_boxes(
    lo: torch.Tensor,
    hi: torch.Tensor,
    image: torch.Tensor,
    shape: tuple[int, ...],
    values: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Paint axis-aligned boxes into ``(B, *spatial)`` maps with a difference array (no loop over boxes).

    Each box ``i`` covers ``lo[i, d] <= x_d < hi[i, d]`` in image ``image[i]``. The corners of every box
    get ``+-1`` (inclusion-exclusion over the ``2^ndim`` corners) in a ``(B, *(s + 1))`` array whose
    cumulative sum along every spatial axis is the number of boxes covering each voxel. Cost
    O(voxels * ndim + boxes * 2^ndim).

    Args:
        lo: int64 ``(N, ndim)`` inclusive lower corners, already clipped to the image.
        hi: int64 ``(N, ndim)`` exclusive upper corners, already clipped; empty boxes (hi <= lo) are skipped.
        image: int64 ``(N,)`` image index of every box.
        shape: ``(B, *spatial)``.
        values: optional ``(N,)`` floating values (differentiable): the second map is the sum, over the
            boxes covering a voxel, of their values (exactly 0 where no box covers).

    Returns:
        ``(count, value_sum)``: int64 coverage counts and the summed values (``None`` without ``values``),
        both of shape ``shape``.
    """
    batch, spatial = shape[0], tuple(shape[1:])
    ndim = len(spatial)
    padded = tuple(s + 1 for s in spatial)
    keep = (hi > lo).all(dim=1)
    lo, hi, image = lo[keep], hi[keep], image[keep]
    strides = []
    acc = 1
    for s in reversed(padded):
        strides.append(acc)
        acc *= s
    strides = list(reversed(strides))
    total = batch * acc
    count = torch.zeros(total, dtype=torch.int64, device=lo.device)
    vsum = None
    if values is not None:
        values = values[keep].to(torch.float64)
        vsum = torch.zeros(total, dtype=torch.float64, device=lo.device)
    for corner in range(1 << ndim):
        flat = image * acc
        sign = 1
        for d in range(ndim):
            use_hi = (corner >> d) & 1
            flat = flat + (hi[:, d] if use_hi else lo[:, d]) * strides[d]
            sign = -sign if use_hi else sign
        count.index_add_(0, flat, torch.full_like(flat, sign))
        if vsum is not None:
            vsum = vsum.index_add(0, flat, values * sign)
    count = count.view(batch, *padded)
    for d in range(ndim):
        count = count.cumsum(d + 1)
    crop = (slice(None),) + tuple(slice(0, s) for s in spatial)
    count = count[crop]
    if vsum is not None:
        vsum = vsum.view(batch, *padded)
        for d in range(ndim):
            vsum = vsum.cumsum(d + 1)
        vsum = torch.where(count > 0, vsum[crop], torch.zeros((), dtype=vsum.dtype, device=vsum.device))
    return count, vsum


def component_last_voxel(ids: torch.Tensor, n: int) -> torch.Tensor:
    """Largest flat position (within its image) of every id 0..n; ids must be ``(B, *spatial)``.

    The reference ICI code numbers a component by its maximum flat index, so sorting by this value
    reproduces the reference's component order (used by its ``max_cc_out`` cap). Entry 0 (background)
    is -1. Cost: one pass to find the foreground, then O(foreground voxels).
    """
    per_image = ids[0].numel()
    flat = ids.reshape(-1)
    pos = torch.nonzero(flat > 0, as_tuple=True)[0]
    out = torch.full((n + 1,), -1, dtype=torch.int64, device=ids.device)
    return out.scatter_reduce(0, flat[pos], pos % per_image, reduce="amax")


def component_centroids_ceil(ids: torch.Tensor, n: int) -> torch.Tensor:
    """``ceil(mean voxel index)`` per axis of every id 1..n (exact integer arithmetic), shape ``(n, ndim)``.

    Args:
        ids: int64 global ids of shape ``(B, *spatial)``.
        n: largest id.

    Returns:
        int64 tensor ``(n, len(spatial))``; row ``i - 1`` belongs to id ``i``.
    """
    flat = ids.reshape(-1)
    pos = torch.nonzero(flat > 0, as_tuple=True)[0]
    return centroids_ceil_from_positions(pos, flat[pos], n, tuple(ids.shape[1:]))
