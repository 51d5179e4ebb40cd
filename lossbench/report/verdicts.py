"""Run-level verdicts: is a loss better or worse than the baseline, judged against run-to-run variation?

The training run is the unit of inference. For a loss ``L``, the baseline ``B``, a metric ``m`` (a column
of the results table, e.g. ``test_dice``: the mean over the test subjects of one trained model) and a
dataset, every seed ``s`` at which both cells finished (status ``ok``, finite value) gives one paired
difference

    d_s = m(L, s) - m(B, s).

Cells that share a seed share the data split and the network's initial weights, so the pairing removes
what a seed does to every loss alike. Seeds where either cell is missing, failed, diverged or has no value
are dropped (and named in ``dropped``).

Interval and verdict (Student t on the ``n`` per-seed differences, ``k`` losses compared with the
baseline for this metric and dataset):

    mean ± t_{1 - alpha / (2k), n - 1} * sd / sqrt(n)

i.e. Bonferroni-adjusted: the ``k`` intervals of a metric hold together with probability >= 1 - alpha
(95 %). The verdict is ``better`` or ``worse`` exactly when that interval excludes 0 (the side decided by
the metric's direction, from :mod:`lossbench.metrics.info`), otherwise ``no evidence``; equivalently
``p_adjusted = min(1, k * p) < alpha`` with ``p`` the two-sided one-sample t-test of the differences
(``scipy.stats.ttest_1samp``). The interval is exact at any ``n >= 2`` when the per-seed differences are
normal; with a balanced design it is the same test as a linear mixed model of the two losses' cells
with a random seed intercept. A percentile bootstrap over seeds is not used: with 4 seeds it has 35
distinct resamples and its interval is too narrow (it ignores the t quantile and the n - 1), so it
covers far less than 95 %.

When would something else serve better? With many seeds (about 20 or more) and unbalanced cells (seeds
missing for some losses), a mixed model ``metric ~ loss + (1 | seed)`` (``statsmodels`` MixedLM) would use
the unpaired cells too, and a hierarchical bootstrap (seeds, then subjects within a seed) becomes
reliable. Neither is implemented: studies here have 3-10 seeds, where both undercover, and in a
complete grid dropping unpaired seeds loses nothing.

``mde`` (minimum detectable effect): the true mean difference that this test (same ``n``, same adjusted
level) detects with 80 % power, given the observed standard deviation of the differences:
``mde = delta * sd`` where ``delta`` solves ``P(|T'| > t_crit) = 0.8`` for the noncentral t ``T'`` with
``n - 1`` degrees of freedom and noncentrality ``delta * sqrt(n)`` (``scipy.stats.nct``). It is an estimate
(the sd comes from ``n`` runs). Degenerate cases: fewer than 2 paired seeds give no interval (``no
evidence`` with a reason). Identical differences at every seed (zero spread) give ``[0, 0]`` when they are
0 (two losses that compute the same thing) and otherwise no interval and ``no evidence``: a constant
difference (a discrete metric such as a lesion count, at few seeds) says nothing about run-to-run variation.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps
from scipy.optimize import brentq

from lossbench.errors import ConfigError, DataError, expect
from lossbench.registry import suggest

__all__ = [
    "DEFAULT_METRICS",
    "METRIC_NAMES",
    "VERDICTS",
    "COLUMNS",
    "metric_direction",
    "paired_t",
    "minimum_detectable_effect",
    "run_verdicts",
    "write_verdicts",
    "verdict_findings",
    "method_note",
    "study_warnings",
    "number",
]

#: Results columns judged by default: the report's test metrics (ATLAS and instance quality) and the validation DSC.
DEFAULT_METRICS = (
    "test_dice",
    "test_volume_difference",
    "test_lesionwise_f1",
    "test_simple_lesion_count",
    "test_pq",
    "test_sq",
    "test_rq",
    "test_cc_dice",
    "val_dsc",
)

#: Names used in sentences (other columns: underscores become spaces).
METRIC_NAMES = {
    "test_dice": "test DSC",
    "test_volume_difference": "test volume difference",
    "test_lesionwise_f1": "test lesion-wise F1",
    "test_simple_lesion_count": "test simple lesion count",
    "test_pq": "test PQ",
    "test_sq": "test SQ",
    "test_rq": "test RQ",
    "test_pq_dsc": "test PQ (DSC)",
    "test_cc_dice": "test CC-Dice",
    "test_cc_missed": "test CC missed",
    "val_dsc": "validation DSC",
}

VERDICTS = ("better", "worse", "no evidence")

#: Columns of :func:`run_verdicts` (the first eight are the contract of ``verdicts.csv``).
COLUMNS = (
    "loss",
    "metric",
    "baseline",
    "difference",
    "ci_low",
    "ci_high",
    "verdict",
    "n_seeds",
    "dataset",
    "direction",
    "p_value",
    "p_adjusted",
    "n_compared",
    "sd",
    "mde",
    "per_seed",
    "dropped",
    "note",
)

_POWER = 0.8


def metric_direction(column: str) -> str:
    """``"max"`` or ``"min"`` for a results column (``test_<metric>``, ``val_<metric>``; ``val_dsc`` is Dice).

    Raises:
        RegistryError: not a known metric with a direction.
    """
    from lossbench.metrics import metric_directions

    name = str(column)
    for prefix in ("test_", "val_"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    name = "dice" if name == "dsc" else name
    return metric_directions([name])[name]


def paired_t(diffs: np.ndarray, *, n_compared: int = 1, alpha: float = 0.05) -> dict[str, np.ndarray]:
    """Student t statistics of paired differences along the last axis, Bonferroni-adjusted over ``n_compared``.

    Vectorised: ``diffs`` of shape ``(..., n)`` with ``n >= 2`` (no NaN) gives arrays of shape ``(...)``.

    Args:
        diffs: per-seed differences (loss - baseline).
        n_compared: number of losses compared with the baseline for this metric (the Bonferroni factor ``k``).
        alpha: family-wise error rate (the interval's confidence is ``1 - alpha / k``).

    Returns:
        ``{"mean", "sd", "ci_low", "ci_high", "p_value", "p_adjusted"}``. Zero spread (identical differences at
        every seed): ``ci = [0, 0]`` and ``p = 1`` when they are all 0, else NaN interval and p (no verdict).

    Raises:
        ConfigError: fewer than 2 differences, bad ``n_compared`` or ``alpha``.
    """
    d = np.asarray(diffs, dtype=np.float64)
    if d.ndim < 1 or d.shape[-1] < 2:
        raise expect("diffs", "at least 2 paired differences along the last axis", f"shape {d.shape}")
    _check_alpha(alpha)
    if isinstance(n_compared, bool) or not isinstance(n_compared, numbers.Integral) or n_compared < 1:
        raise expect("n_compared", "a positive int", repr(n_compared))
    mean = d.mean(axis=-1)
    sd = d.std(axis=-1, ddof=1)
    flat = sd <= 1e-12 * np.abs(d).max(axis=-1)  # identical differences, up to rounding (all 0 included)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # zero spread: handled below
        res = sps.ttest_1samp(d, 0.0, axis=-1)
        ci = res.confidence_interval(confidence_level=1.0 - alpha / n_compared)
    # Zero spread: identical runs (mean 0) are no difference; a constant nonzero difference (a discrete metric
    # at few seeds) says nothing about run-to-run variation, so there is no interval.
    zero = flat & (mean == 0)
    p = np.where(zero, 1.0, np.where(flat, np.nan, res.pvalue))
    low = np.where(zero, 0.0, np.where(flat, np.nan, ci.low))
    high = np.where(zero, 0.0, np.where(flat, np.nan, ci.high))
    return {
        "mean": mean,
        "sd": sd,
        "ci_low": low,
        "ci_high": high,
        "p_value": p,
        "p_adjusted": np.minimum(1.0, p * n_compared),
    }


def _check_alpha(alpha: float) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 < alpha < 1:
        raise expect("alpha", "a number in (0, 1)", repr(alpha))


def _power(delta: float, n: int, level: float) -> float:
    """Power of the two-sided one-sample t-test at ``level`` for a true effect of ``delta`` standard deviations."""
    df = n - 1
    crit = sps.t.ppf(1.0 - level / 2.0, df)
    nc = delta * np.sqrt(n)
    # scipy's noncentral t returns NaN far in the tail, where the probability is 0.
    lower = np.nan_to_num(sps.nct.cdf(-crit, df, nc), nan=0.0)
    return float(sps.nct.sf(crit, df, nc) + lower)


def minimum_detectable_effect(sd: float, n: int, *, n_compared: int = 1, alpha: float = 0.05) -> float:
    """Smallest true mean difference the paired t-test detects with 80 % power (see the module docstring).

    Args:
        sd: standard deviation of the per-seed differences.
        n: number of paired seeds (>= 2).
        n_compared: Bonferroni factor ``k`` (the test runs at ``alpha / k``).
        alpha: family-wise level.

    Returns:
        ``delta * sd`` in the metric's units (0 when ``sd`` is 0; NaN when ``sd`` is NaN).
    """
    if not np.isfinite(sd):
        return float("nan")
    if sd == 0:
        return 0.0
    level = alpha / n_compared
    hi = 1.0
    while _power(hi, n, level) < _POWER:
        hi *= 2.0
    return float(brentq(lambda x: _power(x, n, level) - _POWER, 0.0, hi, xtol=1e-10) * sd)


def _check_results(results: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """The results rows with ``dataset`` and ``status`` filled in (optional in hand-made tables)."""
    if not isinstance(results, pd.DataFrame):
        raise expect("results", "a pandas DataFrame (lossbench.study.store.load_results)", type(results).__name__)
    for col in ("label", "seed"):
        if col not in results.columns:
            raise expect("results", f"a {col!r} column", f"columns {list(results.columns)}", cls=DataError)
    frame = results.copy()
    if "dataset" not in frame.columns:
        frame["dataset"] = ""
    if "status" not in frame.columns:
        frame["status"] = "ok"
    frame["label"] = frame["label"].astype(str)
    if frame.duplicated(["dataset", "seed", "label"]).any():
        raise expect("results", "one row per (dataset, seed, loss)", "duplicate rows", cls=DataError)
    labels = list(dict.fromkeys(frame["label"]))
    if baseline not in labels:
        raise expect(
            "baseline",
            f"a loss label of the results {labels}",
            repr(baseline),
            hint=suggest(str(baseline), labels).strip(),
            cls=ConfigError,
        )
    return frame


def _paired(frame: pd.DataFrame, loss: str, baseline: str, metric: str) -> tuple[list[Any], np.ndarray, list[str]]:
    """Seeds where both cells have a usable value, their differences (loss - baseline) and what was dropped."""
    rows = {label: frame[frame["label"] == label].set_index("seed") for label in (loss, baseline)}
    seeds = sorted(set(rows[loss].index) | set(rows[baseline].index), key=str)
    kept: list[Any] = []
    diffs: list[float] = []
    dropped: list[str] = []
    for seed in seeds:
        why = [r for r in (_unusable(rows[label], seed, metric, label) for label in (loss, baseline)) if r]
        if why:
            dropped.append(f"seed {seed}: {'; '.join(why)}")
            continue
        kept.append(seed)
        diffs.append(float(rows[loss].at[seed, metric]) - float(rows[baseline].at[seed, metric]))
    return kept, np.asarray(diffs, dtype=np.float64), dropped


def _unusable(rows: pd.DataFrame, seed: Any, metric: str, label: str) -> str:
    """Why the cell of ``label`` at ``seed`` cannot be paired ('' if it can)."""
    if seed not in rows.index:
        return f"{label} has no finished cell"
    status = str(rows.at[seed, "status"])
    if status != "ok":
        return f"{label} {status}"
    value = rows.at[seed, metric] if metric in rows.columns else np.nan
    try:
        value = float(value)
    except (TypeError, ValueError):
        return f"{label} has no numeric {metric}"
    return "" if np.isfinite(value) else f"{label} has no {metric} value"


def _verdict(low: float, high: float, direction: str) -> str:
    if low > 0 or high < 0:
        up = low > 0
        return "better" if up == (direction == "max") else "worse"
    return "no evidence"


def _metric_rows(
    frame: pd.DataFrame, losses: Sequence[str], baseline: str, metric: str, dataset: Any, alpha: float
) -> list[dict[str, Any]]:
    """One row per loss for one metric and dataset (the Bonferroni factor is the number of losses with an interval)."""
    direction = metric_direction(metric)
    paired = {loss: _paired(frame, loss, baseline, metric) for loss in losses}
    k = sum(len(seeds) >= 2 for seeds, _, _ in paired.values())
    rows = []
    for loss, (seeds, d, dropped) in paired.items():
        row: dict[str, Any] = {c: np.nan for c in COLUMNS}
        row.update(
            loss=loss,
            metric=metric,
            baseline=baseline,
            dataset=dataset,
            direction=direction,
            n_seeds=len(seeds),
            n_compared=k,
            per_seed="; ".join(f"{s}:{x:+.6g}" for s, x in zip(seeds, d)),
            dropped="; ".join(dropped),
            verdict="no evidence",
            note="",
        )
        if len(seeds) >= 2:
            st = {key: float(v) for key, v in paired_t(d, n_compared=k, alpha=alpha).items()}
            row.update(
                difference=st["mean"],
                ci_low=st["ci_low"],
                ci_high=st["ci_high"],
                p_value=st["p_value"],
                p_adjusted=st["p_adjusted"],
                sd=st["sd"],
                mde=minimum_detectable_effect(st["sd"], len(seeds), n_compared=k, alpha=alpha),
                verdict=_verdict(st["ci_low"], st["ci_high"], direction),
            )
            if not np.isfinite(st["ci_low"]):
                row["mde"] = np.nan
                row["note"] = "the same difference at every seed: run-to-run variation unknown, no interval"
        else:
            row["difference"] = float(d.mean()) if len(d) else np.nan
            row["note"] = f"fewer than 2 seeds paired with {baseline}: no interval"
        rows.append(row)
    return rows


def run_verdicts(
    results: pd.DataFrame,
    baseline: str,
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Every loss against ``baseline`` for every metric (and dataset), with the training run as the unit.

    Args:
        results: one row per cell, as :func:`lossbench.study.store.load_results` returns it: ``label`` (the loss),
            ``seed``, ``dataset`` and ``status`` (both optional), and the metric columns.
        baseline: the baseline's loss label.
        metrics: results columns to judge (a column absent from ``results`` counts as no value for every cell).
        alpha: family-wise error rate per metric and dataset (default 0.05: 95 % intervals).

    Returns:
        One row per (dataset, metric, loss), baseline excluded, in the order of ``metrics`` and of the losses in
        ``results``; columns :data:`COLUMNS`: ``difference`` the mean of the per-seed differences (loss - baseline,
        in the metric's units), ``ci_low``/``ci_high`` its Bonferroni-adjusted interval, ``verdict`` one of
        :data:`VERDICTS`, ``n_seeds`` the paired seeds, ``direction`` ``"max"``/``"min"``, ``p_value`` /
        ``p_adjusted`` the t-test, ``n_compared`` the Bonferroni factor, ``sd`` the spread of the differences,
        ``mde`` the minimum detectable effect, ``per_seed`` ``"seed:difference; ..."``, ``dropped`` the seeds left
        out and why, ``note`` why there is no interval (or why it is a point).

    Raises:
        ConfigError: unknown baseline, bad ``alpha``.
        DataError: not a results table, or duplicate (dataset, seed, loss) rows.
        RegistryError: a metric without a direction.
    """
    _check_alpha(alpha)
    frame = _check_results(results, baseline)
    losses = [lab for lab in dict.fromkeys(frame["label"]) if lab != baseline]
    rows: list[dict[str, Any]] = []
    for dataset in dict.fromkeys(frame["dataset"]):
        part = frame[frame["dataset"] == dataset]
        for metric in metrics:
            rows.extend(_metric_rows(part, losses, baseline, metric, dataset, alpha))
    out = pd.DataFrame(rows, columns=list(COLUMNS))
    return out.astype({"n_seeds": "int64", "n_compared": "int64"})


def write_verdicts(verdicts: pd.DataFrame, run_dir: str | Path) -> Path:
    """Write ``run_dir/verdicts.csv`` atomically (temporary file, then rename); return its path."""
    from lossbench.study.store import atomic_write_csv

    return atomic_write_csv(Path(run_dir) / "verdicts.csv", verdicts)


def number(x: float, digits: int = 3, *, sign: bool = True) -> str:
    """``x`` to ``digits`` significant digits without exponent or trailing zeros (``+0.0123``, ``-6``, ``+1,230``).

    ``n/a`` when ``x`` is not finite.
    """
    if not np.isfinite(x):
        return "n/a"
    if x == 0:
        return "+0" if sign else "0"
    places = digits - 1 - int(np.floor(np.log10(abs(x))))
    x = round(float(x), places)  # negative places round the integer digits: 2,413 -> 2,410 at 3 digits
    decimals = max(0, places)
    text = f"{x:{'+' if sign else ''},.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _fmt(x: float) -> str:
    return number(x)


def _seeds_text(counts: pd.Series) -> str:
    lo, hi = int(counts.min()), int(counts.max())
    return f"{lo} seeds" if lo == hi else f"{lo}-{hi} seeds"


def _and(items: Sequence[str], word: str = "and") -> str:
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {word} {items[-1]}"


def _metric_findings(group: pd.DataFrame, name: str, prefix: str) -> list[str]:
    """The sentences of one metric (and dataset): each verdict, the losses without evidence, those without interval."""
    baseline = str(group["baseline"].iloc[0])
    out = []
    judged = group[group["verdict"] != "no evidence"]
    for r in judged.itertuples(index=False):
        out.append(
            f"{prefix}{r.loss} is {r.verdict} than {baseline} in {name} by {_fmt(r.difference)} "
            f"(95% CI {_fmt(r.ci_low)} to {_fmt(r.ci_high)}) at {r.n_seeds} seeds."
        )
    open_ = group[(group["verdict"] == "no evidence") & (group["n_seeds"] >= 2)]
    if len(open_):
        if len(open_) == len(group) and len(group) > 1:
            who = "No evidence that any loss differs"
        elif len(group) == 1:
            who = f"No evidence that {open_['loss'].iloc[0]} differs"
        else:
            who = f"No evidence that {_and(list(open_['loss']), 'or')} differ{'s' if len(open_) == 1 else ''}"
        mde = open_["mde"].dropna()
        detect = (
            f"; the smallest difference this study could detect is about {number(mde.median(), 2, sign=False)}"
            if len(mde)
            else ""
        )
        out.append(f"{prefix}{who} from {baseline} in {name} at {_seeds_text(open_['n_seeds'])}{detect}.")
    for r in group[group["n_seeds"] < 2].itertuples(index=False):
        out.append(f"{prefix}{r.loss}: no verdict in {name} ({r.note}).")
    dropped = dict.fromkeys(p for d in group["dropped"] if isinstance(d, str) and d for p in d.split("; "))
    if dropped:
        out.append(f"{prefix}Left out of the {name} comparisons (no pair): {'; '.join(dropped)}.")
    return out


def verdict_findings(verdicts: pd.DataFrame, *, names: Mapping[str, str] | None = None) -> list[str]:
    """Plain sentences, metric by metric, from a :func:`run_verdicts` table.

    Example sentences: "ICI is better than Dice in test lesion-wise F1 by +0.04 (95% CI +0.01 to +0.07) at 5
    seeds."; "No evidence that any loss differs from Dice in test DSC at 5 seeds; the smallest difference this
    study could detect is about 0.012." (``mde``, the median over the losses without evidence). Seeds left out
    are listed.

    Args:
        verdicts: the table of :func:`run_verdicts`.
        names: display names of the metric columns (default :data:`METRIC_NAMES`; others: underscores -> spaces).

    Returns:
        The sentences (with ``[dataset]`` first when the study has several datasets).
    """
    labels = {**METRIC_NAMES, **(names or {})}
    several = verdicts["dataset"].nunique() > 1
    out: list[str] = []
    for (dataset, metric), group in verdicts.groupby(["dataset", "metric"], sort=False):
        prefix = f"[{dataset}] " if several else ""
        out.extend(_metric_findings(group, labels.get(str(metric), str(metric).replace("_", " ")), prefix))
    return out


def method_note(verdicts: pd.DataFrame, *, alpha: float = 0.05) -> str:
    """One paragraph saying how the verdicts were computed (for the report, under the table)."""
    k = max(1, int(verdicts["n_compared"].max())) if len(verdicts) else 1
    conf = f"{100 * (1 - alpha):g}%"
    return (
        "Each training run (seed) is one observation: per seed, the loss's value minus the baseline's (cells that "
        "share a seed share the data split and the initial weights). The interval is the Student t interval of "
        f"the mean difference, Bonferroni-adjusted over the {k} loss(es) compared for a metric, so that they hold "
        f"together with {conf} probability; the verdict is better or worse when the interval excludes 0 (in the "
        "metric's direction), otherwise no evidence. The smallest detectable difference is the true difference "
        "this test finds with 80% power given the observed run-to-run spread. Each metric is a family of its own: "
        f"across metrics the error rate adds up (up to {100 * alpha:g}% per metric where no loss differs), so a "
        "lone verdict among many metrics deserves a rerun with more seeds."
    )


def study_warnings(
    results: pd.DataFrame, *, min_seeds: int = 3, undertrained_share: float = 0.25, not_learned: float = 0.5
) -> list[str]:
    """Warnings about what a study's verdicts can say: too few seeds, diverged cells, undertrained models.

    Args:
        results: the results table (``label``, ``seed``; ``status``, ``best_epoch``, ``epochs_run``, ``val_dsc``,
            ``dataset`` when present).
        min_seeds: warn below this number of seeds with a finished cell.
        undertrained_share: warn when at least this share of the finished cells have their best validation
            DSC at the last validated epoch (the last epoch: validation always runs after it).
        not_learned: name the finished cells whose best validation DSC is below this fraction of the median of
            the same loss's cells (same dataset): runs that did not learn, which widen that loss's intervals.

    Returns:
        Sentences, empty when there is nothing to warn about.
    """
    ok = results[results["status"] == "ok"] if "status" in results.columns else results
    out = []
    seeds = ok["seed"].nunique()
    if seeds < min_seeds:
        out.append(
            f"Only {seeds} seed{'s' if seeds != 1 else ''} with finished cells: a difference between losses can "
            f"only be told from run-to-run variation with several training runs per loss; use at least "
            f"{min_seeds} seeds (5 or more to detect small differences)."
        )
    bad = results[results["status"] != "ok"] if "status" in results.columns else results.iloc[:0]
    if len(bad):
        cells = ", ".join(f"{r.label} seed {r.seed} ({r.status})" for r in bad.itertuples(index=False))
        out.append(f"{len(bad)} cell(s) did not finish normally and are left out of the verdicts: {cells}.")
    out.extend(_undertrained(ok, undertrained_share))
    out.extend(_not_learned(ok, not_learned))
    return out


def _not_learned(ok: pd.DataFrame, fraction: float) -> list[str]:
    """One sentence naming the cells far below their loss's median validation DSC (same dataset), if any."""
    if "val_dsc" not in ok.columns or ok.empty:
        return []
    val = pd.to_numeric(ok["val_dsc"], errors="coerce")
    dataset = ok["dataset"] if "dataset" in ok.columns else pd.Series("", index=ok.index)
    median = val.groupby([dataset, ok["label"]], sort=False).transform("median")
    low = (val < fraction * median) & (median > 0)
    if not low.any():
        return []
    several = dataset.nunique() > 1
    parts = []
    for (ds, label), group in val[low].groupby([dataset[low], ok["label"][low]], sort=False):
        where = f" [{ds}]" if several else ""
        seeds = ", ".join(str(s) for s in ok.loc[group.index, "seed"])
        values = ", ".join(f"{v:.2f}" for v in group)
        parts.append(
            f"{label}{where} seed(s) {seeds} (validation DSC {values}; median of its cells "
            f"{median[group.index[0]]:.2f})"
        )
    return [
        f"{int(low.sum())} finished cell(s) reached less than {fraction:.0%} of their loss's median validation DSC, "
        f"runs that did not learn: {'; '.join(parts)}. They stay in the verdicts and widen the intervals of their "
        "loss; it may need more epochs or another learning rate."
    ]


def _undertrained(ok: pd.DataFrame, share: float) -> list[str]:
    if not {"best_epoch", "epochs_run"} <= set(ok.columns) or ok.empty:
        return []
    at_last = pd.to_numeric(ok["best_epoch"], errors="coerce") == pd.to_numeric(ok["epochs_run"], errors="coerce")
    if not at_last.any() or at_last.mean() < share:
        return []
    counts = at_last.groupby(ok["label"], sort=False).agg(["sum", "count"])
    per_loss = ", ".join(f"{lab} {int(r['sum'])}/{int(r['count'])}" for lab, r in counts.iterrows() if r["sum"])
    return [
        f"{int(at_last.sum())} of {len(ok)} finished cells ({100 * at_last.mean():.0f}%) have their best validation "
        f"DSC at the last epoch ({per_loss}): the models may be undertrained, and more epochs could change the "
        "verdicts."
    ]
