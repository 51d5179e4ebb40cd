"""The public ICI code's labelling: iterative max-pool propagation for a fixed number of iterations.

Each foreground voxel starts with its flat index within the image as id (background 0); each step
replaces ids by the maximum over the full 3x3(x3) window, masked to the foreground. After a fixed
number of steps, voxels sharing an id form one "component". Quirks reproduced on purpose:

* no convergence test: a component whose in-component geodesic distance exceeds ``num_iterations``
  ends up with several ids and is split (``converged`` reports it);
* a component made only of the flat-index-0 corner voxel keeps id 0 and is dropped.

The reference keeps ids in the input's float dtype; here they propagate in float32 up to 2^24 voxels per
image (exact there, and the reference's speed) and float64 beyond, and come back as int64. The result is
renumbered to lossbench's raster convention so it can be compared with the exact backends voxel for voxel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["label_maxpool", "maxpool_ids"]


def maxpool_ids(mask: torch.Tensor, num_iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw reference ids (max flat index reached) after ``num_iterations`` steps, and convergence per image."""
    m = (mask if mask.dtype == torch.bool else mask != 0).contiguous()
    batch = m.shape[0]
    spatial = m.shape[1:]
    n = m[0].numel()
    # max_pool has no integer kernel: float32 (the reference's dtype, and faster) holds every flat index exactly
    # up to 2^24 voxels per image, float64 beyond; ids are cast back to int64.
    dtype = torch.float32 if n <= 2**24 else torch.float64
    ids = torch.arange(n, device=m.device, dtype=dtype).view(1, *spatial).expand(batch, *spatial)
    fmask = m.to(dtype)
    ids = (ids * fmask).unsqueeze(1)
    fmask = fmask.unsqueeze(1)
    pool = F.max_pool3d if len(spatial) == 3 else F.max_pool2d
    for _ in range(num_iterations):
        ids = pool(ids, kernel_size=3, stride=1, padding=1) * fmask
    nxt = pool(ids, kernel_size=3, stride=1, padding=1) * fmask
    converged = (nxt == ids).flatten(1).all(1)
    return ids.squeeze(1).to(torch.int64), converged


def label_maxpool(mask: torch.Tensor, num_iterations: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference labelling renumbered to raster order: (labels int64, counts (B,), converged (B,) bool)."""
    ids, converged = maxpool_ids(mask, num_iterations)
    batch = ids.shape[0]
    n = ids[0].numel()
    flat = ids.view(batch, n)
    fg = flat > 0  # id 0 (background, or the lone corner voxel) is dropped as in the reference
    # first voxel (raster) of every id: scatter amin of positions into an id-indexed table
    pos = torch.arange(n, device=ids.device).expand(batch, n)
    first = torch.full((batch, n), n, dtype=torch.int64, device=ids.device)
    first.scatter_reduce_(1, flat, torch.where(fg, pos, torch.full_like(pos, n)), reduce="amin")
    is_first = fg & (first.gather(1, flat) == pos)
    number = is_first.to(torch.int64).cumsum(1)
    counts = number[:, -1].clone()
    # label = number at the first voxel of the voxel's id
    first_pos = first.gather(1, flat).clamp(max=n - 1)
    labels = torch.where(fg, number.gather(1, first_pos), torch.zeros_like(flat))
    return labels.view(ids.shape), counts, converged
