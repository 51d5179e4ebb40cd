"""Paper-style ranked tables: dense ranks per metric, mean rank, best / second-best markers.

The ICI paper ranks every method per metric column (the number in square brackets), averages the
ranks into a "Mean Rank", bolds the best value of each column and underlines the second best.
:func:`rank_table` does exactly this, with two explicit rules a table reader can check:

* **Dense ranks**: ties share a rank and the next distinct value gets the next integer
  (values 0.9, 0.9, 0.8 -> ranks 1, 1, 2), in the direction of each metric (``"max"``: higher is
  better, ``"min"``: lower is better).
* **NaN is ranked last and flagged**: a missing value gets rank ``1 + (largest rank of the finite
  values in that column)``, all NaNs of a column share it, and :attr:`RankTable.nan_flags` marks
  the cell. Nothing is dropped silently.

``mean_rank = sum of a method's ranks / divisor`` with ``divisor = number of metric columns`` by
default. The paper's Tables 1 and 3 divide their 7 ranks by 6; ``divisor=6`` reproduces them.

Example:
    >>> import pandas as pd
    >>> v = pd.DataFrame({"dice": [0.41, 0.38, 0.41], "missed": [55, 53, 60]}, index=["ici", "blob", "dice"])
    >>> t = rank_table(v, {"dice": "max", "missed": "min"})
    >>> t.ranks
          dice  missed
    ici      1       2
    blob     2       1
    dice     1       3
    >>> t.mean_rank.tolist()
    [1.5, 1.5, 2.0]
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lossbench.errors import ConfigError, DataError, expect
from lossbench.registry import suggest

__all__ = ["RankTable", "rank_table", "dense_ranks", "DIRECTIONS"]

#: Allowed directions: ``"max"`` = higher is better, ``"min"`` = lower is better.
DIRECTIONS = ("max", "min")


def dense_ranks(values: np.ndarray, higher_is_better: bool, axis: int = -1) -> np.ndarray:
    """Dense ranks along ``axis`` (1 = best), NaN ranked last (one rank after the worst finite value).

    This is the single ranking kernel of lossbench: :func:`rank_table` ranks each column with it and the
    bootstrap in :mod:`lossbench.report.stats` ranks every resample with it.

    Args:
        values: float array of any shape.
        higher_is_better: rank descending (True) or ascending (False).
        axis: axis along which methods are ranked.

    Returns:
        int64 array of the same shape.

    Example:
        >>> dense_ranks(np.array([0.3, np.nan, 0.5, 0.3]), higher_is_better=True).tolist()
        [2, 3, 1, 2]
    """
    v = np.moveaxis(np.asarray(values, dtype=np.float64), axis, -1)
    key = -v if higher_is_better else v
    nan = np.isnan(key)
    key = np.where(nan, np.inf, key)
    order = np.lexsort((key, nan), axis=-1)  # NaNs after everything, even after a real +-inf
    sorted_key = np.take_along_axis(key, order, axis=-1)
    sorted_nan = np.take_along_axis(nan, order, axis=-1)
    # A new rank starts at each change of value; NaNs (sorted last) start one new rank together.
    new = np.ones(sorted_key.shape, dtype=bool)
    new[..., 1:] = (sorted_key[..., 1:] != sorted_key[..., :-1]) | (sorted_nan[..., 1:] != sorted_nan[..., :-1])
    sorted_rank = np.cumsum(new, axis=-1)
    ranks = np.empty_like(sorted_rank)
    np.put_along_axis(ranks, order, sorted_rank, axis=-1)
    return np.moveaxis(ranks.astype(np.int64), -1, axis)


@dataclass(frozen=True)
class RankTable:
    """Result of :func:`rank_table`. Rows are methods (the index of the input), columns are metrics.

    Attributes:
        values: the ranked values (after rounding with ``decimals``), float, methods x metrics.
        directions: ``{metric: "max" | "min"}`` used for each column.
        ranks: int64 dense ranks, methods x metrics (1 = best; NaN cells get the last rank).
        nan_flags: bool, methods x metrics: True where the value was NaN (ranked last, render e.g. "n/a [k]").
        mean_rank: float Series over methods: ``ranks.sum(axis=1) / divisor``.
        overall_rank: int64 Series over methods: dense rank of ``mean_rank`` (lower mean rank = 1).
        divisor: the divisor used for ``mean_rank``.
        best: bool, methods x (metrics + ``"mean_rank"``): rank 1 of each column (bold in the paper). A NaN
            cell is never marked.
        second: bool, same shape: rank 2 of each column (underlined in the paper).

    A renderer writes ``f"{values.at[m, c]:.4f} [{ranks.at[m, c]}]"`` in bold where ``best.at[m, c]`` and
    underlined where ``second.at[m, c]``; the mean-rank column uses ``best.at[m, "mean_rank"]``.
    """

    values: pd.DataFrame
    directions: dict[str, str]
    ranks: pd.DataFrame
    nan_flags: pd.DataFrame
    mean_rank: pd.Series
    overall_rank: pd.Series
    divisor: float
    best: pd.DataFrame
    second: pd.DataFrame

    @property
    def any_nan(self) -> bool:
        """Whether any value was NaN (a renderer should then print a footnote)."""
        return bool(self.nan_flags.to_numpy().any())

    def to_frame(self) -> pd.DataFrame:
        """One tidy table: ``mean_rank``, ``overall_rank``, then ``<metric>`` and ``<metric> rank`` per metric."""
        out = pd.DataFrame({"mean_rank": self.mean_rank, "overall_rank": self.overall_rank})
        for c in self.values.columns:
            out[c] = self.values[c]
            out[f"{c} rank"] = self.ranks[c]
        return out


def _check_divisor(divisor: float | None, n_metrics: int) -> float:
    if divisor is None:
        return float(n_metrics)
    if isinstance(divisor, bool) or not isinstance(divisor, numbers.Real) or not np.isfinite(divisor) or divisor <= 0:
        raise expect("divisor", "None or a positive number", repr(divisor))
    return float(divisor)


def _check_directions(directions: Mapping[str, str], columns: list) -> dict[str, str]:
    if not isinstance(directions, Mapping):
        raise expect(
            "directions",
            "a mapping {metric: 'max' | 'min'}",
            type(directions).__name__,
            hint="lossbench.metrics.metric_directions(columns) builds it from the metric metadata",
        )
    unknown = [k for k in directions if k not in columns]
    if unknown:
        raise expect(
            "directions",
            f"keys among the metric columns {columns}",
            f"unknown metric {unknown[0]!r}",
            hint=suggest(str(unknown[0]), [str(c) for c in columns]).strip(),
        )
    missing = [c for c in columns if c not in directions]
    if missing:
        raise expect(
            "directions",
            "a direction ('max' or 'min') for every metric column",
            f"none for {missing}",
            hint="lossbench.metrics.metric_directions(columns) gives the declared ones",
        )
    out = {}
    for c in columns:
        d = directions[c]
        if d not in DIRECTIONS:
            raise expect(f"directions[{c!r}]", "'max' (higher is better) or 'min' (lower is better)", repr(d))
        out[c] = d
    return out


def rank_table(
    values: pd.DataFrame,
    directions: Mapping[str, str],
    divisor: float | None = None,
    *,
    decimals: int | None = None,
) -> RankTable:
    """Rank methods per metric (dense ranks), average the ranks, mark best and second best.

    Math, for method m and metric column c with direction d_c::

        rank[m, c]   = 1 + #{distinct values of column c strictly better than values[m, c]}   (dense)
        rank[m, c]   = 1 + max finite rank of column c                       if values[m, c] is NaN
        mean_rank[m] = sum_c rank[m, c] / (divisor or number of columns)

    Args:
        values: DataFrame, one row per method (index = method names, unique), one numeric column per metric.
        directions: ``{metric: "max" | "min"}`` for every column (``lossbench.metrics.metric_directions``
            builds it from the metrics' ``higher_is_better``).
        divisor: denominator of the mean rank; ``None`` (default) is the number of metrics, the correct mean.
            The paper's Tables 1 and 3 divided by 6 although they rank 7 metrics.
        decimals: round values to this many decimals before ranking (the paper ranks printed values, so
            values equal when printed tie); ``None`` ranks exact values.

    Returns:
        :class:`RankTable`.

    Raises:
        DataError: ``values`` is not a DataFrame, is empty, has duplicate method names or non-numeric columns.
        ConfigError: missing, unknown or invalid directions; invalid ``divisor`` or ``decimals``.
    """
    if not isinstance(values, pd.DataFrame):
        raise expect("values", "a pandas DataFrame (methods x metrics)", type(values).__name__, cls=DataError)
    if values.shape[0] == 0 or values.shape[1] == 0:
        raise expect(
            "values", "a non-empty table (>= 1 method and >= 1 metric)", f"shape {values.shape}", cls=DataError
        )
    if not values.index.is_unique:
        dup = values.index[values.index.duplicated()].tolist()
        raise expect("values", "one row per method (unique index)", f"duplicate methods {dup}", cls=DataError)
    if not values.columns.is_unique:
        raise expect("values", "unique metric columns", f"columns {list(values.columns)}", cls=DataError)
    columns = list(values.columns)
    dirs = _check_directions(directions, columns)
    div = _check_divisor(divisor, len(columns))
    if decimals is not None and (isinstance(decimals, bool) or not isinstance(decimals, numbers.Integral)):
        raise expect("decimals", "None or an int", repr(decimals), cls=ConfigError)
    try:
        arr = values.astype(np.float64).to_numpy()
    except (TypeError, ValueError):
        bad = [c for c in columns if not pd.api.types.is_numeric_dtype(values[c])]
        raise expect("values", "numeric metric columns", f"non-numeric columns {bad}", cls=DataError) from None
    if decimals is not None:
        arr = np.round(arr, int(decimals))

    rank_arr = np.stack([dense_ranks(arr[:, j], dirs[c] == "max") for j, c in enumerate(columns)], axis=1)
    nan = np.isnan(arr)
    idx = values.index
    ranks = pd.DataFrame(rank_arr, index=idx, columns=values.columns)
    mean_rank = pd.Series(rank_arr.sum(axis=1) / div, index=idx, name="mean_rank")
    overall = pd.Series(dense_ranks(mean_rank.to_numpy(), higher_is_better=False), index=idx, name="overall_rank")
    best = pd.DataFrame((rank_arr == 1) & ~nan, index=idx, columns=values.columns)
    second = pd.DataFrame((rank_arr == 2) & ~nan, index=idx, columns=values.columns)
    best["mean_rank"] = overall.to_numpy() == 1
    second["mean_rank"] = overall.to_numpy() == 2
    return RankTable(
        values=pd.DataFrame(arr, index=idx, columns=values.columns),
        directions=dirs,
        ranks=ranks,
        nan_flags=pd.DataFrame(nan, index=idx, columns=values.columns),
        mean_rank=mean_rank,
        overall_rank=overall,
        divisor=div,
        best=best,
        second=second,
    )
