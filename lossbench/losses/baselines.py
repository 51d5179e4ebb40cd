"""Pixel-wise baselines with MONAI semantics and MONAI argument names: dice, bce, focal, dicece, dicefocal, gdicefocal.

All six are one function, :func:`baseline_terms`, over a :class:`~lossbench.losses._core.BaseSpec`;
the same spec evaluates the per-instance base losses of ``ici``, ``dici`` and ``blob``.

Differences from MONAI, on purpose (MONAI would warn and ignore, or silently change meaning):

* ``sigmoid=False`` means the input already holds probabilities for *every* part, including the
  BCE/focal part (MONAI's ``DiceCELoss``/``FocalLoss`` always read their input as logits).
* With more than one channel the BCE/focal part is per-channel binary (each channel its own binary
  problem, lossbench's convention), where MONAI's ``DiceCELoss`` switches to softmax cross-entropy.
* ``softmax`` / ``include_background=False`` / ``to_onehot_y`` with a single channel raise an error.

With ``sigmoid=True`` and one channel (and, for focal/dicefocal, any number of channels) the values
equal MONAI's classes exactly (tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lossbench.losses._core import BaseSpec, Prepared, baseline_terms, check_activation, make_base_spec, prepare
from lossbench.losses._module import TermLoss

__all__ = [
    "ActivationConfig",
    "BaselineLoss",
    "DiceLoss",
    "BCELoss",
    "FocalLoss",
    "DiceCELoss",
    "DiceFocalLoss",
    "GeneralizedDiceFocalLoss",
    "pixel_terms",
]


@dataclass(frozen=True)
class ActivationConfig:
    """MONAI activation options shared by every loss."""

    sigmoid: bool = False
    softmax: bool = False
    include_background: bool = True
    to_onehot_y: bool = False

    def __post_init__(self) -> None:
        check_activation(self.sigmoid, self.softmax, self.include_background, self.to_onehot_y)

    def prepare(self, input: torch.Tensor, target: torch.Tensor) -> Prepared:
        """Validate and activate ``input``/``target`` (see :func:`lossbench.losses._core.prepare`)."""
        return prepare(
            input,
            target,
            sigmoid=self.sigmoid,
            softmax=self.softmax,
            include_background=self.include_background,
            to_onehot_y=self.to_onehot_y,
        )


def pixel_terms(
    input: torch.Tensor, target: torch.Tensor, base: str | dict[str, Any] = "dice", **activation: Any
) -> dict[str, torch.Tensor]:
    """Functional form of every baseline: terms of ``base`` (name or ``{"name": ..., **params}``) plus "total".

    Args:
        input: ``(B, C, *spatial)`` logits (``sigmoid``/``softmax``) or probabilities.
        target: binary ``(B, C, *spatial)`` (or class indices ``(B, 1, *spatial)`` with ``to_onehot_y``).
        base: baseline name or dict with its MONAI parameters.
        **activation: ``sigmoid``, ``softmax``, ``include_background``, ``to_onehot_y``.

    Returns:
        dict with the baseline's terms (e.g. ``"dice"``, ``"ce"``) and ``"total"``.
    """
    act = ActivationConfig(**activation)
    spec = make_base_spec(base)
    return baseline_terms(spec, act.prepare(input, target))


class BaselineLoss(TermLoss):
    """A registered pixel-wise baseline: ``forward`` and ``terms`` both run :func:`baseline_terms`."""

    base_name = "dice"

    def __init__(
        self, *, sigmoid: bool = False, softmax: bool = False, include_background: bool = True,
        to_onehot_y: bool = False, **params: Any,
    ) -> None:  # fmt: skip
        super().__init__()
        self.activation = ActivationConfig(sigmoid, softmax, include_background, to_onehot_y)
        self.spec: BaseSpec = make_base_spec({"name": self.base_name, **params}, owner=self.base_name)

    def _terms(self, input: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every named term of the baseline plus ``"total"``."""
        return baseline_terms(self.spec, self.activation.prepare(input, target))


class DiceLoss(BaselineLoss):
    """MONAI ``DiceLoss``: ``1 - (2 sum(p y) + smooth_nr) / (sum(p) + sum(y) + smooth_dr)`` per (image, channel), mean.

    Args:
        sigmoid, softmax, include_background, to_onehot_y: MONAI activation options.
        squared_pred: squares in the denominator. jaccard: Jaccard form. smooth_nr, smooth_dr: smoothing (1e-5).
        batch: sum over the batch before the ratio.
    """

    base_name = "dice"

    def __init__(
        self, *, sigmoid: bool = False, softmax: bool = False, include_background: bool = True,
        to_onehot_y: bool = False, squared_pred: bool = False, jaccard: bool = False, smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5, batch: bool = False,
    ) -> None:  # fmt: skip
        super().__init__(
            sigmoid=sigmoid, softmax=softmax, include_background=include_background, to_onehot_y=to_onehot_y,
            squared_pred=squared_pred, jaccard=jaccard, smooth_nr=smooth_nr, smooth_dr=smooth_dr, batch=batch,
        )  # fmt: skip


class BCELoss(BaselineLoss):
    """Binary cross-entropy, mean over voxels and channels (from logits with ``sigmoid=True``, stable)."""

    base_name = "bce"

    def __init__(
        self, *, sigmoid: bool = False, softmax: bool = False, include_background: bool = True,
        to_onehot_y: bool = False,
    ) -> None:  # fmt: skip
        super().__init__(
            sigmoid=sigmoid, softmax=softmax, include_background=include_background, to_onehot_y=to_onehot_y
        )


class FocalLoss(BaselineLoss):
    """MONAI sigmoid ``FocalLoss``: ``-alpha_t (1 - p_t)^gamma log(p_t)``, mean over voxels and channels."""

    base_name = "focal"

    def __init__(
        self, *, sigmoid: bool = False, softmax: bool = False, include_background: bool = True,
        to_onehot_y: bool = False, gamma: float = 2.0, alpha: float | None = None,
    ) -> None:  # fmt: skip
        super().__init__(
            sigmoid=sigmoid, softmax=softmax, include_background=include_background, to_onehot_y=to_onehot_y,
            gamma=gamma, alpha=alpha,
        )  # fmt: skip


class DiceCELoss(BaselineLoss):
    """MONAI ``DiceCELoss``: ``lambda_dice * Dice + lambda_ce * BCE``."""

    base_name = "dicece"

    def __init__(
        self, *, sigmoid: bool = False, softmax: bool = False, include_background: bool = True,
        to_onehot_y: bool = False, squared_pred: bool = False, jaccard: bool = False, smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5, batch: bool = False, lambda_dice: float = 1.0, lambda_ce: float = 1.0,
    ) -> None:  # fmt: skip
        super().__init__(
            sigmoid=sigmoid, softmax=softmax, include_background=include_background, to_onehot_y=to_onehot_y,
            squared_pred=squared_pred, jaccard=jaccard, smooth_nr=smooth_nr, smooth_dr=smooth_dr, batch=batch,
            lambda_dice=lambda_dice, lambda_ce=lambda_ce,
        )  # fmt: skip


class DiceFocalLoss(BaselineLoss):
    """MONAI ``DiceFocalLoss``: ``lambda_dice * Dice + lambda_focal * Focal``."""

    base_name = "dicefocal"

    def __init__(
        self, *, sigmoid: bool = False, softmax: bool = False, include_background: bool = True,
        to_onehot_y: bool = False, squared_pred: bool = False, jaccard: bool = False, smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5, batch: bool = False, gamma: float = 2.0, alpha: float | None = None,
        lambda_dice: float = 1.0, lambda_focal: float = 1.0,
    ) -> None:  # fmt: skip
        super().__init__(
            sigmoid=sigmoid, softmax=softmax, include_background=include_background, to_onehot_y=to_onehot_y,
            squared_pred=squared_pred, jaccard=jaccard, smooth_nr=smooth_nr, smooth_dr=smooth_dr, batch=batch,
            gamma=gamma, alpha=alpha, lambda_dice=lambda_dice, lambda_focal=lambda_focal,
        )  # fmt: skip


class GeneralizedDiceFocalLoss(BaselineLoss):
    """MONAI ``GeneralizedDiceFocalLoss``: ``lambda_gdl * GDL + lambda_focal * Focal`` (GDL weights ``w_type``)."""

    base_name = "gdicefocal"

    def __init__(
        self, *, sigmoid: bool = False, softmax: bool = False, include_background: bool = True,
        to_onehot_y: bool = False, w_type: str = "square", smooth_nr: float = 1e-5, smooth_dr: float = 1e-5,
        batch: bool = False, gamma: float = 2.0, alpha: float | None = None, lambda_gdl: float = 1.0,
        lambda_focal: float = 1.0,
    ) -> None:  # fmt: skip
        super().__init__(
            sigmoid=sigmoid, softmax=softmax, include_background=include_background, to_onehot_y=to_onehot_y,
            w_type=w_type, smooth_nr=smooth_nr, smooth_dr=smooth_dr, batch=batch, gamma=gamma, alpha=alpha,
            lambda_gdl=lambda_gdl, lambda_focal=lambda_focal,
        )  # fmt: skip
