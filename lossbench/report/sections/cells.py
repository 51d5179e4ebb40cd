"""The report's table of every cell of the study grid with its status: nothing failed or missing is hidden."""

from __future__ import annotations

from typing import Any

import pandas as pd

from lossbench.report.model import Cell, Row, Table
from lossbench.report.run_data import RunData
from lossbench.report.text import duration

__all__ = ["cells_table"]


def cells_table(data: RunData) -> Table:
    """One row per expected cell: status, best epoch, validation and test DSC, time per step, wall time, note."""
    several = len(data.datasets) > 1
    res = data.results.set_index("cell_id") if "cell_id" in data.results else pd.DataFrame()
    rows = []
    for r in data.cells.itertuples(index=False):
        extra = res.loc[r.cell_id] if isinstance(r.cell_id, str) and r.cell_id in res.index else None
        cells = ([Cell(text=r.dataset)] if several else []) + _cell_values(r, extra)
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


def _cell_values(r: Any, extra: Any) -> list[Cell]:
    """Seed, status and the numbers of one cell (``extra``: its results row, None when it has none)."""

    def num(col: str, fmt: str) -> str:
        if extra is None or col not in extra or pd.isna(extra[col]):
            return ""
        return fmt.format(float(extra[col]))

    ok = r.status == "ok"
    return [
        Cell(text=str(r.seed)),
        Cell(text=str(r.status), css="" if ok else ("worse" if r.status in ("diverged", "failed") else "na")),
        Cell(text=num("best_epoch", "{:.0f}")),
        Cell(text=num("epochs_run", "{:.0f}")),
        Cell(text=num("val_dsc", "{:.4f}")),
        Cell(text=num("test_dice", "{:.4f}")),
        Cell(text=num("mean_step_s", "{:.3f}")),
        Cell(text=duration(float(extra["wall_s"])) if extra is not None and pd.notna(extra.get("wall_s")) else ""),
        Cell(text=str(r.reason or "")),
    ]
