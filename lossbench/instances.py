"""Per-instance quantities shared by the losses and the metrics (label-indexed bincount / scatter).

Conventions: component labels from :func:`lossbench.cc.label_components` are numbered 1..N per
image. For vectorised work over a whole batch they are turned into *global ids* 1..sum(N) by adding
each image's offset (:func:`global_ids`), so that one ``bincount`` / ``scatter_add`` over the
flattened batch yields a value per instance of the mini-batch without any Python loop. The losses and metrics
only read ids on foreground voxels, so they read them there with :func:`foreground_ids` (O(foreground voxels))
rather than building the whole ``(B, *spatial)`` id volume (several full-volume int64 passes).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = [
    "global_ids",
    "foreground_ids",
    "batch_offsets",
    "component_sizes",
    "overlap_pairs",
    "segment_sum",
    "pair_table",
    "component_images",
    "component_last_voxel",
    "component_centroids_ceil",
    "centroids_ceil_from_positions",
    "box_voxels",
    "box_voxels_numpy",
    "box_row_words",
    "union_bitmap",
    "popcount",
    "bitmap_positions",
    "bitmap_contains",
    "row_words",
    "render_boxes",
    "voxel_categories",
    "CATEGORIES",
    "flat_nonzero",
    "unique_sorted",
    "multiplicity",
    "threshold_mask",
    "count_nonzero_rows",
    "take_flat",
    "take_rows",
    "window_sums",
    "cube_coverage",
    "coverage_work_size",
]


# ----------------------------------------------------------------------------------------------------------------
# CPU fast paths. Detached bool/int bookkeeping is 5-10x faster through numpy views of CPU tensors than through
# torch's CPU kernels (comparisons producing bool, nonzero, count_nonzero, gathers); results are identical and the
# torch path serves every other device (no host synchronisation beyond what torch.nonzero itself needs).


#: Route detached CPU bookkeeping through numpy (set to False to run the device-agnostic torch code on CPU, which is
#: what the tests do to cover the CUDA code path without a GPU).
NUMPY_ON_CPU = True


def numpy_ok(t: torch.Tensor) -> bool:
    """Whether detached bookkeeping on ``t`` should take the numpy fast path (see :data:`NUMPY_ON_CPU`)."""
    return NUMPY_ON_CPU and t.device.type == "cpu" and t.dtype != torch.bfloat16


def flat_nonzero(mask: torch.Tensor) -> torch.Tensor:
    """Flat positions (int64, ascending) of the True entries of a bool tensor of any shape.

    Equal to ``torch.nonzero(mask.reshape(-1), as_tuple=True)[0]``; CPU tensors go through ``numpy.flatnonzero``.
    """
    if numpy_ok(mask):
        return torch.from_numpy(np.flatnonzero(mask.detach().numpy()))
    return torch.nonzero(mask.reshape(-1), as_tuple=True)[0]


def unique_sorted(
    values: torch.Tensor, *, return_inverse: bool = False, return_counts: bool = False
) -> tuple[torch.Tensor, ...]:
    """``torch.unique(values, sorted=True, return_inverse=..., return_counts=...)`` of a 1-D integer tensor.

    Always returns a tuple ``(unique, [inverse], [counts])``. CPU tensors go through numpy's stable argsort (radix or
    timsort), which is 3x faster than torch's sort on the concatenated sorted runs these helpers produce (the voxels
    of one box after another, pair keys in raster order); the result is the same.
    """
    if not numpy_ok(values) or values.ndim != 1 or values.numel() == 0:
        out = torch.unique(values, sorted=True, return_inverse=return_inverse, return_counts=return_counts)
        return out if isinstance(out, tuple) else (out,)
    v = values.numpy()
    order = np.argsort(v, kind="stable")
    ordered = v[order]
    first = np.empty(ordered.shape, dtype=bool)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    res = [torch.from_numpy(ordered[first])]
    if return_inverse:
        inverse = np.empty(v.shape, dtype=np.int64)
        inverse[order] = np.cumsum(first) - 1
        res.append(torch.from_numpy(inverse))
    if return_counts:
        starts = np.flatnonzero(first)
        res.append(torch.from_numpy(np.diff(starts, append=v.size)))
    return tuple(res)


def multiplicity(values: torch.Tensor, size: int) -> torch.Tensor:
    """How often each entry's value occurs among the entries of a 1-D integer tensor with values in ``0..size-1``.

    One ``bincount`` over ``size`` bins and a gather when ``size`` is at most 32 times the number of entries (CPU
    tensors through numpy), else the counts of :func:`unique_sorted` (one sort). int64, same shape as ``values``.
    """
    if values.numel() == 0 or size > 32 * values.numel():
        _, inverse, counts = unique_sorted(values, return_inverse=True, return_counts=True)
        return counts[inverse]
    if numpy_ok(values):
        v = values.numpy()
        return torch.from_numpy(np.take(np.bincount(v, minlength=size), v))
    return torch.bincount(values, minlength=size)[values]


def threshold_mask(values: torch.Tensor, threshold: float, *, strict: bool = False) -> torch.Tensor:
    """``values >= threshold`` (``>`` with ``strict``) as a detached bool tensor, compared in ``values``' dtype.

    Same result as the torch comparison (a Python scalar is compared in the tensor's dtype by torch and by
    numpy alike); CPU tensors go through numpy.
    """
    v = values.detach()
    if numpy_ok(v):
        arr = v.numpy()
        return torch.from_numpy(arr > threshold if strict else arr >= threshold)
    return v > threshold if strict else v >= threshold


def count_nonzero_rows(mask: torch.Tensor) -> torch.Tensor:
    """Number of True (non-zero) entries per leading index of a tensor ``(B, ...)``: int64 ``(B,)``."""
    if numpy_ok(mask):
        # numpy's count_nonzero is fast over a whole (even strided) array and slow along an axis: one call per image
        arr = mask.detach().numpy()
        return torch.tensor([np.count_nonzero(row) for row in arr], dtype=torch.int64)
    return torch.count_nonzero(mask.reshape(mask.shape[0], -1), dim=1)


def take_flat(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values.reshape(-1)[index]`` for a detached tensor and any integer ``index`` (no autograd).

    CPU tensors go through numpy indexing (about twice as fast, and it accepts small integer indices as they are).
    """
    v = values.detach().reshape(-1)
    if numpy_ok(v):
        return torch.from_numpy(v.numpy()[index.numpy()])
    return v[index.long()]


def take_rows(values: torch.Tensor, starts: torch.Tensor, width: int) -> torch.Tensor:
    """Rows ``values.reshape(-1)[start : start + width]`` for every start: ``(len(starts), width)`` (detached).

    Every row must lie inside the buffer. One ``index_select`` over an overlapping-rows view of the buffer (a
    contiguous copy per row instead of ``width`` scalar gathers).
    """
    v = values.detach().reshape(-1)
    rows = v.as_strided((max(v.numel() - width + 1, 0), width), (1, 1))
    return rows.index_select(0, starts.long())


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
        buf: 1-D tensor (a flattened, padded array), integer or bool.
        widths: window width per axis (>= 1).
        strides: flat stride per axis, same length as ``widths``.
        scratch: optional 1-D tensor like ``buf``; when given, ``buf`` and ``scratch`` are both overwritten and
            the result is one of them (no allocation: fresh memory costs page faults on CPU).

    Returns:
        a 1-D tensor of ``buf``'s shape and dtype.
    """
    n = buf.numel()
    work = [buf, scratch if scratch is not None else torch.empty_like(buf)]
    logical = buf.dtype == torch.bool
    src = buf
    passes = 0

    def target() -> torch.Tensor:
        nonlocal passes
        dst = work[1] if src is work[0] else work[0]
        if scratch is None and dst is buf:
            dst = work[0] = torch.empty_like(buf)  # never overwrite the caller's ``buf``
        passes += 1
        return dst

    for width, stride in zip(widths, strides):
        if width <= 1 or stride >= n:
            continue
        if logical:
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


def cube_coverage(
    centre: torch.Tensor,
    image: torch.Tensor,
    half: tuple[int, ...],
    shape: tuple[int, ...],
    dtype: torch.dtype,
    *,
    work: torch.Tensor | None = None,
) -> torch.Tensor:
    """How many boxes ``[centre - half, centre + half]`` (per axis, truncated at the border) cover every voxel.

    A box covers voxel x iff ``|x_d - centre_d| <= half_d`` on every axis, so the count map is the histogram of
    the centres filtered by a ``(2 half + 1)``-wide window on every axis (:func:`window_sums` on a padded grid).
    Cost O(voxels * sum(half)) in contiguous integer adds plus O(boxes), independent of how many boxes there are
    or how much they overlap; with ``dtype=torch.bool`` only whether any box covers the voxel, in about
    ``log2(2 half + 1)`` byte-wide passes per axis.

    Args:
        centre: int64 ``(N, ndim)`` box centres (may lie outside the image; boxes missing it are ignored).
        image: int64 ``(N,)`` image index of every box.
        half: half width per axis.
        shape: ``(B, *spatial)``.
        dtype: integer count dtype, which must hold the largest count (at most the number of boxes of one
            image), or ``torch.bool`` for the union of the boxes.
        work: optional flat buffer of ``dtype`` with at least ``2 * coverage_work_size(shape, half)`` entries,
            reused instead of fresh memory; the result then lives in it (valid until ``work`` is reused).

    Returns:
        map of shape ``shape`` and dtype ``dtype``: a strided view into the padded work buffer (no copy).
    """
    batch, spatial = shape[0], tuple(shape[1:])
    ndim = len(spatial)
    dev = centre.device
    half_t = torch.tensor(half, dtype=torch.int64, device=dev)
    size_t = torch.tensor(spatial, dtype=torch.int64, device=dev)
    # padded grid: index j = centre + half + 1 along each axis; voxel x reads the window starting at x + 1
    padded = tuple(s + 2 * h + 1 for s, h in zip(spatial, half))
    strides = tuple(math.prod(padded[d + 1 :]) for d in range(ndim))
    size = coverage_work_size(shape, half)
    if work is None:
        work = torch.empty(2 * size, dtype=dtype, device=dev)
    hist, scratch = work[:size], work[size : 2 * size]
    hist.zero_()
    j = centre + half_t + 1
    inside = ((centre >= -half_t) & (centre <= size_t - 1 + half_t)).all(dim=1)
    flat = image * math.prod(padded) + (j * torch.tensor(strides, dtype=torch.int64, device=dev)).sum(1)
    if dtype == torch.bool:
        hist[flat[inside]] = True
    else:
        hist.index_put_((flat[inside],), torch.ones((), dtype=dtype, device=dev), accumulate=True)
    cov = window_sums(hist, tuple(2 * h + 1 for h in half), strides, scratch=scratch).view(batch, *padded)
    return cov[(slice(None),) + tuple(slice(1, s + 1) for s in spatial)]


def coverage_work_size(shape: tuple[int, ...], half: tuple[int, ...]) -> int:
    """Entries of one padded grid of :func:`cube_coverage` (its ``work`` buffer needs two)."""
    return shape[0] * math.prod(s + 2 * h + 1 for s, h in zip(shape[1:], half))


def global_ids(labels: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn per-image labels (B, *spatial) into batch-global ids; return ``(ids, offsets)``.

    ``offsets[b]`` is the number of components in images ``0..b-1``; image ``b``'s component ``k`` gets
    id ``offsets[b] + k``; background stays 0. ``image_of_id = searchsorted`` is then easy if needed.
    """
    offsets = batch_offsets(counts)
    if labels.shape[0] == 1:  # one image: ids are the labels (saves a pass over the volume)
        return labels, offsets
    shape = (-1,) + (1,) * (labels.ndim - 1)
    ids = labels + offsets.view(shape) * (labels > 0)
    return ids, offsets


def batch_offsets(counts: torch.Tensor) -> torch.Tensor:
    """Per image, the number of components in the earlier images (int64 ``(B,)``).

    Image ``b``'s component ``k`` has the batch-global id ``offsets[b] + k``.
    """
    return torch.cumsum(counts, 0) - counts


def foreground_ids(cc: Any, pos: torch.Tensor, *, drop_unlabelled: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch-global component ids (as :func:`global_ids`) of a labelling, read at flat positions ``pos``.

    ``cc`` is a :class:`lossbench.cc.CCResult` of torch tensors (from :func:`lossbench.cc.label_components` or
    :func:`lossbench.cc.label_batch`, either numbering, any integer dtype). Its labels are read only at ``pos``
    (typically ``flat_nonzero(mask)``): O(len(pos)) instead of the full-volume passes of :func:`global_ids`.
    Background reads 0. With ``drop_unlabelled`` the positions that read 0 are left out (the maxpool backend may
    drop a foreground voxel: reference quirk), so every returned id is >= 1.

    Returns:
        ``(pos, ids)``: the (possibly filtered) int64 positions and their int64 ids.
    """
    labels = cc.labels
    if numpy_ok(labels):
        ids = torch.from_numpy(labels.reshape(-1).numpy()[pos.numpy()].astype(np.int64, copy=False))
    else:
        ids = take_flat(labels, pos).to(torch.int64)
    labelled = ids > 0
    if drop_unlabelled and not bool(labelled.all()):
        pos, ids, labelled = pos[labelled], ids[labelled], labelled[labelled]
    if labels.shape[0] > 1 and pos.numel() and not cc.batch_numbered:
        shift = take_flat(batch_offsets(cc.counts), torch.div(pos, labels[0].numel(), rounding_mode="floor"))
        ids = ids + shift * labelled
    return pos, ids


def component_sizes(ids: torch.Tensor, n: int) -> torch.Tensor:
    """Voxel count of every id 0..n (index 0 = background), int64 of length n + 1."""
    return torch.bincount(ids.reshape(-1), minlength=n + 1)


def overlap_pairs(
    a_ids: torch.Tensor, b_ids: torch.Tensor, n_b: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every pair (a, b) of components sharing at least one voxel, with the number of shared voxels.

    Args:
        a_ids: int64 global ids (0 = background), any shape.
        b_ids: int64 global ids of the same shape.
        n_b: number of b components (largest b id).

    Returns:
        ``(pair_a, pair_b, overlap)``: 1-D int64 tensors of equal length, sorted by (a, b). Cost is
        O(voxels) plus a sort of the overlapping voxels' keys only.
    """
    both = (a_ids > 0) & (b_ids > 0)
    key = a_ids[both] * (n_b + 1) + b_ids[both]
    uniq, overlap = unique_sorted(key, return_counts=True)
    return uniq // (n_b + 1), uniq % (n_b + 1), overlap


def segment_sum(values: torch.Tensor, ids: torch.Tensor, n: int) -> torch.Tensor:
    """Sum of ``values`` per id 0..n (differentiable w.r.t. ``values``): a length ``n + 1`` tensor.

    Args:
        values: floating tensor, any shape.
        ids: int64 tensor of the same shape with entries in ``0..n``.
        n: largest id.

    Returns:
        ``out[i] = sum(values[ids == i])`` computed with one ``index_add`` (no loop over ids).
    """
    out = values.new_zeros(n + 1)
    return out.index_add(0, ids.reshape(-1), values.reshape(-1))


def pair_table(
    a_ids: torch.Tensor, b_ids: torch.Tensor, n_a: int, n_b: int, *, dense: bool | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Like :func:`overlap_pairs`, plus the pair index of every shared voxel for per-pair ``index_add``.

    Args:
        a_ids: int64 global ids (0 = background), flattened or any shape.
        b_ids: int64 global ids of the same shape.
        n_a: number of a components (largest a id).
        n_b: number of b components (largest b id).
        dense: how the pairs are found: True, a dense ``bincount`` over all (a, b) keys; False, ``torch.unique``
            (a sort of the shared voxels' keys); None (default), the *first-partner* method: the smallest b of
            every a (one ``scatter_reduce``) gives every pair ``(a, min b)`` without sorting, and only the shared
            voxels of other pairs (an a touching several b) are sorted. The result is the same.

    Returns:
        ``(pair_a, pair_b, overlap, both, voxel_pair)``: the sorted pairs and their shared voxel counts as in
        :func:`overlap_pairs`; ``both`` is the flat bool mask of voxels inside an a and a b component, and
        ``voxel_pair[i]`` is the pair index of the i-th such voxel, so ``zeros(P).index_add(0, voxel_pair,
        x.reshape(-1)[both])`` sums any per-voxel ``x`` per pair.
    """
    a = a_ids.reshape(-1)
    b = b_ids.reshape(-1)
    dev = a.device
    if dense is None and numpy_ok(a):
        return _pair_table_numpy(a.numpy(), b.numpy(), n_b)
    both = threshold_mask(a, 0, strict=True) & threshold_mask(b, 0, strict=True)
    shared = flat_nonzero(both)
    a_both, b_both = take_flat(a, shared), take_flat(b, shared)
    key = a_both * (n_b + 1) + b_both
    space = (n_a + 1) * (n_b + 1)
    if dense:
        hist = torch.bincount(key, minlength=space)
        uniq = torch.nonzero(hist, as_tuple=True)[0]
        overlap = hist[uniq]
        lookup = torch.zeros(space, dtype=torch.int64, device=dev)
        lookup[uniq] = torch.arange(uniq.numel(), device=dev)
        voxel_pair = lookup[key]
    elif dense is not None:
        uniq, voxel_pair, overlap = unique_sorted(key, return_inverse=True, return_counts=True)
    else:
        first = torch.full((n_a + 1,), n_b + 1, dtype=torch.int64, device=dev)
        first = first.scatter_reduce(0, a_both, b_both, reduce="amin")
        has = torch.nonzero(first <= n_b, as_tuple=True)[0]  # every a with a partner, ascending
        key_first = has * (n_b + 1) + first[has]
        rest = b_both != first[a_both]
        # one host sync: whether any a touches several b (then only those voxels' keys are sorted)
        if bool(rest.any()):
            uniq_rest, inv_rest = unique_sorted(key[rest], return_inverse=True)
        else:
            uniq_rest = inv_rest = key.new_zeros(0)
        keys = torch.cat([key_first, uniq_rest])
        order = torch.argsort(keys)
        uniq = keys[order]
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel(), device=dev)
        slot = torch.zeros(n_a + 1, dtype=torch.int64, device=dev)
        slot[has] = torch.arange(has.numel(), device=dev)
        voxel_pair = torch.where(rest, 0, rank[slot[a_both]])
        if uniq_rest.numel():
            voxel_pair[rest] = rank[key_first.numel() + inv_rest]
        overlap = torch.bincount(voxel_pair, minlength=uniq.numel())
    return uniq // (n_b + 1), uniq % (n_b + 1), overlap, both, voxel_pair


def _pair_table_numpy(
    a: np.ndarray, b: np.ndarray, n_b: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`pair_table`'s first-partner method in numpy (CPU): the same steps, the same tensors."""
    both = (a > 0) & (b > 0)
    shared = np.flatnonzero(both)
    a_both, b_both = a[shared], b[shared]
    n_a = int(a_both.max()) if a_both.size else 0  # only ids that occur matter here
    first = np.full(n_a + 1, n_b + 1, dtype=np.int64)
    np.minimum.at(first, a_both, b_both)
    has = np.flatnonzero(first <= n_b)  # every a with a partner, ascending
    key_first = has * (n_b + 1) + first[has]
    rest = b_both != first[a_both]
    rest_idx = np.flatnonzero(rest)
    if rest_idx.size:  # an a touching several b: only those voxels' keys are sorted
        uniq_rest, inv_rest = np.unique(a_both[rest_idx] * (n_b + 1) + b_both[rest_idx], return_inverse=True)
    else:
        uniq_rest = inv_rest = np.zeros(0, dtype=np.int64)
    keys = np.concatenate([key_first, uniq_rest])
    order = np.argsort(keys, kind="stable")
    uniq = keys[order]
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    slot = np.zeros(n_a + 1, dtype=np.int64)
    slot[has] = np.arange(has.size)
    voxel_pair = rank[slot[a_both]]
    if rest_idx.size:
        voxel_pair[rest_idx] = rank[key_first.size + inv_rest.reshape(-1)]
    overlap = np.bincount(voxel_pair, minlength=uniq.size)
    t = torch.from_numpy
    return t(uniq // (n_b + 1)), t(uniq % (n_b + 1)), t(overlap), t(both), t(voxel_pair)


def component_images(counts: torch.Tensor) -> torch.Tensor:
    """Image index of every global id 1..sum(counts), as an int64 tensor of length ``sum(counts)``."""
    if numpy_ok(counts):
        return torch.from_numpy(np.repeat(np.arange(counts.numel()), counts.numpy()))
    return torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)


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


def centroids_ceil_from_positions(
    positions: torch.Tensor, ids: torch.Tensor, n: int, spatial: tuple[int, ...]
) -> torch.Tensor:
    """``ceil(mean voxel index)`` per axis of ids 1..n from their foreground voxels, exact integer arithmetic.

    Args:
        positions: int64 flat positions of foreground voxels in the flattened ``(B, *spatial)`` batch.
        ids: int64 ids (1..n) of those voxels.
        n: largest id.
        spatial: the spatial shape.

    Returns:
        int64 ``(n, len(spatial))``; row ``i - 1`` belongs to id ``i`` (zeros for an id without voxels).
    """
    strides = [math.prod(spatial[d + 1 :]) for d in range(len(spatial))]
    per_image = math.prod(spatial)
    # numpy path: coordinate sums as float64 bincount weights, exact while every sum stays below 2^53
    if numpy_ok(positions) and positions.numel() and positions.numel() * max(spatial) < 2**53:
        # Integer division by a constant through float64: floor((r + 0.5) / s) is exact for r < 2^51 (the true
        # quotient stays >= 0.5 / s away from an integer, far above the rounding error); about twice as fast as
        # numpy's unravel_index and several times faster than torch's integer division on CPU.
        rem = positions.numpy()
        idn = ids.numpy()
        size_np = np.maximum(np.bincount(idn, minlength=n + 1)[1:], 1)
        if int(rem.max()) >= per_image:  # several images: position within its image
            rem = rem % per_image
        out_np = np.empty((n, len(spatial)), dtype=np.int64)
        for d, stride in enumerate(strides):
            if d < len(strides) - 1:
                coord = np.floor((rem + 0.5) * (1.0 / stride)).astype(np.int64)
                rem = rem - coord * stride
            else:
                coord = rem
            total = np.bincount(idn, weights=coord, minlength=n + 1)[1:].astype(np.int64)
            out_np[:, d] = -((-total) // size_np)  # ceil division
        return torch.from_numpy(out_np)
    size = torch.bincount(ids, minlength=n + 1)[1:].clamp(min=1)
    rem = positions % per_image
    out = []
    for stride in strides:
        coord = torch.div(rem, stride, rounding_mode="floor")
        rem = rem - coord * stride
        total = torch.zeros(n + 1, dtype=torch.int64, device=ids.device).index_add_(0, ids, coord)[1:]
        out.append(-torch.div(-total, size, rounding_mode="floor"))
    return torch.stack(out, dim=1)


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


def box_voxels(
    lo: torch.Tensor, hi: torch.Tensor, image: torch.Tensor, spatial: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every voxel of every axis-aligned box, without touching the rest of the volume.

    Args:
        lo: int64 ``(N, ndim)`` inclusive lower corners (inside the image).
        hi: int64 ``(N, ndim)`` exclusive upper corners (inside the image); empty boxes give no voxel.
        image: int64 ``(N,)`` image index of every box.
        spatial: the spatial shape.

    Returns:
        ``(flat, box)``: flat positions in the flattened ``(B, *spatial)`` batch (with repeats where boxes
        overlap) and the box index of each. Cost O(N * largest box volume).
    """
    ndim = len(spatial)
    n = lo.shape[0]
    if n == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=lo.device)
        return empty, empty
    if numpy_ok(lo):
        flat, box = box_voxels_numpy(lo.numpy(), hi.numpy(), image.numpy(), spatial)
        return torch.from_numpy(flat), torch.from_numpy(box)
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


def box_voxels_numpy(
    lo: np.ndarray, hi: np.ndarray, image: np.ndarray, spatial: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`box_voxels` in numpy: the same voxels in the same order (offsets in the largest box, raster order)."""
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


# -- row bitmaps (CPU): sets of voxels as 64-bit words along the last axis ----------------------------------------
# A batch ``(B, *spatial)`` is a stack of lines (every index but the last); each line is ``row_words(W)`` words of
# 64 bits, bit ``x % 64`` of word ``x // 64`` standing for voxel ``x`` of the line. A box is a few rows, each one to a
# few words, so unions and intersections of boxes cost O(boxes x rows) word operations instead of O(box voxels).

_ALL_BITS = np.uint64(0xFFFFFFFFFFFFFFFF)


def row_words(width: int) -> int:
    """Number of 64-bit words that hold one line of ``width`` voxels."""
    return (width + 63) // 64


def box_row_words(
    lo: np.ndarray, hi: np.ndarray, image: np.ndarray, spatial: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every box as the 64-bit words of its rows along the last axis (numpy).

    Args:
        lo: int64 ``(N, ndim)`` inclusive lower corners (inside the image).
        hi: int64 ``(N, ndim)`` exclusive upper corners (inside the image); empty boxes give no word.
        image: int64 ``(N,)`` image index of every box.
        spatial: the spatial shape.

    Returns:
        ``(key, mask, box)``: the word index in the batch bitmap (``line * row_words(W) + x // 64``), the uint64
        bits of the box in that word and the box of each entry, boxes in order. OR-ing the masks into a bitmap of
        ``B * prod(spatial[:-1]) * row_words(W)`` words gives the union of the boxes. Cost O(N x rows x words).
    """
    ndim = len(spatial)
    wpl = row_words(spatial[-1])
    size = np.maximum(hi - lo, 0)
    lead = spatial[:-1]
    strides = np.array([math.prod(lead[d + 1 :]) for d in range(ndim - 1)], dtype=np.int64)
    ext = size[:, :-1].max(0) if lo.shape[0] else np.zeros(ndim - 1, dtype=np.int64)
    grid = np.indices(tuple(int(e) for e in ext)).reshape(ndim - 1, -1)
    line = (image * math.prod(lead) + lo[:, :-1] @ strides)[:, None] + (strides @ grid)[None, :]  # (N, rows)
    row_ok = np.ones(line.shape, dtype=bool)
    for d in range(ndim - 1):
        if size.shape[0] and int(size[:, d].min()) < int(ext[d]):
            row_ok &= grid[d][None, :] < size[:, d : d + 1]
    x0, x1 = lo[:, -1], hi[:, -1]
    first = x0 // 64
    n_words = np.where(x1 > x0, (x1 - 1) // 64 - first + 1, 0)
    k = int(n_words.max()) if n_words.size else 0
    # the (box, word) pairs first (a box's rows all hold the same words), then every row of each pair
    pair = np.flatnonzero(np.arange(k)[None, :] < n_words[:, None])
    box, word = pair // max(k, 1), first[pair // max(k, 1)] + pair % max(k, 1)
    a = np.maximum(x0[box], word * 64)
    nbits = np.minimum(x1[box], word * 64 + 64) - a
    mask = (_ALL_BITS >> (64 - nbits).astype(np.uint64)) << (a - word * 64).astype(np.uint64)
    key = (line[box] * wpl + word[:, None]).reshape(-1)  # (pairs, rows)
    rows = line.shape[1]
    if row_ok.all():
        return key, np.repeat(mask, rows), np.repeat(box, rows)
    keep = np.flatnonzero(row_ok[box])
    return key[keep], mask[keep // rows], box[keep // rows]


def union_bitmap(key: np.ndarray, mask: np.ndarray, n_words: int) -> np.ndarray:
    """The uint64 bitmap of ``n_words`` words holding the OR of every ``mask`` at its ``key`` (numpy)."""
    out = np.zeros(n_words, dtype=np.uint64)
    np.bitwise_or.at(out, key, mask)
    return out


def popcount(words: np.ndarray) -> np.ndarray:
    """Set bits of every uint64 word (int64, same shape)."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(words).astype(np.int64)
    bits = np.unpackbits(np.ascontiguousarray(words).view(np.uint8)).reshape(*words.shape, 64)
    return bits.sum(-1, dtype=np.int64)


def bitmap_positions(bitmap: np.ndarray, width: int, at: np.ndarray | None = None) -> np.ndarray:
    """Flat positions (int64, ascending) of the set bits of a row bitmap of lines of ``width`` voxels.

    With ``at`` (ascending word indices), ``bitmap`` holds only those words of the bitmap (the others are 0).
    """
    wpl = row_words(width)
    nz = np.flatnonzero(bitmap != 0)
    bits = np.flatnonzero(np.unpackbits(bitmap[nz].astype("<u8").view(np.uint8), bitorder="little").view(bool))
    word = nz[bits >> 6] if at is None else at[nz[bits >> 6]]
    return (word // wpl) * width + (word % wpl) * 64 + (bits & 63)


def bitmap_contains(bitmap: np.ndarray, flat: np.ndarray, width: int) -> np.ndarray:
    """Whether each flat position of the batch is set in a row bitmap of lines of ``width`` voxels (bool)."""
    line, x = np.divmod(flat, width)
    word = bitmap[line * row_words(width) + x // 64]
    return ((word >> (x % 64).astype(np.uint64)) & np.uint64(1)).astype(bool)


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


#: Voxel categories of :func:`voxel_categories` (the gradient audit splits gradients by them).
CATEGORIES = ("background", "label", "touching", "spurious")


def voxel_categories(
    prob: torch.Tensor,
    target: torch.Tensor,
    *,
    threshold: float = 0.5,
    connectivity: int | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Classify every voxel for the gradient audit: 0 background, 1 label instance, 2 touching, 3 spurious.

    "touching": outside every label instance but inside a prediction component (``prob >= threshold``)
    that shares a voxel with some label instance; "spurious": inside a prediction component that touches
    no label instance. Labelling as in the losses (:func:`lossbench.cc.label_components`).

    Args:
        prob: probabilities ``(B, *spatial)`` (any float dtype; detached internally).
        target: binary ``(B, *spatial)``.
        threshold: prediction components are ``prob >= threshold``.
        connectivity: orthogonal hops (None = full).
        backend: labelling backend.

    Returns:
        int64 tensor of ``prob``'s shape with values in 0..3 (names in :data:`CATEGORIES`).
    """
    from lossbench.cc import label_batch

    lab = target > 0.5
    pmask = prob.detach() >= threshold
    prd = label_batch(pmask, connectivity=connectivity, backend=backend)
    n_p = int(prd.counts.sum())
    pos, gp = foreground_ids(prd, flat_nonzero(pmask), drop_unlabelled=True)
    touch = torch.zeros(n_p + 1, dtype=torch.bool, device=gp.device)
    touch[gp[take_flat(lab, pos)]] = True
    out = torch.zeros(lab.shape, dtype=torch.int64, device=gp.device)
    out.view(-1)[pos] = torch.where(touch[gp], 2, 3)
    out[lab] = 1
    return out
