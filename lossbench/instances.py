"""Per-instance quantities shared by the losses and the metrics (label-indexed bincount / scatter).

Conventions: component labels from :func:`lossbench.cc.label_components` are numbered 1..N per
image. For vectorised work over a whole batch they are turned into *global ids* 1..sum(N) by adding
each image's offset (:func:`global_ids`), so that one ``bincount`` / ``scatter_add`` over the
flattened batch yields a value per instance of the mini-batch without any Python loop.
"""

from __future__ import annotations

import torch

__all__ = ["global_ids", "component_sizes", "overlap_pairs"]


def global_ids(labels: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn per-image labels (B, *spatial) into batch-global ids; return ``(ids, offsets)``.

    ``offsets[b]`` is the number of components in images ``0..b-1``; image ``b``'s component ``k`` gets
    id ``offsets[b] + k``; background stays 0. ``image_of_id = searchsorted`` is then easy if needed.
    """
    offsets = torch.cumsum(counts, 0) - counts
    shape = (-1,) + (1,) * (labels.ndim - 1)
    ids = torch.where(labels > 0, labels + offsets.view(shape), torch.zeros_like(labels))
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
