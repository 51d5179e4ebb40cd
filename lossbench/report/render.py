"""``lossbench report RUN_DIR``: ranked markdown / HTML report of a finished (or partly finished) study run.

The report is built from the run folder only, through the loaders of :mod:`lossbench.study.store`
(``load_results``, ``load_subjects``, ``load_history``) and the resolved ``study.yaml``:

* a header with everything needed to read the numbers (dataset, model, training mode, seeds,
  connectivity of the losses' instances and of the metrics, matching rule, empty-case policies,
  ranking rule and divisor, package versions, device, time);
* per dataset, a validation table in the layout of the ICI paper's Table 1 and a test table in the
  layout of its Table 2, with dense ranks in brackets, the mean rank, the best value in bold and the
  second best underlined (:func:`lossbench.report.ranking.rank_table`);
* statistics on the paired test subjects (:mod:`lossbench.report.stats`): Wilcoxon against the
  baseline with Holm correction, Friedman, bootstrap rank stability with Kendall's tau, test-then-rank;
* figures (:mod:`lossbench.report.plots`) and the gradient audit of the study's losses when
  ``lossbench.audit`` is installed;
* the status of every cell: diverged, failed and missing cells are listed, never hidden.

Seeds: every number of a table is the mean over the finished seeds of a loss; the small ``±`` value
next to it is the standard deviation over those seeds (``ddof=1``, shown with two or more seeds).
Validation numbers of a cell are those of its best epoch (highest mean validation DSC), recomputed
from the per-subject validation rows with :func:`lossbench.metrics.study_aggregates`.

Output: ``RUN_DIR/report.md``, ``RUN_DIR/report.html`` (self-contained apart from the PNG figures in
``RUN_DIR/report_files/``, referenced by relative paths) rendered from the jinja2 templates in
``lossbench/report/templates`` with autoescaping on.
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lossbench.errors import ConfigError, LossbenchError, StudyError, expect

__all__ = ["write_report", "load_run", "RunData", "VAL_METRICS", "TEST_METRICS", "FORMATS"]

#: Output formats of :func:`write_report`.
FORMATS = ("md", "html")

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

#: Decimals printed (and ranked: ranks are computed on the printed values) per metric; counts use :func:`_count`.
_DECIMALS = {"dice": 4, "lesionwise_f1": 4, "volume_difference": 2, "simple_lesion_count": 4}
_COUNT_METRICS = {k for k, _ in VAL_METRICS if k != "dice"}

_N_BOOTSTRAP = 1000
_ALPHA = 0.05


# ------------------------------------------------------------------------------------------------ data


@dataclass
class RunData:
    """Everything the report reads from a run folder.

    Attributes:
        root: the run folder.
        study: the resolved study (:class:`lossbench.study.config.StudyConfig`).
        results: one row per finished cell (``load_results``), ``status`` "ok" or "diverged".
        history: per-epoch rows of the finished cells (``load_history``).
        val_subjects: per validation epoch and subject rows (``load_subjects(split="val")``).
        test_subjects: per test subject rows of the finished cells (``load_subjects(split="test")``).
        cells: one row per expected cell of the study grid (loss x dataset x seed) with its status:
            "ok", "diverged", "failed" (an ``error.txt`` was left), "unfinished" or "not run".
        versions: package versions recorded by a finished cell.
        rebuilt_results: whether ``results.csv`` was missing (an interrupted run) and was rebuilt from the
            finished cells' ``done.json`` with :meth:`lossbench.study.store.RunStore.write_results`.
    """

    root: Path
    study: Any
    results: pd.DataFrame
    history: pd.DataFrame
    val_subjects: pd.DataFrame
    test_subjects: pd.DataFrame
    cells: pd.DataFrame
    versions: dict[str, str]
    rebuilt_results: bool = False

    @property
    def labels(self) -> list[str]:
        """Loss labels in study order."""
        return [str(loss.label) for loss in self.study.losses]

    @property
    def datasets(self) -> list[str]:
        """Dataset labels in study order."""
        return [str(ds.label) for _, ds in self.study.dataset_list()]


def _not_a_run(root: Path, why: str) -> StudyError:
    return StudyError(
        f"`run_dir` must be a lossbench run folder (written by `lossbench run STUDY.yaml --out RUN_DIR`), "
        f"got {str(root)!r}: {why}"
    )


def _read_table(loader: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    try:
        return loader()
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def load_run(run_dir: str | Path) -> RunData:
    """Read a run folder through the store's loaders and check that there is something to report.

    A run that was interrupted before it aggregated its results (finished cells, no ``results.csv``) gets its
    ``results.csv`` written from the finished cells with the store's own ``RunStore.write_results``.

    Args:
        run_dir: the run folder.

    Returns:
        :class:`RunData`.

    Raises:
        StudyError: the path is not a folder, not a lossbench run folder (no ``run.json`` / ``study.yaml``),
            or no cell has finished, or every finished cell diverged.
        ConfigError: the run's ``study.yaml`` is not a valid study file.
    """
    from lossbench.study.config import load_study
    from lossbench.study.store import RunStore, load_history, load_results, load_subjects

    if not isinstance(run_dir, (str, Path)):
        raise expect("run_dir", "a path to a run folder", type(run_dir).__name__, cls=StudyError)
    root = Path(run_dir)
    if not root.exists():
        raise _not_a_run(root, "no such folder")
    if not root.is_dir():
        raise _not_a_run(root, "it is a file")
    store = RunStore(root)
    if store.owner() is None:
        raise _not_a_run(root, f"it has no {RunStore.MARKER}")
    if not (root / "study.yaml").is_file():
        raise _not_a_run(root, "it has no study.yaml")
    study = load_study(root / "study.yaml")
    hint = "no cell has finished yet; wait for `lossbench run` or rerun it (finished cells are kept)"
    rebuilt = False
    if not (root / "results.csv").is_file():
        # An interrupted run has finished cells but no results table yet: aggregate them the runner's way.
        from lossbench.study.grid import expand_grid

        ids = [c.id for c in expand_grid(study)]
        if any(store.is_done(cid) for cid in ids):
            store.write_results(ids)
            rebuilt = True
    if not (root / "results.csv").is_file():
        raise expect(
            "run_dir",
            "a run with at least one finished cell",
            f"{str(root)!r} without results.csv",
            hint=hint,
            cls=StudyError,
        )
    results = _read_table(lambda: load_results(root))
    if results.empty:
        raise expect(
            "run_dir", "a run with at least one finished cell", f"{str(root)!r} with none", hint=hint, cls=StudyError
        )
    missing = [c for c in ("cell_id", "label", "dataset", "seed", "status") if c not in results.columns]
    if missing:
        raise expect(
            "run_dir",
            "a run whose results.csv has the columns cell_id, label, dataset, seed, status",
            f"{str(root)!r} whose results.csv lacks {missing}",
            hint="written by another lossbench version? rerun `lossbench run` to rewrite it",
            cls=StudyError,
        )
    results = results.copy()
    if "reason" not in results.columns:
        results["reason"] = ""
    results["label"] = results["label"].astype(str)
    results["dataset"] = results["dataset"].astype(str)
    ok = results[results["status"] == "ok"]
    if ok.empty:
        reasons = "; ".join(sorted({str(r) for r in results["reason"].fillna("")}))[:300]
        raise expect(
            "run_dir",
            "a run with at least one cell that finished training (status 'ok')",
            f"{len(results)} finished cell(s), all diverged ({reasons})",
            cls=StudyError,
        )
    history = _read_table(lambda: load_history(root))
    val_subjects = _read_table(lambda: load_subjects(root, "val"))
    test_subjects = _read_table(lambda: load_subjects(root, "test"))
    for frame in (history, val_subjects, test_subjects):
        if not frame.empty:
            frame["label"] = frame["label"].astype(str)
            frame["dataset"] = frame["dataset"].astype(str)
    versions: dict[str, str] = {}
    try:
        versions = {str(k): str(v) for k, v in (store.done(str(ok["cell_id"].iloc[0])).get("versions") or {}).items()}
    except StudyError:
        versions = {}
    return RunData(
        root=root,
        study=study,
        results=results,
        history=history,
        val_subjects=val_subjects,
        test_subjects=test_subjects,
        cells=_cell_status(root, study, results),
        versions=versions,
        rebuilt_results=rebuilt,
    )


def _cell_status(root: Path, study: Any, results: pd.DataFrame) -> pd.DataFrame:
    """Every expected (dataset, seed, loss) cell with its status; cells missing from the results are explained."""
    from lossbench.study.grid import expand_grid

    try:
        ids = {(c.dataset_label, c.seed, c.label): c.id for c in expand_grid(study)}
    except LossbenchError:
        ids = {}
    done = {(str(r.dataset), int(r.seed), str(r.label)): r for r in results.itertuples(index=False)}
    rows = []
    for _, ds in study.dataset_list():
        for seed in study.seeds:
            for loss in study.losses:
                key = (str(ds.label), int(seed), str(loss.label))
                r = done.get(key)
                row: dict[str, Any] = {"dataset": key[0], "seed": key[1], "label": key[2]}
                if r is not None:
                    row.update(
                        cell_id=r.cell_id,
                        status=str(r.status),
                        reason=_clean(getattr(r, "reason", "")),
                        best_epoch=getattr(r, "best_epoch", None),
                        epochs_run=getattr(r, "epochs_run", None),
                        wall_s=getattr(r, "wall_s", None),
                        mean_step_s=getattr(r, "mean_step_s", None),
                    )
                else:
                    cid = ids.get(key, "")
                    cell_dir = root / "cells" / cid if cid else None
                    if cell_dir is not None and (cell_dir / "error.txt").is_file():
                        lines = [x for x in (cell_dir / "error.txt").read_text(errors="replace").splitlines() if x]
                        row.update(cell_id=cid, status="failed", reason=lines[-1][:200] if lines else "error")
                    elif cell_dir is not None and cell_dir.is_dir():
                        row.update(cell_id=cid, status="unfinished", reason="interrupted or still running")
                    else:
                        row.update(cell_id=cid, status="not run", reason="")
                rows.append(row)
    return pd.DataFrame(rows)


def _clean(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return " ".join(str(x).split())


# -------------------------------------------------------------------------------------- table model


@dataclass
class Cell:
    """One rendered table cell: text plus optional dense rank, best / second marker and seed spread."""

    text: str = ""
    rank: int | None = None
    best: bool = False
    second: bool = False
    spread: str = ""
    css: str = ""


@dataclass
class Row:
    """One table row: the row label (a loss, a metric, ...), its cells, its loss colour and a note."""

    label: str
    cells: list[Cell]
    color: str | None = None
    note: str = ""


@dataclass
class Table:
    """A table for the templates (rendered the same way in markdown and HTML)."""

    id: str
    title: str
    columns: list[str]
    rows: list[Row]
    row_header: str = "Loss"
    notes: list[str] = field(default_factory=list)
    align: list[str] = field(default_factory=list)


@dataclass
class Figure:
    """A figure: path relative to the report, title and caption."""

    src: str
    title: str
    caption: str


@dataclass
class DatasetSection:
    """Everything reported for one dataset."""

    label: str
    tables: list[Table]
    stats: list[Table]
    stats_notes: list[str]
    figures: list[Figure]
    stats_figures: list[Figure]
    summary: list[str] = field(default_factory=list)


def _count(v: float) -> str:
    if not np.isfinite(v):
        return "n/a"
    return f"{int(round(v))}" if abs(v - round(v)) < 1e-9 else f"{v:.1f}"


def _fmt(metric: str, v: float) -> str:
    if not np.isfinite(v):
        return "n/a"
    if metric in _COUNT_METRICS:
        return _count(v)
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


# ------------------------------------------------------------------------------------ aggregation


def _best_epoch_rows(data: RunData, dataset: str) -> pd.DataFrame:
    """Per finished ("ok") cell: validation numbers of its best epoch (Table 1 columns + best_epoch)."""
    from lossbench.metrics import study_aggregates

    res = data.results[(data.results["dataset"] == dataset) & (data.results["status"] == "ok")]
    vs = data.val_subjects
    rows = []
    for r in res.itertuples(index=False):
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


def _test_cell_stats(data: RunData, dataset: str) -> pd.DataFrame:
    """Per finished ("ok") cell: mean and std over test subjects of the Table 2 metrics."""
    ts = data.test_subjects
    ok_ids = data.results.loc[
        (data.results["dataset"] == dataset) & (data.results["status"] == "ok"), "cell_id"
    ].astype(str)
    cols = [k for k, _ in TEST_METRICS]
    if ts.empty:
        return pd.DataFrame(columns=["label", "seed", *[f"{c}_mean" for c in cols], *[f"{c}_std" for c in cols]])
    sub = ts[ts["cell_id"].astype(str).isin(ok_ids)]
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


def _ranked_table(
    tid: str,
    title: str,
    data: RunData,
    dataset: str,
    metrics: Sequence[tuple[str, str]],
    mean: pd.DataFrame,
    std_subjects: pd.DataFrame | None,
    seed_std: pd.DataFrame,
    n_seeds: pd.Series,
    colors: dict[str, str],
    extra: tuple[str, pd.Series] | None = None,
) -> tuple[Table, Any]:
    from lossbench.metrics import metric_directions
    from lossbench.report.ranking import rank_table

    keys = [k for k, _ in metrics]
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
        for k in keys:
            v = float(mean.at[lab, k])
            if np.isfinite(v):
                text = _fmt(k, v)
                if std_subjects is not None:
                    text += f" ({_fmt(k, float(std_subjects.at[lab, k]))})"
                css = ""
            else:
                text, css = "n/a", "na"
            cells.append(
                Cell(
                    text=text,
                    rank=int(rt.ranks.at[lab, k]),
                    best=bool(rt.best.at[lab, k]),
                    second=bool(rt.second.at[lab, k]),
                    spread=_spread(k, float(seed_std.at[lab, k])) if n_seeds.get(lab, 0) > 1 else "",
                    css=css,
                )
            )
        if extra is not None:
            v = extra[1].get(lab, np.nan)
            cells.append(Cell(text=_count(float(v)) if pd.notna(v) else "n/a"))
        rows.append(Row(label=str(lab), cells=cells, color=colors.get(str(lab)), note=_status_note(data, dataset, lab)))
    notes = []
    if rt.any_nan:
        notes.append("n/a: no value (e.g. no finished seed for this loss); ranked last in its column.")
    return Table(id=tid, title=title, columns=columns, rows=rows, align=["r"] * len(columns), notes=notes), rt


def _leaders(name: str, rt: Any) -> str:
    """One line naming the losses with the best mean rank of a ranked table (ties listed together)."""
    if rt is None:
        return ""
    first = [str(m) for m in rt.overall_rank.index if int(rt.overall_rank[m]) == 1]
    value = float(rt.mean_rank[first[0]])
    who = first[0] if len(first) == 1 else ", ".join(first[:-1]) + " and " + first[-1]
    return f"Best mean rank on the {name} set: {who} ({value:.2f})" + (" (tie)" if len(first) > 1 else "") + "."


def _validation_table(data: RunData, dataset: str, colors: dict[str, str]) -> tuple[Table, Any]:
    per_cell = _best_epoch_rows(data, dataset)
    keys = [k for k, _ in VAL_METRICS]
    mean, std, n = _seed_mean_std(per_cell, data.labels, keys + ["best_epoch"])
    table, rt = _ranked_table(
        "validation",
        "Validation set (layout of the ICI paper's Table 1): best epoch by validation DSC",
        data,
        dataset,
        VAL_METRICS,
        mean,
        None,
        std,
        n,
        colors,
        extra=("Best epoch", mean["best_epoch"]),
    )
    n_sub = _n_subjects(data.val_subjects, data, dataset)
    table.notes.insert(
        0,
        f"DSC: mean over the {n_sub} validation subjects; counts: totals / numbers of subjects over them, at each "
        "cell's best epoch. Every value is the mean over seeds; ± is the standard deviation over seeds.",
    )
    return table, rt


def _n_subjects(frame: pd.DataFrame, data: RunData, dataset: str) -> str:
    if frame.empty or "subject" not in frame.columns:
        return "?"
    sub = frame[frame["dataset"] == dataset]
    return str(sub["subject"].nunique()) if not sub.empty else "?"


def _test_table(data: RunData, dataset: str, colors: dict[str, str]) -> tuple[Table, Any] | None:
    per_cell = _test_cell_stats(data, dataset)
    if per_cell.empty:
        return None
    keys = [k for k, _ in TEST_METRICS]
    mean, seed_std, n = _seed_mean_std(per_cell, data.labels, [f"{k}_mean" for k in keys])
    sstd, _, _ = _seed_mean_std(per_cell, data.labels, [f"{k}_std" for k in keys])
    mean.columns = keys
    seed_std.columns = keys
    sstd.columns = keys
    table, rt = _ranked_table(
        "test",
        "Test set (layout of the ICI paper's Table 2): best checkpoint of each cell",
        data,
        dataset,
        TEST_METRICS,
        mean,
        sstd,
        seed_std,
        n,
        colors,
    )
    n_sub = _n_subjects(data.test_subjects, data, dataset)
    table.notes.insert(
        0,
        f"mean (std) over the {n_sub} test subjects (std with ddof=1) of each seed, averaged over seeds; ± is the "
        "standard deviation over seeds of the per-seed mean.",
    )
    return table, rt


# ------------------------------------------------------------------------------------- statistics


def _paired_tables(data: RunData, dataset: str) -> dict[str, pd.DataFrame]:
    """Wide subjects x losses tables of the Table 2 metrics; each value is the mean over the loss's finished seeds."""
    from lossbench.report.stats import pivot_subjects

    ts = data.test_subjects
    if ts.empty:
        return {}
    ok_ids = data.results.loc[
        (data.results["dataset"] == dataset) & (data.results["status"] == "ok"), "cell_id"
    ].astype(str)
    sub = ts[ts["cell_id"].astype(str).isin(ok_ids)]
    keys = [k for k, _ in TEST_METRICS if k in sub.columns]
    if sub.empty or not keys:
        return {}
    long = sub.groupby(["label", "subject"], sort=False)[keys].mean().reset_index()
    order = [lab for lab in data.labels if lab in set(long["label"])]
    return {k: pivot_subjects(long, k, method_col="label")[order] for k in keys}


def _stats_section(
    data: RunData, dataset: str, colors: dict[str, str], files: Path, suffix: str
) -> tuple[list[Table], list[str], list[Figure]]:
    from lossbench.metrics import metric_directions
    from lossbench.report import plots
    from lossbench.report.stats import bootstrap_ranking, friedman_test, test_then_rank, wilcoxon_vs_baseline

    tables: list[Table] = []
    notes: list[str] = []
    figures: list[Figure] = []
    wide = _paired_tables(data, dataset)
    if not wide:
        return tables, ["No per-subject test results: statistics skipped."], figures
    names = dict(TEST_METRICS)
    keys = list(wide)
    dirs = metric_directions(keys)
    methods = list(wide[keys[0]].columns)
    if len(methods) < 2:
        return tables, ["Fewer than two losses have finished cells: no comparison is possible."], figures
    notes.append(
        "Statistics use the test subjects paired across losses; a subject's value for a loss is the mean over its "
        "finished seeds. Subjects with an undefined (NaN) value for any loss are left out of that test (n says "
        f"how many remain). Significance level α = {_ALPHA}."
    )

    baseline = data.study.report.baseline
    base_note = ""
    if baseline is None:
        baseline = data.labels[0]
        base_note = " (no `report: {baseline: ...}` in the study: the first loss is used)"
    if baseline not in methods:
        notes.append(f"Baseline {baseline!r} has no finished cell: the Wilcoxon comparison is skipped.")
    else:
        results = {}
        for k in keys:
            try:
                results[k] = wilcoxon_vs_baseline(wide[k], baseline, dirs[k], alpha=_ALPHA, nan_policy="omit")
            except LossbenchError as exc:
                notes.append(f"Wilcoxon for {names[k]} skipped: {exc}")
        if results:
            rows = []
            for m in methods:
                if m == baseline:
                    continue
                cells = []
                for k in keys:
                    if k not in results:
                        cells.append(Cell(text="n/a", css="na"))
                        continue
                    r = results[k].loc[m]
                    mark, css = ("▲", "better") if r["better"] else (("▼", "worse") if r["worse"] else ("", ""))
                    p = r["p_adjusted"]
                    cells.append(
                        Cell(text=f"{r['median_diff']:+.4g} (p={p:.3g}, n={int(r['n'])}) {mark}".rstrip(), css=css)
                    )
                rows.append(Row(label=m, cells=cells, color=colors.get(m)))
            tables.append(
                Table(
                    id="wilcoxon",
                    title=f"Wilcoxon signed-rank test against the baseline {baseline!r}{base_note}",
                    columns=[f"{names[k]} ({'↑' if dirs[k] == 'max' else '↓'})" for k in keys],
                    rows=rows,
                    notes=[
                        "Each cell: median over subjects of (loss − baseline), two-sided Wilcoxon signed-rank p-value "
                        "Holm-corrected over the losses compared for that metric, and the number of subjects. "
                        "▲ significantly better than the baseline, ▼ significantly worse."
                    ],
                )
            )

    if len(methods) >= 3:
        rows = []
        for k in keys:
            try:
                f = friedman_test(wide[k], nan_policy="omit")
            except LossbenchError as exc:
                notes.append(f"Friedman test for {names[k]} skipped: {exc}")
                continue
            stat = "n/a" if not np.isfinite(f["statistic"]) else f"{f['statistic']:.3f}"
            sig = f["p_value"] < _ALPHA
            rows.append(
                Row(
                    label=names[k],
                    cells=[
                        Cell(text=stat),
                        Cell(text=f"{f['p_value']:.3g}", css="better" if sig else ""),
                        Cell(text=str(f["n_subjects"])),
                        Cell(text=str(f["n_methods"])),
                    ],
                )
            )
        if rows:
            tables.append(
                Table(
                    id="friedman",
                    title="Friedman test: do the losses differ at all?",
                    columns=["χ² statistic", "p-value", "subjects", "losses"],
                    rows=rows,
                    row_header="Metric",
                    notes=["Null hypothesis: every loss has the same distribution of the metric over subjects."],
                )
            )
    else:
        notes.append("Friedman test skipped: it needs at least three losses with finished cells.")

    try:
        boot = bootstrap_ranking(wide, dirs, n_resamples=_N_BOOTSTRAP, seed=0, nan_policy="omit")
    except LossbenchError as exc:
        notes.append(f"Bootstrap ranking skipped: {exc}")
        boot = None
    if boot is not None:
        s = boot.summary.sort_values(["full_rank", "median_rank"])
        rows = [
            Row(
                label=str(m),
                color=colors.get(str(m)),
                cells=[
                    Cell(text=str(int(r["full_rank"]))),
                    Cell(text=f"{r['mean_rank']:.2f}"),
                    Cell(text=f"{r['median_rank']:g}"),
                    Cell(text=f"{r['rank_q025']:g} – {r['rank_q975']:g}"),
                    Cell(text=f"{100 * r['p_first']:.1f}%"),
                ],
            )
            for m, r in s.iterrows()
        ]
        tau = boot.kendall_tau_median
        tau_text = "undefined (all rankings constant)" if not np.isfinite(tau) else f"{tau:.3f}"
        tables.append(
            Table(
                id="bootstrap",
                title="Bootstrap rank stability",
                columns=["Rank (all subjects)", "Mean rank", "Median rank", "95% interval", "Ranked first"],
                rows=rows,
                notes=[
                    f"{_N_BOOTSTRAP} bootstrap resamples of the {boot.n_subjects} test subjects (seed {boot.seed}); "
                    f"in each, losses are ranked like the test table (dense rank per metric, mean over the "
                    f"{len(keys)} metrics, dense rank of that). Median Kendall's τ between a resample's ranking and "
                    f"the ranking on all subjects: {tau_text} (1 = identical order)."
                ],
            )
        )
        path = plots.plot_bootstrap_blobs(
            boot.rank_frequency,
            boot.summary,
            colors,
            files / f"bootstrap_blobs{suffix}.png",
            n_resamples=_N_BOOTSTRAP,
        )
        figures.append(
            Figure(
                src=f"{files.name}/{path.name}",
                title="Bootstrap rank distribution (blob plot)",
                caption="Disc area: share of the bootstrap resamples that gave the loss that rank; bar: 95% "
                "interval; dot: median; cross: rank on all test subjects.",
            )
        )

    rows = []
    ttr: dict[str, Any] = {}
    for k in keys:
        try:
            ttr[k] = test_then_rank(wide[k], dirs[k], alpha=_ALPHA, nan_policy="omit")
        except LossbenchError as exc:
            notes.append(f"Test-then-rank for {names[k]} skipped: {exc}")
    if ttr:
        for m in methods:
            rows.append(
                Row(
                    label=m,
                    color=colors.get(m),
                    cells=[
                        Cell(
                            text=f"{int(t.rank[m])} ({int(t.wins[m])} win{'s' if int(t.wins[m]) != 1 else ''})",
                            best=int(t.rank[m]) == 1 and int(t.wins[m]) > 0,
                        )
                        for t in ttr.values()
                    ],
                )
            )
        tables.append(
            Table(
                id="test-then-rank",
                title="Test-then-rank (significance-based ranking)",
                columns=[names[k] for k in ttr],
                rows=rows,
                notes=[
                    "A loss's wins: the number of other losses it beats in a one-sided Wilcoxon signed-rank test "
                    "(Holm-corrected over all ordered pairs of the metric); rank = 1 + number of losses with more "
                    "wins (ties share the smallest rank)."
                ],
            )
        )
    return tables, notes, figures


# ---------------------------------------------------------------------------------------- figures


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "dataset"


def _dataset_figures(
    data: RunData, dataset: str, colors: dict[str, str], files: Path, suffix: str, rank_tables: list[tuple[str, Any]]
) -> list[Figure]:
    from lossbench.metrics import bin_names
    from lossbench.report import plots

    figs: list[Figure] = []
    ok_ids = set(
        data.results.loc[(data.results["dataset"] == dataset) & (data.results["status"] == "ok"), "cell_id"].astype(str)
    )
    hist = data.history
    if not hist.empty:
        hist = hist[hist["cell_id"].astype(str).isin(ok_ids)]
    if not hist.empty:
        p = plots.plot_curves(hist, colors, files / f"curves{suffix}.png")
        figs.append(
            Figure(
                f"{files.name}/{p.name}",
                "Training and validation curves (in the spirit of the ICI paper's Figure 3)",
                "(A) training loss (each loss's own total, so scales differ), validation (B) missed instances, "
                "(C) false instances and (D) DSC against epoch. Line: mean over seeds; band: min to max over seeds.",
            )
        )
    ts = data.test_subjects
    if not ts.empty:
        ts = ts[ts["cell_id"].astype(str).isin(ok_ids)]
        bins = bin_names(data.study.evaluation.size_bins)
        if not ts.empty and all(f"n_target_{b}" in ts.columns for b in bins):
            p = plots.plot_size_bins(ts, bins, colors, files / f"size_bins{suffix}.png")
            figs.append(
                Figure(
                    f"{files.name}/{p.name}",
                    "Detection by instance size (test set)",
                    "Recall = detected / target instances pooled over the test subjects, and the number of missed "
                    "instances, per target-size bin; bars: mean over seeds, error bars: standard deviation over "
                    "seeds.",
                )
            )
    heat = []
    titles = {"val": dict(VAL_METRICS), "test": dict(TEST_METRICS)}
    for prefix, rt in rank_tables:
        r = rt.ranks.astype(float).where(~rt.nan_flags)
        r.columns = [f"{prefix}: {titles.get(prefix, {}).get(c, c)}" for c in r.columns]
        heat.append(r)
    if heat:
        frame = pd.concat(heat, axis=1)
        p = plots.plot_rank_heatmap(
            frame,
            files / f"rank_heatmap{suffix}.png",
            title="Dense rank per metric (val: validation table, test: test table)",
        )
        figs.append(
            Figure(
                f"{files.name}/{p.name}",
                "Rank heatmap",
                "Dense rank of each loss per metric of the two tables above (1 = best); blank: no value.",
            )
        )
    res = data.results[(data.results["dataset"] == dataset) & (data.results["status"] == "ok")]
    if {"mean_step_s", "loss_share"} <= set(res.columns) and res["mean_step_s"].notna().any():
        p = plots.plot_timing(res, colors, files / f"timing{suffix}.png")
        figs.append(
            Figure(
                f"{files.name}/{p.name}",
                "Time per training step and the loss's share",
                "Light bar: mean wall time of an optimiser step (mean over seeds, error bar: std over seeds); dark "
                "bar: the part spent in the loss's forward and backward pass.",
            )
        )
    return figs


# ------------------------------------------------------------------------------------------ audit


def _audit(data: RunData) -> tuple[list[Table], str]:
    """Gradient audit tables (one per scene) of the study's losses, or no table and a note saying why not.

    The audit is asked for the study's own loss configurations (``{"name", "label", **params}`` dicts, as in the
    study file); if it rejects them (an audit that takes registry names only), the names are audited with their
    defaults and the note says so.
    """
    if importlib.util.find_spec("lossbench.audit") is None:
        return [], (
            "Gradient audit not included: the module lossbench.audit is not available in this installation "
            "(run `lossbench audit` once it is)."
        )
    from lossbench import audit

    variants = [{"name": loss.name, "label": str(loss.label), **loss.params} for loss in data.study.losses]
    note = "Computed on the study's loss configurations."
    try:
        frame = audit.run_audit(losses=variants, out=None, show=False)
    except (LossbenchError, TypeError, KeyError, AttributeError):
        names = list(dict.fromkeys(loss.name for loss in data.study.losses))
        note = (
            "lossbench.audit takes loss names only, so the losses of this study ("
            + ", ".join(names)
            + ") were audited with their default parameters (ici/dici: the reference and the trainable variants), "
            "not with the study's parameters."
        )
        try:
            frame = audit.run_audit(losses=names, out=None, show=False)
        except Exception as exc:  # noqa: BLE001 - another module's failure must not cost the whole report
            return [], f"Gradient audit failed and is not included: {type(exc).__name__}: {_clean(exc)[:300]}"
    except Exception as exc:  # noqa: BLE001 - same reason
        return [], f"Gradient audit failed and is not included: {type(exc).__name__}: {_clean(exc)[:300]}"
    need = {"scene", "loss", "term", "value", "grad_norm"}
    if not isinstance(frame, pd.DataFrame) or frame.empty or not need <= set(frame.columns):
        return [], "Gradient audit returned no usable table and is not included."
    regions = [r for r in getattr(audit, "REGIONS", ()) if f"nz_{r}" in frame.columns]
    note = " ".join([note, str(getattr(audit, "GRADIENT_NOTE", ""))]).strip()
    tables = []
    for i, (scene, sub) in enumerate(frame.groupby("scene", sort=False)):
        first = sub.iloc[0]
        counts = ", ".join(f"{r} {int(first[f'n_{r}'])}" for r in regions if f"n_{r}" in sub.columns)
        rows = []
        for _, r in sub.iterrows():
            value = float(r["value"])
            cells = [
                Cell(text=str(r["term"])),
                Cell(text=f"{(value if abs(value) >= 5e-5 else 0.0):.4f}"),
                Cell(
                    text=f"{r['grad_norm']:.3g}" if r["grad_norm"] > 0 else "0", css="" if r["grad_norm"] > 0 else "na"
                ),
            ] + [Cell(text="–" if pd.isna(r[f"nz_{g}"]) else f"{100 * float(r[f'nz_{g}']):.0f}%") for g in regions]
            rows.append(Row(label=str(r["loss"]), cells=cells))
        tables.append(
            Table(
                id=f"audit-{i + 1}",
                title=f"Scene {scene}" + (f" (voxels per region: {counts})" if counts else ""),
                columns=["Term", "Value", "Grad L2", *[f"non-zero in {g}" for g in regions]],
                rows=rows,
                align=["l"] + ["r"] * (2 + len(regions)),
            )
        )
    return tables, note


# ----------------------------------------------------------------------------------------- header


def _connectivity_text(conn: int | None, dims: int | None) -> str:
    if conn is None:
        full = {2: "8-neighbourhood", 3: "26-neighbourhood"}.get(dims or 0, "")
        return f"full ({full})" if full else "full"
    table = {
        2: {1: "4-neighbourhood", 2: "8-neighbourhood"},
        3: {1: "6 (faces)", 2: "18 (faces + edges)", 3: "26 (full)"},
    }
    extra = table.get(dims or 0, {}).get(conn)
    return f"{conn} orthogonal hop{'s' if conn > 1 else ''}" + (f", {extra}" if extra else "")


def _loss_connectivity(data: RunData, dims: int | None) -> str:
    from lossbench.losses import LOSSES

    parts = []
    for loss in data.study.losses:
        try:
            defaults = LOSSES.get(loss.name).params
        except LossbenchError:
            defaults = {}
        if "connectivity" not in defaults and "connectivity" not in loss.params:
            parts.append(f"{loss.label}: none (pixel-wise)")
            continue
        conn = loss.params.get("connectivity", defaults.get("connectivity"))
        parts.append(f"{loss.label}: {_connectivity_text(conn, dims)}")
    return "; ".join(parts)


def _matching_rule() -> str:
    from lossbench.metrics import matching

    doc = matching.__doc__ or ""
    m = re.search(r"Matching rule:(.*?)(?:\n\s*\n|$)", doc, flags=re.S)
    return " ".join(m.group(1).split()) if m else "see lossbench.metrics.matching"


def _spatial_dims(data: RunData) -> int | None:
    _, ds = data.study.dataset_list()[0]
    dims = ds.params.get("spatial_dims")
    if isinstance(dims, int):
        return dims
    size = data.study.training.patch_size
    return len(size) if size else None


def _kv(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_kv(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_kv(v) for v in value) + "]"
    return str(value)


def _duration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "n/a"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _header(data: RunData) -> Table:
    st = data.study
    tr = st.training
    dims = _spatial_dims(data)
    res = data.results
    n_expected = len(data.cells)
    counts = data.cells["status"].value_counts()
    status = ", ".join(f"{int(v)} {k}" for k, v in counts.items())
    wall = pd.to_numeric(res.get("wall_s"), errors="coerce").sum() if "wall_s" in res else float("nan")
    devices = sorted({str(d) for d in res.get("device", pd.Series(dtype=str)).dropna()}) or ["unknown"]
    mode = f"{tr.mode}" + (
        f" (patch {tr.patch_size}, {tr.patches_per_subject} per subject)" if tr.mode == "patch" else " image"
    )
    divisor = st.report.ranking.divisor
    items = [
        ("Study", f"{st.name}" + (f": {st.description}" if st.description else "")),
        ("Run folder", str(data.root)),
        (
            "Dataset",
            "; ".join(
                (f"{ds.label} = " if ds.label != ds.name else "") + f"{ds.name}({_kv(ds.params)})"
                for _, ds in st.dataset_list()
            ),
        ),
        ("Model", f"{st.model.name}({_kv(st.model.params)})"),
        (
            "Training",
            f"mode {mode}; {tr.epochs} epochs, batch {tr.batch_size}, {tr.optimizer} lr {tr.lr:g}"
            + (f", weight decay {tr.weight_decay:g}" if tr.weight_decay else "")
            + f", validation every {tr.val_every} epoch(s); best checkpoint = highest mean validation DSC",
        ),
        ("Seeds", ", ".join(str(s) for s in st.seeds)),
        ("Losses", "; ".join(f"{loss.label} = {loss.name}({_kv(loss.params)})" for loss in st.losses)),
        ("Instances in the losses (connectivity)", _loss_connectivity(data, dims)),
        (
            "Instances in the metrics (connectivity)",
            f"{_connectivity_text(st.evaluation.connectivity, dims)}; prediction = probability >= "
            f"{st.evaluation.threshold:g}; size bins {list(st.evaluation.size_bins)} voxels",
        ),
        ("Matching rule", _matching_rule()),
        (
            "Ranking",
            "dense ranks per column on the printed values (ties share a rank, the next value gets the next "
            "integer; n/a ranked last); mean rank = sum of the ranks / "
            + (f"divisor {divisor:g} (set in the study)" if divisor else "divisor = the number of ranked columns")
            + "; best in bold, second best underlined",
        ),
        ("Baseline", str(st.report.baseline or f"{data.labels[0]} (first loss; none set in the study)")),
        (
            "Cells",
            f"{n_expected} expected: {status}"
            + (
                "; results.csv was missing (interrupted run) and was rebuilt from the finished cells"
                if data.rebuilt_results
                else ""
            ),
        ),
        ("Device", ", ".join(devices)),
        ("Total time", f"{_duration(float(wall))} (sum of the finished cells' wall times)"),
        ("Package versions", ", ".join(f"{k} {v}" for k, v in data.versions.items()) or "not recorded"),
        ("Report written", _dt.datetime.now().strftime("%Y-%m-%d %H:%M")),
    ]
    rows = [Row(label=k, cells=[Cell(text=v)]) for k, v in items]
    return Table(id="setup", title="Setup", columns=["Value"], rows=rows, row_header="Item", align=["l"])


def _definitions() -> Table:
    from lossbench.metrics import metric_info

    keys = [("dice", "DSC")] + list(VAL_METRICS[1:]) + list(TEST_METRICS[1:]) + [("recall", "Recall (by size bin)")]
    rows = []
    for key, name in keys:
        info = metric_info(key)
        arrow = {"max": "higher is better", "min": "lower is better", None: "not ranked"}[info.direction]
        rows.append(
            Row(label=name, cells=[Cell(text=arrow), Cell(text=info.description), Cell(text=info.empty_policy)])
        )
    return Table(
        id="metrics",
        title="Metrics and empty-case policies",
        columns=["Direction", "Definition", "Empty case"],
        rows=rows,
        row_header="Metric",
        align=["l", "l", "l"],
    )


def _cells_table(data: RunData) -> Table:
    several = len(data.datasets) > 1
    rows = []
    res = data.results.set_index("cell_id") if "cell_id" in data.results else pd.DataFrame()
    for r in data.cells.itertuples(index=False):
        ok = r.status == "ok"
        extra = res.loc[r.cell_id] if isinstance(r.cell_id, str) and r.cell_id in res.index else None

        def num(col: str, fmt: str, src: Any = extra) -> str:
            if src is None or col not in src or pd.isna(src[col]):
                return ""
            return fmt.format(float(src[col]))

        cells = ([Cell(text=r.dataset)] if several else []) + [
            Cell(text=str(r.seed)),
            Cell(text=str(r.status), css="" if ok else ("worse" if r.status in ("diverged", "failed") else "na")),
            Cell(text=num("best_epoch", "{:.0f}")),
            Cell(text=num("epochs_run", "{:.0f}")),
            Cell(text=num("val_dsc", "{:.4f}")),
            Cell(text=num("test_dice", "{:.4f}")),
            Cell(text=num("mean_step_s", "{:.3f}")),
            Cell(text=_duration(float(extra["wall_s"])) if extra is not None and pd.notna(extra.get("wall_s")) else ""),
            Cell(text=str(r.reason or "")),
        ]
        rows.append(Row(label=str(r.label), cells=cells))
    cols = (["Dataset"] if several else []) + [
        "Seed",
        "Status",
        "Best epoch",
        "Epochs run",
        "Val DSC",
        "Test DSC",
        "s / step",
        "Wall time",
        "Note",
    ]
    return Table(
        id="cells",
        title="Cells",
        columns=cols,
        rows=rows,
        align=(["l"] if several else []) + ["r", "l", "r", "r", "r", "r", "r", "r", "l"],
        notes=[
            "ok: trained and evaluated; diverged: the loss became non-finite (no test evaluation); failed: the "
            "cell raised an error (cells/<id>/error.txt); unfinished / not run: no result yet."
        ],
    )


# ----------------------------------------------------------------------------------------- render


def _check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    try:
        out = tuple(dict.fromkeys(str(f).lower() for f in formats))
    except TypeError:
        raise expect("formats", f"a sequence of formats among {list(FORMATS)}", repr(formats)) from None
    bad = [f for f in out if f not in FORMATS]
    if not out or bad:
        raise expect(
            "formats", f"a non-empty sequence of formats among {list(FORMATS)}", repr(list(formats)), cls=ConfigError
        )
    return out


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).with_name("templates"))),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["md"] = _md_escape
    return env


def _md_escape(value: Any) -> Any:
    """Escape text for a markdown table cell: HTML-escape ``& < >`` and the cell separator ``|``; one line.

    Used as the ``md`` filter of the markdown template; returns ``Markup`` so that autoescaping does not
    escape it a second time (quotes and apostrophes stay readable in the markdown source).
    """
    from markupsafe import Markup

    if isinstance(value, Markup):
        text = " ".join(str(value).split())
    else:
        text = " ".join(str(value).split()).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return Markup(text.replace("|", "\\|"))


def write_report(run_dir: str | Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write ``report.md`` and/or ``report.html`` (plus ``report_files/*.png``) into a run folder.

    Args:
        run_dir: a run folder written by ``lossbench run``.
        formats: any of ``"md"``, ``"html"`` (a comma-separated string is accepted too).

    Figures go to ``RUN_DIR/report_files/`` (PNG files left there by an earlier report are replaced). A run
    interrupted before it wrote ``results.csv`` gets one first (see :func:`load_run`).

    Returns:
        The written report files, in the order of ``formats``.

    Raises:
        ConfigError: unknown format.
        StudyError: ``run_dir`` is not a run folder, or no cell has finished training (see :func:`load_run`).
    """
    from lossbench.report.plots import loss_colors
    from lossbench.study.store import atomic_write_text

    fmts = _check_formats(formats)
    data = load_run(run_dir)

    colors = loss_colors(data.labels)
    files = data.root / "report_files"
    files.mkdir(exist_ok=True)
    for old in files.glob("*.png"):
        old.unlink()

    sections = []
    suffixes: list[str] = []
    for i, ds in enumerate(data.datasets):
        suffix = "" if len(data.datasets) == 1 else f"_{_slug(ds)}"
        suffix = suffix if suffix not in suffixes else f"{suffix}-{i + 1}"  # labels that slug alike
        suffixes.append(suffix)
        if data.results[(data.results["dataset"] == ds) & (data.results["status"] == "ok")].empty:
            sections.append(DatasetSection(ds, [], [], [], [], [], ["No cell of this dataset finished training."]))
            continue
        tables: list[Table] = []
        rank_tables: list[tuple[str, Any]] = []
        val, rt_val = _validation_table(data, ds, colors)
        tables.append(val)
        rank_tables.append(("val", rt_val))
        test = _test_table(data, ds, colors)
        if test is not None:
            tables.append(test[0])
            rank_tables.append(("test", test[1]))
        stats, notes, stat_figs = _stats_section(data, ds, colors, files, suffix)
        for t in tables + stats:
            t.id = f"{t.id}{suffix}"
        figs = _dataset_figures(data, ds, colors, files, suffix, rank_tables)
        summary = [_leaders(name, rt) for name, rt in (("validation", rt_val), ("test", test[1] if test else None))]
        sections.append(DatasetSection(ds, tables, stats, notes, figs, stat_figs, [x for x in summary if x]))

    audit_tables, audit_note = _audit(data)
    context = {
        "title": f"lossbench report: {data.study.name}",
        "study": data.study,
        "header": _header(data),
        "definitions": _definitions(),
        "sections": sections,
        "several": len(data.datasets) > 1,
        "audit": audit_tables,
        "audit_note": audit_note,
        "cells": _cells_table(data),
        "colors": colors,
    }
    env = _environment()
    written = []
    for fmt in fmts:
        template = env.get_template(f"report.{fmt}.j2")
        path = data.root / f"report.{fmt}"
        atomic_write_text(path, template.render(**context))
        written.append(path)
    return written
