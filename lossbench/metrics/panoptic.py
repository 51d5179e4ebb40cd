"""Panoptic quality of instance segmentations, with panoptica's semantics (BrainLesion/panoptica).

Instances are the connected components of each binary mask. A (prediction, target) pair is a *candidate* when
its IoU reaches ``iou_threshold``; candidates are matched one-to-one, greedily by descending IoU (ties: smaller
target index, then smaller prediction index first). Per subject::

    tp = matched pairs,  fp = n_pred - tp,  fn = n_target - tp
    rq = tp / (tp + (fp + fn) / 2)                      recognition quality (an F1 score)
    sq = mean IoU of the matched pairs                  segmentation quality
    pq = sq * rq                                        panoptic quality
    sq_dsc = mean Dice of the matched pairs,  pq_dsc = sq_dsc * rq

Empty cases (panoptica's defaults, kept as they are):

* prediction and target both without instances: ``pq, sq, rq, pq_dsc, sq_dsc`` are NaN (nothing to recognise;
  a study's mean over subjects skips them);
* no match (``tp = 0``) with instances on either side, including an empty target with predictions and an empty
  prediction with targets: all five are 0.

With ``iou_threshold >= 0.5`` a component can have at most one candidate partner (two disjoint components cannot
both cover more than half of it), so every candidate is matched; below 0.5 the greedy step decides.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lossbench.cc.api import resolve_connectivity
from lossbench.errors import expect
from lossbench.metrics.matching import InstanceMatch, check_spacing, match_validated, validate_pair

__all__ = ["panoptic_metrics", "panoptic_from_match", "greedy_matching", "check_iou_threshold"]

#: Keys of :func:`panoptic_metrics`, in order.
PANOPTIC_KEYS = ("pq", "sq", "rq", "pq_dsc", "sq_dsc", "tp", "fp", "fn", "n_pred", "n_target", "connectivity")


def check_iou_threshold(value: Any) -> float:
    """Validate ``iou_threshold`` (a number in (0, 1]) and return it as a float.

    Raises:
        ConfigError: not a number in (0, 1].
    """
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
    if not ok or not math.isfinite(value) or not 0 < value <= 1:
        raise expect("iou_threshold", "a number in (0, 1]", repr(value))
    return float(value)


def greedy_matching(a: np.ndarray, b: np.ndarray, score: np.ndarray) -> np.ndarray:
    """One-to-one greedy matching of weighted pairs: take pairs by descending score while both ends are free.

    Order: descending ``score``, ties by ascending ``b``, then ascending ``a`` (a strict total order). Computed in
    rounds without a loop over pairs: a pair that comes first (in that order) among the remaining pairs of both its
    ends is matched, the pairs touching a matched end are removed, and the rounds repeat. With a strict total order
    this is exactly the sequential greedy matching (the first remaining pair is always taken, and a taken pair was
    preceded only by pairs that lost an end). When no end occurs twice, one round matches everything.

    Args:
        a: ``(P,)`` int64 first-end ids (e.g. prediction instances), >= 0.
        b: ``(P,)`` int64 second-end ids (e.g. target instances), >= 0.
        score: ``(P,)`` float scores.

    Returns:
        ``(P,)`` bool, whether each pair is matched.
    """
    n = len(a)
    matched = np.zeros(n, dtype=bool)
    if n == 0:
        return matched
    rank = np.empty(n, dtype=np.int64)
    rank[np.lexsort((a, b, -score))] = np.arange(n)
    alive = np.ones(n, dtype=bool)
    size_a, size_b = int(a.max()) + 1, int(b.max()) + 1
    while alive.any():
        idx = np.flatnonzero(alive)
        first_a = np.full(size_a, n, dtype=np.int64)
        first_b = np.full(size_b, n, dtype=np.int64)
        np.minimum.at(first_a, a[idx], rank[idx])
        np.minimum.at(first_b, b[idx], rank[idx])
        take = idx[(first_a[a[idx]] == rank[idx]) & (first_b[b[idx]] == rank[idx])]
        matched[take] = True
        used_a = np.zeros(size_a, dtype=bool)
        used_b = np.zeros(size_b, dtype=bool)
        used_a[a[take]] = True
        used_b[b[take]] = True
        alive[idx] = ~(used_a[a[idx]] | used_b[b[idx]])
    return matched


def panoptic_from_match(match: InstanceMatch, *, iou_threshold: float = 0.5) -> list[dict[str, Any]]:
    """Panoptic quality of every subject of an :class:`~lossbench.metrics.matching.InstanceMatch`.

    Vectorised: IoU and Dice of every overlapping pair from the pair table, :func:`greedy_matching` over the
    candidates of the whole batch (pairs never cross subjects), per-subject sums by ``bincount``.

    Returns:
        One dict per subject (keys as in :func:`panoptic_metrics`), always a list.

    Raises:
        ConfigError: bad ``iou_threshold``.
    """
    thr = check_iou_threshold(iou_threshold)
    ov = match.pair_overlap.astype(np.float64)
    size_p = match.pred_sizes[match.pair_pred].astype(np.float64)
    size_t = match.target_sizes[match.pair_target].astype(np.float64)
    iou = ov / (size_p + size_t - ov)
    dice = 2.0 * ov / (size_p + size_t)
    cand = np.flatnonzero(iou >= thr)
    won = cand[greedy_matching(match.pair_pred[cand], match.pair_target[cand], iou[cand])]
    image = match.pred_image[match.pair_pred[won]]
    b = match.batch_size
    tp = np.bincount(image, minlength=b)
    iou_sum = np.bincount(image, weights=iou[won], minlength=b)
    dice_sum = np.bincount(image, weights=dice[won], minlength=b)
    out = []
    for i in range(b):
        n_p, n_t, t = int(match.n_pred[i]), int(match.n_target[i]), int(tp[i])
        fp, fn = n_p - t, n_t - t
        if n_p + n_t == 0:
            rq = sq = sq_dsc = float("nan")
        elif t == 0:
            rq = sq = sq_dsc = 0.0
        else:
            rq = t / (t + 0.5 * (fp + fn))
            sq, sq_dsc = float(iou_sum[i]) / t, float(dice_sum[i]) / t
        row = {"pq": sq * rq, "sq": sq, "rq": rq, "pq_dsc": sq_dsc * rq, "sq_dsc": sq_dsc}
        row.update(tp=t, fp=fp, fn=fn, n_pred=n_p, n_target=n_t, connectivity=match.connectivity)
        out.append(row)
    return out


def panoptic_metrics(
    pred: Any,
    target: Any,
    *,
    connectivity: int | None = None,
    iou_threshold: float = 0.5,
    spacing: Sequence[float] | None = None,
    batched: bool = False,
) -> dict[str, Any] | list[dict[str, Any]]:
    """Panoptic quality (PQ = SQ x RQ) of one subject (or each subject of a batch), panoptica's semantics.

    Math: see the module docstring. Example: a target of two lesions, a prediction that finds one exactly and
    covers a third of the other (IoU 1/3 < 0.5, unmatched)::

        target        pred
        1 1 . 1 1 1   1 1 . 1 . .
        1 1 . . . .   1 1 . . . .

        tp = 1, fp = 1, fn = 1: rq = 1 / (1 + 1) = 0.5, sq = 1.0, pq = 0.5

    Args:
        pred: binary prediction (bool or 0/1), numpy or torch, ``(*spatial)`` (2D/3D) or ``(B, *spatial)`` with
            ``batched=True``.
        target: binary target, same shape.
        connectivity: orthogonal hops for the components; ``None`` = full (8 in 2D, 26 in 3D).
        iou_threshold: a pair is a match candidate when its IoU is >= this (panoptica's default 0.5).
        spacing: voxel size per axis. Validated only: IoU and Dice are voxel-count ratios, which spacing does not
            change (accepted so that every metric function takes the same arguments).
        batched: whether the first axis is a batch of subjects.

    Returns:
        A dict (a list of dicts with ``batched=True``): ``pq``, ``sq``, ``rq``, ``pq_dsc``, ``sq_dsc`` (floats, NaN
        when both masks are empty), ``tp``, ``fp``, ``fn``, ``n_pred``, ``n_target`` (ints), ``connectivity``.

    Raises:
        ShapeError, DataError: as :func:`~lossbench.metrics.atlas_metrics`.
        ConfigError: bad ``connectivity``, ``iou_threshold`` or ``spacing``.

    Example:
        >>> import numpy as np
        >>> t = np.array([[1, 1, 0, 1, 1, 1], [1, 1, 0, 0, 0, 0]], bool)
        >>> p = np.array([[1, 1, 0, 1, 0, 0], [1, 1, 0, 0, 0, 0]], bool)
        >>> m = panoptic_metrics(p, t)
        >>> m["tp"], m["fp"], m["fn"], m["rq"], m["sq"], m["pq"]
        (1, 1, 1, 0.5, 1.0, 0.5)
    """
    p, t = validate_pair(pred, target, batched=batched)
    conn = resolve_connectivity(connectivity, p.ndim - 1)
    check_iou_threshold(iou_threshold)
    check_spacing(spacing, p.ndim - 1)
    rows = panoptic_from_match(match_validated(p, t, connectivity=conn, batched=batched), iou_threshold=iou_threshold)
    return rows if batched else rows[0]
