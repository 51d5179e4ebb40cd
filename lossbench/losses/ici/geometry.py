"""Where the center term's cubes lie: which voxels the label cubes and the prediction cubes cover (detached).

The center term (Eq. 4) replaces every label component and every used prediction component by a cube around its
center: index ``c - h - 1 .. c + h - 1`` per axis with ``c = ceil(mean voxel index)`` and half width
``h = ceil(size_axis / max(size) * (cube_size - 1) / 2)`` (thinner cubes on short axes of anisotropic images),
truncated at the image border. The term needs, per image, how many voxels lie in a label cube, in a prediction
cube and in both, and for lossbench's trainable variant also the label-cube voxels no prediction cube covers and,
for the prediction cubes outside every label cube, how much each cube contributes (:class:`CenterGeometry`).

:func:`center_geometry` computes it with one of three exact algorithms, chosen inside by cost:

* row bitmaps on CPU (:mod:`lossbench.ops.bitmaps`): each cube row as 64-bit words, O(cubes x rows);
* a voxel listing elsewhere: every cube voxel, one sort, O(cube voxels x log);
* a dense algorithm when the cubes cover a large part of the volume, O(voxels) whatever the number of cubes: on
  CPU the volume streamed plane by plane (:func:`lossbench.ops.cube_geometry`, O(plane) memory; for the "voxels"
  detail the coverage grids below), elsewhere dense coverage grids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from lossbench.ops import (
    bitmap_contains,
    bitmap_positions,
    box_row_words,
    box_voxels,
    count_nonzero_rows,
    coverage_dtype,
    coverage_work_size,
    covering_sums,
    cube_coverage,
    cube_geometry,
    flat_nonzero,
    inverse_coverage_sums,
    popcount,
    row_words,
    take_flat,
    union_bitmap,
    unique_sorted,
    use_numpy,
)

__all__ = ["CenterGeometry", "center_geometry", "half_widths", "cube_bounds", "DENSE_CENTER_FRACTION", "DETAILS"]

#: What the caller needs: "counts" (the reference center: the three per-image counts), "weights" (trainable center
#: with a base linear in the probabilities: also the label-only voxels and each prediction cube's weight) or
#: "voxels" (trainable center, any base: the label-only voxels and every prediction-only voxel with its cubes).
DETAILS = ("counts", "weights", "voxels")

#: Cube-voxel fraction of the batch volume above which the dense algorithm replaces the sparse one. The values
#: come from crossovers measured on one CPU core at 96^3 (ICI forward+backward, trainable center) with the earlier
#: CPU grid: row bitmaps and that grid cost the same near half of the volume; the voxel listing (other devices)
#: crosses over near 5 %. The streamed CPU kernel (:func:`lossbench.ops.cube_geometry`) is cheaper: measured on
#: 2026-12-03 (best of 4, while two study workers loaded the machine), it costs the same as the bitmaps near 18 % of
#: the volume (11 ms) and is 1.7x faster at 40 % (11.8 vs 19.7 ms), so the CPU threshold could come down to about
#: 0.2 (not yet changed).
DENSE_CENTER_FRACTION = {"bitmap": 0.5, "listing": 0.05}


@dataclass
class CenterGeometry:
    """Detached cube geometry of one call (counts per image; positions are flat indices into the batch).

    Attributes:
        both: per image, voxels in a label cube and a prediction cube.
        label: per image, voxels in a label cube.
        pred: per image, voxels in a prediction cube.
        label_only_pos, label_only_image: label-cube voxels outside every prediction cube ("weights", "voxels").
        pred_cube_weight: per prediction cube, the sum over its voxels outside every label cube of
            ``1 / (number of prediction cubes covering the voxel)`` (float64; "weights").
        pred_only_image, pred_only_count: every prediction-cube voxel outside the label cubes: its image and the
            number of prediction cubes covering it ("voxels").
        pred_only_cube, pred_only_voxel: its (cube, voxel) incidences, voxels numbered 0.. as above ("voxels",
            sparse algorithms).
        pred_only_spread: the arguments of :func:`lossbench.ops.covering_sums` after the values (cube centers, their
            images, half widths, batch shape, the voxels' positions) ("voxels", dense algorithm).
    """

    both: torch.Tensor
    label: torch.Tensor
    pred: torch.Tensor
    label_only_pos: torch.Tensor
    label_only_image: torch.Tensor
    pred_cube_weight: torch.Tensor | None = None
    pred_only_image: torch.Tensor | None = None
    pred_only_count: torch.Tensor | None = None
    pred_only_cube: torch.Tensor | None = None
    pred_only_voxel: torch.Tensor | None = None
    pred_only_spread: tuple | None = None

    def pred_only_average(self, mean_p: torch.Tensor) -> torch.Tensor:
        """Per prediction-only voxel, the mean of ``mean_p`` over the prediction cubes covering it (differentiable)."""
        count = self.pred_only_count.to(mean_p.dtype)
        if self.pred_only_spread is not None:
            return covering_sums(mean_p, *self.pred_only_spread) / count
        total = mean_p.new_zeros(self.pred_only_image.numel())
        return total.index_add(0, self.pred_only_voxel, mean_p[self.pred_only_cube]) / count


def half_widths(spatial: tuple[int, ...], cube_size: int) -> tuple[int, ...]:
    """Half width of the cube per axis: ``ceil(size_axis / max(size) * (cube_size - 1) / 2)``."""
    offset = (cube_size - 1) // 2
    biggest = max(spatial)
    return tuple(math.ceil(s / biggest * offset) for s in spatial)


def cube_bounds(center: np.ndarray | torch.Tensor, spatial: tuple[int, ...], cube_size: int) -> tuple:
    """Cube extents ``[lo, hi)`` per axis: indices ``c - h - 1 .. c + h - 1`` clipped to the image.

    ``center``: int64 ``(N, ndim)`` ``ceil(mean index)`` centers, a tensor or an ndarray; the same type comes out.
    """
    if isinstance(center, np.ndarray):
        half_np = np.array(half_widths(spatial, cube_size))
        return np.maximum(center - half_np - 1, 0), np.minimum(center + half_np, np.array(spatial))
    half = torch.tensor(half_widths(spatial, cube_size), dtype=torch.int64, device=center.device)
    size = torch.tensor(spatial, dtype=torch.int64, device=center.device)
    return (center - half - 1).clamp(min=0), torch.minimum(center + half, size)


def center_geometry(
    label_center: torch.Tensor,
    label_image: torch.Tensor,
    pred_center: torch.Tensor,
    pred_image: torch.Tensor,
    n_img: int,
    spatial: tuple[int, ...],
    cube_size: int,
    detail: str,
) -> CenterGeometry:
    """The cube geometry of label and prediction components, by the cheapest exact algorithm for the input.

    Args:
        label_center: int64 ``(N, ndim)`` ``ceil(mean voxel index)`` of every label component.
        label_image: int64 ``(N,)`` image of every label component.
        pred_center: the same for the used prediction components.
        pred_image: their images.
        n_img: images in the batch.
        spatial: spatial shape.
        cube_size: odd cube side.
        detail: one of :data:`DETAILS`.

    Returns:
        the :class:`CenterGeometry` with the fields ``detail`` needs.
    """
    n_lc = label_center.shape[0]
    centers = torch.cat([label_center, pred_center])  # label cubes first
    on_cpu = use_numpy(centers)
    if on_cpu:
        lo, hi = cube_bounds(centers.numpy(), spatial, cube_size)
        volume = np.maximum(hi - lo, 0).prod(1)
        label_voxels, cube_voxels = int(volume[:n_lc].sum()), int(volume.sum())
    else:
        lo, hi = cube_bounds(centers, spatial, cube_size)
        before = torch.cat([lo.new_zeros(1), (hi - lo).clamp(min=0).prod(1).cumsum(0)])  # cube voxels before cube i
        label_voxels, cube_voxels = before[[n_lc, -1]].tolist()  # one host sync: it sizes buffers, picks the path
    dense = cube_voxels >= DENSE_CENTER_FRACTION["bitmap" if on_cpu else "listing"] * n_img * math.prod(spatial)
    if dense:
        half = half_widths(spatial, cube_size)
        return _dense_geometry(label_center - 1, label_image, pred_center - 1, pred_image, n_img, spatial, half, detail)
    if on_cpu:
        image = np.concatenate([label_image.numpy(), pred_image.numpy()])
        return _bitmap_geometry(lo, hi, image, n_lc, n_img, spatial, detail)
    image = torch.cat([label_image, pred_image])
    return _listing_geometry(lo, hi, image, n_lc, label_voxels, n_img, spatial, detail)


def _listing_geometry(
    lo: torch.Tensor,
    hi: torch.Tensor,
    image: torch.Tensor,
    n_lc: int,
    n_lv: int,
    n_img: int,
    spatial: tuple[int, ...],
    detail: str,
) -> CenterGeometry:
    """Geometry from a listing of every cube voxel (:func:`lossbench.ops.box_voxels`) and one sort; any device.

    Label cubes are boxes ``0..n_lc-1`` (``n_lv`` voxels in all, listed first), prediction cubes the rest.
    """
    n_vox = math.prod(spatial)
    flat, box = box_voxels(lo, hi, image, spatial)
    pred_box = box[n_lv:] - n_lc
    uniq, inverse = unique_sorted(flat, return_inverse=True)
    in_label = torch.bincount(inverse[:n_lv], minlength=uniq.numel()) > 0
    pred_slot = inverse[n_lv:]
    pred_count = torch.bincount(pred_slot, minlength=uniq.numel())
    in_pred = pred_count > 0
    img = torch.div(uniq, n_vox, rounding_mode="floor")
    # per image: voxels in a label cube only (code 1), a prediction cube only (2), both (3)
    codes = torch.bincount(img * 4 + in_label + 2 * in_pred, minlength=4 * n_img).view(n_img, 4)
    geom = CenterGeometry(
        both=codes[:, 3], label=codes[:, 1] + codes[:, 3], pred=codes[:, 2] + codes[:, 3],
        label_only_pos=uniq[:0], label_only_image=uniq[:0],
    )  # fmt: skip
    if detail == "counts":
        return geom
    label_only, pred_only = in_label & ~in_pred, in_pred & ~in_label
    outside = pred_only[pred_slot]  # incidences of prediction cubes on voxels outside the label cubes
    geom.label_only_pos, geom.label_only_image = uniq[label_only], img[label_only]
    if detail == "weights":
        w = torch.zeros(lo.shape[0] - n_lc, dtype=torch.float64, device=lo.device)
        inv_count = pred_count[pred_slot[outside]].to(torch.float64).reciprocal()
        geom.pred_cube_weight = w.index_add_(0, pred_box[outside], inv_count)
    else:
        geom.pred_only_image, geom.pred_only_count = img[pred_only], pred_count[pred_only]
        geom.pred_only_cube = pred_box[outside]
        geom.pred_only_voxel = (torch.cumsum(pred_only, 0) - 1)[pred_slot[outside]]
    return geom


def _bitmap_geometry(
    lo: np.ndarray, hi: np.ndarray, image: np.ndarray, n_lc: int, n_img: int, spatial: tuple[int, ...], detail: str
) -> CenterGeometry:
    """Geometry on CPU from row bitmaps, without listing every cube voxel; the same tensors as the listing.

    The label-cube and prediction-cube unions are bitmaps of 64-bit words along the last axis (O(cubes x rows)); the
    counts are popcounts and the label-only voxels the set bits of ``L & ~P`` (ascending, as the listing's sorted
    voxels). Prediction-only voxels lie only in prediction-cube words with bits outside ``L``.
    """
    n_words = n_img * math.prod(spatial[:-1]) * row_words(spatial[-1])
    key, mask, box = box_row_words(lo, hi, image, spatial)
    split = int(np.searchsorted(box, n_lc))  # label cubes' words first
    in_label = union_bitmap(key[:split], mask[:split], n_words)
    in_pred = union_bitmap(key[split:], mask[split:], n_words)
    # per image: popcounts of the words any cube touches (a few per cube row, not the whole bitmap)
    touched = np.flatnonzero((in_label | in_pred) != 0)
    w_label, w_pred = in_label[touched], in_pred[touched]
    img_w = touched // (n_words // n_img)
    both, label, pred = (
        torch.from_numpy(np.bincount(img_w, weights=popcount(w), minlength=n_img).astype(np.int64))
        for w in (w_label & w_pred, w_label, w_pred)
    )
    empty = torch.zeros(0, dtype=torch.int64)
    geom = CenterGeometry(both=both, label=label, pred=pred, label_only_pos=empty, label_only_image=empty)
    if detail == "counts":
        return geom
    label_only = bitmap_positions(w_label & ~w_pred, spatial[-1], touched)
    geom.label_only_pos = torch.from_numpy(label_only)
    geom.label_only_image = torch.from_numpy(label_only // math.prod(spatial))
    outside = _PredOutside(key[split:], mask[split:] & ~in_label[key[split:]], box[split:] - n_lc)
    n_pc = lo.shape[0] - n_lc
    if detail == "weights":
        geom.pred_cube_weight = torch.from_numpy(_bitmap_cube_weights(outside, n_words, n_pc))
    else:
        _bitmap_pred_only_voxels(geom, outside, lo[n_lc:], hi[n_lc:], image[n_lc:], in_label, spatial)
    return geom


@dataclass
class _PredOutside:
    """The prediction cubes' row words restricted to the bits outside every label cube (bitmap algorithm)."""

    key: np.ndarray  # word index of every (cube, row, word) entry
    bits: np.ndarray  # its bits outside the label cubes
    cube: np.ndarray  # its prediction cube


def _bitmap_cube_weights(outside: _PredOutside, n_words: int, n_cubes: int) -> np.ndarray:
    """Each prediction cube's ``sum over its voxels v outside L of 1 / count(v)`` from its row words.

    In a word that no other cube's outside bits share, every bit counts 1 (a popcount); only the voxels of words
    that two or more cubes share are counted one by one.
    """
    seg = np.flatnonzero(outside.bits)
    key, bits, cube = outside.key[seg], outside.bits[seg], outside.cube[seg]
    # words holding bits of two or more cubes: one owner per word, the others reveal it
    owner = np.empty(n_words, dtype=np.int64)
    owner[key] = np.arange(seg.size)
    shared = np.zeros(n_words, dtype=bool)
    shared[key[owner[key] != np.arange(seg.size)]] = True
    multi = shared[key]
    alone = np.flatnonzero(~multi)
    weights = np.bincount(cube[alone], weights=popcount(bits[alone]), minlength=n_cubes).astype(np.float64)
    many = np.flatnonzero(multi)
    if many.size:
        # the shared words' voxels, numbered compactly (word representative x 64 + bit) for one bincount
        key_m = key[many]
        owner[key_m] = np.arange(many.size)
        on = np.flatnonzero(np.unpackbits(bits[many].astype("<u8").view(np.uint8), bitorder="little").view(bool))
        voxel = owner[key_m[on >> 6]] * 64 + (on & 63)
        count = np.bincount(voxel, minlength=many.size * 64)[voxel]
        weights += np.bincount(cube[many[on >> 6]], weights=1.0 / count, minlength=n_cubes)
    return weights


def _bitmap_pred_only_voxels(
    geom: CenterGeometry,
    outside: _PredOutside,
    lo: np.ndarray,
    hi: np.ndarray,
    image: np.ndarray,
    in_label: np.ndarray,
    spatial: tuple[int, ...],
) -> None:
    """Fill the "voxels" fields: list the voxels of the prediction cubes with bits outside L, keep those outside L."""
    hit = np.zeros(lo.shape[0], dtype=bool)
    hit[outside.cube[np.flatnonzero(outside.bits)]] = True
    escaping = np.flatnonzero(hit)
    if escaping.size:
        boxes = (torch.from_numpy(a[escaping]) for a in (lo, hi, image))
        flat, local = (t.numpy() for t in box_voxels(*boxes, spatial))
    else:
        flat = local = np.zeros(0, dtype=np.int64)
    keep = np.flatnonzero(~bitmap_contains(in_label, flat, spatial[-1]))
    flat, cube = flat[keep], escaping[local[keep]]
    uniq, inverse = (u.numpy() for u in unique_sorted(torch.from_numpy(flat), return_inverse=True))
    geom.pred_only_image = torch.from_numpy(uniq // math.prod(spatial))
    geom.pred_only_count = torch.from_numpy(np.bincount(inverse, minlength=uniq.size))
    geom.pred_only_cube, geom.pred_only_voxel = torch.from_numpy(cube), torch.from_numpy(inverse)


def _dense_geometry(
    label_center: torch.Tensor,
    label_image: torch.Tensor,
    pred_center: torch.Tensor,
    pred_image: torch.Tensor,
    n_img: int,
    spatial: tuple[int, ...],
    half: tuple[int, ...],
    detail: str,
) -> CenterGeometry:
    """Geometry of many cubes in O(voxels): streamed planes on CPU, else dense coverage grids.

    On CPU, "counts" and "weights" come from :func:`lossbench.ops.cube_geometry` (one plane of the first axis at a
    time, O(plane) memory); "voxels", and every other device, from the grids of :func:`lossbench.ops.cube_coverage`.
    Centers here are the cubes' own centers (``ceil(mean) - 1``). Only the unions are materialised for "counts"; for
    "weights" the prediction cubes' coverage counts too, from which each cube's weight is summed
    (:func:`lossbench.ops.inverse_coverage_sums`); for "voxels" every prediction-only voxel with its count, whose
    average over the covering cubes is then a filter of the whole volume (:func:`lossbench.ops.covering_sums`).
    """
    if detail != "voxels" and use_numpy(label_center):
        cubes = cube_geometry(
            label_center, label_image, pred_center, pred_image, n_img, spatial, half, weights=detail == "weights"
        )
        return CenterGeometry(
            both=cubes.both, label=cubes.label, pred=cubes.pred, label_only_pos=cubes.label_only_pos,
            label_only_image=torch.div(cubes.label_only_pos, math.prod(spatial), rounding_mode="floor"),
            pred_cube_weight=cubes.pred_cube_weight,
        )  # fmt: skip
    dev = label_center.device
    shape = (n_img, *spatial)
    size = coverage_work_size(shape, half)
    work_label = torch.empty(2 * size, dtype=torch.bool, device=dev)
    in_label = cube_coverage(label_center, label_image, half, shape, torch.bool, work=work_label)
    if detail == "counts":
        in_pred = cube_coverage(pred_center, pred_image, half, shape, torch.bool)
    else:
        count_dtype = coverage_dtype(pred_center, pred_image, half, n_img)
        work_pred = torch.empty(2 * size, dtype=count_dtype, device=dev)
        in_pred = count = cube_coverage(pred_center, pred_image, half, shape, count_dtype, work=work_pred)
    both = torch.logical_and(in_label, in_pred)
    geom = CenterGeometry(
        both=count_nonzero_rows(both).to(dev),
        label=count_nonzero_rows(in_label).to(dev),
        pred=count_nonzero_rows(in_pred).to(dev),
        label_only_pos=torch.zeros(0, dtype=torch.int64, device=dev),
        label_only_image=torch.zeros(0, dtype=torch.int64, device=dev),
    )
    if detail == "counts":
        return geom
    geom.label_only_pos = flat_nonzero(in_label ^ both).to(dev)
    geom.label_only_image = torch.div(geom.label_only_pos, math.prod(spatial), rounding_mode="floor")
    if detail == "voxels":
        pos = flat_nonzero((count > 0) & ~in_label)
        geom.pred_only_image = torch.div(pos, math.prod(spatial), rounding_mode="floor")
        geom.pred_only_count = take_flat(count.contiguous(), pos).to(torch.int64)
        geom.pred_only_spread = (pred_center, pred_image, half, shape, pos)
        return geom
    # the padded grids behind the coverage views: the half of each work buffer that holds the result
    skip = work_label[:size] if in_label.storage_offset() < size else work_label[size:]
    counts = work_pred[:size] if count.storage_offset() < size else work_pred[size:]
    geom.pred_cube_weight = inverse_coverage_sums(skip, counts, pred_center, pred_image, half, spatial)
    return geom
