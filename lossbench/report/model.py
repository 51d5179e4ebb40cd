"""The table model the report and the gallery render: :class:`Table` of :class:`Row` of :class:`Cell`; Figure.

A table is rendered by the templates the same way in markdown and HTML; the row label is the first column (its
title is ``row_header``), ``columns`` are the titles of the cells that follow it and ``align`` holds one ``"l"`` or
``"r"`` per cell column.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Cell", "Row", "Table", "Figure"]


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
    """A table for the templates: an anchor id, a title, the column titles, the rows, notes and alignment."""

    id: str
    title: str
    columns: list[str]
    rows: list[Row]
    row_header: str = "Loss"
    notes: list[str] = field(default_factory=list)
    align: list[str] = field(default_factory=list)

    @classmethod
    def plain(cls, id: str, title: str, header: list[str], rows: list[list[object]], numeric_from: int) -> Table:
        """A table of plain values: ``header[0]`` titles the row labels (``row[0]``), the other values become cells.

        Columns from index ``numeric_from`` of ``header`` on hold numbers (right-aligned); the row-label column is
        never numeric (``numeric_from >= 1``).
        """
        return cls(
            id=id,
            title=title,
            columns=[str(h) for h in header[1:]],
            rows=[Row(label=str(row[0]), cells=[Cell(text=str(v)) for v in row[1:]]) for row in rows],
            row_header=str(header[0]),
            align=["r" if i >= numeric_from else "l" for i in range(1, len(header))],
        )


@dataclass
class Figure:
    """A figure: path relative to the page, title (also the image's alt text) and caption."""

    src: str
    title: str
    caption: str
