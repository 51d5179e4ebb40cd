r"""Inverse weighting (Shirokikh et al. 2020).

Per image (per training patch) and channel, from the label only: with ``N`` voxels and ``K`` label
components (full connectivity by default), every voxel of component ``i`` (background included as
one component) gets

.. math::  w = \operatorname{clip}\Big(\frac{N}{(K + 1)\,|\text{component } i|},\ [1, 2\cdot 10^5]\Big)

and the loss is a weighted base: ``dice_squared`` ``1 - 2 sum(w p y) / sum(w (p^2 + y^2))`` per image
(0 when both sums vanish, i.e. empty label and zero prediction), mean over images and channels;
``bce`` (mean over voxels of ``w * BCE``) or ``focal`` (``w * focal``, gamma 2, alpha 0.75).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from lossbench.cc import label_batch
from lossbench.cc.api import BACKENDS
from lossbench.errors import expect
from lossbench.instances import foreground_ids
from lossbench.losses._core import (
    BaseSpec,
    check_choice,
    check_nonneg,
    elementwise,
    elementwise_logits,
    sum_and_gather,
)
from lossbench.losses._module import TermLoss
from lossbench.losses.baselines import ActivationConfig
from lossbench.ops import flat_nonzero

__all__ = ["InverseWeightingLoss", "inverse_weights", "inverse_weighting_terms", "inverse_weighting_loss"]

IW_BASES = ("dice_squared", "bce", "focal")


def inverse_weights(
    target: torch.Tensor,
    *,
    clip_min: float = 1.0,
    clip_max: float = 2e5,
    connectivity: int | None = None,
    cc_backend: str = "auto",
) -> torch.Tensor:
    """The weight map ``N / ((K + 1) |component|)`` clipped to ``[clip_min, clip_max]``.

    Args:
        target: binary ``(K, *spatial)`` (one map per image and channel).
        clip_min: lower clipping bound.
        clip_max: upper clipping bound.
        connectivity: label connectivity (None = full).
        cc_backend: labelling backend.

    Returns:
        weights of ``target``'s shape and float dtype (``float32`` for non-floating targets).
    """
    n_img = target.shape[0]
    dtype = target.dtype if target.is_floating_point() else torch.float32
    pos, img, w_fg, bg_w = _weight_tables(target > 0.5, clip_min, clip_max, connectivity, cc_backend, dtype)
    w = torch.empty((n_img, math.prod(target.shape[1:])), dtype=bg_w.dtype, device=target.device)
    w.copy_(bg_w[:, None].expand(w.shape))
    w.view(-1)[pos] = w_fg
    return w.reshape(target.shape)


def _weight_tables(
    mask: torch.Tensor,
    clip_min: float,
    clip_max: float,
    connectivity: int | None,
    cc_backend: str,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The weight map of the bool ``(K, *spatial)`` ``mask`` without the map: ``(pos, img, w_fg, bg_w)``.

    ``pos``: flat positions of the mask's voxels in the flattened batch, ``img`` their image, ``w_fg`` their
    weights (a voxel the maxpool backend leaves unlabelled has its image's background weight), ``bg_w`` ``(K,)``
    the background weight of every image; each distinct weight clipped in float64, then cast to ``dtype``.
    """
    n_img = mask.shape[0]
    n_vox = math.prod(mask.shape[1:])
    lab = label_batch(mask, connectivity=connectivity, backend=cc_backend)
    n_l = int(lab.counts.sum())
    dev = mask.device
    pos, ids = foreground_ids(lab, flat_nonzero(mask))
    sizes = torch.bincount(ids, minlength=n_l + 1).to(torch.float64)
    img_of = torch.repeat_interleave(torch.arange(n_img, device=dev), lab.counts)
    fg = torch.zeros(n_img, dtype=torch.float64, device=dev).index_add(0, img_of, sizes[1:])
    bg_size = (n_vox - fg).clamp(min=1)  # per image
    k1 = (lab.counts + 1).to(torch.float64)
    comp_w = torch.cat([torch.zeros(1, dtype=torch.float64, device=dev), n_vox / (k1[img_of] * sizes[1:])])
    comp_w = comp_w.clamp(clip_min, clip_max).to(dtype)
    bg_w = (n_vox / (k1 * bg_size)).clamp(clip_min, clip_max).to(dtype)
    img = torch.div(pos, n_vox, rounding_mode="floor")
    w_fg = torch.where(ids > 0, comp_w[ids], bg_w[img])
    return pos, img, w_fg, bg_w


class InverseWeightingLoss(TermLoss):
    """Inverse-weighted base loss (Shirokikh et al. 2020); term "weighted".

    Args:
        base: "dice_squared" (the reference Dice with squared denominator, no epsilon, 0/0 -> 0), "bce" or
            "focal".
        clip_min, clip_max: weight clipping bounds (1, 2e5).
        gamma, alpha: focal parameters (2, 0.75), only for ``base="focal"``.
        connectivity: label connectivity (None = full, 26 in 3D, as the reference).
        cc_backend: labelling backend ("auto").
        sigmoid, softmax, include_background, to_onehot_y: MONAI activation options.
    """

    def __init__(
        self, *, base: str = "dice_squared", clip_min: float = 1.0, clip_max: float = 2e5, gamma: float = 2.0,
        alpha: float = 0.75, connectivity: int | None = None, cc_backend: str = "auto", sigmoid: bool = False,
        softmax: bool = False, include_background: bool = True, to_onehot_y: bool = False,
    ) -> None:  # fmt: skip
        super().__init__()
        self.base = check_choice("base", base, IW_BASES)
        self.clip_min = check_nonneg("clip_min", clip_min)
        self.clip_max = check_nonneg("clip_max", clip_max)
        if self.clip_max < self.clip_min:
            raise expect("clip_max", f">= clip_min ({self.clip_min})", repr(clip_max))
        check_nonneg("gamma", gamma)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise expect("alpha", "a number in [0, 1]", repr(alpha))
        if connectivity is not None and (
            isinstance(connectivity, bool) or not isinstance(connectivity, int) or not 1 <= connectivity <= 3
        ):
            raise expect("connectivity", "None (full) or an int in 1..3 (orthogonal hops)", repr(connectivity))
        self.connectivity = connectivity
        self.cc_backend = check_choice("cc_backend", cc_backend, BACKENDS)
        elem = {"bce": "bce", "focal": "focal"}.get(base)
        self.spec = BaseSpec(base, elem=elem, gamma=float(gamma), alpha=float(alpha))
        self.activation = ActivationConfig(sigmoid, softmax, include_background, to_onehot_y)

    def _terms(self, input: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the term "weighted" (the weighted base) and "total" (the same value)."""
        prep = self.activation.prepare(input, target)
        p, y = prep.prob, prep.target
        n_img = p.shape[0] * p.shape[1]
        # The weight map is the image's background weight except at the target's voxels, so every weighted sum
        # is the background weight times a plain per-image sum plus a correction at the target's voxels: the map
        # itself is never built (the target is binary, so y = y^2 = 1 exactly there).
        pos, img, w_fg, bg_w = _weight_tables(
            prep.target_mask.reshape(n_img, *p.shape[2:]), self.clip_min, self.clip_max, self.connectivity,
            self.cc_backend, p.dtype,
        )  # fmt: skip
        if self.base == "dice_squared":
            sq, p_fg = sum_and_gather(prep, pos, square=True)  # sum(p^2) per image, p at the target's voxels
            num = 2.0 * p.new_zeros(n_img).index_add(0, img, w_fg * p_fg)
            den = bg_w * sq + p.new_zeros(n_img).index_add(0, img, (w_fg - bg_w[img]) * p_fg * p_fg + w_fg)
            safe = torch.where(den > 0, den, torch.ones_like(den))
            val = torch.where(den > 0, 1.0 - num / safe, torch.zeros_like(den)).mean()
        else:
            if prep.logits is not None:
                e = elementwise_logits(self.spec, prep.logits, y).reshape(n_img, -1)
            else:
                e = elementwise(self.spec, p, y).reshape(n_img, -1)
            e_fg = e.reshape(-1).index_select(0, pos)
            val = ((bg_w * e.sum(1)).sum() + ((w_fg - bg_w[img]) * e_fg).sum()) / e.numel()
        return {"weighted": val, "total": val}


def inverse_weighting_terms(input: torch.Tensor, target: torch.Tensor, **params: Any) -> dict[str, torch.Tensor]:
    """Functional inverse weighting: the terms of :class:`InverseWeightingLoss` (same options)."""
    return InverseWeightingLoss(**params).terms(input, target)


def inverse_weighting_loss(input: torch.Tensor, target: torch.Tensor, **params: Any) -> torch.Tensor:
    """Functional inverse weighting: the scalar of :class:`InverseWeightingLoss` (same options)."""
    return inverse_weighting_terms(input, target, **params)["total"]
