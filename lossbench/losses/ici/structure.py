"""The detached instance bookkeeping of one ``ici``/``dici`` call: components, their voxels, pairs, cube geometry.

Label components (of ``target == 1``) and prediction components (of ``prob >= threshold``) are labelled on
detached tensors and given batch-global ids (1..N over the mini-batch, see :mod:`lossbench.instances`). Every later
sum runs over foreground voxels only: the label voxels and the prediction-component voxels, with their ids read
there. Nothing here carries a gradient: gradients reach the prediction only through the probability sums of
:mod:`lossbench.losses.ici.terms`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from lossbench.cc import CCResult, label_batch
from lossbench.instances import (
    batch_offsets,
    centroids_ceil_from_positions,
    component_images,
    foreground_ids,
    pair_table,
)
from lossbench.losses._core import Prepared
from lossbench.losses.ici.geometry import CenterGeometry, center_geometry
from lossbench.losses.ici.options import ICIConfig
from lossbench.ops import flat_nonzero, take_flat, threshold_mask

__all__ = ["PairTable", "InstanceStructure", "build_structure"]


@dataclass(frozen=True, kw_only=True)
class PairTable:
    """Every (label instance, prediction component) pair that shares a voxel (sorted by label id, then prediction id).

    Attributes:
        label: label id of each pair.
        pred: prediction id of each pair.
        overlap: shared voxels of each pair.
        shared: per prediction-component voxel, whether it lies inside a label instance.
        shared_pair: for each such voxel (in order), its pair.
    """

    label: torch.Tensor
    pred: torch.Tensor
    overlap: torch.Tensor
    shared: torch.Tensor
    shared_pair: torch.Tensor


@dataclass(frozen=True, kw_only=True)
class InstanceStructure:
    """Components, their voxels and pairs for one call; ids are batch-global, 1-based; images are ``(B * C')``.

    Attributes:
        n_img: images (image x channel pairs) in the batch.
        n_vox: voxels per image.
        n_label: label instances of the batch.
        n_pred: used prediction components of the batch (after the caps).
        label_counts: label instances per image.
        pred_counts: used prediction components per image.
        label_image: image of every label instance.
        pred_image: image of every used prediction component.
        label_size: voxels per label id ``0..n_label`` (float, the probabilities' dtype).
        label_pos: flat positions of the label voxels.
        pred_pos: flat positions of the used prediction components' voxels.
        pred_ids: their prediction ids.
        pred_label: the label id (0 = none) at each of those voxels.
        pairs: the pair table (``None`` when no term needs it).
        geometry: the center cubes' geometry (``None`` when the center term is not computed).
    """

    n_img: int
    n_vox: int
    n_label: int
    n_pred: int
    label_counts: torch.Tensor
    pred_counts: torch.Tensor
    label_image: torch.Tensor
    pred_image: torch.Tensor
    label_size: torch.Tensor
    label_pos: torch.Tensor
    pred_pos: torch.Tensor
    pred_ids: torch.Tensor
    pred_label: torch.Tensor
    pairs: PairTable | None
    geometry: CenterGeometry | None


def _label_both(cfg: ICIConfig, label_mask: torch.Tensor, pred_mask: torch.Tensor) -> tuple[CCResult, CCResult]:
    """Components of the label and of the thresholded prediction, with the loss's connectivity and backend."""
    kw: dict[str, Any] = {"connectivity": cfg.connectivity, "backend": cfg.cc_backend}
    if cfg.cc_backend == "maxpool" and cfg.num_iterations is not None:
        kw["num_iterations"] = cfg.num_iterations
    return label_batch(label_mask, **kw), label_batch(pred_mask, **kw)


def _used_components(
    cfg: ICIConfig, label: CCResult, pred: CCResult, pred_pos: torch.Tensor, pred_ids: torch.Tensor, n_vox: int
) -> torch.Tensor:
    """Which prediction components the public code's caps leave in use (bool per id 1..N).

    Too many: an image with at least one label instance and more than ``too_many_factor x`` (label instances)
    prediction components uses none. Otherwise only the first ``max_pred_instances`` of each image count, in the
    public code's order: that of each component's last voxel in raster order.
    """
    n = int(pred.counts.sum())
    image = component_images(pred.counts)
    keep = torch.ones(n, dtype=torch.bool, device=pred_ids.device)
    if cfg.too_many_factor > 0:
        too_many = (label.counts > 0) & (
            pred.counts.to(torch.float64) > cfg.too_many_factor * label.counts.to(torch.float64)
        )
        keep &= ~too_many[image]
    if cfg.max_pred_instances > 0 and n:
        last = torch.full((n + 1,), -1, dtype=torch.int64, device=keep.device)
        within = pred_pos % n_vox if pred.counts.numel() > 1 else pred_pos  # position within its image
        last = last.scatter_reduce(0, pred_ids, within, reduce="amax")[1:]
        order = torch.argsort(image * n_vox + last)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(n, device=keep.device) - batch_offsets(pred.counts)[image[order]]
        keep &= rank < cfg.max_pred_instances
    return keep


def build_structure(cfg: ICIConfig, prep: Prepared, *, pairs: bool, center: bool) -> InstanceStructure:
    """Label, apply the caps, read ids at the foreground voxels and build what the requested terms need.

    Args:
        cfg: validated options.
        prep: validated, activated tensors.
        pairs: build the pair table (instance and predicted-instance terms).
        center: compute the cube geometry (center term).
    """
    p = prep.prob
    n_img = p.shape[0] * p.shape[1]
    spatial = tuple(p.shape[2:])
    n_vox = math.prod(spatial)
    y = prep.target_mask.reshape(n_img, *spatial)
    pred_mask = threshold_mask(p.reshape(n_img, *spatial), cfg.threshold)
    label, pred = _label_both(cfg, y, pred_mask)
    n_label = int(label.counts.sum())
    label_pos = flat_nonzero(y)
    lab_pos, lab_ids = foreground_ids(label, label_pos, drop_unlabelled=True)
    pred_pos, pred_ids = foreground_ids(pred, flat_nonzero(pred_mask), drop_unlabelled=True)
    pred_image, pred_counts = component_images(pred.counts), pred.counts
    if cfg.capped:
        keep = _used_components(cfg, label, pred, pred_pos, pred_ids, n_vox)
        if not bool(keep.all()):
            renumber = torch.cat([keep.new_zeros(1, dtype=torch.int64), torch.cumsum(keep, 0) * keep])
            pred_ids = take_flat(renumber, pred_ids)
            used = flat_nonzero(threshold_mask(pred_ids, 0, strict=True))
            pred_pos, pred_ids = take_flat(pred_pos, used), take_flat(pred_ids, used)
            pred_image = pred_image[keep]
            pred_counts = torch.bincount(pred_image, minlength=n_img)
    n_pred = pred_image.numel()
    label_image = component_images(label.counts)
    _, pred_label = foreground_ids(label, pred_pos)  # label id (or 0) of every prediction voxel
    table = None
    if pairs:
        pair_label, pair_pred, overlap, shared, shared_pair = pair_table(pred_label, pred_ids, n_label, n_pred)
        table = PairTable(label=pair_label, pred=pair_pred, overlap=overlap, shared=shared, shared_pair=shared_pair)
    geometry = None
    if center:
        # the centers of label and prediction components in one pass (prediction ids shifted past the label ids)
        centers = centroids_ceil_from_positions(
            torch.cat([lab_pos, pred_pos]), torch.cat([lab_ids, pred_ids + n_label]), n_label + n_pred, spatial
        )
        detail = _detail(cfg)
        geometry = center_geometry(
            centers[:n_label], label_image, centers[n_label:], pred_image, n_img, spatial, cfg.cube_size, detail
        )
    return InstanceStructure(
        n_img=n_img, n_vox=n_vox, n_label=n_label, n_pred=n_pred, label_counts=label.counts,
        pred_counts=pred_counts, label_image=label_image, pred_image=pred_image,
        label_size=torch.bincount(lab_ids, minlength=n_label + 1).to(p.dtype), label_pos=label_pos,
        pred_pos=pred_pos, pred_ids=pred_ids, pred_label=pred_label, pairs=table, geometry=geometry,
    )  # fmt: skip


def _detail(cfg: ICIConfig) -> str:
    """What the center term needs of the geometry (see :data:`lossbench.losses.ici.geometry.DETAILS`)."""
    if cfg.center_mode == "reference":
        return "counts"
    return "weights" if linear_base(cfg) else "voxels"


def linear_base(cfg: ICIConfig) -> bool:
    """Whether every sum of the base is linear in the probabilities (Dice type without ``squared_pred``)."""
    return cfg.base.elem is None and not cfg.base.squared_pred
