"""The figures of one dataset (:mod:`lossbench.report.plots`): curves, detection by size, rank heatmap, timing.

Each figure is drawn only when the run has the data for it; PNG files go to the report's figure folder and are
referenced relative to the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from lossbench.report.model import Figure
from lossbench.report.run_data import RunData
from lossbench.report.sections.results import TEST_METRICS, VAL_METRICS

__all__ = ["dataset_figures"]


def dataset_figures(
    data: RunData, dataset: str, colors: dict[str, str], files: Path, suffix: str, rank_tables: list[tuple[str, Any]]
) -> list[Figure]:
    """The figures of ``dataset`` that its results allow, written as ``files/<name><suffix>.png``.

    Args:
        data: the run.
        dataset: the dataset label.
        colors: loss label -> colour.
        files: the figure folder (its name is the figures' path relative to the report).
        suffix: file-name suffix that keeps the datasets' figures apart.
        rank_tables: ``(prefix, ranking)`` of the dataset's ranked tables, for the heatmap.
    """
    ok_ids = set(data.ok_cell_ids(dataset))
    steps = (
        _curves(data, ok_ids, colors, files, suffix),
        _size_bins(data, ok_ids, colors, files, suffix),
        _rank_heatmap(rank_tables, files, suffix),
        _timing(data, dataset, colors, files, suffix),
    )
    return [f for f in steps if f is not None]


def _curves(data: RunData, ok_ids: set[str], colors: dict[str, str], files: Path, suffix: str) -> Figure | None:
    from lossbench.report import plots

    hist = data.history
    if not hist.empty:
        hist = hist[hist["cell_id"].astype(str).isin(ok_ids)]
    if hist.empty:
        return None
    p = plots.plot_curves(hist, colors, files / f"curves{suffix}.png")
    return Figure(
        f"{files.name}/{p.name}",
        "Training and validation curves (in the spirit of the ICI paper's Figure 3)",
        "(A) training loss (each loss's own total, so scales differ), validation (B) missed instances, "
        "(C) false instances and (D) DSC against epoch. Line: mean over seeds; band: min to max over seeds.",
    )


def _size_bins(data: RunData, ok_ids: set[str], colors: dict[str, str], files: Path, suffix: str) -> Figure | None:
    from lossbench.metrics import bin_names
    from lossbench.report import plots

    ts = data.test_subjects
    if ts.empty:
        return None
    ts = ts[ts["cell_id"].astype(str).isin(ok_ids)]
    bins = bin_names(data.study.evaluation.size_bins)
    if ts.empty or not all(f"n_target_{b}" in ts.columns for b in bins):
        return None
    p = plots.plot_size_bins(ts, bins, colors, files / f"size_bins{suffix}.png")
    return Figure(
        f"{files.name}/{p.name}",
        "Detection by instance size (test set)",
        "Recall = detected / target instances pooled over the test subjects, and the number of missed "
        "instances, per target-size bin; bars: mean over seeds, error bars: standard deviation over "
        "seeds.",
    )


def _rank_heatmap(rank_tables: list[tuple[str, Any]], files: Path, suffix: str) -> Figure | None:
    from lossbench.report import plots

    titles = {"val": dict(VAL_METRICS), "test": dict(TEST_METRICS)}
    heat = []
    for prefix, rt in rank_tables:
        r = rt.ranks.astype(float).where(~rt.nan_flags)
        r.columns = [f"{prefix}: {titles.get(prefix, {}).get(c, c)}" for c in r.columns]
        heat.append(r)
    if not heat:
        return None
    p = plots.plot_rank_heatmap(
        pd.concat(heat, axis=1),
        files / f"rank_heatmap{suffix}.png",
        title="Dense rank per metric (val: validation table, test: test table)",
    )
    return Figure(
        f"{files.name}/{p.name}",
        "Rank heatmap",
        "Dense rank of each loss per metric of the validation and test tables above (1 = best); blank: no value. "
        "Ranks of means: descriptive, not verdicts.",
    )


def _timing(data: RunData, dataset: str, colors: dict[str, str], files: Path, suffix: str) -> Figure | None:
    from lossbench.report import plots

    res = data.ok_results(dataset)
    if not ({"mean_step_s", "loss_share"} <= set(res.columns) and res["mean_step_s"].notna().any()):
        return None
    p = plots.plot_timing(res, colors, files / f"timing{suffix}.png")
    return Figure(
        f"{files.name}/{p.name}",
        "Time per training step and the loss's share",
        "Light bar: mean wall time of an optimiser step (mean over seeds, error bar: std over seeds); dark "
        "bar: the part spent in the loss's forward and backward pass.",
    )
