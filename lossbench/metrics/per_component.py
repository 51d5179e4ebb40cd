"""CC-Metrics (Jaus et al., "Every Component Counts"): Dice inside the Voronoi region of every target component.

Space is split among the target's components: every voxel belongs to the region of its nearest component
(Euclidean distance, with ``spacing``; ties to the smallest component id, see :mod:`lossbench.cc.voronoi`). Inside
region ``R_k`` of component ``C_k``, with ``P`` the predicted voxels::

    dice_k = 2 |P ∩ C_k| / (|P ∩ R_k| + |C_k|)          (C_k ⊆ R_k, so the denominator is > 0)
    cc_dice = mean_k dice_k                               (one subject: the mean over its components,
                                                           CC-Metrics' "patient" aggregation)
    cc_missed = #{k : |P ∩ R_k| = 0}                      (no predicted voxel anywhere in the component's
                                                           region, as CC-Metrics counts missed components)

A predicted blob far from every lesion still lowers the Dice of the lesion whose region holds it; a small lesion
counts as much as a large one. ``cc_missed`` differs from the detection metrics' ``missed`` (no predicted voxel
*on* the component): a component with predicted voxels near it but none on it is missed there, not here (its
``dice_k`` is 0 either way).

Empty target (no component): ``cc_dice`` = 1.0 if the prediction is empty too, else 0.0 (CC-Metrics' policy);
``cc_dice_components`` is empty and ``cc_missed`` 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lossbench.cc.api import resolve_connectivity
from lossbench.cc.nearest import regions_at
from lossbench.metrics.matching import InstanceMatch, check_spacing, match_validated, validate_pair

__all__ = ["cc_metrics", "cc_from_match", "outside_per_region"]


def outside_per_region(match: InstanceMatch, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Per target component (global index), the predicted voxels outside the target in its Voronoi region.

    ``|P ∩ R_k| = |P ∩ C_k| + outside_k``: predicted voxels on a component lie in its region, so only those outside
    the target need the regions, computed once per subject that has two or more components, on the bounding box of
    its target and of those voxels (:func:`lossbench.cc.voronoi.regions_at`).

    Returns:
        ``(sum n_target,)`` int64.
    """
    sp = check_spacing(spacing, match.spatial_dims)
    n_t = len(match.target_sizes)
    per_image = int(np.prod(match.spatial_shape))
    outside = match.fg_pos[(match.fg_pred > 0) & (match.fg_target == 0)]
    image = outside // per_image
    region = np.zeros(len(outside), dtype=np.int64)  # global target id + 1; 0 = the subject has no component
    first_id = np.cumsum(match.n_target) - match.n_target + 1
    one = match.n_target[image] == 1
    region[one] = first_id[image[one]]
    sites = match.fg_target > 0
    site_pos, site_ids = match.fg_pos[sites], match.fg_target[sites]
    site_image = site_pos // per_image
    # positions ascend, so every subject's voxels are one slice of each array
    images = np.arange(match.batch_size + 1)
    q_at, s_at = np.searchsorted(image, images), np.searchsorted(site_image, images)
    for b in np.unique(image[match.n_target[image] >= 2]):
        q, s = slice(q_at[b], q_at[b + 1]), slice(s_at[b], s_at[b + 1])
        coords = np.stack(np.unravel_index(site_pos[s] % per_image, match.spatial_shape), 1)
        query = np.stack(np.unravel_index(outside[q] % per_image, match.spatial_shape), 1)
        region[q] = regions_at(coords, site_ids[s], query, sp)
    return np.bincount(region, minlength=n_t + 1)[1:]


def cc_from_match(match: InstanceMatch, *, spacing: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """CC-Metrics of every subject of an :class:`~lossbench.metrics.matching.InstanceMatch`, keys of :func:`cc_metrics`.

    Raises:
        ConfigError: bad ``spacing``.
    """
    n_t = len(match.target_sizes)
    inter = np.rint(np.bincount(match.pair_target, weights=match.pair_overlap, minlength=n_t)).astype(np.int64)
    pred_in_region = inter + outside_per_region(match, spacing)
    dice = 2.0 * inter / (pred_in_region + match.target_sizes)
    missed = match.per_subject(pred_in_region == 0, match.target_image)
    dice_sum = np.bincount(match.target_image, weights=dice, minlength=match.batch_size)
    ends = np.cumsum(match.n_target)
    out = []
    for b in range(match.batch_size):
        k = int(match.n_target[b])
        if k:
            value = float(dice_sum[b]) / k
        else:
            value = 1.0 if match.pred_volume[b] == 0 else 0.0
        components = [float(d) for d in dice[ends[b] - k : ends[b]]]
        out.append(
            {
                "cc_dice": value,
                "cc_dice_components": components,
                "cc_missed": int(missed[b]),
                "n_target": k,
                "connectivity": match.connectivity,
            }
        )
    return out


def cc_metrics(
    pred: Any,
    target: Any,
    *,
    connectivity: int | None = None,
    spacing: Sequence[float] | None = None,
    batched: bool = False,
) -> dict[str, Any] | list[dict[str, Any]]:
    """CC-Dice of one subject (or each subject of a batch): the mean Dice inside the target components' Voronoi regions.

    Math: see the module docstring. Example: two target components; the prediction covers the left one exactly
    and adds a spurious voxel at the right border, nearest to the right component, which it misses::

        target           pred             regions
        1 . . . . 1 .    1 . . . . . .    1 1 1 2 2 2 2
        1 . . . . . .    1 . . . . . 1    1 1 1 2 2 2 2

        dice_1 = 2*2 / (2 + 2) = 1,  dice_2 = 2*0 / (1 + 1) = 0:  cc_dice = 0.5, cc_missed = 0

    Args:
        pred: binary prediction (bool or 0/1), numpy or torch, ``(*spatial)`` (2D/3D) or ``(B, *spatial)`` with
            ``batched=True``.
        target: binary target, same shape.
        connectivity: orthogonal hops for the target's components; ``None`` = full (8 in 2D, 26 in 3D).
        spacing: voxel size per axis (the regions use Euclidean distance in these units); ``None`` = 1.
        batched: whether the first axis is a batch of subjects.

    Returns:
        A dict (a list of dicts with ``batched=True``): ``cc_dice`` (float), ``cc_dice_components`` (list of floats,
        the components in label order), ``cc_missed`` (int), ``n_target`` (int), ``connectivity``.

    Raises:
        ShapeError, DataError: as :func:`~lossbench.metrics.atlas_metrics`.
        ConfigError: bad ``connectivity`` or ``spacing``.

    Example:
        >>> import numpy as np
        >>> t = np.zeros((2, 7), bool); t[:, 0] = True; t[0, 5] = True
        >>> p = np.zeros((2, 7), bool); p[:, 0] = True; p[1, 6] = True
        >>> m = cc_metrics(p, t)
        >>> m["cc_dice"], m["cc_dice_components"], m["cc_missed"]
        (0.5, [1.0, 0.0], 0)
    """
    p, t = validate_pair(pred, target, batched=batched)
    conn = resolve_connectivity(connectivity, p.ndim - 1)
    check_spacing(spacing, p.ndim - 1)
    rows = cc_from_match(match_validated(p, t, connectivity=conn, batched=batched), spacing=spacing)
    return rows if batched else rows[0]
