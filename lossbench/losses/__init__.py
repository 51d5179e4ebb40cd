"""Registered segmentation losses: functional core plus thin ``nn.Module`` wrappers.

Every loss is an ``nn.Module`` with ``forward(input, target) -> scalar`` and
``terms(input, target) -> dict[str, Tensor]`` (every named term, unweighted, plus ``"total"``);
``forward`` is ``terms(...)["total"]`` and both run the loss's single functional implementation.

Example:
    >>> import torch
    >>> from lossbench.losses import build_loss
    >>> loss = build_loss("ici", a=0.25, b=0.5, c=0.25, sigmoid=True)
    >>> x = torch.zeros(1, 1, 8, 8, requires_grad=True)
    >>> y = torch.zeros(1, 1, 8, 8); y[0, 0, 2:4, 2:4] = 1
    >>> sorted(loss.terms(x, y))
    ['center', 'global', 'instance', 'total']
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from lossbench.errors import ConfigError
from lossbench.losses._module import TermLoss
from lossbench.losses.baselines import (
    BCELoss,
    DiceCELoss,
    DiceFocalLoss,
    DiceLoss,
    FocalLoss,
    GeneralizedDiceFocalLoss,
    pixel_terms,
)
from lossbench.losses.blob import BlobLoss, blob_loss, blob_terms
from lossbench.losses.cc_dice import CCDiceCELoss, CCDiceLoss, cc_dice_loss, cc_dice_terms, cc_dicece_loss
from lossbench.losses.ici import (
    DICILoss,
    ICILoss,
    dici_loss,
    dici_terms,
    help_table,
    ici_loss,
    ici_terms,
    modes,
)
from lossbench.losses.inverse_weighting import (
    InverseWeightingLoss,
    inverse_weighting_loss,
    inverse_weighting_terms,
    inverse_weights,
)
from lossbench.registry import Registry

__all__ = [
    "LOSSES",
    "build_loss",
    "list_losses",
    "print_losses",
    "TermLoss",
    "DiceLoss",
    "BCELoss",
    "FocalLoss",
    "DiceCELoss",
    "DiceFocalLoss",
    "GeneralizedDiceFocalLoss",
    "BlobLoss",
    "InverseWeightingLoss",
    "CCDiceLoss",
    "CCDiceCELoss",
    "ICILoss",
    "DICILoss",
    "pixel_terms",
    "blob_terms",
    "blob_loss",
    "ici_terms",
    "ici_loss",
    "dici_terms",
    "dici_loss",
    "inverse_weighting_terms",
    "inverse_weighting_loss",
    "inverse_weights",
    "cc_dice_terms",
    "cc_dice_loss",
    "cc_dicece_loss",
]

#: The closed registry of losses (name -> ``nn.Module`` class).
LOSSES: Registry[nn.Module] = Registry("loss")

_ENTRIES: list[tuple[str, type, str, tuple[str, ...]]] = [
    ("dice", DiceLoss, "Dice loss, MONAI DiceLoss semantics (mean over images and channels)", ("dice",)),
    ("bce", BCELoss, "binary cross-entropy, mean over voxels (from logits with sigmoid=True)", ("bce",)),
    ("focal", FocalLoss, "sigmoid focal loss, MONAI FocalLoss semantics", ("focal",)),
    ("dicece", DiceCELoss, "lambda_dice * Dice + lambda_ce * BCE (MONAI DiceCELoss)", ("dice", "ce")),
    ("dicefocal", DiceFocalLoss, "lambda_dice * Dice + lambda_focal * focal (MONAI DiceFocalLoss)", ("dice", "focal")),
    (
        "gdicefocal",
        GeneralizedDiceFocalLoss,
        "lambda_gdl * generalised Dice + lambda_focal * focal (MONAI GeneralizedDiceFocalLoss)",
        ("gdice", "focal"),
    ),
    (
        "blob",
        BlobLoss,
        "blob loss: alpha * main + beta * mean per-instance loss, other instances masked",
        ("main", "blob"),
    ),
    (
        "inverse_weighting",
        InverseWeightingLoss,
        "inverse weighting: base with voxel weights N/((K+1)|component|) clipped to [1, 2e5]",
        ("weighted",),
    ),
    ("ici", ICILoss, "ICI (Eq. 1): a * global + b * instance + c * center", ("global", "instance", "center")),
    (
        "dici",
        DICILoss,
        "DICI (Eq. 6): a * global + b * instance + c * predicted + d * center",
        ("global", "instance", "predicted", "center"),
    ),
    (
        "cc_dice",
        CCDiceLoss,
        "CC-Dice: mean over label components of the Dice inside each component's Voronoi region",
        ("dice",),
    ),
    (
        "cc_dicece",
        CCDiceCELoss,
        "CC-DiceCE: lambda_dice * CC-Dice + lambda_ce * mean BCE inside each component's Voronoi region",
        ("dice", "ce"),
    ),
]

for _name, _cls, _summary, _terms in _ENTRIES:
    LOSSES.register(_name, summary=_summary, tags=_terms)(_cls)

_HELP = {
    "sigmoid": "input is logits; apply a sigmoid",
    "softmax": "input is logits; apply a softmax over channels",
    "include_background": "keep channel 0 (False drops it; needs C > 1)",
    "to_onehot_y": "target holds class indices (B, 1, ...); one-hot it",
    "squared_pred": "squares in the Dice denominator",
    "jaccard": "Jaccard form of the Dice denominator",
    "smooth_nr": "Dice numerator smoothing",
    "smooth_dr": "Dice denominator smoothing",
    "batch": "sum the Dice over the batch before the ratio",
    "gamma": "focal exponent",
    "alpha": "focal weight of positives (None = unweighted)",
    "lambda_dice": "weight of the Dice part",
    "lambda_ce": "weight of the cross-entropy part",
    "lambda_focal": "weight of the focal part",
    "lambda_gdl": "weight of the generalised Dice part",
    "w_type": "generalised Dice class weight: square, simple, uniform",
    "beta": "weight of the blob term",
    "base": "pixel loss used by every term",
    "clip_min": "lower weight clip",
    "clip_max": "upper weight clip",
    "connectivity": "orthogonal hops; None = full (8 in 2D, 26 in 3D)",
    "cc_backend": "labelling backend: auto (cc3d on CPU, torch on CUDA), cc3d, scipy, torch, maxpool",
}

_HELP_BY_LOSS = {
    "blob": {"alpha": "weight of the main (global) loss", "base": "pixel loss of the main and per-instance terms"},
    "inverse_weighting": {
        "base": "dice_squared | bce | focal",
        "alpha": "focal weight of positives",
        "gamma": "focal exponent",
        "connectivity": "label connectivity; None = full (26 in 3D, as the reference)",
    },
    "ici": help_table(dual=False),
    "dici": help_table(dual=True),
    "cc_dice": {"connectivity": "label connectivity of the components; None = full (8 in 2D, 26 in 3D)"},
    "cc_dicece": {
        "connectivity": "label connectivity of the components; None = full (8 in 2D, 26 in 3D)",
        "lambda_dice": "weight of the per-region Dice",
        "lambda_ce": "weight of the per-region mean BCE",
    },
}
_ACTIVATION = ("sigmoid", "softmax", "include_background", "to_onehot_y")


def build_loss(name_or_dict: str | dict[str, Any], **params: Any) -> nn.Module:
    """Build a registered loss from a name and keyword parameters, or from ``{"name": ..., **params}``.

    Args:
        name_or_dict: registry name (see :func:`list_losses`) or a dict holding ``"name"`` and parameters
            (not modified).
        **params: parameters (given both in the dict and here is an error).

    Returns:
        The loss module.

    Raises:
        RegistryError: unknown name (with a suggestion).
        ConfigError: unknown parameter (with a suggestion), invalid value, or a parameter given twice.
    """
    if isinstance(name_or_dict, dict):
        merged = dict(name_or_dict)
        if "name" not in merged:
            raise ConfigError(f"`loss` dict must have a 'name' key, got keys {sorted(merged)}")
        name = merged.pop("name")
        twice = sorted(set(merged) & set(params))
        if twice:
            raise ConfigError(f"`{twice[0]}` must be given once, got it in the dict and as a keyword")
        merged.update(params)
    else:
        name, merged = name_or_dict, dict(params)
    return LOSSES.build(name, **merged)


def list_losses() -> list[dict[str, Any]]:
    """Every registered loss with its parameters, defaults and one-line meanings.

    Returns:
        One dict per loss: ``name``, ``summary``, ``terms`` (names returned by ``terms()`` besides "total"),
        ``params`` (name -> default), ``help`` (name -> one line). ``ici`` and ``dici`` also carry ``modes``:
        which option values are the published loss's (``reference``, the defaults) and which are lossbench's own
        design (``lossbench``: tp_mode="remove", center_mode="trainable", caps off; set by ``reference=False``).
    """
    out = []
    for entry in LOSSES:
        params = {k: (None if v is inspect.Parameter.empty else v) for k, v in entry.params.items()}
        item: dict[str, Any] = {
            "name": entry.name,
            "summary": entry.summary,
            "terms": list(entry.tags),
            "params": params,
            "help": {k: _HELP_BY_LOSS.get(entry.name, {}).get(k, _HELP.get(k, "")) for k in params},
        }
        if entry.name in ("ici", "dici"):
            item["modes"] = modes(dual=entry.name == "dici")
        out.append(item)
    return out


def _fmt(v: Any) -> str:
    return repr(v) if isinstance(v, str) else str(v)


def print_losses() -> None:
    """Print the registry as a rich table (used by ``lossbench losses``)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title="lossbench losses",
        caption="Every loss also takes the MONAI activation options "
        "sigmoid=False, softmax=False, include_background=True, to_onehot_y=False.",
        show_lines=True,
    )
    table.add_column("name", style="bold")
    table.add_column("meaning")
    table.add_column("terms")
    table.add_column("parameters (default)")
    for item in list_losses():
        params = "\n".join(
            f"{k}={_fmt(v)}  {item['help'][k]}".rstrip() for k, v in item["params"].items() if k not in _ACTIVATION
        )
        meaning = item["summary"]
        if "modes" in item:
            ref = ", ".join(f"{k}={_fmt(v)}" for k, v in item["modes"]["reference"].items())
            own = ", ".join(f"{k}={_fmt(v)}" for k, v in item["modes"]["lossbench"].items())
            meaning += (
                f"\n\ndefault = the published loss (public code, exact labelling): {ref}"
                f"\nlossbench's own design (reference=False, or each option alone): {own}"
            )
        table.add_row(item["name"], meaning, ", ".join(item["terms"]), params)
    Console().print(table)
