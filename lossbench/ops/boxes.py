"""Axis-aligned boxes on a batch of images: their voxels, how many cover each voxel, and sums over them.

A box is given by its integer center and a half width per axis: it covers ``|x_d - center_d| <= half_d`` on every
axis, truncated at the image border (:func:`cube_coverage`, :func:`box_sums`, :func:`inverse_coverage_sums`), or by
its corners ``lo <= x < hi`` (:func:`box_voxels`). Positions are flat indices into the flattened ``(B, *spatial)``
batch; ``image`` gives each box's image.

The coverage grids are *padded*: along every axis voxel ``x`` sits at index ``x + 1`` of ``s + 2 half + 1`` entries,
so that a box's window never leaves the buffer and no bounds checks are needed (:func:`cube_coverage`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from lossbench.ops.dispatch import use_numpy
from lossbench.ops.indexing import flat_nonzero, take_flat, take_rows

__all__ = [
    "box_voxels",
    "window_sums",
    "cube_coverage",
    "coverage_work_size",
    "coverage_dtype",
    "box_grid",
    "box_sums",
    "covering_sums",
    "inverse_coverage_sums",
    "INCIDENCE_LIMIT",
]


def box_voxels(
    lo: torch.Tensor, hi: torch.Tensor, image: torch.Tensor, spatial: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every voxel of every box ``lo <= x < hi``, without touching the rest of the volume.

    Args:
        lo: int64 ``(N, ndim)`` inclusive lower corners (inside the image).
        hi: int64 ``(N, ndim)`` exclusive upper corners (inside the image); empty boxes give no voxel.
        image: int64 ``(N,)`` image index of every box.
        spatial: the spatial shape.

    Returns:
        ``(flat, box)``: flat positions (with repeats where boxes overlap) and the box of each, boxes in order and
        each box's voxels in raster order. Cost O(N x largest box volume).
    """
    n = lo.shape[0]
    if n == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=lo.device)
        return empty, empty
    if use_numpy(lo):
        flat, box = _box_voxels_numpy(lo.numpy(), hi.numpy(), image.numpy(), spatial)
        return torch.from_numpy(flat), torch.from_numpy(box)
    ndim = len(spatial)
    strides = [math.prod(spatial[d + 1 :]) for d in range(ndim)]
    size = (hi - lo).clamp(min=0)
    ext = size.amax(0).tolist()  # offsets inside the largest box, per axis (one host sync)
    flat = (image * math.prod(spatial) + (lo * torch.tensor(strides, device=lo.device)).sum(1)).view((n,) + (1,) * ndim)
    valid = torch.ones((n,) + (1,) * ndim, dtype=torch.bool, device=lo.device)
    for d in range(ndim):
        shape = [1] * (ndim + 1)
        shape[d + 1] = ext[d]
        off = torch.arange(ext[d], device=lo.device).view(shape)
        flat = flat + off * strides[d]
        valid = valid & (off < size[:, d].view((n,) + (1,) * ndim))
    keep = flat_nonzero(valid.expand(flat.shape))
    return take_flat(flat, keep), torch.div(keep, max(math.prod(ext), 1), rounding_mode="floor")


def _box_voxels_numpy(
    lo: np.ndarray, hi: np.ndarray, image: np.ndarray, spatial: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`box_voxels` on arrays: the same voxels in the same order (offsets in the largest box, raster order)."""
    ndim = len(spatial)
    strides = np.array([math.prod(spatial[d + 1 :]) for d in range(ndim)], dtype=np.int64)
    size = np.clip(hi - lo, 0, None)
    ext = size.max(0)
    grid = np.indices(tuple(int(e) for e in ext)).reshape(ndim, -1)
    flat = (image * math.prod(spatial) + lo @ strides)[:, None] + (strides @ grid)[None, :]
    valid = np.ones(flat.shape, dtype=bool)
    for d in range(ndim):
        if int(size[:, d].min()) < int(ext[d]):  # some box is smaller along this axis
            valid &= grid[d][None, :] < size[:, d : d + 1]
    keep = np.flatnonzero(valid)
    return flat.reshape(-1)[keep], keep // max(grid.shape[1], 1)


def window_sums(
    buf: torch.Tensor, widths: tuple[int, ...], strides: tuple[int, ...], *, scratch: torch.Tensor | None = None
) -> torch.Tensor:
    """Forward window sums of a flat buffer along several axes: ``out[i] = sum_{k < w} buf[i + k * stride]`` per axis.

    For a bool ``buf`` the "sum" is a logical or (is any entry of the window set). Separable, one pass per axis
    into one of two ping-pong buffers, whatever the number of non-zero entries: ``w - 1`` contiguous shifted adds
    for sums, about ``log2(w)`` shifted ors for bools (or is idempotent, so overlapping windows may be doubled).
    Entries whose window leaves their axis (the last ``w - 1`` positions along it) or the buffer hold partial
    results: callers pad every axis by ``w - 1`` and read only the other positions, for which the result is exact
    (the flat shifts never carry into the next row there).

    Args:
        buf: 1-D tensor (a flattened, padded array), integer, floating or bool.
        widths: window width per axis (>= 1).
        strides: flat stride per axis, same length as ``widths``.
        scratch: optional 1-D tensor like ``buf``; when given, ``buf`` and ``scratch`` are both overwritten and
            the result is one of them (no allocation: fresh memory costs page faults on CPU).

    Returns:
        a 1-D tensor of ``buf``'s shape and dtype.
    """
    n = buf.numel()
    work = [buf, scratch if scratch is not None else torch.empty_like(buf)]
    src = buf

    def target() -> torch.Tensor:
        dst = work[1] if src is work[0] else work[0]
        if scratch is None and dst is buf:
            dst = work[0] = torch.empty_like(buf)  # never overwrite the caller's ``buf``
        return dst

    for width, stride in zip(widths, strides):
        if width <= 1 or stride >= n:
            continue
        if buf.dtype == torch.bool:
            covered = 1  # ``src`` holds ors over windows of ``covered`` entries
            while covered < width:
                shift = min(covered, width - covered) * stride
                dst = target()
                if shift < n:
                    torch.bitwise_or(src[: n - shift], src[shift:], out=dst[: n - shift])
                dst[max(n - shift, 0) :] = src[max(n - shift, 0) :]
                covered += shift // stride
                src = dst
            continue
        dst = target()
        torch.add(src[: n - stride], src[stride:], out=dst[: n - stride])
        dst[n - stride :] = src[n - stride :]
        for k in range(2, width):
            shift = k * stride
            if shift >= n:
                break
            dst[: n - shift] += src[shift:]
        src = dst
    return src if (src is not buf or scratch is not None) else buf.clone()


def coverage_work_size(shape: tuple[int, ...], half: tuple[int, ...]) -> int:
    """Entries of one padded grid of :func:`cube_coverage` (its ``work`` buffer needs two)."""
    return shape[0] * math.prod(s + 2 * h + 1 for s, h in zip(shape[1:], half))


def cube_coverage(
    center: torch.Tensor,
    image: torch.Tensor,
    half: tuple[int, ...],
    shape: tuple[int, ...],
    dtype: torch.dtype,
    *,
    work: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """How many boxes ``[center - half, center + half]`` (per axis, truncated at the border) cover every voxel.

    A box covers voxel x iff ``|x_d - center_d| <= half_d`` on every axis, so the count map is the histogram of
    the centers filtered by a ``(2 half + 1)``-wide window on every axis (:func:`window_sums` on a padded grid).
    Cost O(voxels * sum(half)) in contiguous integer adds plus O(boxes), independent of how many boxes there are
    or how much they overlap; with ``dtype=torch.bool`` only whether any box covers the voxel, in about
    ``log2(2 half + 1)`` byte-wide passes per axis.

    Args:
        center: int64 ``(N, ndim)`` box centers (may lie outside the image; boxes missing it are ignored).
        image: int64 ``(N,)`` image index of every box.
        half: half width per axis.
        shape: ``(B, *spatial)``.
        dtype: integer count dtype, which must hold the largest count (see :func:`coverage_dtype`), or
            ``torch.bool`` for the union of the boxes.
        work: optional flat buffer of ``dtype`` with at least ``2 * coverage_work_size(shape, half)`` entries,
            reused instead of fresh memory; the result then lives in it (valid until ``work`` is reused).
        weights: optional ``(N,)`` values (floating ``dtype``): each voxel then holds the sum of the weights of
            the boxes that cover it instead of their number.

    Returns:
        map of shape ``shape`` and dtype ``dtype``: a strided view into the padded work buffer (no copy), voxel
        ``x`` at padded index ``x + 1`` on every axis.
    """
    batch, spatial = shape[0], tuple(shape[1:])
    ndim = len(spatial)
    dev = center.device
    half_t = torch.tensor(half, dtype=torch.int64, device=dev)
    size_t = torch.tensor(spatial, dtype=torch.int64, device=dev)
    # padded grid: index j = center + half + 1 along each axis; voxel x reads the window starting at x + 1
    padded = tuple(s + 2 * h + 1 for s, h in zip(spatial, half))
    strides = tuple(math.prod(padded[d + 1 :]) for d in range(ndim))
    size = coverage_work_size(shape, half)
    if work is None:
        work = torch.empty(2 * size, dtype=dtype, device=dev)
    hist, scratch = work[:size], work[size : 2 * size]
    hist.zero_()
    j = center + half_t + 1
    inside = ((center >= -half_t) & (center <= size_t - 1 + half_t)).all(dim=1)
    flat = image * math.prod(padded) + (j * torch.tensor(strides, dtype=torch.int64, device=dev)).sum(1)
    if dtype == torch.bool:
        hist[flat[inside]] = True
    elif weights is not None:
        hist.index_put_((flat[inside],), weights[inside].to(dtype), accumulate=True)
    else:
        hist.index_put_((flat[inside],), torch.ones((), dtype=dtype, device=dev), accumulate=True)
    cov = window_sums(hist, tuple(2 * h + 1 for h in half), strides, scratch=scratch).view(batch, *padded)
    return cov[(slice(None),) + tuple(slice(1, s + 1) for s in spatial)]


def coverage_dtype(center: torch.Tensor, image: torch.Tensor, half: tuple[int, ...], n_img: int) -> torch.dtype:
    """The narrowest count dtype of :func:`cube_coverage` that cannot overflow: ``uint8`` or ``int32``.

    A voxel lies in at most as many boxes as there are box centers of its image within ``2 half_0 + 1``
    consecutive indices of the first axis; that bound is computed from the centers (O(boxes), on the host).
    Byte-wide counts make the window sums four times cheaper in memory traffic.
    """
    if center.shape[0] == 0:
        return torch.uint8
    z, img = center[:, 0].cpu().numpy(), image.cpu().numpy()
    lo = int(z.min())
    span, width = int(z.max()) - lo + 1, 2 * half[0] + 1
    hist = np.bincount(img * span + (z - lo), minlength=n_img * span).reshape(n_img, span)
    if span <= width:
        bound = int(hist.sum(1).max())
    else:
        before = np.concatenate([np.zeros((n_img, 1), dtype=np.int64), hist.cumsum(1)], axis=1)
        bound = int((before[:, width:] - before[:, :-width]).max())
    return torch.uint8 if bound <= 255 else torch.int32


def box_grid(shape: tuple[int, ...], half: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> tuple:
    """A zeroed grid for :func:`box_sums`: ``(grid, image view)``; write the values into the view, pass the grid.

    Along every axis voxel ``x`` sits at index ``x + half + 1`` of ``s + 2 half + 2`` entries, so that every box
    (center within one voxel of the image) lies inside the grid and its part outside the image reads zeros.
    """
    padded = (shape[0],) + tuple(s + 2 * h + 2 for s, h in zip(shape[1:], half))
    grid = torch.zeros(padded, dtype=dtype, device=device)
    inner = (slice(None),) + tuple(slice(h + 1, h + 1 + s) for s, h in zip(shape[1:], half))
    return grid, grid[inner]


def box_sums(grid: torch.Tensor, center: torch.Tensor, image: torch.Tensor, half: tuple[int, ...]) -> torch.Tensor:
    """Per box, the sum of the values of a :func:`box_grid` over the box's voxels (truncated at the image border).

    Box ``i`` covers ``|x_d - center[i, d]| <= half_d`` in image ``image[i]``; centers lie within one voxel of the
    image (``-1 <= center_d <= s_d``). Every axis but the first is filtered by a box-wide window in place (a prefix
    sum along the axis and one difference: a few passes over the grid, whatever the number of boxes or their
    overlap); each box then adds the ``2 half_0 + 1`` filtered values along the first axis. Prefix sums run along one
    axis of one image at a time, so float64 values keep about 13 significant digits. ``grid`` is overwritten.

    Args:
        grid: ``(B, *padded)`` floating grid from :func:`box_grid`, holding the values.
        center: int64 ``(N, ndim)`` box centers.
        image: int64 ``(N,)`` image of every box.
        half: half width per axis.

    Returns:
        ``(N,)`` sums in the grid's dtype.
    """
    filtered = _window_filter(grid, half, axes=range(2, len(half) + 1))  # every spatial axis but the first
    strides = torch.tensor(filtered.stride()[1:], dtype=torch.int64, device=grid.device)
    start = image * filtered.stride()[0] + ((center + 1) * strides).sum(1)  # window start: voxel c - h on each axis
    first = torch.arange(2 * half[0] + 1, dtype=torch.int64, device=grid.device) * filtered.stride(1)
    return take_flat(filtered, start[:, None] + first[None, :]).sum(1)


def _window_filter(grid: torch.Tensor, half: tuple[int, ...], axes: Any) -> torch.Tensor:
    """Forward window sums ``F(j) = sum_{k < 2 h + 1} grid(j + k)`` along the given axes of a :func:`box_grid`.

    One in-place prefix sum along the axis and one difference per axis; ``grid`` is overwritten and the result is a
    new tensor of its shape (positions whose window leaves the axis hold 0). The grid starts every axis with zeros,
    so the prefix before index 0 is 0.
    """
    filtered = grid
    for d in axes:
        w = 2 * half[d - 1] + 1
        n = filtered.shape[d]
        filtered.cumsum_(d)
        out = torch.empty_like(filtered)
        out.narrow(d, 0, 1).copy_(filtered.narrow(d, w - 1, 1))
        torch.sub(filtered.narrow(d, w, n - w), filtered.narrow(d, 0, n - w), out=out.narrow(d, 1, n - w))
        out.narrow(d, n - w + 1, w - 1).zero_()
        filtered = out
    return filtered


class _CoveringSums(torch.autograd.Function):
    """Forward: per position, the sum of the values of the boxes that cover it. Backward: box sums of the gradient."""

    @staticmethod
    def forward(ctx, values, center, image, half, shape, positions):  # noqa: ANN001, ANN205, D102
        grid, _ = box_grid(shape, half, torch.float64, values.device)
        padded = torch.tensor(grid.shape[1:], dtype=torch.int64, device=values.device)
        h = torch.tensor(half, dtype=torch.int64, device=values.device)
        at = center + h + 1  # box_grid index of the center voxel
        inside = ((at >= 0) & (at < padded)).all(1)
        strides = torch.tensor(grid.stride(), dtype=torch.int64, device=values.device)
        flat = image * strides[0] + (at * strides[1:]).sum(1)
        grid.view(-1).index_put_((flat[inside],), values.detach()[inside].to(torch.float64), accumulate=True)
        filtered = _window_filter(grid, half, axes=range(1, len(half) + 1))
        # the window starting at grid index v + 1 covers the centers v - h .. v + h
        at_voxels = filtered[(slice(None),) + tuple(slice(1, s + 1) for s in shape[1:])]
        ctx.save_for_backward(center, image, positions)
        ctx.half, ctx.shape, ctx.dtype = half, shape, values.dtype
        return take_flat(at_voxels, positions).to(values.dtype)

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205, D102
        center, image, positions = ctx.saved_tensors
        grid, inner = box_grid(ctx.shape, ctx.half, torch.float64, grad.device)
        spread = torch.zeros(math.prod(ctx.shape), dtype=torch.float64, device=grad.device)
        inner.copy_(spread.index_add_(0, positions, grad.to(torch.float64)).view(ctx.shape))
        return box_sums(grid, center, image, ctx.half).to(ctx.dtype), None, None, None, None, None


def covering_sums(
    values: torch.Tensor,
    center: torch.Tensor,
    image: torch.Tensor,
    half: tuple[int, ...],
    shape: tuple[int, ...],
    positions: torch.Tensor,
) -> torch.Tensor:
    """Per flat position, the sum of ``values`` over the boxes that cover it; differentiable w.r.t. ``values``.

    Box ``i`` (value ``values[i]``) covers ``|x_d - center[i, d]| <= half_d`` in image ``image[i]`` of a batch of
    ``shape = (B, *spatial)``. Forward: the values' histogram at the centers filtered by a box-wide window
    (:func:`cube_coverage` with weights); backward: :func:`box_sums` of the positions' gradients. O(voxels) both
    ways, whatever the number of boxes; accumulated in float64.
    """
    return _CoveringSums.apply(values, center, image, half, tuple(shape), positions)


#: :func:`inverse_coverage_sums` lists (box, voxel) incidences while there are at most this many per image voxel,
#: and filters the whole volume beyond (bounded time and memory, whatever the number of boxes).
INCIDENCE_LIMIT = 1.0


def inverse_coverage_sums(
    skip: torch.Tensor,
    count: torch.Tensor,
    center: torch.Tensor,
    image: torch.Tensor,
    half: tuple[int, ...],
    spatial: tuple[int, ...],
) -> torch.Tensor:
    """Per box, ``sum over its voxels v outside skip of 1 / count(v)`` (float64), ``count`` = boxes covering v.

    ``skip`` (bool) and ``count`` (the boxes' own coverage, integer) are the padded grids behind two
    :func:`cube_coverage` results (the half of each work buffer that holds the result, ``(B * prod(padded),)``);
    anything may sit in their padding. Box ``i`` covers ``|x_d - center[i, d]| <= half_d`` truncated at the border.

    Two exact algorithms, chosen by cost: while the boxes hold at most :data:`INCIDENCE_LIMIT` (box, voxel)
    incidences per voxel of the batch, every incidence outside ``skip`` is listed and its ``1 / count`` summed per
    box (O(incidences)); beyond that, ``1 / count`` outside ``skip`` is written into a dense grid and summed over
    each box by :func:`box_sums` (O(voxels)). Both sum in float64; their results agree to about 1e-12 relative
    (summation order).
    """
    n = center.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.float64, device=center.device)
    box_volume = math.prod(2 * h + 1 for h in half)
    n_img = skip.numel() // math.prod(s + 2 * h + 1 for s, h in zip(spatial, half))
    if n * box_volume <= INCIDENCE_LIMIT * n_img * math.prod(spatial):
        return _incidence_sums(skip, count, center, image, half, spatial)
    padded = tuple(s + 2 * h + 1 for s, h in zip(spatial, half))
    crop = (slice(None),) + tuple(slice(1, s + 1) for s in spatial)
    grid, inner = box_grid((n_img, *spatial), half, torch.float64, center.device)
    _inverse_outside(skip.view(n_img, *padded)[crop], count.view(n_img, *padded)[crop], inner)
    return box_sums(grid, center, image, half)


def _inverse_outside(skip: torch.Tensor, count: torch.Tensor, out: torch.Tensor) -> None:
    """Write ``1 / count`` where ``count > 0`` and not ``skip``, else 0, into the float64 view ``out``."""
    if use_numpy(count):
        c = count.numpy()
        if c.dtype == np.uint8:  # one table lookup per voxel
            inverse = np.take(np.concatenate([[0.0], 1.0 / np.arange(1, 256)]), c)
        else:
            inverse = np.divide(1.0, c, out=np.zeros(c.shape), where=c > 0)
        np.putmask(inverse, skip.numpy(), 0.0)
        out.copy_(torch.from_numpy(inverse))
        return
    out.copy_(count).reciprocal_()
    out.masked_fill_(skip | (count == 0), 0.0)


def _incidence_sums(
    skip: torch.Tensor,
    count: torch.Tensor,
    center: torch.Tensor,
    image: torch.Tensor,
    half: tuple[int, ...],
    spatial: tuple[int, ...],
) -> torch.Tensor:
    """:func:`inverse_coverage_sums` by listing incidences: each box's rows along the last axis, read from the grid.

    Rows and columns outside the image are masked; only the (box, row, column) incidences outside ``skip`` are kept.
    """
    if use_numpy(center):
        args = (skip.numpy(), count.numpy(), center.numpy(), image.numpy(), half, spatial)
        return torch.from_numpy(_incidence_sums_numpy(*args))
    ndim = len(spatial)
    dev = center.device
    n = center.shape[0]
    padded = tuple(s + 2 * h + 1 for s, h in zip(spatial, half))
    strides = [math.prod(padded[d + 1 :]) for d in range(ndim)]
    width = 2 * half[-1] + 1
    lead = (n,) + (1,) * (ndim - 1)
    # first voxel of each row: padded index of (row coordinates, center_last - half_last); rows outside the image
    # are clamped into it and masked; the start never leaves the buffer (padding >= 1 row before the image)
    start = (image * math.prod(padded) + center[:, -1] - half[-1] + 1).view(lead)
    valid = torch.ones(lead, dtype=torch.bool, device=dev)
    for d in range(ndim - 1):
        coord = center[:, d : d + 1] + torch.arange(-half[d], half[d] + 1, device=dev)
        shape = [n] + [1] * (ndim - 1)
        shape[d + 1] = coord.shape[1]
        start = start + ((coord.clamp(0, spatial[d] - 1) + 1) * strides[d]).view(shape)
        valid = valid & ((coord >= 0) & (coord < spatial[d])).view(shape)
    cols = center[:, -1:] + torch.arange(-half[-1], half[-1] + 1, device=dev)
    valid = valid.reshape(n, -1, 1) & ((cols >= 0) & (cols < spatial[-1])).view(n, 1, width)
    flat_start = start.reshape(-1)
    keep = valid & ~take_rows(skip, flat_start, width).view(valid.shape)
    inc = flat_nonzero(keep)  # (box, row, column) incidences outside the skipped voxels
    weights = torch.zeros(n, dtype=torch.float64, device=dev)
    if inc.numel() == 0:
        return weights
    box = torch.div(inc, keep[0].numel(), rounding_mode="floor")
    pos = take_flat(flat_start, torch.div(inc, width, rounding_mode="floor")) + inc % width
    return weights.index_add_(0, box, take_flat(count, pos).to(torch.float64).reciprocal())


def _incidence_sums_numpy(
    skip: np.ndarray,
    count: np.ndarray,
    center: np.ndarray,
    image: np.ndarray,
    half: tuple[int, ...],
    spatial: tuple[int, ...],
) -> np.ndarray:
    """:func:`_incidence_sums` on arrays: the same incidences in the same order, the same float64 sums.

    Instead of masking rows and columns outside the image, it marks ``skip``'s padding columns (of every line) and
    its first ``width`` entries (a sink row for the rows outside the image) as skipped: ``skip`` is overwritten
    there (its padding holds no result). A row of at most 8 voxels is read as one unaligned 8-byte word.
    """
    ndim = len(spatial)
    n = center.shape[0]
    padded = tuple(s + 2 * h + 1 for s, h in zip(spatial, half))
    strides = [math.prod(padded[d + 1 :]) for d in range(ndim)]
    width = 2 * half[-1] + 1
    lines = skip.reshape(-1, padded[-1])
    lines[:, 0] = True
    lines[:, spatial[-1] + 1 :] = True
    skip[:width] = True
    lead = (n,) + (1,) * (ndim - 1)
    start = (image * math.prod(padded) + center[:, -1] - half[-1] + 1).reshape(lead)
    valid = np.ones(lead, dtype=bool)
    for d in range(ndim - 1):
        coord = center[:, d : d + 1] + np.arange(-half[d], half[d] + 1)
        shape = [n] + [1] * (ndim - 1)
        shape[d + 1] = coord.shape[1]
        start = start + ((np.clip(coord, 0, spatial[d] - 1) + 1) * strides[d]).reshape(shape)
        valid = valid & ((coord >= 0) & (coord < spatial[d])).reshape(shape)
    # rows outside the image read the sink row; a row's columns outside the image read the (skipped) padding
    flat_start = np.where(valid, start, 0).reshape(-1)
    rows_per_box = flat_start.size // n
    if width <= 8 and int(flat_start.max()) <= skip.size - 8:
        words = np.ndarray((skip.size - 7,), dtype="<u8", buffer=skip, strides=(1,))
        ones = np.uint64(sum(1 << (8 * k) for k in range(width)))
        kept = (~words[flat_start] & ones).view(np.uint8).view(bool)
        on = np.flatnonzero(kept)  # (box, row) x 8 byte slots; only the first ``width`` can be set
        row, col = on >> 3, on & 7
    else:
        rows = np.lib.stride_tricks.as_strided(skip, (skip.size - width + 1, width), (skip.strides[0],) * 2)
        inc = np.flatnonzero(~rows[flat_start])
        row, col = inc // width, inc % width
    pos = flat_start[row] + col
    return np.bincount(row // rows_per_box, weights=1.0 / count[pos], minlength=n)
