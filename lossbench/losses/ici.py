r"""ICI (Eq. 1) and DICI (Eq. 6) losses, vectorised over instances (no Python loop over instances).

.. math::

    \mathcal{L}_{ICI} = a\,\mathcal{L}_{global} + b\,\mathcal{L}_{instance} + c\,\mathcal{L}_{center}
    \qquad
    \mathcal{L}_{DICI} = a\,\mathcal{L}_{global} + b\,\mathcal{L}_{instance} + c\,\mathcal{L}_{predicted}
        + d\,\mathcal{L}_{center}

How the instance terms are computed (cost O(voxels + pairs)): label components and prediction
components (``prob >= threshold``) are labelled on detached tensors and given batch-global ids.
For every label instance ``n`` the masked output ``out_n`` of REFERENCE.md section 2 is never built;
its base-loss sums are assembled from

* per-pair sums over the voxels shared by ``n`` and a touching component ``m`` (``index_add`` over the
  pair index of each shared voxel), and
* per-component sums over the component's background voxels (and, for ``tp_mode="keep"``, over its
  voxels inside any label instance),

then added per instance with ``index_add`` over the pair table. Gradients reach the prediction only
through these probability sums, exactly as in the reference code. For a base whose sums are linear in the
probabilities (dice-type without ``squared_pred``, the default) all of it is two ``index_add`` calls over slot
tables (:func:`_linear_terms`); other bases sum per-voxel statistics term by term (:func:`_general_terms`).
The centre term's cube geometry is detached bookkeeping: row bitmaps on CPU, a voxel listing elsewhere, or a
dense coverage grid when the cubes cover most of the volume (:func:`_center_geometry`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lossbench.cc import label_batch
from lossbench.cc.api import BACKENDS
from lossbench.errors import ConfigError, expect
from lossbench.instances import (
    batch_offsets,
    bitmap_contains,
    bitmap_positions,
    box_row_words,
    box_voxels,
    box_voxels_numpy,
    centroids_ceil_from_positions,
    component_images,
    count_nonzero_rows,
    coverage_work_size,
    cube_coverage,
    flat_nonzero,
    foreground_ids,
    multiplicity,
    numpy_ok,
    pair_table,
    popcount,
    row_words,
    segment_sum,
    take_flat,
    take_rows,
    threshold_mask,
    union_bitmap,
    unique_sorted,
)
from lossbench.losses._core import (
    BaseSpec,
    Prepared,
    baseline_terms,
    check_choice,
    check_flag,
    check_nonneg,
    dice_from_sums,
    elementwise,
    entry_loss,
    image_sums,
    make_base_spec,
    pred_stat,
    sum_and_gather,
)
from lossbench.losses._module import TermLoss
from lossbench.losses.baselines import ActivationConfig

__all__ = [
    "ICIConfig",
    "ICILoss",
    "DICILoss",
    "ici_terms",
    "ici_loss",
    "dici_terms",
    "dici_loss",
    "TP_MODES",
    "CENTER_MODES",
    "REDUCTIONS",
    "REFERENCE_DEFAULTS",
    "LOSSBENCH_DEFAULTS",
]

TP_MODES = ("keep", "remove", "remove_detached")
CENTER_MODES = ("reference", "trainable")
REDUCTIONS = ("instance", "image")
#: Options set by ``reference=True`` when not given explicitly (REFERENCE.md sections 2-3).
REFERENCE_DEFAULTS = {
    "tp_mode": "remove_detached",
    "center_mode": "reference",
    "max_pred_instances": 50,
    "too_many_factor": 50,
}
#: lossbench's own defaults (``reference=False``): Eq. 5's pure set difference, the trainable centre, no caps.
LOSSBENCH_DEFAULTS = {"tp_mode": "remove", "center_mode": "trainable", "max_pred_instances": 0, "too_many_factor": 0}
_REF_CUBE_VALUE = 1.0 + 1e-7


@dataclass(frozen=True)
class ICIConfig:
    """Validated options of ``ici``/``dici`` (see :class:`ICILoss` for their meaning)."""

    a: float
    b: float
    c: float
    d: float
    dual: bool
    base: BaseSpec
    tp_mode: str
    cube_size: int
    center_mode: str
    reduction: str
    max_pred_instances: int
    too_many_factor: float
    threshold: float
    connectivity: int | None
    cc_backend: str
    num_iterations: int | None
    activation: ActivationConfig

    @classmethod
    def make(
        cls,
        *,
        dual: bool,
        a: float,
        b: float,
        c: float,
        d: float = 0.0,
        base: str | dict[str, Any] = "dice",
        tp_mode: str | None = None,
        cube_size: int = 7,
        center_mode: str | None = None,
        reduction: str = "instance",
        max_pred_instances: int | None = None,
        too_many_factor: float | None = None,
        threshold: float = 0.5,
        connectivity: int | None = None,
        cc_backend: str = "auto",
        num_iterations: int | None = None,
        reference: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        include_background: bool = True,
        to_onehot_y: bool = False,
        smooth_nr: float | None = None,
        smooth_dr: float | None = None,
    ) -> ICIConfig:
        """Validate every option (raising :class:`ConfigError`) and resolve the ``reference`` switch."""
        check_flag("reference", reference)
        defaults = REFERENCE_DEFAULTS if reference else LOSSBENCH_DEFAULTS
        tp_mode = defaults["tp_mode"] if tp_mode is None else tp_mode
        center_mode = defaults["center_mode"] if center_mode is None else center_mode
        max_pred_instances = defaults["max_pred_instances"] if max_pred_instances is None else max_pred_instances
        too_many_factor = defaults["too_many_factor"] if too_many_factor is None else too_many_factor
        names = ("a", "b", "c", "d") if dual else ("a", "b", "c")
        for name, w in zip(("a", "b", "c", "d"), (a, b, c, d)):
            if name in names:
                check_nonneg(name, w)
        check_choice("tp_mode", tp_mode, TP_MODES)
        check_choice("center_mode", center_mode, CENTER_MODES)
        check_choice("reduction", reduction, REDUCTIONS)
        if isinstance(cube_size, bool) or not isinstance(cube_size, int) or cube_size < 1 or cube_size % 2 == 0:
            raise expect("cube_size", "an odd int >= 1 (side length of the centre cube)", repr(cube_size))
        if isinstance(max_pred_instances, bool) or not isinstance(max_pred_instances, int) or max_pred_instances < 0:
            raise expect("max_pred_instances", "an int >= 0 (0 = no cap) or None", repr(max_pred_instances))
        check_nonneg("too_many_factor", too_many_factor)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
            raise expect("threshold", "a number in (0, 1]", repr(threshold))
        if connectivity is not None and (
            isinstance(connectivity, bool) or not isinstance(connectivity, int) or not 1 <= connectivity <= 3
        ):
            raise expect("connectivity", "None (full) or an int in 1..3 (orthogonal hops)", repr(connectivity))
        check_choice("cc_backend", cc_backend, BACKENDS)
        if num_iterations is not None and cc_backend != "maxpool":
            raise ConfigError(f"`num_iterations` only applies to cc_backend='maxpool', got cc_backend={cc_backend!r}")
        activation = ActivationConfig(sigmoid, softmax, include_background, to_onehot_y)
        base_dict = dict(base) if isinstance(base, dict) else {"name": base}
        for key, val in (("smooth_nr", smooth_nr), ("smooth_dr", smooth_dr)):
            if val is not None:
                if base_dict.get("name") in ("bce", "focal"):
                    raise ConfigError(f"`{key}` needs a Dice-type `base`, got base={base_dict.get('name')!r}")
                base_dict[key] = val
        spec = make_base_spec(base_dict)
        return cls(
            float(a), float(b), float(c), float(d), dual, spec, tp_mode, cube_size, center_mode, reduction,
            int(max_pred_instances), float(too_many_factor), float(threshold), connectivity, cc_backend,
            num_iterations, activation,
        )  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------


def _reduce(vals: torch.Tensor, imgs: torch.Tensor, n_images: int, n_channels: int, mode: str) -> torch.Tensor:
    """Mean of per-entry values: over all entries of a channel ("instance") or per image first ("image").

    Channels are the fastest axis of the flattened ``(B * C')`` images; the result is the mean over channels.
    """
    if mode == "image":
        per_img = vals.new_zeros(n_images).index_add(0, imgs, vals)
        cnt = torch.bincount(imgs, minlength=n_images).clamp(min=1)
        return (per_img / cnt).mean()
    ch = imgs % n_channels
    per_ch = vals.new_zeros(n_channels).index_add(0, ch, vals)
    cnt = torch.bincount(ch, minlength=n_channels).clamp(min=1)
    return (per_ch / cnt).mean()


def _half_widths(spatial: tuple[int, ...], cube_size: int) -> tuple[int, ...]:
    """Reference half width per axis: ``ceil(size_axis / max(size) * (cube_size - 1) / 2)``."""
    offset = (cube_size - 1) // 2
    biggest = max(spatial)
    return tuple(math.ceil(s / biggest * offset) for s in spatial)


def _boxes(centre: Any, spatial: tuple[int, ...], cube_size: int) -> tuple[Any, Any]:
    """Reference cube extents: indices ``c - h - 1 .. c + h - 1`` clipped to the image, as [lo, hi) per axis.

    ``centre``: int64 ``(N, ndim)``, a tensor or (the CPU row bitmaps' input) an ndarray; same type out.
    """
    if isinstance(centre, np.ndarray):
        half_np = np.array(_half_widths(spatial, cube_size))
        return np.maximum(centre - half_np - 1, 0), np.minimum(centre + half_np, np.array(spatial))
    half = torch.tensor(_half_widths(spatial, cube_size), dtype=torch.int64, device=centre.device)
    size = torch.tensor(spatial, dtype=torch.int64, device=centre.device)
    lo = (centre - half - 1).clamp(min=0)
    hi = torch.minimum(centre + half, size)
    return lo, hi


#: Use the dense centre-term path when the cube voxels exceed this fraction of the batch volume, per sparse
#: implementation. Crossovers measured on one CPU core at 96^3 (ICI forward+backward, balls of radius 2.5 shifted
#: by one voxel, trainable centre): CPU row bitmaps (O(cubes x rows)) 7.9 vs 8.7 ms at 33 % of the volume, equal
#: (10.3 ms) at 49 %, 12.9 vs 12.1 ms at 65 % (the reference centre stays faster sparse: 7.4 vs 7.7 ms at 65 %);
#: the voxel listing that other devices run (O(cube voxels log)) crossed over between 4 % and 5 %. Both paths
#: give the same terms up to the float32 summation order (tests run both).
DENSE_CENTER_FRACTION = {"bitmap": 0.5, "listing": 0.05}


@dataclass
class _CenterGeometry:
    """Detached cube geometry of the centre term (see :func:`_center_geometry`)."""

    n_both: torch.Tensor  # per image: voxels in a label cube and a prediction cube
    n_l: torch.Tensor  # per image: voxels in a label cube
    n_p: torch.Tensor  # per image: voxels in a prediction cube
    lonly_pos: torch.Tensor  # flat positions of label-cube voxels outside every prediction cube
    lonly_img: torch.Tensor
    po_img: torch.Tensor | None = None  # sparse: image of every prediction-only voxel
    po_cnt: torch.Tensor | None = None  # sparse: number of prediction cubes covering it
    po_box: torch.Tensor | None = None  # sparse: (cube, voxel) incidences on prediction-only voxels
    po_voxel: torch.Tensor | None = None
    w_box: torch.Tensor | None = None  # dense: per prediction cube, sum over its prediction-only voxels of 1/count


def _cube_weights(
    skip: torch.Tensor,
    padded: tuple[int, ...],
    centre: torch.Tensor,
    image: torch.Tensor,
    half: tuple[int, ...],
    spatial: tuple[int, ...],
    n_outside: int | None = None,
    count: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per cube, ``sum over its voxels v outside skip of 1 / (number of the cubes that contain v)`` (float64).

    ``skip`` (the label-cube union) is a flat padded bool grid as written by :func:`lossbench.instances.cube_coverage`
    (``(B, *padded)``, voxel ``x`` at padded index ``x + 1`` on every axis, anything in the padding). Cube ``i``
    covers ``|x_d - centre[i, d]| <= half_d``, truncated at the border. The cubes' voxels are read as contiguous rows
    along the last axis straight from the padded grid (rows and columns outside the image are masked); only the
    (cube, voxel) incidences outside ``skip`` are kept, and how many cubes contain each of those voxels is its
    multiplicity among them (:func:`lossbench.instances.multiplicity`). O(cubes x cube volume) plus, when the
    incidences are numerous enough, one bincount over the grid. ``n_outside``, if given, is the number of distinct
    voxels of the cubes' union outside ``skip``: when it equals the number of incidences, no voxel lies in two
    cubes and every weight is a count. ``count``, if given, is the cubes' coverage count on the same padded grid
    (:func:`lossbench.instances.cube_coverage` with an integer dtype): the multiplicities are then read from it.
    """
    ndim = len(spatial)
    dev = centre.device
    n = centre.shape[0]
    weights = torch.zeros(n, dtype=torch.float64, device=dev)
    if n == 0:
        return weights
    if numpy_ok(centre):
        c_np = None if count is None else count.numpy()
        args = (skip.numpy(), padded, centre.numpy(), image.numpy(), half, spatial, n_outside, c_np)
        return torch.from_numpy(_cube_weights_numpy(*args))
    strides = [math.prod(padded[d + 1 :]) for d in range(ndim)]
    width = 2 * half[-1] + 1
    lead = (n,) + (1,) * (ndim - 1)
    # first voxel of each row: padded index of (row coordinates, centre_last - half_last); rows outside the image
    # are clamped into it and masked; the start never leaves the buffer (padding >= 1 row before the image)
    start = (image * math.prod(padded) + centre[:, -1] - half[-1] + 1).view(lead)
    valid = torch.ones(lead, dtype=torch.bool, device=dev)
    for d in range(ndim - 1):
        coord = centre[:, d : d + 1] + torch.arange(-half[d], half[d] + 1, device=dev)
        shape = [n] + [1] * (ndim - 1)
        shape[d + 1] = coord.shape[1]
        start = start + ((coord.clamp(0, spatial[d] - 1) + 1) * strides[d]).view(shape)
        valid = valid & ((coord >= 0) & (coord < spatial[d])).view(shape)
    cols = centre[:, -1:] + torch.arange(-half[-1], half[-1] + 1, device=dev)
    valid = valid.reshape(n, -1, 1) & ((cols >= 0) & (cols < spatial[-1])).view(n, 1, width)
    flat_start = start.reshape(-1)
    keep = valid & ~take_rows(skip, flat_start, width).view(valid.shape)
    inc = flat_nonzero(keep)  # (cube, row, column) incidences outside the skipped voxels
    if inc.numel() == 0:
        return weights
    cube = torch.div(inc, keep[0].numel(), rounding_mode="floor")
    # with no voxel in two cubes every term is 1 and the sums are counts (the same float64 values)
    if n_outside == inc.numel():
        return torch.bincount(cube, minlength=n).to(torch.float64)
    pos = take_flat(flat_start, torch.div(inc, width, rounding_mode="floor")) + inc % width
    mult = multiplicity(pos, skip.numel()) if count is None else take_flat(count, pos)
    return weights.index_add_(0, cube, mult.to(torch.float64).reciprocal())


def _cube_weights_numpy(
    skip: np.ndarray,
    padded: tuple[int, ...],
    centre: np.ndarray,
    image: np.ndarray,
    half: tuple[int, ...],
    spatial: tuple[int, ...],
    n_outside: int | None,
    count: np.ndarray | None,
) -> np.ndarray:
    """:func:`_cube_weights` on CPU arrays: the same incidences in the same order, the same float64 sums.

    Instead of masking rows and columns outside the image, it marks ``skip``'s padding columns (of every line) and
    its first ``width`` entries (a sink row for the rows outside the image) as skipped: ``skip`` is overwritten
    there (its padding holds no result).
    """
    ndim = len(spatial)
    n = centre.shape[0]
    strides = [math.prod(padded[d + 1 :]) for d in range(ndim)]
    width = 2 * half[-1] + 1
    lines = skip.reshape(-1, padded[-1])
    lines[:, 0] = True
    lines[:, spatial[-1] + 1 :] = True
    skip[:width] = True
    lead = (n,) + (1,) * (ndim - 1)
    start = (image * math.prod(padded) + centre[:, -1] - half[-1] + 1).reshape(lead)
    valid = np.ones(lead, dtype=bool)
    for d in range(ndim - 1):
        coord = centre[:, d : d + 1] + np.arange(-half[d], half[d] + 1)
        shape = [n] + [1] * (ndim - 1)
        shape[d + 1] = coord.shape[1]
        start = start + ((np.clip(coord, 0, spatial[d] - 1) + 1) * strides[d]).reshape(shape)
        valid = valid & ((coord >= 0) & (coord < spatial[d])).reshape(shape)
    # rows outside the image read the sink row; a row's columns outside the image read the (skipped) padding
    flat_start = np.where(valid, start, 0).reshape(-1)
    rows_per_cube = flat_start.size // n
    if width <= 8 and int(flat_start.max()) <= skip.size - 8:
        # each row's skip flags as one unaligned 8-byte read (byte k = voxel start + k), kept bytes set to 1
        words = np.ndarray((skip.size - 7,), dtype="<u8", buffer=skip, strides=(1,))
        ones = np.uint64(sum(1 << (8 * k) for k in range(width)))
        kept = (~words[flat_start] & ones).view(np.uint8).view(bool)
        on = np.flatnonzero(kept)  # (cube, row) x 8 byte slots; only the first ``width`` can be set
        row, col = on >> 3, on & 7
    else:
        rows = np.lib.stride_tricks.as_strided(skip, (skip.size - width + 1, width), (skip.strides[0],) * 2)
        inc = np.flatnonzero(~rows[flat_start])
        row, col = inc // width, inc % width
    # (cube, row, column) incidences outside the skipped voxels, in (cube, row, column) order
    cube = row // rows_per_cube
    if n_outside == cube.size:  # no voxel in two cubes: every term is 1
        return np.bincount(cube, minlength=n).astype(np.float64)
    pos = flat_start[row] + col
    mult = multiplicity(torch.from_numpy(pos), skip.size).numpy() if count is None else count[pos]
    return np.bincount(cube, weights=1.0 / mult, minlength=n)


def _sparse_geometry(
    lo: torch.Tensor,
    hi: torch.Tensor,
    img: torch.Tensor,
    n_lc: int,
    n_lv: int,
    n_img: int,
    spatial: tuple[int, ...],
    detail: str,
) -> _CenterGeometry:
    """Sparse centre geometry from the cube voxels, found with one sort.

    Label cubes are boxes ``0..n_lc-1`` (``n_lv`` voxels in all), prediction cubes the rest; every cube voxel is
    listed (:func:`lossbench.instances.box_voxels`). ``detail``: "counts" (constant reference cubes: the three
    per-image counts only), "weights" (trainable, linear base: the cube weights ``w_box`` instead of the
    prediction-only voxels) or "voxels" (trainable: the prediction-only voxels). The device-agnostic path; CPU
    tensors take :func:`_sparse_geometry_numpy` (row bitmaps), which gives the same tensors.
    """
    n_vox = math.prod(spatial)
    fl, box = box_voxels(lo, hi, img, spatial)
    box_p = box[n_lv:] - n_lc
    uniq, inv = unique_sorted(fl, return_inverse=True)
    n_u = uniq.numel()
    in_l = torch.bincount(inv[:n_lv], minlength=n_u) > 0
    slot_p = inv[n_lv:]
    cnt_p = torch.bincount(slot_p, minlength=n_u)
    in_p = cnt_p > 0
    img_u = torch.div(uniq, n_vox, rounding_mode="floor")
    # per image: voxels in a label cube only (code 1), a prediction cube only (2), both (3)
    codes = torch.bincount(img_u * 4 + in_l + 2 * in_p, minlength=4 * n_img).view(n_img, 4)
    geom = _CenterGeometry(
        n_both=codes[:, 3], n_l=codes[:, 1] + codes[:, 3], n_p=codes[:, 2] + codes[:, 3],
        lonly_pos=uniq[:0], lonly_img=uniq[:0],
    )  # fmt: skip
    if detail != "counts":
        lonly = in_l & ~in_p
        ponly = in_p & ~in_l
        incid = ponly[slot_p]
        geom.lonly_pos, geom.lonly_img = uniq[lonly], img_u[lonly]
        if detail == "weights":  # w_b: sum over the cube's prediction-only voxels of 1 / (cubes covering it)
            w = torch.zeros(lo.shape[0] - n_lc, dtype=torch.float64, device=lo.device)
            geom.w_box = w.index_add_(0, box_p[incid], cnt_p[slot_p[incid]].to(torch.float64).reciprocal())
        else:
            geom.po_img, geom.po_cnt, geom.po_box = img_u[ponly], cnt_p[ponly], box_p[incid]
            geom.po_voxel = (torch.cumsum(ponly, 0) - 1)[slot_p[incid]]
    return geom


def _sparse_geometry_numpy(
    lo: np.ndarray, hi: np.ndarray, img: np.ndarray, n_lc: int, n_img: int, spatial: tuple[int, ...], detail: str
) -> _CenterGeometry:
    """:func:`_sparse_geometry` on CPU with row bitmaps, without listing every cube voxel.

    The label-cube and prediction-cube unions are bitmaps of 64-bit words along the last axis
    (:func:`lossbench.instances.box_row_words`, O(cubes x rows)); the counts are popcounts and the label-only
    voxels the set bits of ``L & ~P`` (ascending, as the sorted voxels of the listing path). Prediction-only voxels
    lie only in the prediction-cube words with bits outside ``L``: with ``detail="weights"`` each cube's weight
    ``w_b = sum over its voxels v outside L of 1 / count(v)`` is the popcount of those bits where no other cube
    has bits in the same word, and per voxel only in the words several cubes share; with ``detail="voxels"`` only
    the cubes with such bits are listed voxel by voxel, which gives the listing path's tensors in its order.
    """
    n_vox = math.prod(spatial)
    width = spatial[-1]
    n_words = n_img * math.prod(spatial[:-1]) * row_words(width)
    key, mask, box = box_row_words(lo, hi, img, spatial)
    split = int(np.searchsorted(box, n_lc))  # label cubes' words first
    in_l = union_bitmap(key[:split], mask[:split], n_words)
    in_p = union_bitmap(key[split:], mask[split:], n_words)

    t = torch.from_numpy
    # per image: popcounts of the words any cube touches (a few per cube row, not the whole bitmap)
    touched = np.flatnonzero((in_l | in_p) != 0)
    w_l, w_p = in_l[touched], in_p[touched]
    img_w = touched // (n_words // n_img)
    counts = [np.bincount(img_w, weights=popcount(w), minlength=n_img).astype(np.int64) for w in (w_l & w_p, w_l, w_p)]
    empty = torch.zeros(0, dtype=torch.int64)
    geom = _CenterGeometry(n_both=t(counts[0]), n_l=t(counts[1]), n_p=t(counts[2]), lonly_pos=empty, lonly_img=empty)
    if detail == "counts":
        return geom
    lonly = bitmap_positions(w_l & ~w_p, width, touched)
    geom.lonly_pos, geom.lonly_img = t(lonly), t(lonly // n_vox)
    # the prediction cubes' bits outside every label cube
    key_p, box_p = key[split:], box[split:] - n_lc
    out_bits = mask[split:] & ~in_l[key_p]
    seg = np.flatnonzero(out_bits)
    n_pc = lo.shape[0] - n_lc
    if detail == "weights":
        key_o, bits_o, cube_o = key_p[seg], out_bits[seg], box_p[seg]
        # words holding bits of two or more cubes: one owner per word, the others reveal it
        owner = np.empty(n_words, dtype=np.int64)
        owner[key_o] = np.arange(seg.size)
        shared = np.zeros(n_words, dtype=bool)
        shared[key_o[owner[key_o] != np.arange(seg.size)]] = True
        multi = shared[key_o]
        alone = np.flatnonzero(~multi)
        w = np.bincount(cube_o[alone], weights=popcount(bits_o[alone]), minlength=n_pc).astype(np.float64)
        many = np.flatnonzero(multi)
        if many.size:
            # the shared words' voxels, numbered compactly (word representative x 64 + bit) for one bincount
            key_m = key_o[many]
            owner[key_m] = np.arange(many.size)
            on = np.flatnonzero(np.unpackbits(bits_o[many].astype("<u8").view(np.uint8), bitorder="little").view(bool))
            voxel = owner[key_m[on >> 6]] * 64 + (on & 63)
            count = np.bincount(voxel, minlength=many.size * 64)[voxel]
            w += np.bincount(cube_o[many[on >> 6]], weights=1.0 / count, minlength=n_pc)
        geom.w_box = t(w)
        return geom
    # detail == "voxels": list the voxels of the cubes with bits outside L and keep those outside L
    hit = np.zeros(n_pc, dtype=bool)
    hit[box_p[seg]] = True
    escaping = np.flatnonzero(hit)
    fl, local = (
        box_voxels_numpy(lo[n_lc + escaping], hi[n_lc + escaping], img[n_lc + escaping], spatial)
        if escaping.size
        else (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    )
    outside = np.flatnonzero(~bitmap_contains(in_l, fl, width))
    fl, cube = fl[outside], escaping[local[outside]]
    uniq, inv = (u.numpy() for u in unique_sorted(torch.from_numpy(fl), return_inverse=True))
    geom.po_img, geom.po_cnt = t(uniq // n_vox), t(np.bincount(inv, minlength=uniq.size))
    geom.po_box, geom.po_voxel = t(cube), t(inv)
    return geom


def _center_geometry(
    cfg: ICIConfig,
    centre_l: torch.Tensor,
    img_l: torch.Tensor,
    centre_p: torch.Tensor,
    img_p: torch.Tensor,
    n_img: int,
    spatial: tuple[int, ...],
) -> _CenterGeometry:
    """Which voxels the label and prediction cubes cover: sparse (cube voxels only) or dense (whole volume).

    ``centre_*`` are the ``ceil(mean index)`` centres; the reference cube covers ``centre - h - 1 .. centre + h - 1``.
    The sparse path works on the cubes' rows as 64-bit words on CPU (:func:`_sparse_geometry_numpy`, O(cubes x
    rows)) and enumerates the cube voxels elsewhere (:func:`lossbench.instances.box_voxels`, O(cube voxels log)). The
    dense path counts, for every voxel, the label and the prediction cubes covering it by filtering the histogram
    of the cube centres with a cube-wide window (:func:`lossbench.instances.cube_coverage`): O(voxels) whatever
    the number of cubes (a few contiguous integer passes). It is used when the cubes cover more than
    :data:`DENSE_CENTER_FRACTION` of the batch volume and the trainable map is only needed through linear sums
    (dice-type base without ``squared_pred``): the prediction-cube mass outside the label cubes, ``sum_v avg(v)``,
    is then ``sum_b mean_b * w_b`` with ``w_b = sum_{v in b, v outside label cubes} 1 / count(v)``, gathered over
    each prediction cube's voxels (:func:`_cube_weights`); the CPU sparse path gives the same weights.
    """
    spec = cfg.base
    n_vox = math.prod(spatial)
    total = n_img * n_vox
    dev = centre_l.device
    half = _half_widths(spatial, cfg.cube_size)
    n_lc = centre_l.shape[0]
    centres = torch.cat([centre_l, centre_p])  # label cubes first
    on_cpu = numpy_ok(centres)
    if on_cpu:  # the same boxes in numpy, which the row bitmaps take
        lo_np, hi_np = _boxes(centres.numpy(), spatial, cfg.cube_size)
        box_size = np.maximum(hi_np - lo_np, 0).prod(1)
        n_lv, cube_voxels = int(box_size[:n_lc].sum()), int(box_size.sum())
    else:
        lo, hi = _boxes(centres, spatial, cfg.cube_size)
        vol = torch.cat([lo.new_zeros(1), (hi - lo).clamp(min=0).prod(1).cumsum(0)])  # cube voxels before cube i
        # Host syncs (a few per call, none per instance): the path choice here, the dense path's count dtype and
        # its "no overlapping prediction cubes" test, and the largest box in box_voxels; they size buffers or pick
        # a branch.
        n_lv, cube_voxels = vol[[n_lc, -1]].tolist()
    linear = cfg.center_mode == "reference" or (spec.elem is None and not spec.squared_pred)
    fraction = DENSE_CENTER_FRACTION["bitmap" if on_cpu else "listing"]
    if not (linear and cube_voxels >= fraction * total):
        detail = "counts" if cfg.center_mode == "reference" else "weights" if linear else "voxels"
        if on_cpu:
            img = np.concatenate([img_l.numpy(), img_p.numpy()])
            return _sparse_geometry_numpy(lo_np, hi_np, img, n_lc, n_img, spatial, detail)
        return _sparse_geometry(lo, hi, torch.cat([img_l, img_p]), n_lc, n_lv, n_img, spatial, detail)
    shape = (n_img, *spatial)
    size = coverage_work_size(shape, half)
    # only the unions of the cubes are materialised (bool, a few byte-wide passes per axis); the trainable map's
    # per-voxel cube counts are needed only outside the label cubes and come from the cubes' own voxels
    work_l = torch.empty(2 * size, dtype=torch.bool, device=dev)
    in_l = cube_coverage(centre_l - 1, img_l, half, shape, torch.bool, work=work_l)
    trainable = cfg.center_mode == "trainable"
    if trainable:
        # the trainable weights need every prediction-only voxel's number of covering prediction cubes: count them
        # in the coverage grid itself (byte-wide when no 2h+1 planes of an image hold more than 255 prediction
        # centres, which bounds every count) instead of a histogram of the cubes' voxels
        count_dtype = torch.uint8 if _slab_bound(centre_p, img_p, half[0], n_img) <= 255 else torch.int32
        work_p = torch.empty(2 * size, dtype=count_dtype, device=dev)
        in_p = count_p = cube_coverage(centre_p - 1, img_p, half, shape, count_dtype, work=work_p)  # 0: uncovered
    else:
        in_p = cube_coverage(centre_p - 1, img_p, half, shape, torch.bool)
    both = torch.logical_and(in_l, in_p)
    geom = _CenterGeometry(
        n_both=count_nonzero_rows(both).to(dev),
        n_l=count_nonzero_rows(in_l).to(dev),
        n_p=count_nonzero_rows(in_p).to(dev),
        lonly_pos=torch.zeros(0, dtype=torch.int64, device=dev),
        lonly_img=torch.zeros(0, dtype=torch.int64, device=dev),
    )
    if trainable:
        geom.lonly_pos = flat_nonzero(in_l ^ both).to(dev)
        geom.lonly_img = torch.div(geom.lonly_pos, n_vox, rounding_mode="floor")
        # the padded grids behind the coverage views: the half of each work buffer that holds the result
        skip_pad = work_l[:size] if in_l.storage_offset() < size else work_l[size:]
        count_pad = work_p[:size] if count_p.storage_offset() < size else work_p[size:]
        padded = tuple(s + 2 * h + 1 for s, h in zip(spatial, half))
        n_ponly = int((geom.n_p - geom.n_both).sum())  # prediction-cube voxels outside every label cube
        geom.w_box = _cube_weights(skip_pad, padded, centre_p - 1, img_p, half, spatial, n_ponly, count_pad)
    return geom


def _slab_bound(centre: torch.Tensor, image: torch.Tensor, half: int, n_img: int) -> int:
    """Most box centres of one image within ``2 half + 1`` consecutive indices of the first axis (O(boxes)).

    A voxel lies in at most that many boxes of half width ``half`` along that axis, so this bounds every coverage
    count. Computed on the host (one transfer of the centres' first coordinates).
    """
    if centre.shape[0] == 0:
        return 0
    z, img = centre[:, 0].cpu().numpy(), image.cpu().numpy()
    lo = int(z.min())
    span, width = int(z.max()) - lo + 1, 2 * half + 1
    hist = np.bincount(img * span + (z - lo), minlength=n_img * span).reshape(n_img, span)
    if span <= width:
        return int(hist.sum(1).max())
    before = np.concatenate([np.zeros((n_img, 1), dtype=np.int64), hist.cumsum(1)], axis=1)
    return int((before[:, width:] - before[:, :-width]).max())


def _center_value(
    cfg: ICIConfig,
    geom: _CenterGeometry,
    p_lonly: torch.Tensor,
    mean_p: torch.Tensor | None,
    img_p: torch.Tensor,
    n_img: int,
    n_vox: int,
) -> torch.Tensor:
    """Centre term from the geometry: per-image base loss of the cube maps, mean over images.

    Reference maps hold the constant ``1 + 1e-7`` (counts suffice). Trainable prediction map: 1 on
    label-and-prediction cube voxels, the mean of the covering cubes' component means on prediction-only
    voxels, the raw probability ``p_lonly`` on label-only voxels. The per-voxel part of the base sees values
    clipped to [0, 1].
    """
    spec = cfg.base
    dt = p_lonly.dtype
    n_both, n_l, n_p = geom.n_both.to(dt), geom.n_l.to(dt), geom.n_p.to(dt)
    if cfg.center_mode == "reference":
        v = _REF_CUBE_VALUE
        sv = v * v if spec.squared_pred else v
        elem = None
        if spec.elem is not None:
            f = elementwise(spec, p_lonly.new_tensor([1.0, 0.0, 1.0]), p_lonly.new_tensor([0.0, 1.0, 1.0]))
            elem = f[0] * (n_p - n_both) + f[1] * (n_l - n_both) + f[2] * n_both
        return entry_loss(spec, n_both * v * v, n_p * sv, n_l * sv, elem, n_vox).mean()

    def per_image(img: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return p_lonly.new_zeros(n_img).index_add(0, img, values)

    inter = n_both + per_image(geom.lonly_img, p_lonly)
    pred = n_both + per_image(geom.lonly_img, pred_stat(spec, p_lonly))
    elem = None
    if geom.w_box is not None:  # linear base: mass of the prediction-only voxels through the cube weights
        pred = pred + per_image(img_p, mean_p * geom.w_box.to(dt))
    else:
        avg = p_lonly.new_zeros(geom.po_img.numel()).index_add(0, geom.po_voxel, mean_p[geom.po_box])
        avg = avg / geom.po_cnt.to(dt)
        pred = pred + per_image(geom.po_img, pred_stat(spec, avg))
        if spec.elem is not None:
            f11 = elementwise(spec, p_lonly.new_ones(1), 1.0)[0]
            elem = f11 * n_both + per_image(geom.po_img, elementwise(spec, avg, 0.0))
            elem = elem + per_image(geom.lonly_img, elementwise(spec, p_lonly, 1.0))
    return entry_loss(spec, inter, pred, n_l, elem, n_vox).mean()


def instance_terms(cfg: ICIConfig, prep: Prepared) -> dict[str, torch.Tensor]:
    """The single implementation behind ``ici``/``dici``: every term and the weighted ``"total"``.

    Args:
        cfg: validated options.
        prep: validated, activated tensors (probabilities ``(B, C', *spatial)``, binary target).

    Returns:
        ``{"global", "instance", "center", "total"}`` (DICI also ``"predicted"``), scalar tensors.
    """
    spec = cfg.base
    p_full = prep.prob
    batch, n_ch = p_full.shape[:2]
    spatial = tuple(p_full.shape[2:])
    n_img = batch * n_ch
    n_vox = math.prod(spatial)
    dev = p_full.device
    p = p_full.reshape(n_img, *spatial)
    y = prep.target_mask.reshape(n_img, *spatial)

    # -- labelling (detached) and batch-global ids ------------------------------------------------------------
    cc_kw: dict[str, Any] = {"connectivity": cfg.connectivity, "backend": cfg.cc_backend}
    if cfg.cc_backend == "maxpool" and cfg.num_iterations is not None:
        cc_kw["num_iterations"] = cfg.num_iterations
    pmask = threshold_mask(p, cfg.threshold)
    lab = label_batch(y, **cc_kw)
    prd = label_batch(pmask, **cc_kw)
    n_l = int(lab.counts.sum())
    n_p_raw = int(prd.counts.sum())
    pf = p.reshape(-1)
    # every later sum runs over foreground voxels only: label voxels and prediction-component voxels, with their
    # batch-global ids read at those voxels (no id volume is built)
    y_pos = flat_nonzero(y)
    lab_pos, lab_ids = foreground_ids(lab, y_pos, drop_unlabelled=True)
    prd_pos, prd_ids = foreground_ids(prd, flat_nonzero(pmask), drop_unlabelled=True)
    off_p = batch_offsets(prd.counts)

    # -- reference caps: too many components -> none used; else the first max_pred_instances in reference order
    img_p_raw = component_images(prd.counts)
    keep = torch.ones(n_p_raw, dtype=torch.bool, device=dev)
    capped = cfg.too_many_factor > 0 or (cfg.max_pred_instances > 0 and n_p_raw > 0)
    if cfg.too_many_factor > 0:
        too_many = prd.counts.to(torch.float64) > cfg.too_many_factor * lab.counts.to(torch.float64)
        keep &= ~too_many[img_p_raw]
    if cfg.max_pred_instances > 0 and n_p_raw:
        last = torch.full((n_p_raw + 1,), -1, dtype=torch.int64, device=dev)
        within = prd_pos % n_vox if n_img > 1 else prd_pos  # position within its image
        last = last.scatter_reduce(0, prd_ids, within, reduce="amax")[1:]
        order = torch.argsort(img_p_raw * n_vox + last)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(n_p_raw, device=dev) - off_p[img_p_raw[order]]
        keep &= rank < cfg.max_pred_instances
    if not capped or bool(keep.all()):
        n_p, img_p, counts_p = n_p_raw, img_p_raw, prd.counts
    else:
        table = torch.cat([torch.zeros(1, dtype=torch.int64, device=dev), torch.cumsum(keep, 0) * keep])
        prd_ids = take_flat(table, prd_ids)
        used = flat_nonzero(threshold_mask(prd_ids, 0, strict=True))
        prd_pos, prd_ids = take_flat(prd_pos, used), take_flat(prd_ids, used)
        n_p = int(keep.sum())
        img_p = img_p_raw[keep]
        counts_p = torch.bincount(img_p, minlength=n_img)
    img_l = component_images(lab.counts)
    size_l = torch.bincount(lab_ids, minlength=n_l + 1).to(pf.dtype)

    # -- centre geometry, the label id of every prediction voxel and the pair table (all detached) -----------
    # the centres of label and prediction components in one pass (prediction ids shifted past the label ids)
    centres = centroids_ceil_from_positions(
        torch.cat([lab_pos, prd_pos]), torch.cat([lab_ids, prd_ids + n_l]), n_l + n_p, spatial
    )
    geom = _center_geometry(cfg, centres[:n_l], img_l, centres[n_l:], img_p, n_img, spatial)
    _, gl_sel = foreground_ids(lab, prd_pos)  # label id (or 0) of every prediction voxel
    pair_n, pair_m, overlap, both, vpair = pair_table(gl_sel, prd_ids, n_l, n_p)
    st = _Structure(
        n_img, n_vox, n_l, n_p, img_p, size_l, y_pos, prd_pos, prd_ids, gl_sel, pair_n, pair_m, overlap, both, vpair,
        geom,
    )  # fmt: skip
    terms = _linear_terms if spec.elem is None and not spec.squared_pred else _general_terms
    glob, inst_vals, center, pred_vals = terms(cfg, prep, st)

    p2 = p.reshape(n_img, n_vox)
    empty_l = torch.nonzero(lab.counts == 0, as_tuple=True)[0]
    if empty_l.numel():
        # an image without label instance: one entry, the whole-image base(prob, 0)
        p_e = p2[empty_l]
        e_vals = entry_loss(spec, *image_sums(spec, p_e, torch.zeros_like(p_e)), n_vox)
        inst_vals, img_inst = torch.cat([inst_vals, e_vals]), torch.cat([img_l, empty_l])
    else:
        img_inst = img_l
    out = {"global": glob, "instance": _reduce(inst_vals, img_inst, n_img, n_ch, cfg.reduction)}
    if pred_vals is not None:  # DICI's predicted-instance term
        empty_p = torch.nonzero(counts_p == 0, as_tuple=True)[0]
        img_pred = img_p
        if empty_p.numel():
            y2 = y.reshape(n_img, n_vox)
            ep_vals = entry_loss(spec, *image_sums(spec, p2[empty_p], y2[empty_p].to(pf.dtype)), n_vox)
            pred_vals, img_pred = torch.cat([pred_vals, ep_vals]), torch.cat([img_p, empty_p])
        out["predicted"] = _reduce(pred_vals, img_pred, n_img, n_ch, cfg.reduction)
        out["center"] = center
        out["total"] = cfg.a * glob + cfg.b * out["instance"] + cfg.c * out["predicted"] + cfg.d * center
    else:
        out["center"] = center
        out["total"] = cfg.a * glob + cfg.b * out["instance"] + cfg.c * center
    return out


@dataclass
class _Structure:
    """The detached bookkeeping of one call: components, ids at the foreground voxels, pairs, centre geometry."""

    n_img: int
    n_vox: int
    n_l: int  # label instances of the batch
    n_p: int  # used prediction components of the batch
    img_p: torch.Tensor  # image of every prediction component
    size_l: torch.Tensor  # voxels per label id 0..n_l (float)
    y_pos: torch.Tensor  # flat positions of the label voxels
    prd_pos: torch.Tensor  # flat positions of the prediction-component voxels
    prd_ids: torch.Tensor  # their prediction ids 1..n_p
    gl_sel: torch.Tensor  # their label ids (0 = background)
    pair_n: torch.Tensor  # pair table: label id, prediction id, shared voxels
    pair_m: torch.Tensor
    overlap: torch.Tensor
    both: torch.Tensor  # prediction voxels inside a label instance
    vpair: torch.Tensor  # pair of each of those voxels
    geom: _CenterGeometry


def _reference_center(cfg: ICIConfig, st: _Structure, p_read: torch.Tensor) -> torch.Tensor:
    """The constant-cube centre term, kept on the graph with an identically zero gradient (``.backward()`` works)."""
    center = _center_value(cfg, st.geom, p_read[:0], None, st.img_p, st.n_img, st.n_vox)
    return center + 0.0 * p_read.sum() if p_read.requires_grad else center


def _linear_terms(cfg: ICIConfig, prep: Prepared, st: _Structure) -> tuple[Any, ...]:
    """Terms of a base whose sums are linear in ``p`` (dice-type without ``squared_pred``): two ``index_add``.

    Stage 1 sums the gathered probabilities into slots: per pair (the shared voxels), per prediction component
    (all its voxels; its background voxels, as ``p * stopgrad(p)`` for "remove_detached"), per image (its label
    voxels for the global term; the label-cube voxels no prediction cube covers). Stage 2 sums slots into the
    per-instance ``I`` and ``P`` (over the pair table, as ``tp_mode`` says), the prediction-cube mass outside the
    label cubes (``sum_b mean_b * w_b``) and DICI's per-component ``I``. The base loss then runs on the sums.
    """
    spec = cfg.base
    pf = prep.prob.reshape(-1)
    dt, dev = pf.dtype, pf.device
    n_l, n_p, n_img, geom = st.n_l, st.n_p, st.n_img, st.geom
    n_pairs = st.pair_n.numel()
    s_bg = n_pairs + n_p  # slots: pairs | components | components' background | label voxels | label-only voxels
    s_glob = s_bg + n_p
    s_lonly = s_glob + n_img
    fused = spec.dice == "dice" and not spec.batch  # the global term's sums from the label voxels (same gather)
    comp_slot = n_pairs - 1 + st.prd_ids
    if cfg.tp_mode == "keep":  # only the shared voxels, per pair
        second_pos, second_slot = st.prd_pos[st.both], st.vpair
    else:  # shared voxels per pair, the others per component background
        second_pos, second_slot = st.prd_pos, s_bg - 1 + st.prd_ids
        second_slot.masked_scatter_(st.both, st.vpair)  # (the same as a bool-indexed assignment, 2.5x faster)
    pos = [st.prd_pos, second_pos, geom.lonly_pos]
    slot = [comp_slot, second_slot, s_lonly + geom.lonly_img]
    if fused:
        pos.append(st.y_pos)
        slot.append(s_glob + torch.div(st.y_pos, st.n_vox, rounding_mode="floor"))
    read_index = torch.cat(pos)
    psum_g, p_read = sum_and_gather(prep, read_index) if fused else (None, pf.index_select(0, read_index))
    vals = p_read
    if cfg.tp_mode == "remove_detached":  # background voxels enter as p * stopgrad(p)
        n_sel = st.prd_pos.numel()
        factor = torch.ones_like(p_read)
        bg = n_sel + flat_nonzero(~st.both)
        factor[bg] = p_read.detach()[bg]
        vals = p_read * factor
    seg = pf.new_zeros(s_lonly + n_img).index_add(0, torch.cat(slot), vals)

    pairs = torch.arange(n_pairs, device=dev)
    into_n, into_p = st.pair_n - 1, n_l - 1 + st.pair_n
    src = [pairs]
    dst = [into_n]
    if cfg.tp_mode == "keep":  # P_n: the whole touching components
        src.append(n_pairs - 1 + st.pair_m)
        dst.append(into_p)
    else:  # P_n: the shared voxels and the touching components' background
        src += [pairs, s_bg - 1 + st.pair_m]
        dst += [into_p, into_p]
    weight = None
    trainable = cfg.center_mode == "trainable"
    if trainable:  # prediction-cube mass outside the label cubes: sum_b mean_b * w_b
        size_p = torch.bincount(st.prd_ids, minlength=n_p + 1)[1:].clamp(min=1)
        w_c = geom.w_box.to(dt) / size_p.to(dt)
        weight = torch.cat([torch.ones(sum(s.numel() for s in src), dtype=dt, device=dev), w_c])
        src.append(n_pairs + torch.arange(n_p, device=dev))
        dst.append(2 * n_l + st.img_p)
    if cfg.dual:  # DICI: I_m over the pairs
        src.append(pairs)
        dst.append(2 * n_l + n_img - 1 + st.pair_m)
        if weight is not None:
            weight = torch.cat([weight, torch.ones(n_pairs, dtype=dt, device=dev)])
    terms = seg.index_select(0, torch.cat(src))
    acc = pf.new_zeros(2 * n_l + n_img + (n_p if cfg.dual else 0))
    acc = acc.index_add(0, torch.cat(dst), terms if weight is None else terms * weight)

    inst_vals = entry_loss(spec, acc[:n_l], acc[n_l : 2 * n_l], st.size_l[1:], None, st.n_vox)
    if fused:
        ground_g = torch.bincount(slot[-1] - s_glob, minlength=n_img).to(dt)
        glob = dice_from_sums(spec, seg[s_glob:s_lonly], psum_g, ground_g).mean()
    else:
        glob = baseline_terms(spec, prep)["total"]
    if trainable:
        n_both = geom.n_both.to(dt)
        inter = n_both + seg[s_lonly:]
        pred = inter + acc[2 * n_l : 2 * n_l + n_img]
        center = entry_loss(spec, inter, pred, geom.n_l.to(dt), None, st.n_vox).mean()
    else:
        center = _reference_center(cfg, st, p_read)
    pred_vals = None
    if cfg.dual:
        ground_m = pf.new_zeros(n_p + 1).index_add(0, st.pair_m, st.size_l[st.pair_n])[1:]
        pred_vals = entry_loss(spec, acc[2 * n_l + n_img :], seg[n_pairs:s_bg], ground_m, None, st.n_vox)
    return glob, inst_vals, center, pred_vals


def _general_terms(cfg: ICIConfig, prep: Prepared, st: _Structure) -> tuple[Any, ...]:
    """Terms of any base (``squared_pred``, cross-entropy and focal parts).

    Per-voxel statistics are summed per component and per pair, then per instance over the pair table. Linear
    bases take :func:`_linear_terms` (the same values, fewer calls); the tests check the two against each other.
    """
    spec = cfg.base
    pf = prep.prob.reshape(-1)
    n_l, n_p, geom = st.n_l, st.n_p, st.geom
    n_sel = st.prd_pos.numel()
    p_read = pf.index_select(0, torch.cat([st.prd_pos, geom.lonly_pos]))  # backward: one index_add
    glob = baseline_terms(spec, prep)["total"]
    p_sel, p_lonly = p_read[:n_sel], p_read[n_sel:]
    prd_ids, pair_n, pair_m, vpair = st.prd_ids, st.pair_n, st.pair_m, st.vpair
    bg_sel = (st.gl_sel == 0).to(pf.dtype)
    stat_sel = pred_stat(spec, p_sel)
    n_pairs = pair_n.numel()
    pb = p_sel.index_select(0, flat_nonzero(st.both))
    t_p = pf.new_zeros(n_pairs).index_add(0, vpair, pb)
    t_stat = t_p if not spec.squared_pred else pf.new_zeros(n_pairs).index_add(0, vpair, pb * pb)
    s_m = segment_sum(stat_sel, prd_ids, n_p)  # whole component
    if cfg.tp_mode == "keep":
        w_pair = s_m[pair_m]
    elif cfg.tp_mode == "remove":
        w_pair = t_stat + segment_sum(stat_sel * bg_sel, prd_ids, n_p)[pair_m]
    else:
        bd_m = segment_sum(pred_stat(spec, p_sel * p_sel.detach()) * bg_sel, prd_ids, n_p)
        w_pair = t_stat + bd_m[pair_m]

    inter_n = pf.new_zeros(n_l + 1).index_add(0, pair_n, t_p)[1:]
    pred_n = pf.new_zeros(n_l + 1).index_add(0, pair_n, w_pair)[1:]
    ground_n = st.size_l[1:]
    elem_n = f01 = f1_pair = None
    if spec.elem is not None:
        f01 = elementwise(spec, pf.new_zeros(1), 1.0)[0].detach()
        f1_pair = pf.new_zeros(n_pairs).index_add(0, vpair, elementwise(spec, pb, 1.0))
        covered_n = pf.new_zeros(n_l + 1).index_add(0, pair_n, st.overlap.to(pf.dtype))[1:]
        q_bg = p_sel * p_sel.detach() if cfg.tp_mode == "remove_detached" else p_sel
        fb_m = segment_sum(elementwise(spec, q_bg, 0.0) * bg_sel, prd_ids, n_p)
        extra_pair = fb_m[pair_m]
        if cfg.tp_mode == "keep":
            fl0_m = segment_sum(elementwise(spec, p_sel, 0.0) * (1 - bg_sel), prd_ids, n_p)
            f0_pair = pf.new_zeros(n_pairs).index_add(0, vpair, elementwise(spec, pb, 0.0))
            extra_pair = extra_pair + fl0_m[pair_m] - f0_pair
        elem_n = f01 * (ground_n - covered_n) + pf.new_zeros(n_l + 1).index_add(0, pair_n, f1_pair + extra_pair)[1:]
    inst_vals = entry_loss(spec, inter_n, pred_n, ground_n, elem_n, st.n_vox)

    if cfg.center_mode == "trainable":
        sum_p = s_m if not spec.squared_pred else segment_sum(p_sel, prd_ids, n_p)  # s_m sums p itself
        mean_p = sum_p[1:] / torch.bincount(prd_ids, minlength=n_p + 1)[1:].clamp(min=1)
        center = _center_value(cfg, geom, p_lonly, mean_p, st.img_p, st.n_img, st.n_vox)
    else:
        center = _reference_center(cfg, st, p_read)

    pred_vals = None
    if cfg.dual:
        inter_m = pf.new_zeros(n_p + 1).index_add(0, pair_m, t_p)[1:]
        pred_m = s_m[1:]
        ground_m = pf.new_zeros(n_p + 1).index_add(0, pair_m, st.size_l[pair_n])[1:]
        elem_m = None
        if spec.elem is not None:
            covered_m = pf.new_zeros(n_p + 1).index_add(0, pair_m, st.overlap.to(pf.dtype))[1:]
            f0_bg = segment_sum(elementwise(spec, p_sel, 0.0) * bg_sel, prd_ids, n_p)
            f1_m = pf.new_zeros(n_p + 1).index_add(0, pair_m, f1_pair)
            elem_m = f01 * (ground_m - covered_m) + (f0_bg + f1_m)[1:]
        pred_vals = entry_loss(spec, inter_m, pred_m, ground_m, elem_m, st.n_vox)
    return glob, inst_vals, center, pred_vals


# ----------------------------------------------------------------------------------------------------------------


_ICI_DOC_OPTIONS = """
    Args:
        base: pixel loss of every term (a baseline name or ``{"name": ..., **params}``; default "dice").
        tp_mode: how other label instances inside a touching prediction component count for instance n:
            "keep" (Eq. 3: as false positives), "remove" (Eq. 5: removed, pure set difference; lossbench
            default), "remove_detached" (the public code: weight 0 on other instances, the *detached*
            probability on background voxels, which enter as ``p * stopgrad(p)``; reference default).
        cube_size: odd side length of the centre cubes (default 7, the paper's best; the code's default is 11).
            Half width per axis ``ceil(size_axis / max(size) * (cube_size - 1) / 2)``, centred at
            ``ceil(mean index) - 1``, truncated at the border (REFERENCE.md section 3).
        center_mode: "reference" (constant cubes ``1 + 1e-7``: identically zero gradient) or "trainable"
            (lossbench's design, the default): the label-cube map is constant; the prediction-cube map is
            1 where a prediction cube lies inside the label cubes (constant), the *mean probability* of the
            prediction component(s) whose cube lies outside every label cube (mean over overlapping cubes),
            and the *raw probability* on label-cube voxels no prediction cube covers. Spurious or misplaced
            components are thus pushed down as a whole, missed instances' centres are pushed up, and when
            prediction and label components coincide both sets are empty: zero gradient.
        reduction: "instance" (Eq. 3's 1/Z: mean over every label instance of the mini-batch; an image without
            label instances counts as one entry, its whole-image ``base(prob, 0)``) or "image" (mean per image,
            then over images).
        max_pred_instances: use only the first k prediction components per image in the reference's order
            (of each component's last voxel in raster order); 0 = no cap; None = 50 with ``reference=True``,
            else 0.
        too_many_factor: use no prediction component in an image with more than ``factor x`` (number of label
            instances) of them; 0 = off; None = 50 with ``reference=True``, else 0.
        threshold: prediction components are ``prob >= threshold`` (default 0.5).
        connectivity: orthogonal hops (None = full, 8 in 2D / 26 in 3D, as the reference code).
        cc_backend: labelling backend of :func:`lossbench.cc.label_components` ("auto": cc3d on CPU, torch on
            CUDA; "maxpool" with ``num_iterations`` reproduces the reference labelling).
        num_iterations: iterations of the "maxpool" backend.
        reference: set every reference behaviour not given explicitly (tp_mode="remove_detached",
            center_mode="reference", caps 50/50). With probabilities in (``sigmoid=False``) the instance and
            centre terms then equal the public code's. (The public code's own ``sigmoid`` option binarises the
            prediction and kills the instance gradient; lossbench's ``sigmoid=True`` does not copy that.)
        sigmoid, softmax, include_background, to_onehot_y: MONAI activation options; each channel is its own
            binary problem and the terms are averaged over channels.
        smooth_nr, smooth_dr: shortcut for the Dice smoothing of a Dice-type ``base`` (1e-5).
"""


class ICILoss(TermLoss):
    """ICI loss, Eq. 1: ``a * global + b * instance + c * center``; terms "global", "instance", "center".

    "instance" is REFERENCE.md section 2 with the chosen ``tp_mode``: for label instance n, the base loss
    between the probabilities restricted to the prediction components touching n and the mask of n;
    "center" is the base loss between union-of-cubes maps (section 3); "global" is ``base(prob, label)``.
    Shapes: input ``(B, C, *spatial)`` logits or probabilities, target binary of the same shape.
    """

    __doc__ = (__doc__ or "") + _ICI_DOC_OPTIONS

    def __init__(
        self, *, a: float = 1.0, b: float = 1.0, c: float = 1.0, base: str | dict[str, Any] = "dice",
        tp_mode: str | None = None, cube_size: int = 7, center_mode: str | None = None,
        reduction: str = "instance", max_pred_instances: int | None = None, too_many_factor: float | None = None,
        threshold: float = 0.5, connectivity: int | None = None, cc_backend: str = "auto",
        num_iterations: int | None = None, reference: bool = False, sigmoid: bool = False, softmax: bool = False,
        include_background: bool = True, to_onehot_y: bool = False, smooth_nr: float | None = None,
        smooth_dr: float | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        kw = dict(locals())
        kw.pop("self")
        kw.pop("__class__", None)
        self.config = ICIConfig.make(dual=False, **kw)

    def terms(self, input: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the terms "global", "instance", "center" (unweighted) and the weighted "total"."""
        return instance_terms(self.config, self.config.activation.prepare(input, target))


class DICILoss(TermLoss):
    """DICI loss, Eq. 6: ``a * global + b * instance + c * predicted + d * center`` (defaults all 1/4).

    "predicted" (REFERENCE.md section 4): for every used prediction component m, the base loss between
    ``prob * [m]`` and the union of the label instances touching m; an image without prediction component
    contributes one entry, its whole-image ``base(prob, label)``; ``tp_mode`` does not affect it.
    """

    __doc__ = (__doc__ or "") + _ICI_DOC_OPTIONS

    def __init__(
        self, *, a: float = 0.25, b: float = 0.25, c: float = 0.25, d: float = 0.25,
        base: str | dict[str, Any] = "dice", tp_mode: str | None = None, cube_size: int = 7,
        center_mode: str | None = None,
        reduction: str = "instance", max_pred_instances: int | None = None, too_many_factor: float | None = None,
        threshold: float = 0.5, connectivity: int | None = None, cc_backend: str = "auto",
        num_iterations: int | None = None, reference: bool = False, sigmoid: bool = False, softmax: bool = False,
        include_background: bool = True, to_onehot_y: bool = False, smooth_nr: float | None = None,
        smooth_dr: float | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        kw = dict(locals())
        kw.pop("self")
        kw.pop("__class__", None)
        self.config = ICIConfig.make(dual=True, **kw)

    def terms(self, input: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the terms "global", "instance", "predicted", "center" (unweighted) and the weighted "total"."""
        return instance_terms(self.config, self.config.activation.prepare(input, target))


def ici_terms(input: torch.Tensor, target: torch.Tensor, **params: Any) -> dict[str, torch.Tensor]:
    """Functional ICI: the terms of :class:`ICILoss` (same options) for one call."""
    return ICILoss(**params).terms(input, target)


def ici_loss(input: torch.Tensor, target: torch.Tensor, **params: Any) -> torch.Tensor:
    """Functional ICI: the scalar of :class:`ICILoss` (same options)."""
    return ici_terms(input, target, **params)["total"]


def dici_terms(input: torch.Tensor, target: torch.Tensor, **params: Any) -> dict[str, torch.Tensor]:
    """Functional DICI: the terms of :class:`DICILoss` (same options)."""
    return DICILoss(**params).terms(input, target)


def dici_loss(input: torch.Tensor, target: torch.Tensor, **params: Any) -> torch.Tensor:
    """Functional DICI: the scalar of :class:`DICILoss` (same options)."""
    return dici_terms(input, target, **params)["total"]
