"""The ranked result tables of one dataset: validation (the ICI paper's Table 1), test (its Table 2), instance quality.

The tables are descriptive: they rank means, they are not evidence that one loss beats another (the report's
Verdicts judge that against run-to-run variation). The instance-quality table (panoptic quality and CC-Metrics) has
the layout of the test table.

Every number of a table is the mean over the finished seeds of a loss; the small ``±`` value next to it is the
standard deviation over those seeds (``ddof=1``, shown with two or more seeds). Validation numbers of a cell are
those of its best epoch (highest mean validation DSC), recomputed from the per-subject validation rows with
:func:`lossbench.metrics.study_aggregates`. Dense ranks are computed on the printed values
(:func:`lossbench.report.ranking.rank_table`); the best value is bold, the second best underlined.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lossbench.report.model import Cell, Row, Table
from lossbench.report.run_data import RunData

__all__ = [
    "VAL_METRICS",
    "TEST_METRICS",
    "INSTANCE_METRICS",
    "validation_table",
    "test_set_table",
    "instance_table",
    "count_text",
]

#: Validation table (the paper's Table 1): metric key, column title. Values come from the best epoch of each cell.
VAL_METRICS = (
    ("dice", "DSC"),
    ("total_mi", "Total MI"),
    ("subjects_with_mi", "Subjects w/ MI"),
    ("subjects_all_mi", "Subjects w/ all MI"),
    ("total_fi", "Total FI"),
    ("subjects_with_fi", "Subjects w/ FI"),
    ("subjects_without_mi_fi", "Subjects wo/ MI & FI"),
)

#: Test table (the paper's Table 2): per-subject metric key, column title; each shown as mean (std) over subjects.
TEST_METRICS = (
    ("dice", "DSC"),
    ("volume_difference", "Volume difference (voxels)"),
    ("lesionwise_f1", "Lesion-wise F1"),
    ("simple_lesion_count", "Simple lesion count"),
)

#: Instance-quality table: panoptic quality (panoptica's semantics) and CC-Metrics, per-subject key, column title.
INSTANCE_METRICS = (
    ("pq", "PQ"),
    ("sq", "SQ"),
    ("rq", "RQ"),
    ("cc_dice", "CC-Dice"),
    ("pq_dsc", "PQ (DSC)"),
    ("cc_missed", "CC missed"),
)

#: The metrics that are NaN for a subject whose prediction and target are both empty (left out of the means).
_PANOPTIC = ("pq", "sq", "rq", "pq_dsc")

#: Decimals printed (and ranked: ranks are computed on the printed values) per metric; counts use count_text.
_DECIMALS = {
    "dice": 4,
    "lesionwise_f1": 4,
    "volume_difference": 2,
    "simple_lesion_count": 4,
    "cc_missed": 4,
}
_COUNT_METRICS = {k for k, _ in VAL_METRICS if k != "dice"}


# ------------------------------------------------------------------------------------------ printing


def count_text(v: float) -> str:
    """A count: an integer when it is one, else one decimal (a mean over seeds); ``n/a`` when not finite."""
    if not np.isfinite(v):
        return "n/a"
    return f"{int(round(v))}" if abs(v - round(v)) < 1e-9 else f"{v:.1f}"


def _fmt(metric: str, v: float) -> str:
    if not np.isfinite(v):
        return "n/a"
    if metric in _COUNT_METRICS:
        return count_text(v)
    d = _DECIMALS.get(metric, 4)
    return f"{v:,.{d}f}"


def _round(metric: str, v: float) -> float:
    """The value as printed (ranks are computed on printed values, as in the paper)."""
    if not np.isfinite(v):
        return float("nan")
    return round(v, 1) if metric in _COUNT_METRICS else round(v, _DECIMALS.get(metric, 4))


def _spread(metric: str, v: float) -> str:
    if not np.isfinite(v):
        return ""
    return f"±{v:.1f}" if metric in _COUNT_METRICS else f"±{v:,.{_DECIMALS.get(metric, 4)}f}"


# ------------------------------------------------------------------------------------------ aggregation


def _best_epoch_rows(data: RunData, dataset: str) -> pd.DataFrame:
    """Per finished ("ok") cell: validation numbers of its best epoch (Table 1 columns + best_epoch)."""
    from lossbench.metrics import study_aggregates

    vs = data.val_subjects
    rows = []
    for r in data.ok_results(dataset).itertuples(index=False):
        row: dict[str, Any] = {"label": str(r.label), "seed": int(r.seed), "best_epoch": r.best_epoch}
        sub = pd.DataFrame()
        if not vs.empty and "epoch" in vs.columns and pd.notna(r.best_epoch):
            sub = vs[(vs["cell_id"] == r.cell_id) & (vs["epoch"] == int(r.best_epoch))]
        if not sub.empty:
            agg = study_aggregates(sub)
            row["dice"] = float(pd.to_numeric(sub["dice"]).mean())
            row.update({k: float(agg[k]) for k, _ in VAL_METRICS if k != "dice"})
        else:  # no per-subject validation rows: the cell's own summary from done.json
            row["dice"] = float(getattr(r, "val_dsc", np.nan))
            for k, _ in VAL_METRICS[1:]:
                row[k] = float(getattr(r, f"val_{k}", np.nan))
        rows.append(row)
    return pd.DataFrame(rows, columns=["label", "seed", "best_epoch", *[k for k, _ in VAL_METRICS]])


def _test_cell_stats(data: RunData, dataset: str, metrics: Sequence[tuple[str, str]] = TEST_METRICS) -> pd.DataFrame:
    """Per finished ("ok") cell: mean and std over test subjects of ``metrics`` (NaN subject values left out)."""
    ts = data.test_subjects
    cols = [k for k, _ in metrics]
    if ts.empty:
        return pd.DataFrame(columns=["label", "seed", *[f"{c}_mean" for c in cols], *[f"{c}_std" for c in cols]])
    sub = ts[ts["cell_id"].astype(str).isin(data.ok_cell_ids(dataset))]
    rows = []
    for (lab, seed), g in sub.groupby(["label", "seed"], sort=False):
        row: dict[str, Any] = {"label": str(lab), "seed": int(seed)}
        for c in cols:
            v = pd.to_numeric(g[c], errors="coerce") if c in g else pd.Series(dtype=float)
            row[f"{c}_mean"] = float(v.mean()) if v.notna().any() else float("nan")
            row[f"{c}_std"] = float(v.std(ddof=1)) if v.notna().sum() > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def _seed_mean_std(frame: pd.DataFrame, labels: Sequence[str], columns: Sequence[str]) -> tuple[pd.DataFrame, ...]:
    """Mean, std over seeds (ddof=1) and number of seeds per label (labels without rows give NaN / 0)."""
    if frame.empty:
        empty = pd.DataFrame(np.nan, index=pd.Index(labels), columns=list(columns))
        return empty, empty.copy(), pd.Series(0, index=pd.Index(labels))
    g = frame.groupby("label")[list(columns)]
    mean = g.mean().reindex(labels)
    std = g.std(ddof=1).reindex(labels)
    n = frame.groupby("label").size().reindex(labels).fillna(0).astype(int)
    return mean, std, n


def _status_note(data: RunData, dataset: str, label: str) -> str:
    cells = data.cells[(data.cells["dataset"] == dataset) & (data.cells["label"] == label)]
    bad = cells[cells["status"] != "ok"]
    if bad.empty:
        return ""
    parts = [f"seed {int(r.seed)} {r.status}" for r in bad.itertuples(index=False)]
    if len(bad) == len(cells):
        return "no finished seed: " + ", ".join(parts)
    return ", ".join(parts) + " (mean over the other seeds)"


def _n_subjects(frame: pd.DataFrame, dataset: str) -> str:
    if frame.empty or "subject" not in frame.columns:
        return "?"
    sub = frame[frame["dataset"] == dataset]
    return str(sub["subject"].nunique()) if not sub.empty else "?"


# ------------------------------------------------------------------------------------------ tables


@dataclass
class _SeedStats:
    """Per loss (rows) and metric (columns): mean and std over seeds, number of seeds, std over subjects.

    The std over subjects (test table only) is printed in brackets after the mean.
    """

    mean: pd.DataFrame
    seed_std: pd.DataFrame
    n_seeds: pd.Series
    subject_std: pd.DataFrame | None = None


def _ranked_table(
    tid: str,
    title: str,
    data: RunData,
    dataset: str,
    metrics: Sequence[tuple[str, str]],
    stats: _SeedStats,
    colors: dict[str, str],
    extra: tuple[str, pd.Series] | None = None,
) -> tuple[Table, Any]:
    """A table of the means with dense ranks per column and the mean rank, plus the ranking itself."""
    from lossbench.metrics import metric_directions
    from lossbench.report.ranking import rank_table

    keys = [k for k, _ in metrics]
    mean = stats.mean
    printed = pd.DataFrame({k: [_round(k, float(v)) for v in mean[k]] for k in keys}, index=mean.index)
    rt = rank_table(printed, metric_directions(keys), divisor=data.study.report.ranking.divisor)
    arrows = {"max": "↑", "min": "↓"}
    columns = ["Mean rank (↓)"] + [f"{name} ({arrows[rt.directions[k]]})" for k, name in metrics]
    if extra is not None:
        columns.append(extra[0])
    rows = []
    for lab in mean.index:
        cells = [
            Cell(
                text=f"{rt.mean_rank[lab]:.2f}",
                best=bool(rt.best.at[lab, "mean_rank"]),
                second=bool(rt.second.at[lab, "mean_rank"]),
            )
        ]
        cells += [_value_cell(stats, rt, lab, k) for k in keys]
        if extra is not None:
            v = extra[1].get(lab, np.nan)
            cells.append(Cell(text=count_text(float(v)) if pd.notna(v) else "n/a"))
        rows.append(Row(label=str(lab), cells=cells, color=colors.get(str(lab)), note=_status_note(data, dataset, lab)))
    notes = []
    if rt.any_nan:
        notes.append("n/a: no value (e.g. no finished seed for this loss); ranked last in its column.")
    return Table(id=tid, title=title, columns=columns, rows=rows, align=["r"] * len(columns), notes=notes), rt


def _value_cell(stats: _SeedStats, rt: Any, lab: str, k: str) -> Cell:
    """The mean of one loss and metric with its rank, best/second marker and spread over seeds."""
    v = float(stats.mean.at[lab, k])
    if np.isfinite(v):
        text = _fmt(k, v)
        if stats.subject_std is not None:
            text += f" ({_fmt(k, float(stats.subject_std.at[lab, k]))})"
        css = ""
    else:
        text, css = "n/a", "na"
    return Cell(
        text=text,
        rank=int(rt.ranks.at[lab, k]),
        best=bool(rt.best.at[lab, k]),
        second=bool(rt.second.at[lab, k]),
        spread=_spread(k, float(stats.seed_std.at[lab, k])) if stats.n_seeds.get(lab, 0) > 1 else "",
        css=css,
    )


def validation_table(data: RunData, dataset: str, colors: dict[str, str]) -> tuple[Table, Any]:
    """The validation table (best epoch of each cell) and its ranking."""
    per_cell = _best_epoch_rows(data, dataset)
    keys = [k for k, _ in VAL_METRICS]
    mean, std, n = _seed_mean_std(per_cell, data.labels, keys + ["best_epoch"])
    table, rt = _ranked_table(
        "validation",
        "Validation set (layout of the ICI paper's Table 1): best epoch by validation DSC",
        data,
        dataset,
        VAL_METRICS,
        _SeedStats(mean=mean, seed_std=std, n_seeds=n),
        colors,
        extra=("Best epoch", mean["best_epoch"]),
    )
    n_sub = _n_subjects(data.val_subjects, dataset)
    table.notes.insert(
        0,
        f"DSC: mean over the {n_sub} validation subjects; counts: totals / numbers of subjects over them, at each "
        "cell's best epoch. Every value is the mean over seeds; ± is the standard deviation over seeds.",
    )
    return table, rt


def _subject_mean_table(
    data: RunData, dataset: str, colors: dict[str, str], metrics: Sequence[tuple[str, str]], tid: str, title: str
) -> tuple[Table, Any] | None:
    """A table of per-subject test metrics: mean (std) over subjects per seed, averaged over seeds; None if empty."""
    per_cell = _test_cell_stats(data, dataset, metrics)
    if per_cell.empty:
        return None
    keys = [k for k, _ in metrics]
    mean, seed_std, n = _seed_mean_std(per_cell, data.labels, [f"{k}_mean" for k in keys])
    sstd, _, _ = _seed_mean_std(per_cell, data.labels, [f"{k}_std" for k in keys])
    mean.columns = keys
    seed_std.columns = keys
    sstd.columns = keys
    table, rt = _ranked_table(
        tid,
        title,
        data,
        dataset,
        metrics,
        _SeedStats(mean=mean, seed_std=seed_std, n_seeds=n, subject_std=sstd),
        colors,
    )
    n_sub = _n_subjects(data.test_subjects, dataset)
    table.notes.insert(
        0,
        f"mean (std) over the {n_sub} test subjects (std with ddof=1) of each seed, averaged over seeds; ± is the "
        "standard deviation over seeds of the per-seed mean.",
    )
    return table, rt


def test_set_table(data: RunData, dataset: str, colors: dict[str, str]) -> tuple[Table, Any] | None:
    """The test table (best checkpoint of each cell) and its ranking; None without test results."""
    return _subject_mean_table(
        data,
        dataset,
        colors,
        TEST_METRICS,
        "test",
        "Test set (layout of the ICI paper's Table 2): best checkpoint of each cell",
    )


def instance_table(data: RunData, dataset: str, colors: dict[str, str]) -> tuple[Table, Any] | None:
    """The instance-quality table (panoptic quality, CC-Metrics) of the test set and its ranking.

    None when the run has no per-subject test rows with these metrics (a run made before they existed).
    """
    ts = data.test_subjects
    metrics = [(k, name) for k, name in INSTANCE_METRICS if k in ts.columns]
    if ts.empty or not metrics:
        return None
    out = _subject_mean_table(
        data,
        dataset,
        colors,
        metrics,
        "instances",
        "Test set: instance quality (panoptic quality and CC-Metrics), best checkpoint of each cell",
    )
    if out is not None:
        out[0].notes.append(_empty_case_note(data, dataset, [k for k, _ in metrics]))
    return out


def _empty_case_note(data: RunData, dataset: str, keys: Sequence[str]) -> str:
    """The empty-case policy and how many (cell, subject) results the panoptic means left out, overall and per loss."""
    ts = data.test_subjects
    sub = ts[ts["cell_id"].astype(str).isin(data.ok_cell_ids(dataset))]
    names = dict(INSTANCE_METRICS)
    panoptic = [k for k in _PANOPTIC if k in keys]
    parts = []
    if panoptic:
        nan = pd.to_numeric(sub[panoptic[0]], errors="coerce").isna()
        per_loss = nan.groupby(sub["label"], sort=False).agg(["sum", "count"])
        detail = ", ".join(f"{lab} {int(r['sum'])}/{int(r['count'])}" for lab, r in per_loss.iterrows() if r["sum"])
        parts.append(
            f"{', '.join(names[k] for k in panoptic)} are undefined (NaN) for a subject whose prediction and target "
            f"are both empty (panoptica's convention), and such subjects are left out of those means: "
            f"{int(nan.sum())} of the {len(sub)} (cell, subject) results here"
            + (f" ({detail})" if detail else "")
            + "; they are 0 when no instance pair is matched (e.g. an empty prediction of a non-empty target)"
        )
    if "cc_dice" in keys:
        parts.append("CC-Dice is 1 when both are empty and 0 when only the prediction has foreground")
    return "Empty cases: " + "; ".join(parts) + "."
