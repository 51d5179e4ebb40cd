"""Detached index bookkeeping: nonzero positions, gathers, thresholds, sorted uniques, counts, segment sums.

Every function takes and returns torch tensors; on CPU the work is done on numpy views (see
:mod:`lossbench.ops.dispatch`), elsewhere by torch. Both give the same values.
"""

from __future__ import annotations

import numpy as np
import torch

from lossbench.ops.dispatch import use_numpy

__all__ = [
    "flat_nonzero",
    "take_flat",
    "take_rows",
    "threshold_mask",
    "count_nonzero_rows",
    "unique_sorted",
    "segment_sum",
]


def flat_nonzero(mask: torch.Tensor) -> torch.Tensor:
    """Flat positions (int64, ascending) of the True entries of a bool tensor of any shape.

    Example:
        >>> flat_nonzero(torch.tensor([[False, True], [True, False]])).tolist()
        [1, 2]
    """
    if use_numpy(mask):
        return torch.from_numpy(np.flatnonzero(mask.detach().numpy()))
    return torch.nonzero(mask.reshape(-1), as_tuple=True)[0]


def take_flat(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values.reshape(-1)[index]`` for any integer ``index``, detached (no autograd)."""
    v = values.detach().reshape(-1)
    if use_numpy(v):
        return torch.from_numpy(v.numpy()[index.numpy()])
    return v[index.long()]


def take_rows(values: torch.Tensor, starts: torch.Tensor, width: int) -> torch.Tensor:
    """Rows ``values.reshape(-1)[start : start + width]`` for every start: ``(len(starts), width)``, detached.

    Every row must lie inside the buffer. One ``index_select`` over an overlapping-rows view of the buffer, so each
    row is one contiguous copy rather than ``width`` scalar gathers.
    """
    v = values.detach().reshape(-1)
    rows = v.as_strided((max(v.numel() - width + 1, 0), width), (1, 1))
    return rows.index_select(0, starts.long())


def threshold_mask(values: torch.Tensor, threshold: float, *, strict: bool = False) -> torch.Tensor:
    """``values >= threshold`` (``>`` with ``strict``) as a detached bool tensor, compared in ``values``' dtype."""
    v = values.detach()
    if use_numpy(v):
        arr = v.numpy()
        return torch.from_numpy(arr > threshold if strict else arr >= threshold)
    return v > threshold if strict else v >= threshold


def count_nonzero_rows(mask: torch.Tensor) -> torch.Tensor:
    """Number of non-zero entries per leading index of a tensor ``(B, ...)``: int64 ``(B,)``."""
    if use_numpy(mask):
        # numpy counts a whole (even strided) array quickly but is slow along an axis: one call per row
        arr = mask.detach().numpy()
        return torch.tensor([np.count_nonzero(row) for row in arr], dtype=torch.int64)
    return torch.count_nonzero(mask.reshape(mask.shape[0], -1), dim=1)


def unique_sorted(
    values: torch.Tensor, *, return_inverse: bool = False, return_counts: bool = False
) -> tuple[torch.Tensor, ...]:
    """``torch.unique(values, sorted=True, return_inverse=..., return_counts=...)`` of a 1-D integer tensor.

    Always returns a tuple ``(unique, [inverse], [counts])``. On CPU numpy's stable argsort (radix sort for integer
    keys) replaces torch's sort; the inputs here are usually concatenated sorted runs, which it handles well.

    Example:
        >>> [t.tolist() for t in unique_sorted(torch.tensor([3, 1, 3]), return_inverse=True, return_counts=True)]
        [[1, 3], [1, 0, 1], [1, 2]]
    """
    if not use_numpy(values) or values.ndim != 1 or values.numel() == 0:
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


def segment_sum(values: torch.Tensor, ids: torch.Tensor, n: int) -> torch.Tensor:
    """Sum of ``values`` per id ``0..n``: ``out[i] = sum(values[ids == i])``, differentiable w.r.t. ``values``.

    One ``index_add`` (no loop over ids); ``values`` and ``ids`` have the same shape; returns length ``n + 1``.

    Example:
        >>> segment_sum(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([2, 0, 2]), 2).tolist()
        [2.0, 0.0, 5.0]
    """
    out = values.new_zeros(n + 1)
    return out.index_add(0, ids.reshape(-1), values.reshape(-1))
