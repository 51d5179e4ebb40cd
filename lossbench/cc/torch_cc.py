"""Exact connected components in pure torch (any device, int64 ids only).

Algorithm (hook-to-minimum with pointer jumping, in the spirit of Shiloach-Vishkin):

1. Foreground voxels are compacted to ``fg`` (flat positions over the whole batch, raster order); every
   voxel's parent starts as itself. Only foreground voxels are touched after this point, so the cost of the
   graph part grows with the foreground, not with the volume.
2. For every neighbour offset of the half-neighbourhood, the edge list ``(u, v)`` of foreground pairs is built
   from the voxels' coordinates (a neighbour outside its own image is dropped, so no edge wraps around a border
   or joins two images of the batch) and a lookup of the neighbour's compact index.
3. Repeat: hook the larger of the two current parents of each edge onto the smaller one with
   ``scatter_reduce(amin)``; compress paths with a few rounds of ``parent = parent[parent]``.
   Parents only ever decrease and stay inside the component, so the fixed point assigns every
   voxel the smallest compact index of its component, i.e. its first voxel in raster order.
4. Convergence is checked (one host synchronisation) only every ``check_every`` rounds.
5. Roots are numbered per image with a cumulative sum over the compact voxels minus the number of roots in
   earlier images, which yields scipy's raster numbering.
"""

from __future__ import annotations

import numpy as np
import torch

from lossbench.cc.api import structure_offsets

__all__ = ["label_torch"]


def _edges(
    flat_mask: torch.Tensor, fg: torch.Tensor, spatial: tuple[int, ...], connectivity: int, sync_free: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge list (u, v) in compact foreground indices for every neighbour pair of foreground voxels.

    Args:
        flat_mask: bool ``(B * prod(spatial),)``.
        fg: int64 ``(n_fg,)`` flat positions of the foreground voxels, increasing.
        spatial: the image shape.
        connectivity: orthogonal hops.
        sync_free: keep one (possibly self-loop) edge per voxel and offset instead of compacting the edge list
            with boolean masks (which synchronises with the host on CUDA).

    Returns:
        ``(u, v)`` int64 compact indices, one entry per undirected foreground neighbour pair (``u < v``), plus
        self-loops ``u == v`` with ``sync_free``.
    """
    device = fg.device
    n_img = 1
    for s in spatial:
        n_img *= s
    within = fg % n_img
    coords = []
    stride = n_img
    for s in spatial:
        stride //= s
        coords.append((within // stride) % s)
    strides = [1] * len(spatial)
    for d in range(len(spatial) - 2, -1, -1):
        strides[d] = strides[d + 1] * spatial[d + 1]
    # compact index table, written only at foreground positions (only read there: lookups are masked first)
    index = torch.empty(flat_mask.shape, dtype=torch.int64, device=device)
    compact = torch.arange(fg.numel(), device=device)
    index[fg] = compact
    us, vs = [], []
    for off in structure_offsets(len(spatial), connectivity):
        inside = None
        for c, o, s in zip(coords, off, spatial):
            if o == 0:
                continue
            ok = c < s - o if o > 0 else c >= -o
            inside = ok if inside is None else inside & ok
        delta = sum(o * st for o, st in zip(off, strides))
        if sync_free:
            # every foreground voxel keeps one slot per offset; a missing neighbour becomes a self-loop, which
            # hooking ignores: no boolean compaction, hence no host synchronisation
            nb = torch.where(inside, fg + delta, fg)
            hit = inside & flat_mask[nb]
            us.append(compact)
            vs.append(torch.where(hit, index[nb], compact))
        else:
            src = compact[inside]
            nb = fg[inside] + delta
            hit = flat_mask[nb]
            us.append(src[hit])
            vs.append(index[nb[hit]])
    if not us:
        empty = torch.empty(0, dtype=torch.int64, device=device)
        return empty, empty
    return torch.cat(us), torch.cat(vs)


def label_torch(
    mask: torch.Tensor, connectivity: int, check_every: int = 2, sync_free: bool | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Label ``mask`` (B, *spatial) exactly; returns int64 labels and counts (B,) on the mask's device.

    ``sync_free`` (default: on for non-CPU devices) builds the edge list without boolean compaction, so the only
    host synchronisations are the foreground compaction and the convergence checks every ``check_every`` rounds.
    """
    device = mask.device
    m = mask if mask.dtype == torch.bool else mask != 0
    m = m.contiguous()
    batch = m.shape[0]
    spatial = tuple(m.shape[1:])
    flat = m.reshape(-1)
    if device.type == "cpu":
        # numpy's compaction is several times faster than torch's on CPU; np.zeros maps lazily zeroed pages
        # (calloc) where torch.zeros writes every byte, which dominated the time on sparse 192^3 masks.
        fg = torch.from_numpy(np.flatnonzero(flat.numpy()))
        labels = torch.from_numpy(np.zeros(flat.shape[0], dtype=np.int64))
    else:
        fg = flat.nonzero().squeeze(1)  # raster order over the whole batch
        labels = torch.zeros(flat.shape, dtype=torch.int64, device=device)
    n_fg = fg.numel()
    if n_fg == 0:
        return labels.view(m.shape), torch.zeros(batch, dtype=torch.int64, device=device)

    u, v = _edges(flat, fg, spatial, connectivity, device.type != "cpu" if sync_free is None else sync_free)
    parent = torch.arange(n_fg, device=device)
    if u.numel():
        rounds = 0
        while True:
            pu, pv = parent[u], parent[v]
            parent.scatter_reduce_(0, torch.maximum(pu, pv), torch.minimum(pu, pv), reduce="amin")
            for _ in range(4):
                parent = parent[parent]
            rounds += 1
            if rounds % check_every == 0:
                # fully compress, then stop if every edge joins equal roots
                while True:
                    nxt = parent[parent]
                    if torch.equal(nxt, parent):
                        break
                    parent = nxt
                if torch.equal(parent[u], parent[v]):
                    break

    is_root = parent == torch.arange(n_fg, device=device)
    image = torch.div(fg, flat.numel() // batch, rounding_mode="floor")
    counts = torch.zeros(batch, dtype=torch.int64, device=device)
    counts.index_add_(0, image, is_root.to(torch.int64))
    before = counts.cumsum(0) - counts  # roots in earlier images
    number = is_root.to(torch.int64).cumsum(0) - before[image]  # valid at roots: 1..N within the image
    labels[fg] = number[parent]
    return labels.view(m.shape), counts
