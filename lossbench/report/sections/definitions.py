"""The report's table of metric definitions and empty-case policies (:func:`lossbench.metrics.metric_info`)."""

from __future__ import annotations

from lossbench.report.model import Cell, Row, Table
from lossbench.report.sections.results import TEST_METRICS, VAL_METRICS

__all__ = ["definitions_table"]


def definitions_table() -> Table:
    """Every metric of the tables with its direction, definition and empty-case policy."""
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
