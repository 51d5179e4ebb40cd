"""ICI (Eq. 1) and DICI (Eq. 6) losses of Rachmadi, Poon and Skibbe, vectorised over instances.

With no options, ``ici`` and ``dici`` are the published loss: what the authors' public code computes (its
``-TP`` rule, constant center cubes, its caps on prediction components), with exact labelling instead of its
fixed-iteration max-pooling. lossbench's own designs (Eq. 5's pure set difference, a trainable center term, no
caps) are options, and ``reference=False`` selects all of them.

The package, one concern per module:

* :mod:`~lossbench.losses.ici.options`: the option table (defaults, lossbench's values, help, checks).
* :mod:`~lossbench.losses.ici.structure`: labelling, caps, ids at the foreground voxels, the pair table.
* :mod:`~lossbench.losses.ici.geometry`: which voxels the center cubes cover.
* :mod:`~lossbench.losses.ici.terms`: the term algebra (Eq. 1, 3, 4, 6).
"""

from __future__ import annotations

from typing import Any

import torch

from lossbench.losses._module import TermLoss
from lossbench.losses.ici.options import (
    CENTER_MODES,
    REDUCTIONS,
    TP_MODES,
    ICIConfig,
    help_table,
    make_config,
    modes,
    options_doc,
    signature,
)
from lossbench.losses.ici.terms import instance_terms

__all__ = [
    "ICIConfig",
    "ICILoss",
    "DICILoss",
    "ici_terms",
    "ici_loss",
    "dici_terms",
    "dici_loss",
    "help_table",
    "modes",
    "TP_MODES",
    "CENTER_MODES",
    "REDUCTIONS",
]


class ICILoss(TermLoss):
    """ICI loss, Eq. 1: ``a * global + b * instance + c * center``; terms "global", "instance", "center".

    "instance": for label instance n, the base loss between the probabilities restricted to the prediction
    components touching n (``prob >= threshold``, labelled on the fly) and the mask of n, as ``tp_mode`` says, mean
    over the label instances of the mini-batch. "center": the base loss between the union of cubes around the label
    components' centers and the union of cubes around the prediction components' centers. "global":
    ``base(prob, label)``. A term whose weight is 0 is neither computed nor returned.
    Shapes: input ``(B, C, *spatial)`` logits or probabilities, target binary of the same shape.
    """

    __doc__ = (__doc__ or "") + options_doc(dual=False)
    dual = False

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.config: ICIConfig = make_config(self.dual, options)

    def _terms(self, input: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        return instance_terms(self.config, self.config.activation.prepare(input, target))


class DICILoss(ICILoss):
    """DICI loss, Eq. 6: ``a * global + b * instance + c * predicted + d * center`` (defaults all 1/4).

    "predicted": for every used prediction component m, the base loss between ``prob * [m]`` and the union of the
    label instances touching m; an image without prediction component contributes one entry, its whole-image
    ``base(prob, label)``; ``tp_mode`` does not affect it. The other terms are those of :class:`ICILoss`.
    """

    __doc__ = (__doc__ or "") + options_doc(dual=True)
    dual = True


ICILoss.__signature__ = signature(dual=False)  # type: ignore[attr-defined]
DICILoss.__signature__ = signature(dual=True)  # type: ignore[attr-defined]


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
