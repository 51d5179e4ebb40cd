"""The statistics section of one dataset, on the paired test subjects (:mod:`lossbench.report.stats`).

These tests are conditional on the trained models: the unit is the test subject and each loss's models are held
fixed (a subject's value is the mean over the loss's seeds), so they say whether a difference holds across subjects
for these training runs, not whether it would survive retraining. The report's Verdicts judge the latter.

Four parts, each skipped with a note when it cannot be computed: Wilcoxon signed-rank against the baseline with Holm
correction, Friedman (do the losses differ at all), bootstrap rank stability with Kendall's tau (and its blob plot),
and test-then-rank.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lossbench.errors import LossbenchError
from lossbench.report.model import Cell, Figure, Row, Table
from lossbench.report.run_data import RunData
from lossbench.report.sections.results import TEST_METRICS

__all__ = ["StatsSection", "stats_section", "N_BOOTSTRAP", "ALPHA"]

N_BOOTSTRAP = 1000
ALPHA = 0.05


@dataclass
class StatsSection:
    """The statistics of one dataset: tables, notes (including why a part was skipped) and figures."""

    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)


@dataclass
class _Paired:
    """The paired test data: metric -> subjects x losses table, with the metrics' names and directions."""

    wide: dict[str, pd.DataFrame]
    keys: list[str]
    dirs: dict[str, str]
    methods: list[str]
    names: dict[str, str]
    colors: dict[str, str]


def stats_section(data: RunData, dataset: str, colors: dict[str, str], files: Path, suffix: str) -> StatsSection:
    """Every statistics table of one dataset; the bootstrap blob plot is written to ``files``."""
    from lossbench.metrics import metric_directions

    out = StatsSection()
    wide = _paired_tables(data, dataset)
    if not wide:
        out.notes.append("No per-subject test results: statistics skipped.")
        return out
    keys = list(wide)
    paired = _Paired(wide, keys, metric_directions(keys), list(wide[keys[0]].columns), dict(TEST_METRICS), colors)
    if len(paired.methods) < 2:
        out.notes.append("Fewer than two losses have finished cells: no comparison is possible.")
        return out
    out.notes.append(
        "These tests are conditional on the trained models: they treat the test subjects, not the training runs, "
        "as the unit, so they say whether a difference holds across subjects for these particular models, not "
        "whether it would hold if the losses were trained again with other seeds (the Verdicts at the top judge "
        "that). Statistics use the test subjects paired across losses; a subject's value for a loss is the mean "
        "over its finished seeds. Subjects with an undefined (NaN) value for any loss are left out of that test "
        f"(n says how many remain). Significance level α = {ALPHA}."
    )
    _wilcoxon(data, paired, out)
    _friedman(paired, out)
    _bootstrap(paired, out, files, suffix)
    _test_then_rank(paired, out)
    return out


def _paired_tables(data: RunData, dataset: str) -> dict[str, pd.DataFrame]:
    """Wide subjects x losses tables of the Table 2 metrics; each value is the mean over the loss's finished seeds."""
    from lossbench.report.stats import pivot_subjects

    ts = data.test_subjects
    if ts.empty:
        return {}
    sub = ts[ts["cell_id"].astype(str).isin(data.ok_cell_ids(dataset))]
    keys = [k for k, _ in TEST_METRICS if k in sub.columns]
    if sub.empty or not keys:
        return {}
    long = sub.groupby(["label", "subject"], sort=False)[keys].mean().reset_index()
    order = [lab for lab in data.labels if lab in set(long["label"])]
    return {k: pivot_subjects(long, k, method_col="label")[order] for k in keys}


def _arrow(direction: str) -> str:
    return "↑" if direction == "max" else "↓"


def _wilcoxon(data: RunData, p: _Paired, out: StatsSection) -> None:
    """Each loss against the baseline (the study's, else the first loss), per metric."""
    from lossbench.report.stats import wilcoxon_vs_baseline

    baseline = data.study.report.baseline
    base_note = ""
    if baseline is None:
        baseline = data.labels[0]
        base_note = " (no `report: {baseline: ...}` in the study: the first loss is used)"
    if baseline not in p.methods:
        out.notes.append(f"Baseline {baseline!r} has no finished cell: the Wilcoxon comparison is skipped.")
        return
    results = {}
    for k in p.keys:
        try:
            results[k] = wilcoxon_vs_baseline(p.wide[k], baseline, p.dirs[k], alpha=ALPHA, nan_policy="omit")
        except LossbenchError as exc:
            out.notes.append(f"Wilcoxon for {p.names[k]} skipped: {exc}")
    if not results:
        return
    rows = [
        Row(label=m, cells=[_wilcoxon_cell(results, k, m) for k in p.keys], color=p.colors.get(m))
        for m in p.methods
        if m != baseline
    ]
    out.tables.append(
        Table(
            id="wilcoxon",
            title=f"Wilcoxon signed-rank test against the baseline {baseline!r}{base_note}",
            columns=[f"{p.names[k]} ({_arrow(p.dirs[k])})" for k in p.keys],
            rows=rows,
            notes=[
                "Each cell: median over subjects of (loss − baseline), two-sided Wilcoxon signed-rank p-value "
                "Holm-corrected over the losses compared for that metric, and the number of subjects. "
                "▲ significantly better than the baseline, ▼ significantly worse."
            ],
        )
    )


def _wilcoxon_cell(results: dict[str, pd.DataFrame], k: str, m: str) -> Cell:
    if k not in results:
        return Cell(text="n/a", css="na")
    r = results[k].loc[m]
    mark, css = ("▲", "better") if r["better"] else (("▼", "worse") if r["worse"] else ("", ""))
    return Cell(text=f"{r['median_diff']:+.4g} (p={r['p_adjusted']:.3g}, n={int(r['n'])}) {mark}".rstrip(), css=css)


def _friedman(p: _Paired, out: StatsSection) -> None:
    """One Friedman test per metric (needs three losses or more)."""
    from lossbench.report.stats import friedman_test

    if len(p.methods) < 3:
        out.notes.append("Friedman test skipped: it needs at least three losses with finished cells.")
        return
    rows = []
    for k in p.keys:
        try:
            f = friedman_test(p.wide[k], nan_policy="omit")
        except LossbenchError as exc:
            out.notes.append(f"Friedman test for {p.names[k]} skipped: {exc}")
            continue
        stat = "n/a" if not np.isfinite(f["statistic"]) else f"{f['statistic']:.3f}"
        sig = f["p_value"] < ALPHA
        cells = [
            Cell(text=stat),
            Cell(text=f"{f['p_value']:.3g}", css="better" if sig else ""),
            Cell(text=str(f["n_subjects"])),
            Cell(text=str(f["n_methods"])),
        ]
        rows.append(Row(label=p.names[k], cells=cells))
    if rows:
        out.tables.append(
            Table(
                id="friedman",
                title="Friedman test: do the losses differ at all?",
                columns=["χ² statistic", "p-value", "subjects", "losses"],
                rows=rows,
                row_header="Metric",
                notes=["Null hypothesis: every loss has the same distribution of the metric over subjects."],
            )
        )


def _bootstrap(p: _Paired, out: StatsSection, files: Path, suffix: str) -> None:
    """Rank stability over bootstrap resamples of the subjects: a table and the blob plot."""
    from lossbench.report import plots
    from lossbench.report.stats import bootstrap_ranking

    try:
        boot = bootstrap_ranking(p.wide, p.dirs, n_resamples=N_BOOTSTRAP, seed=0, nan_policy="omit")
    except LossbenchError as exc:
        out.notes.append(f"Bootstrap ranking skipped: {exc}")
        return
    s = boot.summary.sort_values(["full_rank", "median_rank"])
    rows = [
        Row(
            label=str(m),
            color=p.colors.get(str(m)),
            cells=[
                Cell(text=str(int(r["full_rank"]))),
                Cell(text=f"{r['mean_rank']:.2f}"),
                Cell(text=f"{r['median_rank']:g}"),
                Cell(text=f"{r['rank_q025']:g} – {r['rank_q975']:g}"),
                Cell(text=f"{100 * r['p_first']:.1f}%"),
                Cell(text=f"{100 * r['p_tied_first']:.1f}%"),
            ],
        )
        for m, r in s.iterrows()
    ]
    tau = boot.kendall_tau_median
    tau_text = "undefined (all rankings constant)" if not np.isfinite(tau) else f"{tau:.3f}"
    out.tables.append(
        Table(
            id="bootstrap",
            title="Bootstrap rank stability",
            columns=["Rank (all subjects)", "Mean rank", "Median rank", "95% interval", "Ranked first", "Shared first"],
            rows=rows,
            notes=[
                f"{N_BOOTSTRAP} bootstrap resamples of the {boot.n_subjects} test subjects (seed {boot.seed}); "
                f"in each, losses are ranked like the test table (dense rank per metric, mean over the "
                f"{len(p.keys)} metrics, dense rank of that). Median Kendall's τ between a resample's ranking and "
                f"the ranking on all subjects: {tau_text} (1 = identical order).",
                "Ranked first: share of the resamples in which the loss came first; a first place shared by m "
                "tied losses counts 1/m for each, so the column sums to 100%. Shared first: share of the resamples "
                "in which the loss tied with others for first place (these shares overlap and do not sum to 100%).",
            ],
        )
    )
    path = plots.plot_bootstrap_blobs(
        boot.rank_frequency, boot.summary, p.colors, files / f"bootstrap_blobs{suffix}.png", n_resamples=N_BOOTSTRAP
    )
    out.figures.append(
        Figure(
            src=f"{files.name}/{path.name}",
            title="Bootstrap rank distribution (blob plot)",
            caption="Disc area: share of the bootstrap resamples that gave the loss that rank; bar: 95% "
            "interval; dot: median; cross: rank on all test subjects.",
        )
    )


def _test_then_rank(p: _Paired, out: StatsSection) -> None:
    """Significance-based ranking per metric: wins in one-sided pairwise tests."""
    from lossbench.report.stats import test_then_rank

    ttr: dict[str, Any] = {}
    for k in p.keys:
        try:
            ttr[k] = test_then_rank(p.wide[k], p.dirs[k], alpha=ALPHA, nan_policy="omit")
        except LossbenchError as exc:
            out.notes.append(f"Test-then-rank for {p.names[k]} skipped: {exc}")
    if not ttr:
        return
    rows = [
        Row(
            label=m,
            color=p.colors.get(m),
            cells=[
                Cell(
                    text=f"{int(t.rank[m])} ({int(t.wins[m])} win{'s' if int(t.wins[m]) != 1 else ''})",
                    best=int(t.rank[m]) == 1 and int(t.wins[m]) > 0,
                )
                for t in ttr.values()
            ],
        )
        for m in p.methods
    ]
    out.tables.append(
        Table(
            id="test-then-rank",
            title="Test-then-rank (significance-based ranking)",
            columns=[p.names[k] for k in ttr],
            rows=rows,
            notes=[
                "A loss's wins: the number of other losses it beats in a one-sided Wilcoxon signed-rank test "
                "(Holm-corrected over all ordered pairs of the metric); rank = 1 + number of losses with more "
                "wins (ties share the smallest rank)."
            ],
        )
    )
