"""Loading a run folder for the report: :func:`load_run` -> :class:`RunData`.

The report reads the run folder only, through the loaders of :mod:`lossbench.study.store` (``load_results``,
``load_subjects``, ``load_history``) and the resolved ``study.yaml``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from lossbench.errors import LossbenchError, StudyError, expect
from lossbench.report.text import clean

__all__ = ["RunData", "load_run"]

_NO_CELL_HINT = "no cell has finished yet; wait for `lossbench run` or rerun it (finished cells are kept)"
_RESULT_COLUMNS = ("cell_id", "label", "dataset", "seed", "status")


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

    def ok_results(self, dataset: str) -> pd.DataFrame:
        """Rows of ``results`` of the cells of ``dataset`` that finished training (status "ok")."""
        return self.results[(self.results["dataset"] == dataset) & (self.results["status"] == "ok")]

    def ok_cell_ids(self, dataset: str) -> pd.Series:
        """Cell ids (as strings) of :meth:`ok_results`."""
        return self.ok_results(dataset)["cell_id"].astype(str)


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
    from lossbench.study.store import load_history, load_subjects

    root = _check_run_folder(run_dir)
    study = load_study(root / "study.yaml")
    rebuilt = _rebuild_results(root, study)
    results = _read_results(root)
    return RunData(
        root=root,
        study=study,
        results=results,
        history=_read_labelled(lambda: load_history(root)),
        val_subjects=_read_labelled(lambda: load_subjects(root, "val")),
        test_subjects=_read_labelled(lambda: load_subjects(root, "test")),
        cells=_cell_status(root, study, results),
        versions=_versions(root, results),
        rebuilt_results=rebuilt,
    )


def _not_a_run(root: Path, why: str) -> StudyError:
    return StudyError(
        f"`run_dir` must be a lossbench run folder (written by `lossbench run STUDY.yaml --out RUN_DIR`), "
        f"got {str(root)!r}: {why}"
    )


def _check_run_folder(run_dir: Any) -> Path:
    """The run folder as a path, after checking that it is a folder owned by a run and holding its study."""
    from lossbench.study.store import RunStore

    if not isinstance(run_dir, (str, Path)):
        raise expect("run_dir", "a path to a run folder", type(run_dir).__name__, cls=StudyError)
    root = Path(run_dir)
    if not root.exists():
        raise _not_a_run(root, "no such folder")
    if not root.is_dir():
        raise _not_a_run(root, "it is a file")
    if RunStore(root).owner() is None:
        raise _not_a_run(root, f"it has no {RunStore.MARKER}")
    if not (root / "study.yaml").is_file():
        raise _not_a_run(root, "it has no study.yaml")
    return root


def _rebuild_results(root: Path, study: Any) -> bool:
    """Write ``results.csv`` the runner's way when an interrupted run has finished cells but no table yet."""
    from lossbench.study.grid import expand_grid
    from lossbench.study.store import RunStore

    if (root / "results.csv").is_file():
        return False
    store = RunStore(root)
    ids = [c.id for c in expand_grid(study)]
    if any(store.is_done(cid) for cid in ids):
        store.write_results(ids)
        return True
    return False


def _read_table(loader: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    try:
        return loader()
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _read_results(root: Path) -> pd.DataFrame:
    """``results.csv`` with labels as text, after checking that at least one cell finished training."""
    from lossbench.study.store import load_results

    if not (root / "results.csv").is_file():
        raise expect(
            "run_dir",
            "a run with at least one finished cell",
            f"{str(root)!r} without results.csv",
            hint=_NO_CELL_HINT,
            cls=StudyError,
        )
    results = _read_table(lambda: load_results(root))
    if results.empty:
        raise expect(
            "run_dir",
            "a run with at least one finished cell",
            f"{str(root)!r} with none",
            hint=_NO_CELL_HINT,
            cls=StudyError,
        )
    missing = [c for c in _RESULT_COLUMNS if c not in results.columns]
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
    if results[results["status"] == "ok"].empty:
        reasons = "; ".join(sorted({str(r) for r in results["reason"].fillna("")}))[:300]
        raise expect(
            "run_dir",
            "a run with at least one cell that finished training (status 'ok')",
            f"{len(results)} finished cell(s), all diverged ({reasons})",
            cls=StudyError,
        )
    return results


def _read_labelled(loader: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """A per-cell table of the store with ``label`` and ``dataset`` as text (empty when there is none)."""
    frame = _read_table(loader)
    if not frame.empty:
        frame["label"] = frame["label"].astype(str)
        frame["dataset"] = frame["dataset"].astype(str)
    return frame


def _versions(root: Path, results: pd.DataFrame) -> dict[str, str]:
    """Package versions recorded by the first cell that finished training."""
    from lossbench.study.store import RunStore

    ok = results[results["status"] == "ok"]
    try:
        done = RunStore(root).done(str(ok["cell_id"].iloc[0]))
    except StudyError:
        return {}
    return {str(k): str(v) for k, v in (done.get("versions") or {}).items()}


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
                row: dict[str, Any] = {"dataset": key[0], "seed": key[1], "label": key[2]}
                r = done.get(key)
                row.update(_finished_cell(r) if r is not None else _missing_cell(root, ids.get(key, "")))
                rows.append(row)
    return pd.DataFrame(rows)


def _finished_cell(r: Any) -> dict[str, Any]:
    return {
        "cell_id": r.cell_id,
        "status": str(r.status),
        "reason": clean(getattr(r, "reason", "")),
        "best_epoch": getattr(r, "best_epoch", None),
        "epochs_run": getattr(r, "epochs_run", None),
        "wall_s": getattr(r, "wall_s", None),
        "mean_step_s": getattr(r, "mean_step_s", None),
    }


def _missing_cell(root: Path, cid: str) -> dict[str, Any]:
    """Why a cell has no result: it failed (its error's last line), it is unfinished, or it never ran."""
    cell_dir = root / "cells" / cid if cid else None
    if cell_dir is not None and (cell_dir / "error.txt").is_file():
        lines = [x for x in (cell_dir / "error.txt").read_text(errors="replace").splitlines() if x]
        return {"cell_id": cid, "status": "failed", "reason": lines[-1][:200] if lines else "error"}
    if cell_dir is not None and cell_dir.is_dir():
        return {"cell_id": cid, "status": "unfinished", "reason": "interrupted or still running"}
    return {"cell_id": cid, "status": "not run", "reason": ""}
