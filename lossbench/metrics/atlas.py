"""ATLAS R2.0 (MICCAI 2022) challenge metrics, per subject.

Definitions (P = predicted voxels, T = target voxels, instances = connected components with the given
connectivity; the challenge used face connectivity, ``connectivity=1``, ISLES'22 used full)::

    dice                 = 2 |P ∩ T| / (|P| + |T|)                  1.0 if both are empty
    volume_difference    = | |P| - |T| |   (voxels)                 (+ volume_difference_ml with `spacing`)
    simple_lesion_count  = | N_pred - N_true |
    lesionwise_f1        = TP / (TP + (FP + FN) / 2)                1.0 if both are empty
        TP = target instances with >= 1 predicted voxel, FN = the other target instances,
        FP = predicted instances that overlap no target voxel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lossbench.cc.api import resolve_connectivity
from lossbench.metrics.matching import InstanceMatch, check_spacing, match_validated, validate_pair

__all__ = ["atlas_metrics", "atlas_from_match"]


def atlas_from_match(match: InstanceMatch, *, spacing: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """ATLAS R2.0 metrics of every subject of an :class:`~lossbench.metrics.matching.InstanceMatch`.

    Args:
        match: the labelled and matched pair (see :func:`~lossbench.metrics.matching.match_instances`).
        spacing: voxel size in mm per spatial axis; adds ``volume_difference_ml``.

    Returns:
        One dict per subject (keys as in :func:`atlas_metrics`), always a list.

    Raises:
        ConfigError: bad ``spacing``.
    """
    sp = check_spacing(spacing, match.spatial_dims)
    p_vol, t_vol, inter = match.pred_volume, match.target_volume, match.intersection
    denom = p_vol + t_vol
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(denom > 0, 2.0 * inter / np.maximum(denom, 1), 1.0)
    tp = match.per_subject(match.target_hit, match.target_image)
    fn = match.n_target - tp
    fp = match.n_pred - match.per_subject(match.pred_hit, match.pred_image)
    f1_den = tp + 0.5 * (fp + fn)
    f1 = np.where(f1_den > 0, tp / np.maximum(f1_den, 0.5), 1.0)
    vd = np.abs(p_vol - t_vol)
    voxel_ml = float(np.prod(sp)) / 1000.0 if sp is not None else None
    out = []
    for b in range(match.batch_size):
        row: dict[str, Any] = {"dice": float(dice[b]), "volume_difference": int(vd[b])}
        if voxel_ml is not None:
            row["volume_difference_ml"] = float(vd[b]) * voxel_ml
        row.update(
            simple_lesion_count=int(abs(match.n_pred[b] - match.n_target[b])),
            lesionwise_f1=float(f1[b]),
            lesion_tp=int(tp[b]),
            lesion_fp=int(fp[b]),
            lesion_fn=int(fn[b]),
            connectivity=match.connectivity,
        )
        out.append(row)
    return out


def atlas_metrics(
    pred: Any,
    target: Any,
    *,
    connectivity: int | None = 1,
    spacing: Sequence[float] | None = None,
    batched: bool = False,
) -> dict[str, Any] | list[dict[str, Any]]:
    """ATLAS R2.0 challenge metrics of one subject (or of each subject of a batch).

    Math (P, T voxel sets; TP/FP/FN instance counts, see the module docstring)::

        dice = 2|P∩T| / (|P|+|T|),  volume_difference = ||P|-|T||,  simple_lesion_count = |N_pred-N_true|,
        lesionwise_f1 = TP / (TP + (FP+FN)/2);  dice = lesionwise_f1 = 1 when P and T are both empty.

    Connectivity changes the instance counts: two lesions touching only at a corner are two instances
    with ``connectivity=1`` and one with full connectivity::

        1 1 . .
        1 1 . .       connectivity=1: N = 2      connectivity=None (full): N = 1
        . . 1 1
        . . 1 1

    Args:
        pred: binary prediction (bool or 0/1), numpy or torch, shape ``(*spatial)`` (2D or 3D), or
            ``(B, *spatial)`` with ``batched=True``.
        target: binary target, same shape.
        connectivity: orthogonal hops (1 = faces, the challenge's choice; ``None`` = full). Reported in the output.
        spacing: voxel size in mm per spatial axis; adds ``volume_difference_ml`` (1 mL = 1000 mm^3).
        batched: whether the first axis is a batch of subjects.

    Returns:
        A dict (a list of dicts with ``batched=True``) with ``dice`` (float), ``volume_difference`` (int,
        voxels), ``volume_difference_ml`` (float, only with ``spacing``), ``simple_lesion_count`` (int),
        ``lesionwise_f1`` (float), ``lesion_tp``, ``lesion_fp``, ``lesion_fn`` (ints) and ``connectivity``
        (int, hops actually used).

    Raises:
        ShapeError: shapes differ or are not 2D/3D (+ batch).
        DataError: masks are not binary or not arrays/tensors.
        ConfigError: bad ``connectivity`` or ``spacing``.

    Example:
        >>> import numpy as np
        >>> t = np.zeros((4, 4), bool); t[:2, :2] = True; t[2:, 2:] = True
        >>> p = np.zeros((4, 4), bool); p[:2, :2] = True
        >>> m = atlas_metrics(p, t)
        >>> m["dice"], m["lesionwise_f1"], m["simple_lesion_count"]
        (0.6666666666666666, 0.6666666666666666, 1)
    """
    p, t = validate_pair(pred, target, batched=batched)
    conn = resolve_connectivity(connectivity, p.ndim - 1)
    check_spacing(spacing, p.ndim - 1)
    rows = atlas_from_match(match_validated(p, t, connectivity=conn, batched=batched), spacing=spacing)
    return rows if batched else rows[0]
