"""Statistics over paired per-subject results: Wilcoxon vs a baseline, Friedman, bootstrap ranking, test-then-rank.

Every function takes *wide* tables: one row per subject (the same subjects for every method, i.e.
paired results), one column per method, one table per metric. :func:`pivot_subjects` builds them from
a long per-subject results table. The tests themselves come from ``scipy.stats`` and the multiple-
testing correction from ``statsmodels``; this module only arranges them.

NaN values (e.g. a recall without target instances) are never dropped silently: by default they raise
a :class:`~lossbench.errors.DataError`; with ``nan_policy="omit"`` the affected subjects are left out
and the number of subjects actually used is part of every result.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from lossbench.errors import ConfigError, DataError, expect
from lossbench.registry import suggest
from lossbench.report.ranking import DIRECTIONS, dense_ranks

__all__ = [
    "pivot_subjects",
    "wilcoxon_vs_baseline",
    "friedman_test",
    "BootstrapRanking",
    "bootstrap_ranking",
    "TestThenRank",
    "test_then_rank",
]

_P_ADJUST = ("holm", "bonferroni", "fdr_bh", "none")


def pivot_subjects(
    results: pd.DataFrame, metric: str, *, method_col: str = "method", subject_col: str = "subject"
) -> pd.DataFrame:
    """Long per-subject results (one row per method and subject) -> wide table subjects x methods for ``metric``.

    Raises:
        DataError: missing columns, or a (subject, method) pair that appears twice.
    """
    if not isinstance(results, pd.DataFrame):
        raise expect("results", "a pandas DataFrame", type(results).__name__, cls=DataError)
    for name, col in (("metric", metric), ("method_col", method_col), ("subject_col", subject_col)):
        if col not in results.columns:
            raise expect(
                name,
                f"a column of `results` {list(results.columns)}",
                repr(col),
                hint=suggest(str(col), [str(c) for c in results.columns]).strip(),
                cls=DataError,
            )
    if results.duplicated([subject_col, method_col]).any():
        raise expect("results", "one row per (subject, method)", "duplicate (subject, method) rows", cls=DataError)
    return results.pivot(index=subject_col, columns=method_col, values=metric)


def _check_table(table: pd.DataFrame, name: str, min_methods: int, nan_policy: str) -> pd.DataFrame:
    """Validate a wide subjects x methods table; return it as float with NaN rows handled per ``nan_policy``."""
    if not isinstance(table, pd.DataFrame):
        raise expect(name, "a pandas DataFrame (subjects x methods)", type(table).__name__, cls=DataError)
    if nan_policy not in ("raise", "omit"):
        raise expect("nan_policy", "'raise' or 'omit'", repr(nan_policy))
    if table.shape[1] < min_methods:
        raise expect(name, f"at least {min_methods} method columns", f"{table.shape[1]}", cls=DataError)
    if not table.columns.is_unique:
        raise expect(name, "unique method columns", f"{list(table.columns)}", cls=DataError)
    try:
        t = table.astype(np.float64)
    except (TypeError, ValueError):
        raise expect(name, "numeric values", "non-numeric columns", cls=DataError) from None
    nan_rows = t.isna().any(axis=1)
    if nan_rows.any():
        if nan_policy == "raise":
            raise expect(
                name,
                "values without NaN",
                f"NaN for {int(nan_rows.sum())} subject(s), e.g. {t.index[nan_rows][:3].tolist()}",
                hint="pass nan_policy='omit' to leave those subjects out (the count used is reported)",
                cls=DataError,
            )
        t = t[~nan_rows]
    if len(t) < 2:
        raise expect(name, "at least 2 subjects (after removing NaN rows)", f"{len(t)}", cls=DataError)
    return t


def _check_direction(direction: str) -> bool:
    if direction not in DIRECTIONS:
        raise expect("direction", "'max' (higher is better) or 'min' (lower is better)", repr(direction))
    return direction == "max"


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 < alpha < 1:
        raise expect("alpha", "a number in (0, 1)", repr(alpha))
    return float(alpha)


def _adjust(pvals: np.ndarray, method: str, alpha: float) -> np.ndarray:
    """Multiple-testing adjusted p-values (statsmodels), NaN entries left out and kept NaN."""
    out = np.full(pvals.shape, np.nan)
    ok = ~np.isnan(pvals)
    if method == "none":
        out[ok] = pvals[ok]
    elif ok.any():
        out[ok] = multipletests(pvals[ok], alpha=alpha, method=method)[1]
    return out


def _wilcoxon(diff: np.ndarray, alternative: str) -> tuple[float, float]:
    """Wilcoxon signed-rank test of paired differences; all-zero differences give (nan, 1.0) (no evidence)."""
    if not np.any(diff != 0):
        return float("nan"), 1.0
    res = sps.wilcoxon(diff, alternative=alternative)
    return float(res.statistic), float(res.pvalue)


def wilcoxon_vs_baseline(
    table: pd.DataFrame,
    baseline: str,
    direction: str,
    *,
    alpha: float = 0.05,
    p_adjust: str = "holm",
    nan_policy: str = "raise",
) -> pd.DataFrame:
    """Two-sided Wilcoxon signed-rank test of every method against ``baseline``, Holm-corrected.

    For method m and subject s, ``d_s = x[s, m] - x[s, baseline]``; ``scipy.stats.wilcoxon(d)`` (zero
    differences dropped, "wilcox" rule) gives p_m; the p-values of all methods are corrected together
    with ``statsmodels.stats.multitest.multipletests(method=p_adjust)``. If every difference is zero the
    methods are identical on these subjects: statistic NaN, p = 1.

    Args:
        table: subjects x methods, one metric (see :func:`pivot_subjects`).
        baseline: the column every other method is compared with.
        direction: ``"max"`` or ``"min"``: which sign of the median difference means "better".
        alpha: significance level of the corrected p-values.
        p_adjust: ``"holm"`` (default), ``"bonferroni"``, ``"fdr_bh"`` or ``"none"``.
        nan_policy: ``"raise"`` (default) or ``"omit"`` (drop subjects with any NaN; ``n`` says how many remain).

    Returns:
        DataFrame indexed by method (baseline excluded) with columns ``n`` (subjects used), ``median_diff``
        (median of m - baseline), ``statistic``, ``p_value``, ``p_adjusted``, ``significant``
        (``p_adjusted < alpha``), ``better`` and ``worse`` (significant and the median difference in the
        good / bad direction).

    Raises:
        DataError: bad table, NaN with ``nan_policy="raise"``, fewer than 2 methods or subjects.
        ConfigError: unknown baseline, direction, ``p_adjust`` or bad ``alpha``.
    """
    t = _check_table(table, "table", 2, nan_policy)
    if baseline not in t.columns:
        raise expect(
            "baseline",
            f"one of the methods {list(t.columns)}",
            repr(baseline),
            hint=suggest(str(baseline), [str(c) for c in t.columns]).strip(),
        )
    hib = _check_direction(direction)
    a = _check_alpha(alpha)
    if p_adjust not in _P_ADJUST:
        raise expect("p_adjust", f"one of {list(_P_ADJUST)}", repr(p_adjust))
    methods = [m for m in t.columns if m != baseline]
    base = t[baseline].to_numpy()
    rows = []
    for m in methods:
        d = t[m].to_numpy() - base
        stat, p = _wilcoxon(d, "two-sided")
        rows.append({"n": len(d), "median_diff": float(np.median(d)), "statistic": stat, "p_value": p})
    out = pd.DataFrame(rows, index=pd.Index(methods, name="method"))
    out["p_adjusted"] = _adjust(out["p_value"].to_numpy(), p_adjust, a)
    out["significant"] = out["p_adjusted"] < a
    sign = np.sign(out["median_diff"]) * (1 if hib else -1)
    out["better"] = out["significant"] & (sign > 0)
    out["worse"] = out["significant"] & (sign < 0)
    return out


def friedman_test(table: pd.DataFrame, *, nan_policy: str = "raise") -> dict[str, float]:
    """Friedman test that all methods have the same distribution over subjects (``scipy.stats.friedmanchisquare``).

    Args:
        table: subjects x methods (>= 3 methods, >= 2 subjects), one metric.
        nan_policy: ``"raise"`` or ``"omit"`` (drop subjects with any NaN).

    Returns:
        ``{"statistic", "p_value", "n_subjects", "n_methods"}``. If every subject has identical values for all
        methods there is nothing to test: statistic NaN, p = 1.

    Raises:
        DataError: bad table, NaN with ``nan_policy="raise"``, fewer than 3 methods or 2 subjects.
    """
    t = _check_table(table, "table", 3, nan_policy)
    arr = t.to_numpy()
    if np.all(arr == arr[:, :1]):
        stat, p = float("nan"), 1.0
    else:
        res = sps.friedmanchisquare(*arr.T)
        stat, p = float(res.statistic), float(res.pvalue)
    return {"statistic": stat, "p_value": p, "n_subjects": int(arr.shape[0]), "n_methods": int(arr.shape[1])}


@dataclass(frozen=True)
class BootstrapRanking:
    """Result of :func:`bootstrap_ranking`.

    Attributes:
        full_rank: int Series over methods: ranking on all subjects (dense rank of the mean rank over metrics).
        ranks: int DataFrame, resamples x methods: the ranking of every bootstrap resample.
        rank_frequency: float DataFrame, methods x rank (1..n_methods): fraction of resamples giving that rank.
        kendall_tau: float array ``(n_resamples,)``: Kendall's tau-b between each resample's ranking and
            ``full_rank`` (NaN if a ranking is constant, e.g. all methods tied).
        summary: DataFrame over methods: ``full_rank``, ``mean_rank``, ``median_rank``, ``rank_q025``,
            ``rank_q975``, ``p_first`` (share of the resamples' first places, a first place shared by ``m`` tied
            methods counting ``1/m`` for each, so the column sums to 1), ``p_tied_first`` (fraction of resamples in
            which the method shared first place).
        n_subjects: number of subjects resampled; seed: the seed used.
    """

    full_rank: pd.Series
    ranks: pd.DataFrame
    rank_frequency: pd.DataFrame
    kendall_tau: np.ndarray
    summary: pd.DataFrame
    n_subjects: int
    seed: int

    @property
    def kendall_tau_median(self) -> float:
        """Median Kendall tau over resamples (NaN-ignoring): the stability of the ranking."""
        return float(np.nanmedian(self.kendall_tau)) if np.any(~np.isnan(self.kendall_tau)) else float("nan")


def _rank_from_means(means: dict[str, np.ndarray], dirs: Mapping[str, str]) -> np.ndarray:
    """Rank methods from per-metric means (..., M): dense rank per metric, mean over metrics, dense rank of that."""
    per_metric = [dense_ranks(means[m], dirs[m] == "max", axis=-1) for m in means]
    mean_rank = np.mean(per_metric, axis=0)
    return dense_ranks(mean_rank, higher_is_better=False, axis=-1)


def bootstrap_ranking(
    tables: Mapping[str, pd.DataFrame],
    directions: Mapping[str, str],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    nan_policy: str = "raise",
) -> BootstrapRanking:
    """Bootstrap the ranking over subjects: rank distribution of each method and Kendall tau vs the full ranking.

    Aggregate-then-rank, as the paper's tables: for each metric the methods' mean over subjects is dense-ranked
    (:func:`~lossbench.report.ranking.dense_ranks`), the ranks are averaged over metrics, and that mean rank is
    dense-ranked into the final ranking. Each of ``n_resamples`` resamples draws ``n_subjects`` subjects with
    replacement (``numpy.random.default_rng(seed)``; the same subjects for every metric and method) and
    repeats the ranking. Kendall's tau-b (``scipy.stats.kendalltau``) compares each resample's ranking with the
    full one.

    Ties share a rank, so several methods can be first in one resample. ``p_first`` splits such a first place
    equally among the tied methods (``p_first`` sums to 1 over the methods); ``p_tied_first`` is the share of
    resamples in which the method shared first place.

    Args:
        tables: ``{metric: subjects x methods table}``; all tables have the same subjects and methods.
            A single metric is ``{"dice": table}``.
        directions: ``{metric: "max" | "min"}`` for every metric of ``tables``.
        n_resamples: number of bootstrap resamples (default 1000).
        seed: seed of the resampling; the same seed gives the same result.
        nan_policy: ``"raise"`` or ``"omit"`` (subjects with a NaN in any metric are left out of all).

    Returns:
        :class:`BootstrapRanking`.

    Raises:
        DataError: empty ``tables``, tables with different subjects or methods, NaN with ``nan_policy="raise"``.
        ConfigError: missing / bad directions, bad ``n_resamples`` or ``seed``.
    """
    _check_ranking_args(tables, directions, n_resamples, seed, nan_policy)
    arrays, methods = _aligned_arrays(tables, nan_policy)
    full, boot = _resampled_ranks(arrays, directions, int(n_resamples), int(seed))
    summary, freq = _rank_summary(full, boot, methods)
    return BootstrapRanking(
        full_rank=pd.Series(full, index=summary.index, name="full_rank"),
        ranks=pd.DataFrame(boot, columns=summary.index),
        rank_frequency=freq,
        kendall_tau=np.array([_kendall(boot[r], full) for r in range(boot.shape[0])]),
        summary=summary,
        n_subjects=next(iter(arrays.values())).shape[0],
        seed=int(seed),
    )


def _check_ranking_args(
    tables: Mapping[str, pd.DataFrame], directions: Mapping[str, str], n_resamples: int, seed: int, nan_policy: str
) -> None:
    """Validate the arguments of :func:`bootstrap_ranking` (the tables' values are checked by :func:`_check_table`)."""
    if not isinstance(tables, Mapping) or not tables:
        raise expect(
            "tables", "a non-empty mapping {metric: subjects x methods DataFrame}", repr(tables)[:80], cls=DataError
        )
    if not isinstance(directions, Mapping):
        raise expect("directions", "a mapping {metric: 'max' | 'min'}", type(directions).__name__)
    for m in tables:
        if m not in directions:
            raise expect("directions", f"a direction for every metric of `tables` {list(tables)}", f"none for {m!r}")
        _check_direction(directions[m])
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, numbers.Integral) or n_resamples < 1:
        raise expect("n_resamples", "a positive int", repr(n_resamples))
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise expect("seed", "an int", repr(seed))
    if nan_policy not in ("raise", "omit"):
        raise expect("nan_policy", "'raise' or 'omit'", repr(nan_policy))
    first = next(iter(tables.values()))
    for m, t in tables.items():
        if not isinstance(t, pd.DataFrame):
            raise expect(f"tables[{m!r}]", "a pandas DataFrame (subjects x methods)", type(t).__name__, cls=DataError)
        if list(t.columns) != list(first.columns) or not t.index.equals(first.index):
            raise expect(
                f"tables[{m!r}]",
                "the same subjects (index) and methods (columns) as the first table",
                "different ones",
                cls=DataError,
            )


def _aligned_arrays(tables: Mapping[str, pd.DataFrame], nan_policy: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """``{metric: subjects x methods array}`` on the subjects without NaN in any metric, and the method names."""
    first = next(iter(tables.values()))
    checked = {m: _check_table(t, f"tables[{m!r}]", 2, nan_policy) for m, t in tables.items()}
    keep = first.index
    for t in checked.values():
        keep = keep.intersection(t.index, sort=False)
    if len(keep) < 2:
        raise expect("tables", "at least 2 subjects without NaN", f"{len(keep)}", cls=DataError)
    return {m: t.loc[keep].to_numpy() for m, t in checked.items()}, list(first.columns)


def _resampled_ranks(
    arrays: dict[str, np.ndarray], directions: Mapping[str, str], n_resamples: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ranking on all subjects ``(M,)`` and on each bootstrap resample of the subjects ``(n_resamples, M)``."""
    n_sub = next(iter(arrays.values())).shape[0]
    full = _rank_from_means({m: a.mean(axis=0) for m, a in arrays.items()}, directions)
    idx = np.random.default_rng(seed).integers(0, n_sub, size=(n_resamples, n_sub))
    boot = _rank_from_means({m: a[idx].mean(axis=1) for m, a in arrays.items()}, directions)
    return full, boot


def _first_place_shares(boot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per method: share of first places with ties split equally (sums to 1), and share of shared first places."""
    first = boot == 1
    n_first = first.sum(axis=1, keepdims=True)  # >= 1: dense ranks always start at 1
    return (first / n_first).mean(axis=0), (first & (n_first > 1)).mean(axis=0)


def _rank_summary(full: np.ndarray, boot: np.ndarray, methods: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The summary table over methods and the rank frequencies (methods x rank 1..M)."""
    index = pd.Index(methods, name="method")
    n_m = len(methods)
    p_first, p_tied = _first_place_shares(boot)
    summary = pd.DataFrame(
        {
            "full_rank": full,
            "mean_rank": boot.mean(axis=0),
            "median_rank": np.median(boot, axis=0),
            "rank_q025": np.quantile(boot, 0.025, axis=0),
            "rank_q975": np.quantile(boot, 0.975, axis=0),
            "p_first": p_first,
            "p_tied_first": p_tied,
        },
        index=index,
    )
    freq = np.stack([(boot == k).mean(axis=0) for k in range(1, n_m + 1)], axis=1)
    return summary, pd.DataFrame(freq, index=index, columns=pd.Index(range(1, n_m + 1), name="rank"))


def _kendall(a: np.ndarray, b: np.ndarray) -> float:
    if np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")  # tau is undefined for a constant ranking (scipy would warn and return NaN)
    return float(sps.kendalltau(a, b).statistic)


@dataclass(frozen=True)
class TestThenRank:
    """Result of :func:`test_then_rank`.

    Attributes:
        wins: int Series over methods: number of other methods it is significantly better than.
        rank: int Series: ``1 + #{methods with more wins}`` (ties share the smallest rank, as challengeR's
            ``ties.method = "min"``: 1, 1, 3).
        p_values: DataFrame methods x methods: adjusted one-sided p-value that the row beats the column
            (NaN on the diagonal).
        significant: bool DataFrame: ``p_values < alpha``.
        n_subjects: subjects used.
    """

    __test__ = False  # not a pytest test class despite the name

    wins: pd.Series
    rank: pd.Series
    p_values: pd.DataFrame
    significant: pd.DataFrame
    n_subjects: int


def test_then_rank(
    table: pd.DataFrame,
    direction: str,
    *,
    alpha: float = 0.05,
    p_adjust: str = "holm",
    nan_policy: str = "raise",
) -> TestThenRank:
    """Significance-based ranking as in challengeR's "test-then-rank".

    For every ordered pair (i, j) of methods a one-sided Wilcoxon signed-rank test checks whether i is better
    than j (``alternative="greater"`` on ``x_i - x_j`` for ``"max"``, ``"less"`` for ``"min"``); the
    ``M (M - 1)`` p-values are adjusted together (``p_adjust``); a method's score is the number of methods it
    beats significantly, and methods are ranked by decreasing score (ties take the smallest rank).

    Args:
        table: subjects x methods (>= 2 methods), one metric.
        direction: ``"max"`` or ``"min"``.
        alpha: significance level.
        p_adjust: ``"holm"`` (default), ``"bonferroni"``, ``"fdr_bh"`` or ``"none"`` (challengeR's default).
        nan_policy: ``"raise"`` or ``"omit"``.

    Returns:
        :class:`TestThenRank`.

    Raises:
        DataError: bad table or NaN with ``nan_policy="raise"``.
        ConfigError: bad direction, alpha or ``p_adjust``.
    """
    t = _check_table(table, "table", 2, nan_policy)
    hib = _check_direction(direction)
    a = _check_alpha(alpha)
    if p_adjust not in _P_ADJUST:
        raise expect("p_adjust", f"one of {list(_P_ADJUST)}", repr(p_adjust), cls=ConfigError)
    methods = list(t.columns)
    arr = t.to_numpy()
    n = len(methods)
    raw = np.full((n, n), np.nan)
    alt = "greater" if hib else "less"
    for i in range(n):
        for j in range(n):
            if i != j:
                raw[i, j] = _wilcoxon(arr[:, i] - arr[:, j], alt)[1]
    adj = _adjust(raw.ravel(), p_adjust, a).reshape(n, n)
    sig = np.nan_to_num(adj, nan=1.0) < a
    wins = sig.sum(axis=1)
    rank = 1 + (wins[None, :] > wins[:, None]).sum(axis=1)
    idx = pd.Index(methods, name="method")
    return TestThenRank(
        wins=pd.Series(wins.astype(np.int64), index=idx, name="wins"),
        rank=pd.Series(rank.astype(np.int64), index=idx, name="rank"),
        p_values=pd.DataFrame(adj, index=idx, columns=idx),
        significant=pd.DataFrame(sig, index=idx, columns=idx),
        n_subjects=int(arr.shape[0]),
    )


test_then_rank.__test__ = False  # type: ignore[attr-defined]  # a library function, not a pytest test
