"""What every metric means: direction (``higher_is_better``), empty-case policy, description.

The ranking never hard-codes a direction: it reads :data:`METRICS` through :func:`metric_directions`.
Size-binned detection columns such as ``recall_10_100`` or ``missed_1000_inf`` resolve to their base
metric (``recall``, ``missed``) with the bin ``[10, 100)`` / ``[1000, inf)`` voxels added to the
description.

A metric with ``higher_is_better=None`` is a descriptive count (e.g. ``n_target``): it is reported but
has no direction and cannot be ranked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from lossbench.errors import RegistryError, expect
from lossbench.registry import suggest

__all__ = ["MetricInfo", "METRICS", "list_metrics", "metric_info", "metric_directions", "BINNED_METRICS"]


@dataclass(frozen=True)
class MetricInfo:
    """Metadata of one metric.

    Attributes:
        name: column name in metric dicts and per-subject tables.
        higher_is_better: ``True`` (rank descending, "max"), ``False`` (ascending, "min"), or ``None`` for a
            descriptive quantity that is never ranked.
        empty_policy: what the metric is when the prediction and/or the target has no foreground.
        description: the definition, with the formula.
        level: ``"subject"`` (one value per subject; a study reports their mean) or ``"study"`` (one value per
            method over all subjects, from :func:`lossbench.metrics.study_aggregates`).
        unit: unit of the value (``""`` if dimensionless).
    """

    name: str
    higher_is_better: bool | None
    empty_policy: str
    description: str
    level: str = "subject"
    unit: str = ""

    @property
    def direction(self) -> str | None:
        """``"max"``, ``"min"`` or ``None`` (the form :func:`lossbench.report.ranking.rank_table` takes)."""
        if self.higher_is_better is None:
            return None
        return "max" if self.higher_is_better else "min"


_NONE_EMPTY = "well defined for empty masks (counts are 0)"
_PQ_EMPTY = (
    "NaN when prediction and target both have no instance (panoptica's default; means over subjects skip it); "
    "0.0 when no pair is matched, including an empty prediction or an empty target"
)

_ALL = [
    # ATLAS R2.0 (MICCAI 2022) challenge metrics.
    MetricInfo(
        "dice",
        True,
        "1.0 when prediction and target are both empty; 0.0 when exactly one is empty",
        "Dice similarity coefficient 2|P∩T| / (|P| + |T|) (ATLAS R2.0)",
    ),
    MetricInfo(
        "volume_difference",
        False,
        "0 when both are empty; |P| or |T| when the other is empty",
        "absolute volume difference | |P| - |T| | (ATLAS R2.0)",
        unit="voxels",
    ),
    MetricInfo(
        "volume_difference_ml",
        False,
        "0 when both are empty; only present when `spacing` (mm) is given",
        "absolute volume difference in millilitres: | |P| - |T| | * prod(spacing) / 1000",
        unit="mL",
    ),
    MetricInfo(
        "simple_lesion_count",
        False,
        _NONE_EMPTY,
        "| N_pred - N_true |, instances counted with the stated connectivity (ATLAS R2.0)",
        unit="instances",
    ),
    MetricInfo(
        "lesionwise_f1",
        True,
        "1.0 when both are empty; 0.0 when exactly one is empty",
        "TP / (TP + (FP + FN) / 2): a target instance is TP if >= 1 of its voxels is predicted, else FN; "
        "a predicted instance is FP if it overlaps no target voxel (ATLAS R2.0)",
    ),
    MetricInfo("lesion_tp", None, _NONE_EMPTY, "target instances with >= 1 predicted voxel", unit="instances"),
    MetricInfo("lesion_fn", None, _NONE_EMPTY, "target instances with no predicted voxel", unit="instances"),
    MetricInfo("lesion_fp", None, _NONE_EMPTY, "predicted instances overlapping no target voxel", unit="instances"),
    # Instance detection (ICI paper: missed / false instances), overall and per size bin.
    MetricInfo("n_target", None, _NONE_EMPTY, "number of target instances", unit="instances"),
    MetricInfo("n_pred", None, _NONE_EMPTY, "number of predicted instances", unit="instances"),
    MetricInfo("detected", True, _NONE_EMPTY, "target instances overlapping >= 1 predicted voxel", unit="instances"),
    MetricInfo(
        "missed",
        False,
        _NONE_EMPTY,
        "missed instances (MI): target instances overlapping no predicted voxel; binned by target size",
        unit="instances",
    ),
    MetricInfo(
        "false",
        False,
        _NONE_EMPTY,
        "false instances (FI): predicted instances overlapping no target voxel; binned by predicted size",
        unit="instances",
    ),
    MetricInfo(
        "recall",
        True,
        "NaN when there is no target instance (undefined); ranked last and flagged by the ranking",
        "instance recall detected / n_target",
    ),
    # Panoptic quality (panoptica's semantics: one-to-one matching of components with IoU >= threshold).
    MetricInfo(
        "pq",
        True,
        _PQ_EMPTY,
        "panoptic quality sq * rq (panoptica): recognition times segmentation quality of the matched instances",
    ),
    MetricInfo("sq", True, _PQ_EMPTY, "segmentation quality: mean IoU of the matched (prediction, target) pairs"),
    MetricInfo(
        "rq",
        True,
        _PQ_EMPTY,
        "recognition quality tp / (tp + (fp + fn) / 2) of the one-to-one matching at IoU >= threshold (an F1)",
    ),
    MetricInfo("pq_dsc", True, _PQ_EMPTY, "panoptic quality with Dice: sq_dsc * rq"),
    MetricInfo("sq_dsc", True, _PQ_EMPTY, "segmentation quality with Dice: mean Dice of the matched pairs"),
    MetricInfo(
        "tp",
        None,
        _NONE_EMPTY,
        "panoptic true positives: (prediction, target) instance pairs matched one-to-one with IoU >= threshold",
        unit="instances",
    ),
    MetricInfo("fp", None, _NONE_EMPTY, "panoptic false positives: unmatched predicted instances", unit="instances"),
    MetricInfo("fn", None, _NONE_EMPTY, "panoptic false negatives: unmatched target instances", unit="instances"),
    # CC-Metrics (Jaus et al., "Every Component Counts").
    MetricInfo(
        "cc_dice",
        True,
        "1.0 when prediction and target are both empty; 0.0 when the target is empty and the prediction is not",
        "CC-Dice: mean over target components of the Dice 2|P ∩ C_k| / (|P ∩ R_k| + |C_k|) inside the component's "
        "Voronoi region R_k (every voxel belongs to its nearest component)",
    ),
    MetricInfo(
        "cc_dice_components",
        None,
        "an empty list when the target has no component",
        "the per-component Dice values of cc_dice, in component order (a list; not a table column)",
    ),
    MetricInfo(
        "cc_missed",
        False,
        _NONE_EMPTY,
        "target components whose Voronoi region holds no predicted voxel (CC-Metrics' missed components)",
        unit="instances",
    ),
    # Study-level aggregates (the ICI paper's validation tables).
    MetricInfo("n_subjects", None, "counts every subject", "number of subjects", level="study", unit="subjects"),
    MetricInfo("total_mi", False, "0 for no subject", "total MI: sum of missed instances over subjects", "study"),
    MetricInfo(
        "subjects_with_mi", False, "0 for no subject", "subjects with >= 1 missed instance", "study", "subjects"
    ),
    MetricInfo(
        "subjects_all_mi",
        False,
        "subjects without target instances are not counted (nothing to miss)",
        "subjects with >= 1 target instance whose target instances are all missed ('all MI')",
        "study",
        "subjects",
    ),
    MetricInfo("total_fi", False, "0 for no subject", "total FI: sum of false instances over subjects", "study"),
    MetricInfo("subjects_with_fi", False, "0 for no subject", "subjects with >= 1 false instance", "study", "subjects"),
    MetricInfo(
        "subjects_without_mi_fi",
        True,
        "a subject with empty target and empty prediction counts (no MI, no FI)",
        "subjects with neither missed nor false instances ('wo/ MI & FI')",
        "study",
        "subjects",
    ),
]

#: Every metric by name. Per-size-bin columns (``<base>_<lo>_<hi>``) resolve through :func:`metric_info`.
METRICS: dict[str, MetricInfo] = {m.name: m for m in _ALL}

#: Base names of the detection metrics that are also reported per size bin.
BINNED_METRICS = ("n_target", "n_pred", "detected", "missed", "false", "recall")

_BIN_RE = re.compile(r"^(?P<base>[a-z_]+?)_(?P<lo>\d+)_(?P<hi>\d+|inf)$")


def metric_info(name: str) -> MetricInfo:
    """The :class:`MetricInfo` of ``name``, including per-size-bin names such as ``recall_10_100``.

    Raises:
        RegistryError: unknown metric name (with a "did you mean" hint).
    """
    if not isinstance(name, str):
        raise expect("metric", "a metric name (str)", repr(name), cls=RegistryError)
    if name in METRICS:
        return METRICS[name]
    m = _BIN_RE.match(name)
    if m and m["base"] in BINNED_METRICS:
        base = METRICS[m["base"]]
        what = "target" if m["base"] in ("n_target", "detected", "missed", "recall") else "predicted"
        bin_text = f"[{m['lo']}, {m['hi']})" if m["hi"] != "inf" else f"[{m['lo']}, inf)"
        return replace(base, name=name, description=f"{base.description}; {what} size in {bin_text} voxels")
    raise expect(
        "metric",
        "a known metric name (see lossbench.metrics.list_metrics())",
        repr(name),
        hint=suggest(name, list(METRICS)).strip(),
        cls=RegistryError,
    )


def list_metrics(level: str | None = None) -> list[MetricInfo]:
    """All metrics (without the per-bin expansions), optionally only ``level="subject"`` or ``"study"``.

    Raises:
        ConfigError: unknown ``level``.
    """
    if level not in (None, "subject", "study"):
        raise expect("level", "None, 'subject' or 'study'", repr(level))
    return [m for m in _ALL if level is None or m.level == level]


def metric_directions(names: Iterable[str]) -> dict[str, str]:
    """``{name: "max" | "min"}`` for the ``directions`` argument of :func:`~lossbench.report.ranking.rank_table`.

    Example:
        >>> metric_directions(["dice", "missed_1_10"])
        {'dice': 'max', 'missed_1_10': 'min'}

    Raises:
        RegistryError: unknown name, or a descriptive metric without direction (e.g. ``n_target``).
    """
    out = {}
    for name in names:
        info = metric_info(name)
        if info.direction is None:
            raise expect(
                "metric",
                "a metric with a direction (higher_is_better True/False) to be ranked",
                f"{name!r}, a descriptive count",
                cls=RegistryError,
            )
        out[name] = info.direction
    return out
