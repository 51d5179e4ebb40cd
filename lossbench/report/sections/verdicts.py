"""The first part of the report: every loss against the baseline, with the training run as the unit.

Built on :mod:`lossbench.report.verdicts`: the per-seed paired differences of every results column in
:data:`~lossbench.report.verdicts.DEFAULT_METRICS` that the run has (the test metrics of the report's tables and the
validation DSC), their Bonferroni-adjusted Student t intervals and verdicts, one plain sentence per finding, the
method note, and the warnings about what the study can say (too few seeds, cells that did not finish, best epochs
at the last epoch). The same table goes to ``verdicts.csv``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from lossbench.report.model import Cell, Figure, Row, Table
from lossbench.report.run_data import RunData

__all__ = ["VerdictSection", "verdict_section", "baseline_of", "run_warnings_of"]

_ARROWS = {"max": "↑", "min": "↓"}


@dataclass
class VerdictSection:
    """The verdicts of a run: what the report shows first and what ``verdicts.csv`` holds.

    Attributes:
        baseline: the loss every other loss is compared with.
        seeds: one line on the seeds (how many, which; the pairing).
        sentences: one plain sentence per finding (:func:`~lossbench.report.verdicts.verdict_findings`).
        warnings: what limits the verdicts (:func:`~lossbench.report.verdicts.study_warnings`).
        table: the differences with their intervals, verdicts, seeds and detectable differences (None: nothing to
            compare).
        method: how the verdicts were computed.
        notes: metrics left out and why.
        verdicts: the :func:`~lossbench.report.verdicts.run_verdicts` table (columns ``COLUMNS``).
        figure: with several datasets, the differences per dataset with their intervals (see
            :func:`level_figure`).
    """

    baseline: str
    seeds: str
    sentences: list[str]
    warnings: list[str]
    table: Table | None
    method: str
    notes: list[str] = field(default_factory=list)
    verdicts: pd.DataFrame = field(default_factory=pd.DataFrame)
    figure: Figure | None = None


def baseline_of(data: RunData) -> str:
    """The study's baseline label, else the first loss (the Wilcoxon section uses the same rule)."""
    return str(data.study.report.baseline) if data.study.report.baseline is not None else data.labels[0]


def run_warnings_of(data: RunData) -> list[str]:
    """Warnings about what the run's verdicts can say, over every expected cell (failed and missing ones included)."""
    from lossbench.report.verdicts import study_warnings

    cells = data.cells
    if "val_dsc" in data.results.columns and "cell_id" in cells.columns:  # for the runs that did not learn
        cells = cells.merge(data.results[["cell_id", "val_dsc"]], on="cell_id", how="left")
    return study_warnings(cells)


def verdict_section(data: RunData) -> VerdictSection:
    """The verdicts of every loss against the baseline for every judged metric the run has."""
    from lossbench.report.verdicts import COLUMNS, DEFAULT_METRICS, method_note, run_verdicts, verdict_findings

    baseline = baseline_of(data)
    metrics = [m for m in DEFAULT_METRICS if m in data.results.columns]
    absent = [m for m in DEFAULT_METRICS if m not in data.results.columns]
    notes = []
    if absent:
        notes.append(
            f"Not judged: {', '.join(_name(m) for m in absent)} (not in this run's results.csv; a run made "
            "before these metrics existed: rerun it to get them)."
        )
    section = VerdictSection(
        baseline=baseline,
        seeds=_seeds_line(data, baseline),
        sentences=[],
        warnings=run_warnings_of(data),
        table=None,
        method="",
        notes=notes,
        verdicts=pd.DataFrame(columns=list(COLUMNS)),
    )
    finished = set(data.results.loc[data.results["status"] == "ok", "label"])
    if baseline not in finished:
        section.sentences = [f"No verdicts: the baseline {baseline} has no finished cell to compare with."]
        return section
    if len(data.labels) < 2:
        section.sentences = [f"No verdicts: the study has one loss ({baseline}), nothing to compare it with."]
        return section
    verdicts = run_verdicts(data.results, baseline, metrics=metrics)
    section.verdicts = verdicts
    section.sentences = verdict_findings(verdicts)
    section.table = _verdict_table(verdicts, several=len(data.datasets) > 1)
    section.method = method_note(verdicts)
    return section


#: Metrics drawn in the per-dataset figure, when the run has them.
LEVEL_METRICS = ("test_dice", "test_lesionwise_f1", "test_cc_dice", "test_pq")


def level_figure(data: RunData, section: VerdictSection, colors: dict[str, str], files: Any) -> Figure | None:
    """With several datasets: every loss's difference to the baseline per dataset, with its interval."""
    from lossbench.report.plots import plot_verdict_levels

    if len(data.datasets) < 2 or section.verdicts.empty:
        return None
    metrics = [m for m in LEVEL_METRICS if m in set(section.verdicts["metric"])]
    if not metrics:
        return None
    path = plot_verdict_levels(
        section.verdicts, metrics, {m: _name(m) for m in metrics}, colors, files / "verdicts_by_dataset.png"
    )
    return Figure(
        src=f"{files.name}/{path.name}",
        title="Differences from the baseline per dataset",
        caption=(
            f"Mean per-seed difference (loss − {section.baseline}) with its 95% interval (Bonferroni over the losses "
            "of a metric and dataset), datasets in study order. Filled markers: better or worse; open: no evidence."
        ),
    )


def _name(metric: str) -> str:
    from lossbench.report.verdicts import METRIC_NAMES

    return METRIC_NAMES.get(metric, metric.replace("_", " "))


def _seeds_line(data: RunData, baseline: str) -> str:
    seeds = list(data.study.seeds)
    ok = data.results[data.results["status"] == "ok"]
    n_ok = ok["seed"].nunique()
    finished = "" if n_ok == len(seeds) else f", {n_ok} of them with finished cells"
    return (
        f"Baseline: {baseline}. Seeds: {len(seeds)} ({', '.join(str(s) for s in seeds)}){finished}. A loss and the "
        "baseline are compared seed by seed: runs with the same seed share the data split and the initial weights."
    )


def _verdict_table(verdicts: pd.DataFrame, *, several: bool) -> Table:
    """One row per (dataset,) metric and loss: difference, interval, verdict, seeds, smallest detectable difference."""
    from lossbench.report.verdicts import number

    rows = []
    for r in verdicts.itertuples(index=False):
        interval = "n/a" if pd.isna(r.ci_low) else f"{number(r.ci_low)} to {number(r.ci_high)}"
        mde = "n/a" if pd.isna(r.mde) else number(float(r.mde), 2, sign=False)
        css = r.verdict if r.verdict in ("better", "worse") else ""
        cells = [Cell(text=str(r.dataset))] if several else []
        cells += [
            Cell(text=str(r.loss)),
            Cell(text=number(float(r.difference))),
            Cell(text=interval),
            Cell(text=str(r.verdict), css=css),
            Cell(text=str(int(r.n_seeds))),
            Cell(text=mde),
        ]
        label = f"{_name(str(r.metric))} ({_ARROWS[str(r.direction)]})"
        rows.append(Row(label=label, cells=cells, note=str(r.note) if isinstance(r.note, str) else ""))
    columns = (["Dataset"] if several else []) + [
        "Loss",
        "Difference (loss − baseline)",
        "95% interval",
        "Verdict",
        "Seeds",
        "Smallest detectable difference",
    ]
    return Table(
        id="verdicts",
        title="Differences from the baseline",
        columns=columns,
        rows=rows,
        row_header="Metric",
        align=(["l"] if several else []) + ["l", "r", "r", "l", "r", "r"],
        notes=[
            "Difference: mean over the paired seeds of (loss − baseline), in the metric's units; ↑ higher is better, "
            "↓ lower is better. 95% interval: Student t, Bonferroni-adjusted over the losses of a metric. "
            "Smallest detectable difference: the true difference found with 80% power at this number of seeds. "
            "All values are also in verdicts.csv."
        ],
    )
