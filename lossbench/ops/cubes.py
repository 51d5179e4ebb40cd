"""Label cubes and prediction cubes on CPU in one streamed pass: overlap counts, uncovered voxels, cube weights.

Both sets of cubes are boxes ``|x_d - center_d| <= half_d`` (truncated at the image border) with centers within one
voxel of the image. :func:`cube_geometry` computes, per image, how many voxels lie in a label cube, in a prediction
cube and in both, the label-cube voxels no prediction cube covers, and optionally, per prediction cube, the sum over
its voxels outside every label cube of ``1 / (number of prediction cubes covering the voxel)``.

The volume is streamed one plane of the first axis at a time (a compiled loop, :mod:`lossbench.ops._cube_kernels`):
the prediction cubes' coverage of a plane is updated from a 2-D difference plane of the cubes that start or end
there, and each cube's weight is the sum, over its planes, of in-plane box sums. Time O(voxels + cubes), memory
O(plane + cubes), whatever the number of cubes or how much they overlap: the bounded cost an untrained network's
tens of thousands of tiny components need. Counts are exact; weights are summed in 64-bit fixed point (exact and
independent of the summation order; each term within 2^-55 of ``1 / count`` for cubes of 7^3 voxels) and returned
as float64.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

__all__ = ["CubeGeometry", "cube_geometry"]


class CubeGeometry(NamedTuple):
    """The result of :func:`cube_geometry` (int64 per-image counts, int64 positions, float64 weights or None)."""

    both: torch.Tensor
    label: torch.Tensor
    pred: torch.Tensor
    label_only_pos: torch.Tensor
    pred_cube_weight: torch.Tensor | None


def _as_3d(center: np.ndarray, ndim: int) -> np.ndarray:
    """Centers of 1-D or 2-D images as 3-D ones with leading zero coordinates (size-1 axes, half width 0)."""
    lead = np.zeros((center.shape[0], 3 - ndim), dtype=np.int64)
    return np.ascontiguousarray(np.concatenate([lead, center.astype(np.int64)], axis=1))


def _grouped(center: np.ndarray, image: np.ndarray, n_img: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centers grouped by image (stable), the group offsets and the permutation applied."""
    order = np.argsort(image, kind="stable")
    start = np.concatenate([[0], np.cumsum(np.bincount(image, minlength=n_img))]).astype(np.int64)
    return np.ascontiguousarray(center[order]), start, order


def _fixed_point(half: np.ndarray, most_cubes: int) -> tuple[int, np.ndarray]:
    """Fraction bits and the table ``round(2^bits / c)`` (``c = 0 .. most_cubes``, 0 at 0) of the cube weights.

    ``bits`` is as large as lets any cube's sum of at most ``volume`` terms ``<= 2^bits`` fit below 2^63: 54 bits
    for cubes of 7^3 voxels, so every term is within 2^-55 of ``1 / c`` and a weight within ``volume * 2^-55``.
    """
    volume = int(np.prod(2 * half + 1))
    bits = 63 - max(volume - 1, 1).bit_length()
    c = np.arange(most_cubes + 1, dtype=np.uint64)
    inverse = (np.uint64(1 << bits) + c // np.uint64(2)) // np.maximum(c, np.uint64(1))
    inverse[0] = 0
    return bits, inverse


def cube_geometry(
    label_center: torch.Tensor,
    label_image: torch.Tensor,
    pred_center: torch.Tensor,
    pred_image: torch.Tensor,
    n_img: int,
    spatial: tuple[int, ...],
    half: tuple[int, ...],
    *,
    weights: bool,
) -> CubeGeometry:
    """Overlap counts of label and prediction cubes, uncovered label-cube voxels and (optionally) cube weights.

    Args:
        label_center: int64 ``(N, ndim)`` centers of the label cubes, each coordinate in ``-1 .. s`` (not
            checked: the compiled loop indexes with them; the center term's centers, ``ceil(mean) - 1``, always are).
        label_image: int64 ``(N,)`` image of every label cube.
        pred_center: the same for the prediction cubes.
        pred_image: their images.
        n_img: images in the batch.
        spatial: spatial shape (1 to 3 axes).
        half: half width per axis.
        weights: whether to compute ``pred_cube_weight``.

    Returns:
        :class:`CubeGeometry`: per image the voxels in a label cube and a prediction cube (``both``), in a label
        cube (``label``), in a prediction cube (``pred``); the flat batch positions (ascending) of label-cube voxels
        no prediction cube covers; per prediction cube (input order) the sum over its voxels outside every label
        cube of ``1 / (prediction cubes covering the voxel)``, or None.
    """
    from lossbench.ops._cube_kernels import cube_geometry_cpu

    ndim = len(spatial)
    shape = np.array((1,) * (3 - ndim) + tuple(spatial), dtype=np.int64)
    half3 = np.array((0,) * (3 - ndim) + tuple(half), dtype=np.int64)
    l_center, l_start, _ = _grouped(_as_3d(label_center.numpy(), ndim), label_image.numpy(), n_img)
    p_center, p_start, p_order = _grouped(_as_3d(pred_center.numpy(), ndim), pred_image.numpy(), n_img)
    # room for every label-cube voxel (overlaps counted twice): the uncovered ones are a subset
    extent = np.minimum(l_center + half3 + 1, shape) - np.maximum(l_center - half3, 0)
    room = int(np.clip(extent, 0, None).prod(1).sum()) if l_center.size else 0
    label_only = np.empty(room, dtype=np.int64)
    bits, inverse = 0, np.zeros(0, dtype=np.uint64)  # an empty table: no weights
    if weights:
        bits, inverse = _fixed_point(half3, int(np.diff(p_start).max(initial=0)))
    both, label, pred, n_lo, w = cube_geometry_cpu(
        l_center, l_start, p_center, p_start, shape, half3, inverse, label_only
    )
    weight = None
    if weights:
        weight = np.empty(w.shape, dtype=np.float64)
        weight[p_order] = w.astype(np.float64) * 2.0**-bits
        weight = torch.from_numpy(weight)
    return CubeGeometry(
        torch.from_numpy(both), torch.from_numpy(label), torch.from_numpy(pred),
        torch.from_numpy(label_only[:n_lo].copy()), weight,
    )  # fmt: skip
