"""The results store of a run folder: atomic files, ``done.json`` last.

Layout::

    RUN_DIR/
      run.json                 marker: which study owns this folder (checked before resuming or --fresh)
      .lock                    held (flock) by the running `lossbench run`; a second run on the folder is refused
      study.yaml               the resolved study (defaults filled in)
      results.csv              one row per finished cell (also results.parquet when pyarrow is installed)
      cells/<cell-id>/
        config.json            the cell's full configuration
        history.csv            per epoch: train loss terms, val DSC / missed / false instances
        val_subjects.csv       per validation epoch and subject: ATLAS + detection metrics
        test_subjects.csv      per test subject (best checkpoint): ATLAS + detection metrics by size
        best.pt                best checkpoint by val DSC
        timing.json            wall time per step, share spent in the loss, ...
        done.json              written last: status ("ok" or "diverged"), summary; its presence = finished

Every write goes through :mod:`lossbench.io` (temporary file in the same folder, flushed, renamed into
place), so a killed process never leaves a truncated file under a final name; the ``atomic_write_*``
helpers are re-exported here. Every JSON file carries ``schema_version``, the package versions, the device
and the seed.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import platform
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from lossbench.errors import StudyError
from lossbench.io import atomic_torch_save, atomic_write_bytes, atomic_write_csv, atomic_write_text, json_text

__all__ = [
    "SCHEMA_VERSION",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_write_csv",
    "atomic_torch_save",
    "envelope",
    "package_versions",
    "read_json",
    "RunStore",
    "load_results",
    "load_subjects",
    "load_history",
]

SCHEMA_VERSION = 1
_PACKAGES = ("lossbench", "torch", "monai", "numpy", "scipy", "connected-components-3d", "pandas", "pydantic")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that influence results (plus Python)."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def envelope(*, device: str | None, seed: int | None) -> dict[str, Any]:
    """The header every JSON file of the store starts with."""
    return {
        "schema_version": SCHEMA_VERSION,
        "versions": package_versions(),
        "device": device,
        "seed": seed,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def atomic_write_json(
    path: str | Path, payload: dict[str, Any], *, device: str | None = None, seed: int | None = None
) -> Path:
    """Atomically write ``payload`` as JSON, preceded by the :func:`envelope` (NaN is written as ``null``)."""
    body = {**envelope(device=device, seed=seed), **payload}
    return atomic_write_text(path, json_text(body))


def read_json(path: str | Path) -> dict[str, Any]:
    """Read a JSON file of the store; raise :class:`StudyError` if it is missing or not valid JSON."""
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StudyError(f"`{p.name}` must exist in {str(p.parent)!r}, got no such file") from None
    except json.JSONDecodeError as exc:
        raise StudyError(f"`{p}` must be valid JSON, got {exc}") from None


class RunStore:
    """One run folder: ownership marker, per-cell folders, the aggregated results table.

    Args:
        root: the run folder.
    """

    MARKER = "run.json"
    LOCK = ".lock"

    def lock(self) -> Any:
        """Take an exclusive lock on the run folder for this process; create the folder if needed.

        The lock is released when the returned file is closed or the process dies (even by SIGKILL).

        Raises:
            StudyError: another process holds the lock (two runs must not write the same cells).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        handle = open(self.root / self.LOCK, "a+")  # noqa: SIM115 - kept open for the whole run
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no locking
            return handle
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StudyError(
                f"`--out` must not be in use by another lossbench run, got {str(self.root)!r} which is locked "
                f"(wait for that run to finish or choose another --out)"
            ) from None
        return handle

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # ----------------------------------------------------------------------------------- folder
    @property
    def cells_dir(self) -> Path:
        """``RUN_DIR/cells``."""
        return self.root / "cells"

    def owner(self) -> str | None:
        """Name of the study that owns the folder (``None`` if the folder has no marker)."""
        marker = self.root / self.MARKER
        if not marker.is_file():
            return None
        return str(read_json(marker).get("study"))

    def check_owner(self, study_name: str) -> None:
        """Raise unless the folder is absent, empty, or a run folder of ``study_name``.

        Raises:
            StudyError: the folder holds something else (another study's run, or files lossbench did not write).
        """
        if not self.root.exists():
            return
        if not self.root.is_dir():
            raise StudyError(f"`--out` must be a folder, got the file {str(self.root)!r}")
        owner = self.owner()
        if owner is None:
            if any(p.name != self.LOCK for p in self.root.iterdir()):
                raise StudyError(
                    f"`--out` must be a new, empty or lossbench run folder, got {str(self.root)!r} which holds "
                    f"other files and no {self.MARKER} (choose another --out)"
                )
            return
        if owner != study_name:
            raise StudyError(
                f"`--out` must be a run folder of study {study_name!r}, got {str(self.root)!r} which belongs to "
                f"study {owner!r} (choose another --out; --fresh never deletes another study's folder)"
            )

    def prepare(self, study_name: str, study_yaml: str, *, fresh: bool, device: str | None) -> None:
        """Create (or, with ``fresh``, re-create) the folder after :meth:`check_owner`; write marker and study."""
        self.check_owner(study_name)
        if fresh and (self.root / self.MARKER).is_file():
            for entry in self.root.iterdir():
                if entry.name == self.LOCK:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        self.cells_dir.mkdir(parents=True, exist_ok=True)
        marker = self.root / self.MARKER
        created = read_json(marker).get("created_at") if marker.is_file() else time.strftime("%Y-%m-%dT%H:%M:%S%z")
        atomic_write_json(marker, {"study": study_name, "created_at": created}, device=device)
        atomic_write_text(self.root / "study.yaml", study_yaml)

    # ------------------------------------------------------------------------------------ cells
    def cell_dir(self, cell_id: str) -> Path:
        """``RUN_DIR/cells/<cell_id>``."""
        return self.cells_dir / cell_id

    def is_done(self, cell_id: str) -> bool:
        """Whether the cell has a readable ``done.json`` (written last, so the cell is complete)."""
        done = self.cell_dir(cell_id) / "done.json"
        if not done.is_file():
            return False
        try:
            json.loads(done.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return False
        return True

    def done(self, cell_id: str) -> dict[str, Any]:
        """The parsed ``done.json`` of a finished cell."""
        return read_json(self.cell_dir(cell_id) / "done.json")

    def reset_cell(self, cell_id: str) -> Path:
        """Remove whatever a previous, unfinished attempt left in the cell folder; return the empty folder.

        Raises:
            StudyError: the cell is finished (a finished cell is never deleted implicitly).
        """
        d = self.cell_dir(cell_id)
        if self.is_done(cell_id):
            raise StudyError(f"`cell` must be unfinished to be reset, got finished cell {cell_id!r}")
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        return d

    def commit_files(self, cell_id: str, files: dict[str, bytes]) -> None:
        """Write a cell's files computed elsewhere (e.g. on a Ray worker); ``done.json`` goes last.

        Args:
            cell_id: the cell.
            files: file name -> content, as returned by :func:`lossbench.study.train.collect_files`.
        """
        d = self.reset_cell(cell_id)
        for name, data in files.items():
            if name != "done.json":
                atomic_write_bytes(d / name, data)
        if "done.json" in files:
            atomic_write_bytes(d / "done.json", files["done.json"])

    def stale_cells(self, keep: Iterable[str]) -> list[str]:
        """Cell folders that do not belong to the current grid (left in place, ignored by the results)."""
        keep = set(keep)
        if not self.cells_dir.is_dir():
            return []
        return sorted(p.name for p in self.cells_dir.iterdir() if p.is_dir() and p.name not in keep)

    # ---------------------------------------------------------------------------------- results
    def write_results(self, cell_ids: Iterable[str]) -> pd.DataFrame:
        """Aggregate the ``done.json`` summaries of the finished cells among ``cell_ids`` into ``results.csv``.

        Returns:
            The table (one row per finished cell, in grid order).
        """
        rows = [results_row(self.done(cid)) for cid in cell_ids if self.is_done(cid)]
        frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(results_row({})))
        atomic_write_csv(self.root / "results.csv", frame)
        try:
            import pyarrow  # noqa: F401

            buf = io.BytesIO()
            frame.to_parquet(buf, index=False)
            atomic_write_bytes(self.root / "results.parquet", buf.getvalue())
        except ImportError:
            pass
        return frame


def results_row(done: dict[str, Any]) -> dict[str, Any]:
    """Flatten one ``done.json`` into a row of the results table."""
    row: dict[str, Any] = {
        "cell_id": done.get("cell_id"),
        "label": done.get("label"),
        "loss": done.get("loss"),
        "dataset": done.get("dataset_label"),
        "seed": done.get("seed"),
        "status": done.get("status"),
        "reason": done.get("reason") or "",
        "best_epoch": done.get("best_epoch"),
        "epochs_run": done.get("epochs_run"),
    }
    for prefix in ("val", "test"):
        for key, value in (done.get(prefix) or {}).items():
            row[f"{prefix}_{key}"] = value
    timing = done.get("timing") or {}
    for key in ("wall_s", "mean_step_s", "loss_share"):
        row[key] = timing.get(key)
    row["device"] = done.get("device")
    return row


def _read_csv(path: Path) -> pd.DataFrame:
    # Only empty fields are missing values: a loss labelled "nan" or "None" stays a string.
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def load_results(run_dir: str | Path) -> pd.DataFrame:
    """The aggregated results table of a run folder (``results.csv``), one row per finished cell.

    Raises:
        StudyError: the folder has no results table.
    """
    path = Path(run_dir) / "results.csv"
    if not path.is_file():
        raise StudyError(f"`run_dir` must contain results.csv (a finished lossbench run), got {str(run_dir)!r}")
    return _read_csv(path)


def _cell_table(run_dir: str | Path, filename: str) -> pd.DataFrame:
    results = load_results(run_dir)
    frames = []
    for row in results.itertuples(index=False):
        path = Path(run_dir) / "cells" / str(row.cell_id) / filename
        if not path.is_file():
            continue
        frame = _read_csv(path)
        frame.insert(0, "seed", row.seed)
        frame.insert(0, "dataset", row.dataset)
        frame.insert(0, "label", row.label)
        frame.insert(0, "cell_id", row.cell_id)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_subjects(run_dir: str | Path, split: str = "test") -> pd.DataFrame:
    """Per-subject metrics of every finished cell (``split`` = "test", or "val" for every validation epoch).

    Returns:
        One row per (cell, subject[, epoch]) with ``cell_id``, ``label``, ``dataset``, ``seed`` first.

    Raises:
        StudyError: unknown split or not a finished run folder.
    """
    if split not in ("test", "val"):
        raise StudyError(f"`split` must be 'test' or 'val', got {split!r}")
    return _cell_table(run_dir, f"{split}_subjects.csv")


def load_history(run_dir: str | Path) -> pd.DataFrame:
    """Per-epoch training/validation history of every finished cell, with ``cell_id``/``label``/... first."""
    return _cell_table(run_dir, "history.csv")
