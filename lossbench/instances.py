"""Per-instance quantities shared by the losses and the metrics (label-indexed bincount / scatter).

Conventions: component labels from :func:`lossbench.cc.label_components` are numbered 1..N per
image. For vectorised work over a whole batch they are turned into *global ids* 1..sum(N) by adding
each image's offset (:func:`global_ids`), so that one ``bincount`` / ``scatter_add`` over the
flattened batch yields a value per instance of the mini-batch without any Python loop.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "global_ids",
    "component_sizes",
    "overlap_pairs",
    "segment_sum",
    "pair_table",
    "component_images",
    "component_last_voxel",
    "component_centroids_ceil",
    "centroids_ceil_from_positions",
    "box_voxels",
    "render_boxes",
    "voxel_categories",
    "CATEGORIES",
]


def global_ids(labels: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn per-image labels (B, *spatial) into batch-global ids; return ``(ids, offsets)``.

    ``offsets[b]`` is the number of components in images ``0..b-1``; image ``b``'s component ``k`` gets
    id ``offsets[b] + k``; background stays 0. ``image_of_id = searchsorted`` is then easy if needed.
    """
    offsets = torch.cumsum(counts, 0) - counts
    if labels.shape[0] == 1:  # one image: ids are the labels (saves a pass over the volume)
        return labels, offsets
    shape = (-1,) + (1,) * (labels.ndim - 1)
    ids = labels + offsets.view(shape) * (labels > 0)
    return ids, offsets


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
    uniq, overlap = torch.unique(key, return_counts=True)
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
        dense: force the dense ``bincount`` (True) or the ``torch.unique`` (False) path; None chooses.

    Returns:
        ``(pair_a, pair_b, overlap, both, voxel_pair)``: the sorted pairs and their shared voxel counts as in
        :func:`overlap_pairs`; ``both`` is the flat bool mask of voxels inside an a and a b component, and
        ``voxel_pair[i]`` is the pair index of the i-th such voxel, so ``zeros(P).index_add(0, voxel_pair,
        x.reshape(-1)[both])`` sums any per-voxel ``x`` per pair. A dense ``bincount`` over all (a, b) keys is
        used when the key space is small (no sort), ``torch.unique`` otherwise; the result is the same.
    """
    a = a_ids.reshape(-1)
    b = b_ids.reshape(-1)
    both = (a > 0) & (b > 0)
    key = a[both] * (n_b + 1) + b[both]
    space = (n_a + 1) * (n_b + 1)
    if dense if dense is not None else space <= max(4 * key.numel(), 1 << 16):
        hist = torch.bincount(key, minlength=space)
        uniq = torch.nonzero(hist, as_tuple=True)[0]
        overlap = hist[uniq]
        lookup = torch.zeros(space, dtype=torch.int64, device=a.device)
        lookup[uniq] = torch.arange(uniq.numel(), device=a.device)
        voxel_pair = lookup[key]
    else:
        uniq, voxel_pair, overlap = torch.unique(key, return_inverse=True, return_counts=True)
    return uniq // (n_b + 1), uniq % (n_b + 1), overlap, both, voxel_pair


def component_images(counts: torch.Tensor) -> torch.Tensor:
    """Image index of every global id 1..sum(counts), as an int64 tensor of length ``sum(counts)``."""
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
    size = torch.bincount(ids, minlength=n + 1)[1:].clamp(min=1)
    rem = positions
    strides = [math.prod(spatial[d + 1 :]) for d in range(len(spatial))]
    per_image = math.prod(spatial)
    rem = rem % per_image
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
    if lo.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=lo.device)
        return empty, empty
    strides = [math.prod(spatial[d + 1 :]) for d in range(ndim)]
    size = (hi - lo).clamp(min=0)
    ext = size.amax(0).tolist()
    grids = torch.meshgrid(*[torch.arange(e, device=lo.device) for e in ext], indexing="ij")
    off = [g.reshape(-1) for g in grids]  # offsets inside the largest box, per axis
    off_flat = sum(o * st for o, st in zip(off, strides))
    base = image * math.prod(spatial) + (lo * torch.tensor(strides, device=lo.device)).sum(1)
    flat = base[:, None] + off_flat[None, :]
    valid = off[0][None, :] < size[:, 0:1]
    for d in range(1, ndim):
        valid &= off[d][None, :] < size[:, d : d + 1]
    box = torch.arange(lo.shape[0], device=lo.device)[:, None].expand_as(flat)
    return flat[valid], box[valid]


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
    from lossbench.cc import label_components

    lab = target > 0.5
    prd = label_components(prob.detach() >= threshold, connectivity=connectivity, backend=backend)
    gp, _ = global_ids(prd.labels, prd.counts)
    n_p = int(prd.counts.sum())
    touch = torch.zeros(n_p + 1, dtype=torch.bool, device=gp.device)
    touch[gp[lab & (gp > 0)]] = True
    touch[0] = False
    out = torch.zeros(gp.shape, dtype=torch.int64, device=gp.device)
    out[(gp > 0) & ~touch[gp]] = 3
    out[(gp > 0) & touch[gp]] = 2
    out[lab] = 1
    return out
