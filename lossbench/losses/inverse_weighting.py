r"""Inverse weighting (Shirokikh et al. 2020), REFERENCE.md section 6.

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
from lossbench.instances import flat_nonzero, foreground_ids
from lossbench.losses._core import BaseSpec, check_choice, check_nonneg, elementwise, elementwise_logits
from lossbench.losses._module import TermLoss
from lossbench.losses.baselines import ActivationConfig

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
    n_vox = math.prod(target.shape[1:])
    mask = target > 0.5
    lab = label_batch(mask, connectivity=connectivity, backend=cc_backend)
    n_l = int(lab.counts.sum())
    dev = target.device
    # ids only at the target's voxels (a voxel the maxpool backend leaves unlabelled counts as background)
    pos, ids = foreground_ids(lab, flat_nonzero(mask), drop_unlabelled=True)
    sizes = torch.bincount(ids, minlength=n_l + 1).to(torch.float64)
    img_of = torch.repeat_interleave(torch.arange(n_img, device=dev), lab.counts)
    fg = torch.zeros(n_img, dtype=torch.float64, device=dev).index_add(0, img_of, sizes[1:])
    bg_size = (n_vox - fg).clamp(min=1)  # per image
    k1 = (lab.counts + 1).to(torch.float64)
    dtype = target.dtype if target.is_floating_point() else torch.float32
    # clip each distinct weight (float64), then fill the map: background weight per image, component weights at pos
    comp_w = torch.cat([torch.zeros(1, dtype=torch.float64, device=dev), n_vox / (k1[img_of] * sizes[1:])])
    comp_w = comp_w.clamp(clip_min, clip_max).to(dtype)
    bg_w = (n_vox / (k1 * bg_size)).clamp(clip_min, clip_max).to(dtype)
    w = torch.empty((n_img, n_vox), dtype=dtype, device=dev)
    w.copy_(bg_w[:, None].expand(n_img, n_vox))
    w.view(-1)[pos] = comp_w[ids]
    return w.reshape(target.shape)


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

    def terms(self, input: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the term "weighted" (the weighted base) and "total" (the same value)."""
        prep = self.activation.prepare(input, target)
        p, y = prep.prob, prep.target
        n_img = p.shape[0] * p.shape[1]
        w = inverse_weights(
            y.reshape(n_img, *p.shape[2:]).detach(), clip_min=self.clip_min, clip_max=self.clip_max,
            connectivity=self.connectivity, cc_backend=self.cc_backend,
        ).reshape(p.shape)  # fmt: skip
        if self.base == "dice_squared":
            pf, yf, wf = (t.reshape(n_img, -1) for t in (p, y, w))
            num = 2.0 * (wf * pf * yf).sum(1)
            den = (wf * (pf * pf + yf * yf)).sum(1)
            safe = torch.where(den > 0, den, torch.ones_like(den))
            val = torch.where(den > 0, 1.0 - num / safe, torch.zeros_like(den)).mean()
        elif prep.logits is not None:
            val = (w * elementwise_logits(self.spec, prep.logits, y)).mean()
        else:
            val = (w * elementwise(self.spec, p, y)).mean()
        return {"weighted": val, "total": val}


def inverse_weighting_terms(input: torch.Tensor, target: torch.Tensor, **params: Any) -> dict[str, torch.Tensor]:
    """Functional inverse weighting: the terms of :class:`InverseWeightingLoss` (same options)."""
    return InverseWeightingLoss(**params).terms(input, target)


def inverse_weighting_loss(input: torch.Tensor, target: torch.Tensor, **params: Any) -> torch.Tensor:
    """Functional inverse weighting: the scalar of :class:`InverseWeightingLoss` (same options)."""
    return inverse_weighting_terms(input, target, **params)["total"]
