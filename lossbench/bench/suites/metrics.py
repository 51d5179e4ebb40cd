"""The ``metrics`` suite: ATLAS and detection metrics on one ATLAS-sized subject (197x233x189), about 20 lesions.

Cases: :func:`~lossbench.metrics.atlas_metrics`, :func:`~lossbench.metrics.detection_metrics` and both together
(on CUDA also both on device tensors); the target is seconds per subject for both together.
"""

from __future__ import annotations

from typing import Any

import torch

from lossbench.bench.masks import metrics_subject
from lossbench.bench.record import Recorder
from lossbench.bench.settings import TARGET_METRICS_S
from lossbench.bench.suites.common import import_or_error
from lossbench.bench.timing import Case

__all__ = ["run_metrics_suite", "METRICS_SHAPE", "METRICS_LESIONS"]

#: The metrics suite's subject (an ATLAS R2.0 volume) and its number of lesions.
METRICS_SHAPE = (197, 233, 189)
METRICS_LESIONS = 20


def run_metrics_suite(run: Recorder, sizes: list[tuple[int, ...]]) -> None:
    """Time the metrics on the subject (``sizes`` is not used) and check the seconds per subject."""
    api = import_or_error(run, "metrics", "lossbench.metrics", ("atlas_metrics", "detection_metrics"))
    if api is None:
        return
    pred, target = metrics_subject(METRICS_SHAPE, METRICS_LESIONS)
    cpu = torch.device("cpu")
    common = {"size": "x".join(map(str, METRICS_SHAPE)), "batch": 1}
    tp, tt = torch.from_numpy(pred).to(run.device), torch.from_numpy(target).to(run.device)

    def both(p: Any, t: Any) -> None:
        api["atlas_metrics"](p, t, connectivity=1)
        api["detection_metrics"](p, t, connectivity=None)

    cases: dict[str, Case] = {
        "atlas_metrics": (lambda: api["atlas_metrics"](pred, target, connectivity=1), cpu),
        "detection_metrics": (lambda: api["detection_metrics"](pred, target, connectivity=None), cpu),
        "atlas + detection": (lambda: both(pred, target), cpu),
    }
    if run.device.type != "cpu":
        cases[f"atlas + detection ({run.device.type} tensors)"] = (lambda: both(tp, tt), run.device)
    from lossbench.cc import label_components

    n_lesions = int(label_components(target[None], connectivity=1).counts[0])
    meta = {k: {"lesions": n_lesions} for k in cases}
    med = run.group("metrics", common["size"], cases, meta, common)
    for name in cases:
        if name.startswith("atlas + detection"):
            run.ratio(
                "metrics", f"{name} (s per subject)", med.get(name), 1.0, common=common,
                numerator=name, denominator="1 s", target=TARGET_METRICS_S, op="<=",
                group=common["size"], case=name, short="s",
            )  # fmt: skip
