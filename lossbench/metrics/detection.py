"""Instance detection metrics: missed and false instances, overall and per instance-size bin.

Matching rule: a target instance is *detected* when it overlaps the prediction by >= 1 voxel, else
it is *missed* (MI); a predicted instance is *false* (FI) when it overlaps no target voxel. Sizes are
voxel counts; a missed instance is binned by its (target) size, a false instance by its (predicted)
size. ``size_bins=(10, 100, 1000)`` means the bins ``[1, 10), [10, 100), [100, 1000), [1000, inf)``,
named ``1_10``, ``10_100``, ``100_1000``, ``1000_inf`` in the output keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lossbench.cc.api import resolve_connectivity
from lossbench.errors import expect
from lossbench.metrics.matching import InstanceMatch, match_validated, validate_pair

__all__ = ["DEFAULT_SIZE_BINS", "detection_metrics", "detection_from_match", "check_size_bins", "bin_names"]

#: Default instance-size bin edges in voxels: [1, 10), [10, 100), [100, 1000), [1000, inf).
DEFAULT_SIZE_BINS: tuple[int, ...] = (10, 100, 1000)


def check_size_bins(size_bins: Sequence[int]) -> tuple[int, ...]:
    """Validate size-bin edges (strictly increasing integers >= 2, may be empty) and return them as a tuple.

    Raises:
        ConfigError: if the edges are not strictly increasing integers >= 2.
    """
    want = "a strictly increasing sequence of integer voxel counts >= 2, e.g. (10, 100, 1000)"
    if isinstance(size_bins, (str, bytes)) or not isinstance(size_bins, Sequence | np.ndarray):
        raise expect("size_bins", want, repr(size_bins))
    edges = []
    for e in size_bins:
        if isinstance(e, bool) or not isinstance(e, (int, np.integer)) or int(e) < 2:
            raise expect("size_bins", want, repr(tuple(size_bins)))
        edges.append(int(e))
    if any(b <= a for a, b in zip(edges, edges[1:])):
        raise expect("size_bins", want, repr(tuple(size_bins)))
    return tuple(edges)


def bin_names(size_bins: Sequence[int]) -> list[str]:
    """Names of the bins of ``size_bins``: ``(10, 100)`` -> ``["1_10", "10_100", "100_inf"]``."""
    edges = check_size_bins(size_bins)
    lows = (1, *edges)
    highs = (*(str(e) for e in edges), "inf")
    return [f"{lo}_{hi}" for lo, hi in zip(lows, highs)]


def _binned(match: InstanceMatch, values: np.ndarray, sizes: np.ndarray, image: np.ndarray, edges) -> np.ndarray:
    """``(B, n_bins)`` per-subject, per-size-bin sums of a per-instance 0/1 quantity (one bincount)."""
    n_bins = len(edges) + 1
    bin_idx = np.searchsorted(np.asarray(edges, dtype=np.int64), sizes, side="right")
    counts = np.bincount(
        image * n_bins + bin_idx, weights=np.asarray(values, dtype=np.float64), minlength=match.batch_size * n_bins
    )
    return np.rint(counts).astype(np.int64).reshape(match.batch_size, n_bins)


def detection_from_match(match: InstanceMatch, *, size_bins: Sequence[int] = DEFAULT_SIZE_BINS) -> list[dict[str, Any]]:
    """Detection metrics of every subject of an :class:`~lossbench.metrics.matching.InstanceMatch`.

    Returns:
        One dict per subject (keys as in :func:`detection_metrics`), always a list.

    Raises:
        ConfigError: bad ``size_bins``.
    """
    edges = check_size_bins(size_bins)
    names = bin_names(edges)
    ones_t = np.ones(len(match.target_sizes), dtype=np.int64)
    ones_p = np.ones(len(match.pred_sizes), dtype=np.int64)
    t_args = (match.target_sizes, match.target_image, edges)
    p_args = (match.pred_sizes, match.pred_image, edges)
    n_t_bin = _binned(match, ones_t, *t_args)
    det_bin = _binned(match, match.target_hit, *t_args)
    n_p_bin = _binned(match, ones_p, *p_args)
    false_bin = _binned(match, ~match.pred_hit, *p_args)
    detected = det_bin.sum(axis=1)
    false = false_bin.sum(axis=1)
    out = []
    for b in range(match.batch_size):
        n_t = int(match.n_target[b])
        row: dict[str, Any] = {
            "connectivity": match.connectivity,
            "n_target": n_t,
            "n_pred": int(match.n_pred[b]),
            "detected": int(detected[b]),
            "missed": n_t - int(detected[b]),
            "false": int(false[b]),
            "recall": float(detected[b]) / n_t if n_t else float("nan"),
        }
        for k, name in enumerate(names):
            nt, dt = int(n_t_bin[b, k]), int(det_bin[b, k])
            row[f"n_target_{name}"] = nt
            row[f"detected_{name}"] = dt
            row[f"missed_{name}"] = nt - dt
            row[f"recall_{name}"] = dt / nt if nt else float("nan")
            row[f"n_pred_{name}"] = int(n_p_bin[b, k])
            row[f"false_{name}"] = int(false_bin[b, k])
        out.append(row)
    return out


def detection_metrics(
    pred: Any,
    target: Any,
    *,
    connectivity: int | None = None,
    size_bins: Sequence[int] = DEFAULT_SIZE_BINS,
    batched: bool = False,
) -> dict[str, Any] | list[dict[str, Any]]:
    """Missed / false instances of one subject (or each subject of a batch), overall and per size bin.

    Math (per subject, instances = connected components with ``connectivity``)::

        detected = #{target instance t : |t ∩ P| >= 1},  missed = n_target - detected
        false    = #{predicted instance p : |p ∩ T| = 0},  recall = detected / n_target (NaN if n_target = 0)

    and the same per size bin ``[lo, hi)`` (target size for ``n_target``/``detected``/``missed``/``recall``,
    predicted size for ``n_pred``/``false``).

    Args:
        pred: binary prediction (bool or 0/1), numpy or torch, ``(*spatial)`` (2D/3D) or ``(B, *spatial)``
            with ``batched=True``.
        target: binary target, same shape.
        connectivity: orthogonal hops; ``None`` = full (8 in 2D, 26 in 3D, as the ICI paper's code).
        size_bins: increasing bin edges in voxels, see the module docstring; ``()`` gives a single bin ``1_inf``.
        batched: whether the first axis is a batch of subjects.

    Returns:
        A dict (a list of dicts with ``batched=True``): ``connectivity`` (hops used), ``n_target``, ``n_pred``,
        ``detected``, ``missed``, ``false`` (ints), ``recall`` (float, NaN without target instances), and for
        every bin name ``<lo>_<hi>``: ``n_target_<bin>``, ``detected_<bin>``, ``missed_<bin>``, ``recall_<bin>``,
        ``n_pred_<bin>``, ``false_<bin>``.

    Raises:
        ShapeError: shapes differ or are not 2D/3D (+ batch).
        DataError: masks are not binary or not arrays/tensors.
        ConfigError: bad ``connectivity`` or ``size_bins``.

    Example:
        >>> import numpy as np
        >>> t = np.zeros((8, 8), bool); t[0, 0] = True; t[4:8, 4:8] = True
        >>> p = np.zeros((8, 8), bool); p[5, 5] = True; p[0, 7] = True
        >>> d = detection_metrics(p, t, size_bins=(10,))
        >>> d["missed"], d["false"], d["missed_1_10"], d["detected_10_inf"], d["false_1_10"]
        (1, 1, 1, 1, 1)
    """
    p, t = validate_pair(pred, target, batched=batched)
    conn = resolve_connectivity(connectivity, p.ndim - 1)
    check_size_bins(size_bins)
    rows = detection_from_match(match_validated(p, t, connectivity=conn, batched=batched), size_bins=size_bins)
    return rows if batched else rows[0]
