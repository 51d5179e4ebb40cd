"""``lossbench report RUN_DIR [--out DIR]``: the report of a finished (or partly finished) study run.

The report is built from the run folder only (:func:`~lossbench.report.run_data.load_run`). Its parts, in page
order, each built by one module of :mod:`lossbench.report.sections`:

* ``verdicts``: every loss against the baseline with the training run (seed) as the unit: one plain sentence per
  finding, the warnings (too few seeds, cells that did not finish, best epochs at the last epoch), the differences
  with their 95% intervals, verdicts, seed counts and smallest detectable differences, and how they were computed
  (:mod:`lossbench.report.verdicts`);
* ``header``: a setup table with everything needed to read the numbers (dataset, model, training mode, seeds,
  connectivity of the losses' instances and of the metrics, matching rule, ranking rule and divisor, package
  versions, device, time, the command that regenerates the report);
* per dataset (:class:`DatasetSection`): ``results``, descriptive tables (ranks of means, not evidence): validation
  in the layout of the ICI paper's Table 1, test in the layout of its Table 2 and instance quality (PQ, SQ, RQ,
  CC-Dice), with dense ranks, the mean rank, the best value in bold and the second best underlined; ``statistics``
  on the paired test subjects, conditional on the trained models (:mod:`lossbench.report.stats`); ``figures``;
* ``audit``: the gradient audit of the study's losses when ``lossbench.audit`` is installed;
* ``cells``: the status of every cell: diverged, failed and missing cells are listed, never hidden;
* ``definitions``: every metric with its direction and empty-case policy, and every abbreviation.

Output, in the run folder or in ``out``: ``report.md``, ``report.html`` (self-contained apart from the PNG figures
in ``report_files/``, referenced by relative paths) rendered from the templates ``report.md.j2`` and
``report.html.j2`` (:mod:`lossbench.report.templating`), ``verdicts.csv`` and ``provenance.json`` (the source
fingerprints of the ``study`` and ``report`` scopes and the command that regenerates the report,
:mod:`lossbench.provenance`). A new part of the page is one entry of the context built by :func:`_page_context`
and one block in each of the two templates, which render tables with their ``render_table`` macro.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossbench.errors import ConfigError, StudyError, expect
from lossbench.io import atomic_write_text
from lossbench.report.model import Figure, Table
from lossbench.report.run_data import RunData, load_run
from lossbench.report.sections.audit import audit_tables
from lossbench.report.sections.cells import cells_table
from lossbench.report.sections.definitions import abbreviations_table, definitions_table
from lossbench.report.sections.figures import dataset_figures
from lossbench.report.sections.header import setup_table
from lossbench.report.sections.results import (
    INSTANCE_METRICS,
    TEST_METRICS,
    VAL_METRICS,
    instance_table,
    test_set_table,
    validation_table,
)
from lossbench.report.sections.statistics import stats_section
from lossbench.report.sections.verdicts import VerdictSection, level_figure, run_warnings_of, verdict_section
from lossbench.report.templating import render

__all__ = [
    "write_report",
    "regenerate_command",
    "run_warnings",
    "load_run",
    "RunData",
    "VAL_METRICS",
    "TEST_METRICS",
    "INSTANCE_METRICS",
    "FORMATS",
    "DatasetSection",
]

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


def write_report(
    run_dir: str | Path,
    formats: Sequence[str] = FORMATS,
    *,
    out: str | Path | None = None,
    command: str | None = None,
) -> list[Path]:
    """Write ``report.md`` and/or ``report.html`` (plus figures, ``verdicts.csv``, ``provenance.json``) of a run.

    Args:
        run_dir: a run folder written by ``lossbench run``.
        formats: any of ``"md"``, ``"html"`` (a comma-separated string is accepted too).
        out: the folder to write into (created if missing); default the run folder.
        command: the ``lossbench run`` command that made the run (the ``run`` command passes its own); default
            the one recorded in the run folder's ``provenance.json``, else one rebuilt from its resolved study
            (see :func:`regenerate_command`).

    Figures go to ``report_files/`` (PNG files left there by an earlier report are replaced). A run interrupted
    before it wrote ``results.csv`` gets one first (see :func:`load_run`). A report written outside the run
    folder also gets the run's ``results.csv`` and resolved ``study.yaml``, so that its verdicts can be
    recomputed and its study compared with the study file it claims to report.

    Returns:
        The written report files, in the order of ``formats``.

    Raises:
        ConfigError: unknown format, or ``out`` is a file.
        StudyError: ``run_dir`` is not a run folder, or no cell has finished training (see :func:`load_run`).
    """
    from lossbench.provenance import write_provenance
    from lossbench.report.plots import loss_colors
    from lossbench.report.verdicts import write_verdicts

    fmts = _check_formats(formats)
    data = load_run(run_dir)
    folder = _out_folder(data.root, out)
    regenerate, reconstructed = regenerate_command(data.root, folder, command)
    colors = loss_colors(data.labels)
    files = _figure_folder(folder)
    verdicts = verdict_section(data)
    verdicts.figure = level_figure(data, verdicts, colors, files)
    sections = [_dataset_section(data, ds, suffix, colors, files) for ds, suffix in zip(data.datasets, _suffixes(data))]
    context = _page_context(data, sections, colors, verdicts, _regenerate_text(regenerate, reconstructed))
    written = []
    for fmt in fmts:
        path = folder / f"report.{fmt}"
        atomic_write_text(path, render(f"report.{fmt}.j2", **context))
        written.append(path)
    write_verdicts(verdicts.verdicts, folder)
    if folder != data.root:  # a report kept apart from its run folder carries the results and the resolved study
        for name in ("results.csv", "study.yaml"):
            atomic_write_text(folder / name, (data.root / name).read_text(encoding="utf-8"))
    write_provenance(folder, ["study", "report"], regenerate)
    return written


def headline_verdicts(run_dir: str | Path) -> list[str]:
    """The lines a finished run prints: a heading, then every test-DSC finding and every better/worse elsewhere.

    Read from ``run_dir/verdicts.csv`` (written with the report); an empty list when the run has none. The heading
    names the baseline and the seeds; the findings are indented; the report holds every metric with its interval.
    """
    import pandas as pd

    from lossbench.report.verdicts import verdict_findings

    path = Path(run_dir) / "verdicts.csv"
    if not path.is_file():
        return []
    table = pd.read_csv(path)
    if table.empty:
        return []
    shown = table[(table["metric"] == "test_dice") | (table["verdict"] != "no evidence")]
    seeds = int(table["n_seeds"].max())
    head = (
        f"verdicts against {table['baseline'].iloc[0]} over {seeds} seed(s), training run as the unit "
        "(test DSC, and every better/worse; the report has every metric with its interval):"
    )
    return [head, *(f"  {sentence}" for sentence in verdict_findings(shown))]


def run_warnings(run_dir: str | Path) -> list[str]:
    """What limits the verdicts of a run (too few seeds, cells that did not finish, undertrained models).

    The ``run`` command prints these at its end. A run without a reportable cell gets the warnings of its results
    table (an empty list when it has none).
    """
    from lossbench.report.verdicts import study_warnings
    from lossbench.study.store import load_results

    try:
        return run_warnings_of(load_run(run_dir))
    except StudyError:
        path = Path(run_dir)
        if not (path / "results.csv").is_file():
            return []
        results = load_results(path)
        return study_warnings(results) if not results.empty and "status" in results.columns else []


def regenerate_command(run_dir: Path, folder: Path, run_command: str | None = None) -> tuple[str, bool]:
    """The shell command that regenerates the report in ``folder`` from scratch, and whether it was reconstructed.

    The ``lossbench run`` part is ``run_command`` when given (the ``run`` command passes the one it was called
    with), else the one recorded in ``run_dir/provenance.json`` by an earlier report of the run, else
    ``lossbench run RUN_DIR/study.yaml --out RUN_DIR``: the run folder does not keep the original study file's
    path or the run's options, but its resolved ``study.yaml`` describes the same cells (reconstructed: True). A
    report written elsewhere (``folder`` is not the run folder) appends ``&& lossbench report RUN_DIR --out
    FOLDER``.
    """
    recorded = run_command or _recorded_run_command(run_dir)
    reconstructed = False
    if not recorded:
        recorded = shlex.join(["lossbench", "run", str(run_dir / "study.yaml"), "--out", str(run_dir)])
        reconstructed = True
    elif shlex.split(recorded)[2:3] == [str(run_dir / "study.yaml")]:
        reconstructed = True  # recorded by an earlier report that had to rebuild it
    if _same_folder(folder, run_dir):
        return recorded, reconstructed
    return f"{recorded} && {shlex.join(['lossbench', 'report', str(run_dir), '--out', str(folder)])}", reconstructed


def _recorded_run_command(run_dir: Path) -> str:
    """The ``lossbench run ...`` part of the command in the run folder's ``provenance.json`` ('' if none)."""
    from lossbench.provenance import PROVENANCE_FILE

    try:
        record = json.loads((run_dir / PROVENANCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    command = record.get("command") if isinstance(record, dict) else None
    if not isinstance(command, str):
        return ""
    try:
        words = shlex.split(command.split(" && ")[0])
    except ValueError:
        return ""
    if words[:2] != ["lossbench", "run"] or len(words) < 3:
        return ""
    if "--out" in words[:-1]:  # a run folder moved since: the command's --out names where it is now
        at = words.index("--out") + 1
        if not _same_folder(Path(words[at]), run_dir):
            words[at] = str(run_dir)
    return shlex.join(words)


def _same_folder(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def _regenerate_text(command: str, reconstructed: bool) -> str:
    """The setup table's "Regenerate with" row."""
    if not reconstructed:
        return command
    return (
        f"{command} (reconstructed: the run folder does not record the original study file or the run's options; "
        "its resolved study.yaml describes the same cells)"
    )


def _out_folder(root: Path, out: str | Path | None) -> Path:
    """The folder the report goes to: ``out`` (created) or the run folder."""
    if out is None:
        return root
    if not isinstance(out, (str, Path)):
        raise expect("out", "a folder path", type(out).__name__, cls=ConfigError)
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise expect("out", "a folder for the report", f"{str(folder)!r}, a file", cls=ConfigError)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


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
    instances = instance_table(data, ds, colors)
    tables = [val] + [t[0] for t in (test, instances) if t is not None]
    rank_tables: list[tuple[str, Any]] = [("val", rt_val)] if test is None else [("val", rt_val), ("test", test[1])]
    stats = stats_section(data, ds, colors, files, suffix)
    for t in tables + stats.tables:
        t.id = f"{t.id}{suffix}"
    figs = dataset_figures(data, ds, colors, files, suffix, rank_tables)
    return DatasetSection(ds, tables, stats.tables, stats.notes, figs, stats.figures)


def _page_context(
    data: RunData, sections: list[DatasetSection], colors: dict[str, str], verdicts: VerdictSection, regenerate: str
) -> dict[str, Any]:
    """Everything the report templates render, in page order after the title."""
    audit, audit_note = audit_tables(data)
    return {
        "title": f"lossbench report: {data.study.name}",
        "study": data.study,
        "verdicts": verdicts,
        "header": setup_table(data, regenerate),
        "definitions": definitions_table(),
        "abbreviations": abbreviations_table(),
        "sections": sections,
        "several": len(data.datasets) > 1,
        "audit": audit,
        "audit_note": audit_note,
        "cells": cells_table(data),
        "colors": colors,
    }
