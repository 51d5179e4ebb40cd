"""One labelling for all per-subject metrics, and the study-level aggregates of the ICI paper's tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from lossbench.cc.api import resolve_connectivity
from lossbench.errors import DataError, expect
from lossbench.metrics.atlas import atlas_from_match
from lossbench.metrics.detection import DEFAULT_SIZE_BINS, check_size_bins, detection_from_match
from lossbench.metrics.matching import check_spacing, match_validated, validate_pair
from lossbench.metrics.panoptic import check_iou_threshold, panoptic_from_match
from lossbench.metrics.per_component import cc_from_match

__all__ = ["subject_metrics", "study_aggregates", "STUDY_AGGREGATES"]

#: Keys of :func:`study_aggregates`, in the order of the paper's Table 1 (after ``n_subjects``).
STUDY_AGGREGATES = (
    "n_subjects",
    "total_mi",
    "subjects_with_mi",
    "subjects_all_mi",
    "total_fi",
    "subjects_with_fi",
    "subjects_without_mi_fi",
)


def subject_metrics(
    pred: Any,
    target: Any,
    *,
    connectivity: int | None = 1,
    spacing: Sequence[float] | None = None,
    size_bins: Sequence[int] = DEFAULT_SIZE_BINS,
    iou_threshold: float = 0.5,
    batched: bool = False,
) -> dict[str, Any] | list[dict[str, Any]]:
    """Every per-subject metric (ATLAS R2.0, detection, panoptic quality, CC-Dice) from one labelling.

    Equal to ``{**atlas_metrics(...), **detection_metrics(...), **panoptic_metrics(...), **cc_metrics(...)}`` with
    the same ``connectivity``, without ``cc_dice_components`` (a list per subject does not fit a per-subject table):
    each mask is labelled once and every family reads the same instances and overlaps.

    Args:
        pred: binary prediction, ``(*spatial)`` or ``(B, *spatial)`` with ``batched=True``; numpy or torch.
        target: binary target of the same shape.
        connectivity: orthogonal hops for every metric family (default 1, the ATLAS challenge's, so the panoptic
            and CC-Dice instances are the challenge's lesions too); ``None`` = full.
        spacing: voxel size in mm per axis (adds ``volume_difference_ml``; the CC-Dice regions use it).
        size_bins: instance-size bin edges in voxels (see :mod:`lossbench.metrics.detection`).
        iou_threshold: panoptic match threshold (see :func:`~lossbench.metrics.panoptic_metrics`).
        batched: whether the first axis is a batch of subjects.

    Returns:
        One dict (a list of dicts with ``batched=True``) with the keys of the four metric functions (but
        ``cc_dice_components``).

    Raises:
        ShapeError, DataError, ConfigError: as the metric functions.
    """
    p, t = validate_pair(pred, target, batched=batched)
    conn = resolve_connectivity(connectivity, p.ndim - 1)
    check_spacing(spacing, p.ndim - 1)
    check_size_bins(size_bins)
    check_iou_threshold(iou_threshold)
    match = match_validated(p, t, connectivity=conn, batched=batched)
    families = (
        atlas_from_match(match, spacing=spacing),
        detection_from_match(match, size_bins=size_bins),
        panoptic_from_match(match, iou_threshold=iou_threshold),
        cc_from_match(match, spacing=spacing),
    )
    rows = []
    for parts in zip(*families):
        row: dict[str, Any] = {}
        for part in parts:
            row.update(part)
        del row["cc_dice_components"]
        rows.append(row)
    return rows if batched else rows[0]


def study_aggregates(per_subject: pd.DataFrame | Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Study-level missed / false instance counts of one method (the ICI paper's Tables 1 and 3).

    With ``MI_s`` / ``FI_s`` the missed / false instances and ``N_s`` the target instances of subject s::

        total_mi               = sum_s MI_s
        subjects_with_mi       = #{s : MI_s > 0}
        subjects_all_mi        = #{s : N_s > 0 and MI_s = N_s}     ('all MI': every instance missed;
                                                                   subjects without instances never count)
        total_fi               = sum_s FI_s
        subjects_with_fi       = #{s : FI_s > 0}
        subjects_without_mi_fi = #{s : MI_s = 0 and FI_s = 0}

    Args:
        per_subject: one row per subject with integer columns ``missed``, ``false`` and ``n_target``
            (the output of :func:`~lossbench.metrics.detection_metrics`, e.g. ``pd.DataFrame(list_of_dicts)``).

    Returns:
        Dict with the keys of :data:`STUDY_AGGREGATES` (ints).

    Raises:
        DataError: missing columns, no rows, or NaN / negative / non-integer counts, or ``missed > n_target``.
    """
    df = per_subject if isinstance(per_subject, pd.DataFrame) else pd.DataFrame(list(per_subject))
    need = ("missed", "false", "n_target")
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise expect("per_subject", f"a table with columns {list(need)}", f"columns {list(df.columns)}", cls=DataError)
    if len(df) == 0:
        raise expect("per_subject", "a table with at least one subject", "an empty table", cls=DataError)
    cols = {}
    for c in need:
        v = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(v)) or np.any(v < 0) or np.any(v != np.round(v)):
            raise expect(
                "per_subject", f"non-negative integer counts in column {c!r}", f"{df[c].tolist()[:5]}", cls=DataError
            )
        cols[c] = v.astype(np.int64)
    mi, fi, nt = cols["missed"], cols["false"], cols["n_target"]
    if np.any(mi > nt):
        raise expect("per_subject", "missed <= n_target in every row", "a row with missed > n_target", cls=DataError)
    return {
        "n_subjects": int(len(df)),
        "total_mi": int(mi.sum()),
        "subjects_with_mi": int((mi > 0).sum()),
        "subjects_all_mi": int(((nt > 0) & (mi == nt)).sum()),
        "total_fi": int(fi.sum()),
        "subjects_with_fi": int((fi > 0).sum()),
        "subjects_without_mi_fi": int(((mi == 0) & (fi == 0)).sum()),
    }
