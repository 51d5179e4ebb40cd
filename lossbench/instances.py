"""Per-instance bookkeeping shared by the losses and the metrics: batch-global ids, pair tables, centroids.

Conventions: component labels from :func:`lossbench.cc.label_components` are numbered 1..N per image. For
vectorised work over a whole batch they become *global ids* 1..sum(N) by adding each image's offset
(:func:`batch_offsets`), so that one ``bincount`` / ``index_add`` over the flattened batch yields a value per
instance of the mini-batch without any Python loop. The losses and metrics only read ids on foreground voxels, so
they read them there with :func:`foreground_ids` (O(foreground voxels)) rather than building the whole
``(B, *spatial)`` id volume.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from lossbench.ops import flat_nonzero, take_flat, threshold_mask, unique_sorted, use_numpy

__all__ = [
    "global_ids",
    "batch_offsets",
    "foreground_ids",
    "component_sizes",
    "overlap_pairs",
    "pair_table",
    "component_images",
    "centroids_ceil_from_positions",
]


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
    if use_numpy(labels):
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
    if dense is None and use_numpy(a):
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
    if use_numpy(counts):
        return torch.from_numpy(np.repeat(np.arange(counts.numel()), counts.numpy()))
    return torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)


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
    if use_numpy(positions) and positions.numel() and positions.numel() * max(spatial) < 2**53:
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
