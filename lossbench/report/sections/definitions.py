"""The report's definitions: every metric with its direction and empty-case policy, and every abbreviation it prints.

Metric rows come from :func:`lossbench.metrics.metric_info` (directions are never written here).
"""

from __future__ import annotations

from lossbench.report.model import Cell, Row, Table
from lossbench.report.sections.results import INSTANCE_METRICS, TEST_METRICS, VAL_METRICS

__all__ = ["definitions_table", "abbreviations_table", "ABBREVIATIONS"]

#: Every abbreviation the report prints, with its meaning.
ABBREVIATIONS = (
    ("DSC", "Dice similarity coefficient 2|P∩T| / (|P| + |T|) of prediction P and target T"),
    ("MI", "missed instances: target instances that overlap no predicted voxel"),
    ("FI", "false instances: predicted instances that overlap no target voxel"),
    ("F1", "harmonic mean of precision and recall: TP / (TP + (FP + FN) / 2)"),
    ("w/, wo/", "with, without"),
    ("TP, FP, FN", "true positives, false positives, false negatives (instances unless stated otherwise)"),
    ("VD", "volume difference: | |P| − |T| | in voxels"),
    ("SLC", "simple lesion count: | number of predicted − number of target instances |"),
    ("IoU", "intersection over union |P∩T| / |P∪T|"),
    ("PQ", "panoptic quality = SQ × RQ"),
    ("SQ", "segmentation quality: mean IoU of the matched (prediction, target) instance pairs"),
    ("RQ", "recognition quality: the F1 of the one-to-one instance matching at IoU ≥ 0.5"),
    ("PQ (DSC)", "panoptic quality with Dice in place of IoU for the matched pairs"),
    ("CC", "connected component: an instance (see the connectivity in the setup)"),
    ("CC-Dice", "mean over target components of the Dice inside each component's Voronoi region (CC-Metrics)"),
    ("CC missed", "target components whose Voronoi region holds no predicted voxel"),
    ("L2", "Euclidean norm (of a gradient, in the gradient audit)"),
    ("CI", "confidence interval (the 95% intervals of the verdicts)"),
    ("std, ±", "standard deviation (ddof = 1); ± is over seeds"),
    ("α", "significance level of the subject-level tests"),
    ("seed", "one training run of a loss; runs with the same seed share the data split and the initial weights"),
    ("cell", "one (loss, dataset, seed) training run of the study grid"),
)


def definitions_table() -> Table:
    """Every metric of the tables with its direction, definition and empty-case policy."""
    from lossbench.metrics import metric_info

    keys = (
        [("dice", "DSC")]
        + list(VAL_METRICS[1:])
        + list(TEST_METRICS[1:])
        + list(INSTANCE_METRICS)
        + [("recall", "Recall (by size bin)")]
    )
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


def abbreviations_table() -> Table:
    """Every abbreviation the report prints, one row each."""
    return Table.plain(
        "abbreviations", "Abbreviations", ["Abbreviation", "Meaning"], [list(a) for a in ABBREVIATIONS], numeric_from=2
    )
