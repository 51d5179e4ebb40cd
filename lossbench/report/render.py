"""``lossbench report RUN_DIR``: ranked markdown / HTML report of a finished (or partly finished) study run.

The report is built from the run folder only (:func:`~lossbench.report.run_data.load_run`). Its parts, in page
order, each built by one module of :mod:`lossbench.report.sections`:

* ``header``: a setup table with everything needed to read the numbers (dataset, model, training mode, seeds,
  connectivity of the losses' instances and of the metrics, matching rule, ranking rule and divisor, package
  versions, device, time);
* per dataset (:class:`DatasetSection`): ``results``, a validation table in the layout of the ICI paper's Table 1
  and a test table in the layout of its Table 2, with dense ranks, the mean rank, the best value in bold and the
  second best underlined; ``statistics`` on the paired test subjects (:mod:`lossbench.report.stats`); ``figures``;
* ``audit``: the gradient audit of the study's losses when ``lossbench.audit`` is installed;
* ``cells``: the status of every cell: diverged, failed and missing cells are listed, never hidden;
* ``definitions``: every metric with its direction and empty-case policy.

Output: ``RUN_DIR/report.md``, ``RUN_DIR/report.html`` (self-contained apart from the PNG figures in
``RUN_DIR/report_files/``, referenced by relative paths) rendered from the templates ``report.md.j2`` and
``report.html.j2`` (:mod:`lossbench.report.templating`). A new part of the page is one entry of the context built
by :func:`_page_context` and one block in each of the two templates, which render tables with their
``render_table`` macro.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossbench.errors import ConfigError, expect
from lossbench.io import atomic_write_text
from lossbench.report.model import Figure, Table
from lossbench.report.run_data import RunData, load_run
from lossbench.report.sections.audit import audit_tables
from lossbench.report.sections.cells import cells_table
from lossbench.report.sections.definitions import definitions_table
from lossbench.report.sections.figures import dataset_figures
from lossbench.report.sections.header import setup_table
from lossbench.report.sections.results import TEST_METRICS, VAL_METRICS, leaders, test_set_table, validation_table
from lossbench.report.sections.statistics import stats_section
from lossbench.report.templating import render

__all__ = ["write_report", "load_run", "RunData", "VAL_METRICS", "TEST_METRICS", "FORMATS", "DatasetSection"]

#: Output formats of :func:`write_report`.
FORMATS = ("md", "html")


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

    fmts = _check_formats(formats)
    data = load_run(run_dir)
    colors = loss_colors(data.labels)
    files = _figure_folder(data.root)
    sections = [_dataset_section(data, ds, suffix, colors, files) for ds, suffix in zip(data.datasets, _suffixes(data))]
    context = _page_context(data, sections, colors)
    written = []
    for fmt in fmts:
        path = data.root / f"report.{fmt}"
        atomic_write_text(path, render(f"report.{fmt}.j2", **context))
        written.append(path)
    return written


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


def _figure_folder(root: Path) -> Path:
    """``root/report_files``, emptied of the PNG files of an earlier report."""
    files = root / "report_files"
    files.mkdir(exist_ok=True)
    for old in files.glob("*.png"):
        old.unlink()
    return files


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "dataset"


def _suffixes(data: RunData) -> list[str]:
    """Per dataset, the suffix of its table ids and figure files.

    None with one dataset; labels that slug alike are told apart by their position.
    """
    suffixes: list[str] = []
    for i, ds in enumerate(data.datasets):
        suffix = "" if len(data.datasets) == 1 else f"_{_slug(ds)}"
        suffixes.append(suffix if suffix not in suffixes else f"{suffix}-{i + 1}")
    return suffixes


def _dataset_section(data: RunData, ds: str, suffix: str, colors: dict[str, str], files: Path) -> DatasetSection:
    """The ranked tables, statistics and figures of one dataset."""
    if data.ok_results(ds).empty:
        return DatasetSection(ds, [], [], [], [], [], ["No cell of this dataset finished training."])
    val, rt_val = validation_table(data, ds, colors)
    test = test_set_table(data, ds, colors)
    tables = [val] if test is None else [val, test[0]]
    rank_tables: list[tuple[str, Any]] = [("val", rt_val)] if test is None else [("val", rt_val), ("test", test[1])]
    stats = stats_section(data, ds, colors, files, suffix)
    for t in tables + stats.tables:
        t.id = f"{t.id}{suffix}"
    figs = dataset_figures(data, ds, colors, files, suffix, rank_tables)
    summary = [leaders(name, rt) for name, rt in (("validation", rt_val), ("test", test[1] if test else None))]
    return DatasetSection(ds, tables, stats.tables, stats.notes, figs, stats.figures, [x for x in summary if x])


def _page_context(data: RunData, sections: list[DatasetSection], colors: dict[str, str]) -> dict[str, Any]:
    """Everything the report templates render, in page order after the title."""
    audit, audit_note = audit_tables(data)
    return {
        "title": f"lossbench report: {data.study.name}",
        "study": data.study,
        "header": setup_table(data),
        "definitions": definitions_table(),
        "sections": sections,
        "several": len(data.datasets) > 1,
        "audit": audit,
        "audit_note": audit_note,
        "cells": cells_table(data),
        "colors": colors,
    }
