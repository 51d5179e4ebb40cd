"""Challenge-exact segmentation metrics and instance-detection metrics, with their directions.

* :func:`atlas_metrics`: ATLAS R2.0 (MICCAI 2022) Dice, volume difference, simple lesion count,
  lesion-wise F1 (connectivity 1 by default, as the challenge).
* :func:`detection_metrics`: missed / false instances overall and per instance-size bin.
* :func:`panoptic_metrics`: panoptic quality PQ = SQ x RQ (panoptica's one-to-one matching at IoU >= 0.5).
* :func:`cc_metrics`: CC-Dice, the Dice inside every target component's Voronoi region (CC-Metrics).
* :func:`subject_metrics`: all of them from one labelling (use it when they share a connectivity).
* :func:`study_aggregates`: total MI, subjects with MI, ... of a per-subject table (paper Tables 1, 3).
* :data:`METRICS`, :func:`list_metrics`, :func:`metric_info`, :func:`metric_directions`: every metric's
  ``higher_is_better`` and empty-case policy, read by :func:`lossbench.report.ranking.rank_table` callers.

Input rule: ``(*spatial)`` masks are one subject and give a ``dict``; pass ``batched=True`` for
``(B, *spatial)`` and get a ``list`` of dicts (``pandas.DataFrame(rows)`` is the per-subject table).
Masks are binary numpy arrays or torch tensors; connectivity is in orthogonal hops and is always
reported in the output under ``connectivity``.
"""

from lossbench.metrics.atlas import atlas_from_match, atlas_metrics
from lossbench.metrics.detection import DEFAULT_SIZE_BINS, bin_names, detection_from_match, detection_metrics
from lossbench.metrics.info import METRICS, MetricInfo, list_metrics, metric_directions, metric_info
from lossbench.metrics.matching import InstanceMatch, match_instances
from lossbench.metrics.panoptic import greedy_matching, panoptic_from_match, panoptic_metrics
from lossbench.metrics.per_component import cc_from_match, cc_metrics
from lossbench.metrics.study import STUDY_AGGREGATES, study_aggregates, subject_metrics

__all__ = [
    "atlas_metrics",
    "detection_metrics",
    "panoptic_metrics",
    "cc_metrics",
    "subject_metrics",
    "study_aggregates",
    "STUDY_AGGREGATES",
    "match_instances",
    "InstanceMatch",
    "atlas_from_match",
    "detection_from_match",
    "panoptic_from_match",
    "cc_from_match",
    "greedy_matching",
    "DEFAULT_SIZE_BINS",
    "bin_names",
    "METRICS",
    "MetricInfo",
    "list_metrics",
    "metric_info",
    "metric_directions",
]
