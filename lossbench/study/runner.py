"""``lossbench run``: validate a study, expand its grid, run the unfinished cells, aggregate the results.

Resumption is the default: a cell with a ``done.json`` is kept as is (its files are not touched); a
cell folder without one is what a killed run left behind and is deleted and recomputed from scratch.
``fresh=True`` deletes this study's run folder first; a folder owned by another study, or a non-empty
folder that is not a lossbench run folder, is never deleted (``StudyError``).

The report is *not* written here: ``lossbench.study`` never imports ``lossbench.report`` (imports point one way).
The ``run`` command (``lossbench.cli``) calls :func:`run_study` and then the report. ``report=True``
here prints the per-loss summary of the finished cells (means over seeds) at the end of the run.

Ctrl-C: the first one stops the run within seconds: queued cells are cancelled, running ones are
stopped (see :mod:`lossbench.study.executors`), the results table of the finished cells is written and
:class:`RunInterrupted` (a ``KeyboardInterrupt``) says how many cells finished. A stopped cell has no
``done.json`` and is redone by the next run. A second Ctrl-C while the run is being stopped kills the
workers without waiting and raises :class:`RunInterrupted` with ``forced=True`` at once.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from lossbench.errors import StudyError, expect
from lossbench.study.config import DatasetFacts, StudyConfig, check_study, load_study
from lossbench.study.executors import CellOutcome, make_executor
from lossbench.study.grid import Cell, expand_grid, grid_steps
from lossbench.study.store import RunStore
from lossbench.study.train import resolve_device

__all__ = ["run_study", "plan_study", "summary_table", "RunInterrupted", "DEFAULT_RUNS_DIR"]

DEFAULT_RUNS_DIR = Path("runs")


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run: the finished cells are kept, the next run of the same study does the others.

    Attributes:
        finished: cells of the study with a ``done.json`` (including those finished by earlier runs).
        total: cells of the study.
        forced: True when a second Ctrl-C cut the clean-up short (workers killed, results table not rewritten).
    """

    def __init__(self, finished: int, total: int, *, forced: bool = False):
        self.finished, self.total, self.forced = finished, total, forced
        how = "interrupted again: stopped at once" if forced else "interrupted"
        super().__init__(
            f"{how}; {finished} of {total} cells finished and are kept; "
            f"run the same command again to resume the other {total - finished}"
        )


@contextlib.contextmanager
def _sigint_policy(abort: Callable[[], None]) -> Iterator[dict[str, int]]:
    """Ctrl-C during a run: the first stops it cleanly, the second kills the workers and cuts the clean-up short.

    First Ctrl-C: ``KeyboardInterrupt`` (the executor cancels and stops its cells). Second: ``abort()`` (kill the
    workers without waiting) and ``KeyboardInterrupt`` again. Later ones only ``abort()``, so the forced exit
    itself is not interrupted.

    Only in the main thread (the only one Python delivers signals to); elsewhere this does nothing. Yields the
    state ``{"count": Ctrl-Cs so far}``.
    """
    state = {"count": 0}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum: int, frame: Any) -> None:
        state["count"] += 1
        if state["count"] > 1:
            abort()
        if state["count"] <= 2:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)


def plan_study(
    study: str | Path | StudyConfig, *, scale: str | None = None
) -> tuple[StudyConfig, list[Cell], dict[str, DatasetFacts]]:
    """Load and fully validate a study (every object built once) and expand its grid.

    ``scale`` selects an entry of the study file's ``scales`` section (see :func:`load_study`).

    Returns:
        ``(config, cells, facts by dataset label)``.

    Raises:
        ConfigError: the first problem of the study file, located ``file:line: key: problem``.
    """
    cfg = study if isinstance(study, StudyConfig) else load_study(study, scale=scale)
    facts = check_study(cfg)
    return cfg, expand_grid(cfg), {f.label: f for f in facts}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _cell_line(cell: Cell, outcome: CellOutcome) -> str:
    if outcome.done is None:
        return f"[red]x[/] {cell.label} s{cell.seed} ({cell.id}): failed: {outcome.error}"
    d = outcome.done
    wall = (d.get("timing") or {}).get("wall_s")
    if d.get("status") != "ok":
        return f"[yellow]![/] {cell.label} s{cell.seed} ({cell.id}): {d.get('status')}: {d.get('reason')}"
    val, test = d.get("val") or {}, d.get("test") or {}
    return (
        f"[green]v[/] {cell.label} s{cell.seed} ({cell.id}): best val DSC {_fmt(val.get('dsc'))} "
        f"@ epoch {d.get('best_epoch')} (MI {_fmt(val.get('total_mi'))}, FI {_fmt(val.get('total_fi'))}); "
        f"test DSC {_fmt(test.get('dice'))}, lesion F1 {_fmt(test.get('lesionwise_f1'))}; {_fmt(wall, 1)} s"
    )


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per-loss means over seeds (and datasets) of the headline numbers, sorted by mean val DSC (best first)."""
    if results.empty:
        return results
    cols = [
        c
        for c in ("val_dsc", "val_total_mi", "val_total_fi", "test_dice", "test_lesionwise_f1", "mean_step_s")
        if c in results
    ]
    ok = results[results["status"] == "ok"]
    grouped = ok.groupby("label", sort=False)[cols].mean() if not ok.empty else pd.DataFrame(columns=cols)
    grouped["cells"] = ok.groupby("label", sort=False).size() if not ok.empty else []
    diverged = results[results["status"] != "ok"].groupby("label", sort=False).size()
    grouped = grouped.reindex(list(dict.fromkeys(results["label"])))
    grouped["diverged"] = diverged.reindex(grouped.index).fillna(0).astype(int)
    if "val_dsc" in grouped:
        grouped = grouped.sort_values("val_dsc", ascending=False, na_position="last")
    return grouped


def _print_summary(console: Console, results: pd.DataFrame, run_dir: Path) -> None:
    table = summary_table(results)
    if table.empty:
        return
    t = Table(title=f"results by loss (mean over seeds), {run_dir}")
    t.add_column("loss")
    for c in table.columns:
        t.add_column(c, justify="right")
    for label, row in table.iterrows():
        cells = []
        for col, v in row.items():
            if col in ("cells", "diverged"):
                cells.append(str(int(v)) if v == v else "0")
            elif str(col).endswith(("_mi", "_fi")):
                cells.append(_fmt(v, 1))
            else:
                cells.append(_fmt(v, 3 if str(col) != "mean_step_s" else 4))
        t.add_row(str(label), *cells)
    console.print(t)


def _print_plan(
    console: Console, cfg: StudyConfig, cells: list[Cell], steps: dict[str, int], store: RunStore, fresh: bool
) -> None:
    t = Table(title=f"study {cfg.name!r}: {len(cells)} cells")
    for col in ("#", "cell id", "loss", "dataset", "seed", "steps", "status"):
        t.add_column(col, justify="right" if col in ("#", "seed", "steps") else "left")
    done = {c.id for c in cells if not fresh and store.is_done(c.id)}
    for c in cells:
        status = "done" if c.id in done else "pending"
        t.add_row(str(c.index), c.id, c.label, c.dataset_label, str(c.seed), str(steps[c.id]), status)
    console.print(t)
    pending = [c for c in cells if c.id not in done]
    console.print(
        f"{sum(steps.values())} optimiser steps in total, {sum(steps[c.id] for c in pending)} still to run "
        f"({len(pending)} of {len(cells)} cells pending); run folder {store.root}"
    )


def run_study(
    study: str | Path | StudyConfig,
    *,
    out: str | Path | None = None,
    executor: str = "local",
    workers: int = 1,
    device: str = "auto",
    fresh: bool = False,
    dry_run: bool = False,
    address: str | None = None,
    report: bool = True,
    threads: int | None = None,
    scale: str | None = None,
    console: Console | None = None,
) -> Path:
    """Train and evaluate every cell of a study; resume by default; return the run folder.

    Args:
        study: a study YAML file (or an already loaded :class:`StudyConfig`).
        out: run folder; default ``runs/<study name>``.
        executor: ``"local"`` or ``"ray"``.
        workers: cells run at a time: local worker processes (``local``) or the size of the local Ray runtime
            (``ray`` without ``address``).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        fresh: delete this study's previous results in ``out`` first.
        dry_run: validate, print the grid with the number of optimiser steps and each cell's status, run nothing,
            create nothing.
        address: Ray cluster address (``ray`` only); default starts a local Ray runtime.
        report: print the per-loss summary at the end (the report files are written by the ``run`` command).
        threads: torch threads per cell (default 1; see :mod:`lossbench.study.executors` for why).
        scale: apply this entry of the study file's ``scales`` section (e.g. ``"gpu"``); the study name (and so
            the default run folder) gets ``-<scale>`` appended.
        console: rich console for progress and messages (default: stdout).

    Returns:
        The run folder (not created with ``dry_run``).

    Raises:
        ConfigError: invalid study file or options (nothing is trained and nothing is written).
        StudyError: ``out`` belongs to another study or is not a run folder; or some cells failed
            (the others are kept; rerun to retry the failed ones).
    """
    if console is None:
        console = Console()
        if not console.is_terminal:  # logs and pipes: do not wrap at 80 columns
            console.width = 160
    cfg, cells, facts = plan_study(study, scale=scale)
    dev = resolve_device(device) if executor == "local" else device
    if executor == "ray" and device not in ("auto", "cpu", "cuda"):
        raise expect("device", "one of 'auto', 'cpu', 'cuda'", repr(device))
    runner = make_executor(executor, workers=workers, threads=threads, address=address)
    run_dir = Path(out) if out is not None else DEFAULT_RUNS_DIR / cfg.name
    store = RunStore(run_dir)
    store.check_owner(cfg.name)
    steps = grid_steps(cells, facts)
    if dry_run:
        _print_plan(console, cfg, cells, steps, store, fresh)
        return run_dir

    lock = store.lock()
    try:
        return _run_locked(cfg, cells, store, runner, dev, executor, fresh, report, console)
    finally:
        lock.close()


def _run_locked(
    cfg: StudyConfig,
    cells: list[Cell],
    store: RunStore,
    runner: Any,
    dev: str,
    executor: str,
    fresh: bool,
    report: bool,
    console: Console,
) -> Path:
    run_dir = store.root
    store.prepare(
        cfg.name, yaml.safe_dump(cfg.to_yaml_dict(), sort_keys=False, allow_unicode=True), fresh=fresh, device=dev
    )
    stale = store.stale_cells(c.id for c in cells)
    if stale:
        console.print(f"note: {len(stale)} cell folder(s) from another version of this study are ignored: {stale}")
    pending = [c for c in cells if not store.is_done(c.id)]
    kept = len(cells) - len(pending)
    console.print(
        f"study {cfg.name!r}: {len(cells)} cells ({kept} finished, {len(pending)} to run) on "
        f"{dev if executor == 'local' else repr(dev) + ' (resolved on each Ray worker)'} "
        f"with the {executor} executor -> {run_dir}"
    )
    failures: list[str] = []
    t0 = time.perf_counter()
    with _sigint_policy(getattr(runner, "abort", lambda: None)) as sigint:
        try:
            _execute(cells, pending, store, runner, dev, console, failures)
            results = store.write_results(c.id for c in cells)
        except KeyboardInterrupt:
            try:
                stop = _interrupted(store, cells, forced=sigint["count"] > 1)
            except KeyboardInterrupt:  # a second Ctrl-C while the results table was written
                stop = _interrupted(store, cells, forced=True)
            raise stop from None
    console.print(f"{len(pending)} cell(s) run in {time.perf_counter() - t0:.1f} s; results: {run_dir / 'results.csv'}")
    if report:
        _print_summary(console, results, run_dir)
    if failures:
        raise StudyError(
            f"`cells` must all finish, got {len(failures)} failed: {'; '.join(failures)} "
            f"(tracebacks in cells/<id>/error.txt; rerun to retry them, finished cells are kept)"
        )
    return run_dir


def _interrupted(store: RunStore, cells: list[Cell], *, forced: bool) -> RunInterrupted:
    """The exception that ends an interrupted run; unless ``forced``, the results table of the finished cells."""
    if not forced:
        with contextlib.suppress(Exception):  # the table is a convenience; the cells are what counts
            store.write_results(c.id for c in cells)
    finished = sum(store.is_done(c.id) for c in cells)
    return RunInterrupted(finished, len(cells), forced=forced)


def _execute(
    cells: list[Cell],
    pending: list[Cell],
    store: RunStore,
    runner: Any,
    dev: str,
    console: Console,
    failures: list[str],
) -> None:
    """Run the pending cells with a progress display (one bar per running cell); collect failed cells' messages."""
    by_id = {c.id: c for c in cells}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not pending,
    ) as progress:
        overall = progress.add_task("cells", total=len(pending))
        epoch_tasks: dict[str, TaskID] = {}

        def on_event(ev: dict[str, Any]) -> None:
            cid = ev.get("cell")
            if ev.get("kind") == "start":
                c = by_id[cid]
                epoch_tasks[cid] = progress.add_task(f"  {c.label} s{c.seed}", total=ev["epochs"])
            elif ev.get("kind") == "epoch" and cid in epoch_tasks:
                dsc = ev.get("val_dsc")
                suffix = f" val DSC {dsc:.3f}" if isinstance(dsc, float) and math.isfinite(dsc) else ""
                c = by_id[cid]
                progress.update(epoch_tasks[cid], completed=ev["epoch"], description=f"  {c.label} s{c.seed}{suffix}")

        def on_done(outcome: CellOutcome) -> None:
            cell = by_id[outcome.cell_id]
            if outcome.cell_id in epoch_tasks:
                progress.remove_task(epoch_tasks.pop(outcome.cell_id))
            progress.advance(overall)
            progress.console.print(_cell_line(cell, outcome))
            if outcome.done is None:
                failures.append(f"{cell.id} ({outcome.error})")

        if pending:
            runner.run(pending, store.root, dev, on_event, on_done)
