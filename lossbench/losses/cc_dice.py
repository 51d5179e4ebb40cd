r"""CC-Dice and CC-DiceCE losses: the Dice (+ BCE) inside the Voronoi region of every label component.

After CC-Metrics (Jaus et al., "Every Component Counts"), whose authors train with this loss. For one binary
image (an (image, channel) pair) with label components :math:`C_1..C_N` and their Voronoi regions
:math:`R_1..R_N` (every voxel belongs to its nearest component; :func:`lossbench.cc.voronoi_components`):

.. math::

    \mathrm{dice}_k = 1 - \frac{2 \sum_{R_k} p\,y + s_{nr}}{\sum_{R_k} (p + y) + s_{dr}}, \qquad
    \mathrm{ce}_k = \frac{1}{|R_k|} \sum_{R_k} \mathrm{BCE}(p, y)

    \text{image value} = \frac{1}{N} \sum_k \big(\lambda_{dice}\,\mathrm{dice}_k + \lambda_{ce}\,\mathrm{ce}_k\big)

An image without label components has Dice 1 (a constant: its gradient is zero) and the mean BCE over the whole
image. The loss is the mean over images and channels (each channel its own binary problem). A missed small lesion
costs as much as a missed large one, and predicted voxels far from every lesion still count against the lesion
whose region holds them.

The regions depend on the label only: they are computed on the CPU (exact; ties to the smallest component id) and
moved to the input's device. Every per-region sum is one ``index_add`` over region ids (no loop over components).
"""

from __future__ import annotations

from typing import Any

import torch

from lossbench.cc.api import resolve_connectivity
from lossbench.cc.voronoi import batch_regions
from lossbench.losses._core import BaseSpec, Prepared, check_nonneg, dice_from_sums, elementwise
from lossbench.losses._module import TermLoss
from lossbench.losses._regions import region_sums
from lossbench.losses.baselines import ActivationConfig
from lossbench.ops import flat_nonzero, take_flat

__all__ = ["CCDiceLoss", "CCDiceCELoss", "cc_dice_terms", "cc_dice_loss", "cc_dicece_loss"]

_BCE = BaseSpec("bce", elem="bce")


def _regions(prep: Prepared, connectivity: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Voronoi regions of the label components of every (image, channel) pair, numbered for :func:`region_sums`.

    Returns ``(regions, base, counts, n_components)``: int32 ``(B * C', V)`` batch-numbered region ids on the input's
    device, int64 ``base`` with region ``base[i] + regions[i, v]`` in ``0..n_regions - 1`` (an image's components
    first, 0-based over the batch; an image without components is one more region, its whole image, after all of
    them) and int64 ``counts`` of components per image.
    """
    p = prep.prob
    n_img = p.shape[0] * p.shape[1]
    spatial = tuple(p.shape[2:])
    mask = prep.target_mask.reshape(n_img, *spatial).detach().cpu().numpy()
    regions, counts_np = batch_regions(mask, connectivity, None)
    counts = torch.from_numpy(counts_np)
    n_comp = int(counts.sum())
    empty = counts == 0
    base = torch.where(empty, n_comp + torch.cumsum(empty, 0) - 1, -1)
    dev = p.device
    return torch.from_numpy(regions.reshape(n_img, -1)).to(dev), base.to(dev), counts.to(dev), n_comp


def _cc_terms(
    prep: Prepared, connectivity: int | None, dice: BaseSpec, lambda_ce: float | None
) -> dict[str, torch.Tensor]:
    """The terms ("dice", with ``lambda_ce`` also "ce", and "total") of a prepared batch (module docstring)."""
    p = prep.prob
    n_img = p.shape[0] * p.shape[1]
    conn = resolve_connectivity(connectivity, p.ndim - 2)
    regions, base, counts, n_comp = _regions(prep, conn)
    n_reg = n_comp + int((counts == 0).sum())
    logits = prep.logits is not None
    src = (prep.logits if logits else p).reshape(n_img, -1)
    fg = flat_nonzero(prep.target_mask)
    fg_k = take_flat(regions, fg).long() - 1  # label voxels lie in their own component's region
    with_ce = lambda_ce is not None
    s, e, size, src_fg = region_sums(
        src, p.detach().reshape(n_img, -1), regions, base, n_reg, with_bce=with_ce, logits=logits, index=fg
    )
    p_fg = torch.sigmoid(src_fg) if logits else src_fg
    inter = p_fg.new_zeros(n_comp).index_add(0, fg_k, p_fg)
    ground = torch.bincount(fg_k, minlength=n_comp).to(p.dtype)
    comp_img = torch.repeat_interleave(torch.arange(n_img, device=p.device), counts)
    has = counts > 0
    per_k = dice_from_sums(dice, inter, s[:n_comp], ground)
    dice_img = p.new_zeros(n_img).index_add(0, comp_img, per_k / counts[comp_img].to(p.dtype)) + (~has).to(p.dtype)
    terms = {"dice": dice_img.mean()}
    total = dice.lambda_dice * terms["dice"]
    if with_ce:
        # E holds BCE(p, 0) everywhere; on label voxels BCE(p, 1) replaces it
        if logits:
            fix = -src_fg  # softplus(-x) - softplus(x)
        else:
            fix = elementwise(_BCE, p_fg, 1.0) - elementwise(_BCE, p_fg, 0.0)
        e = e.index_add(0, fg_k, fix)
        ce_k = e / size.to(p.dtype)
        reg_img = torch.cat([comp_img, torch.nonzero(~has, as_tuple=True)[0]])
        n_reg_img = torch.where(has, counts, 1).to(p.dtype)
        ce_img = p.new_zeros(n_img).index_add(0, reg_img, ce_k / n_reg_img[reg_img])
        terms["ce"] = ce_img.mean()
        total = total + lambda_ce * terms["ce"]
    terms["total"] = total
    return terms


class CCDiceLoss(TermLoss):
    """CC-Dice: mean over label components of the Dice inside each component's Voronoi region; term "dice".

    Args:
        connectivity: label connectivity in orthogonal hops (``None`` = full: 8 in 2D, 26 in 3D).
        smooth_nr: Dice numerator smoothing (MONAI's ``smooth_nr``).
        smooth_dr: Dice denominator smoothing (MONAI's ``smooth_dr``).
        sigmoid, softmax, include_background, to_onehot_y: MONAI activation options.
    """

    def __init__(
        self, *, connectivity: int | None = None, smooth_nr: float = 1e-5, smooth_dr: float = 1e-5,
        sigmoid: bool = False, softmax: bool = False, include_background: bool = True, to_onehot_y: bool = False,
    ) -> None:  # fmt: skip
        super().__init__()
        resolve_connectivity(connectivity, 3)  # 3 for 3D images is checked again against the input's dims
        self.connectivity = connectivity
        self.spec = BaseSpec(
            "dice", dice="dice", smooth_nr=check_nonneg("smooth_nr", smooth_nr),
            smooth_dr=check_nonneg("smooth_dr", smooth_dr),
        )  # fmt: skip
        self.lambda_ce: float | None = None
        self.activation = ActivationConfig(sigmoid, softmax, include_background, to_onehot_y)

    def _terms(self, input: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the term "dice" and "total" (CC-DiceCE: also "ce"; "total" is the weighted sum)."""
        prep = self.activation.prepare(input, target)
        return _cc_terms(prep, self.connectivity, self.spec, self.lambda_ce)


class CCDiceCELoss(CCDiceLoss):
    """CC-DiceCE: ``lambda_dice * dice + lambda_ce * ce``, both means over label components' Voronoi regions.

    ``ce`` is the mean binary cross-entropy of each region's voxels (from logits with ``sigmoid=True``, numerically
    stable; ``log`` clamped at -100 on probabilities, as PyTorch), averaged over the image's regions.

    Args:
        connectivity, smooth_nr, smooth_dr: as :class:`CCDiceLoss`.
        lambda_dice: weight of the Dice term.
        lambda_ce: weight of the cross-entropy term.
        sigmoid, softmax, include_background, to_onehot_y: MONAI activation options.
    """

    def __init__(
        self, *, connectivity: int | None = None, smooth_nr: float = 1e-5, smooth_dr: float = 1e-5,
        lambda_dice: float = 1.0, lambda_ce: float = 1.0, sigmoid: bool = False, softmax: bool = False,
        include_background: bool = True, to_onehot_y: bool = False,
    ) -> None:  # fmt: skip
        super().__init__(
            connectivity=connectivity, smooth_nr=smooth_nr, smooth_dr=smooth_dr, sigmoid=sigmoid, softmax=softmax,
            include_background=include_background, to_onehot_y=to_onehot_y,
        )  # fmt: skip
        self.spec = BaseSpec(
            "dicece", dice="dice", smooth_nr=self.spec.smooth_nr, smooth_dr=self.spec.smooth_dr,
            lambda_dice=check_nonneg("lambda_dice", lambda_dice),
        )  # fmt: skip
        self.lambda_ce = check_nonneg("lambda_ce", lambda_ce)


def cc_dice_terms(input: torch.Tensor, target: torch.Tensor, *, ce: bool = False, **params: Any) -> dict[str, Any]:
    """Functional form: the terms of :class:`CCDiceCELoss` (``ce=True``) or :class:`CCDiceLoss` (same options)."""
    return (CCDiceCELoss if ce else CCDiceLoss)(**params).terms(input, target)


def cc_dice_loss(input: torch.Tensor, target: torch.Tensor, **params: Any) -> torch.Tensor:
    """Functional CC-Dice: the scalar of :class:`CCDiceLoss`."""
    return cc_dice_terms(input, target, **params)["total"]


def cc_dicece_loss(input: torch.Tensor, target: torch.Tensor, **params: Any) -> torch.Tensor:
    """Functional CC-DiceCE: the scalar of :class:`CCDiceCELoss`."""
    return cc_dice_terms(input, target, ce=True, **params)["total"]
