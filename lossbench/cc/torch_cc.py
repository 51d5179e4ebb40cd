"""Exact connected components in pure torch (any device, int64 ids only).

Algorithm (hook-to-minimum with pointer jumping, in the spirit of Shiloach-Vishkin):

1. Foreground voxels are compacted to ``fg`` (raster order); every voxel's parent starts as itself.
2. For every neighbour offset of the half-neighbourhood, the edge list ``(u, v)`` of foreground pairs
   is built once (index arithmetic on slices, so no edge wraps around an image border and no edge
   joins two images of the batch).
3. Repeat: hook the larger of the two current parents of each edge onto the smaller one with
   ``scatter_reduce(amin)``; compress paths with a few rounds of ``parent = parent[parent]``.
   Parents only ever decrease and stay inside the component, so the fixed point assigns every
   voxel the smallest compact index of its component, i.e. its first voxel in raster order.
4. Convergence is checked (one host synchronisation) only every ``check_every`` rounds.
5. Roots are numbered per image with a cumulative sum, which yields scipy's raster numbering.
"""

from __future__ import annotations

import torch

from lossbench.cc.api import structure_offsets

__all__ = ["label_torch"]


def _edges(mask: torch.Tensor, connectivity: int, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge list (u, v) in compact foreground indices for every neighbour pair of foreground voxels."""
    spatial_dims = mask.ndim - 1
    us, vs = [], []
    for off in structure_offsets(spatial_dims, connectivity):
        src = [slice(None)]
        dst = [slice(None)]
        for o in off:
            if o == 0:
                src.append(slice(None))
                dst.append(slice(None))
            elif o > 0:
                src.append(slice(0, -o))
                dst.append(slice(o, None))
            else:
                src.append(slice(-o, None))
                dst.append(slice(0, o))
        both = mask[tuple(src)] & mask[tuple(dst)]
        us.append(index[tuple(src)][both])
        vs.append(index[tuple(dst)][both])
    if not us:
        empty = torch.empty(0, dtype=torch.int64, device=mask.device)
        return empty, empty
    return torch.cat(us), torch.cat(vs)


def label_torch(mask: torch.Tensor, connectivity: int, check_every: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Label ``mask`` (B, *spatial) exactly; returns int64 labels and counts (B,) on the mask's device."""
    device = mask.device
    m = mask if mask.dtype == torch.bool else mask != 0
    m = m.contiguous()
    batch = m.shape[0]
    flat = m.reshape(-1)
    fg = flat.nonzero().squeeze(1)  # raster order over the whole batch
    n_fg = fg.numel()
    labels = torch.zeros(flat.shape, dtype=torch.int64, device=device)
    if n_fg == 0:
        return labels.view(m.shape), torch.zeros(batch, dtype=torch.int64, device=device)

    # compact index of every foreground voxel (-1 elsewhere; only read where both ends are foreground)
    index = torch.full(flat.shape, -1, dtype=torch.int64, device=device)
    index[fg] = torch.arange(n_fg, device=device)
    u, v = _edges(m, connectivity, index.view(m.shape))

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
    root_flag = torch.zeros(flat.shape, dtype=torch.int64, device=device)
    root_flag[fg] = is_root.to(torch.int64)
    per_image = root_flag.view(batch, -1)
    number = per_image.cumsum(1)  # raster numbering of roots within each image
    counts = number[:, -1].clone()
    root_number = number.view(-1)[fg]  # number at each foreground voxel (valid at roots)
    labels[fg] = root_number[parent]
    return labels.view(m.shape), counts
