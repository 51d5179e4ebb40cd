"""The ``scaling`` suite: the instance losses with 10, 100 and 1000 instances at 96^3, and with noisy predictions.

Cost must not follow the number of instances. Two series at 96^3: "fixed foreground" (the balls shrink as their
number grows, so about 81,000 foreground voxels throughout: only the count changes; the target is checked here) and
"fixed size" (balls of radius 2.5, so the foreground grows 100x with the count, and so does every per-voxel cost,
cc3d's labelling included). Dice and the labelling floor are timed alongside: they show how much of the growth is
foreground volume rather than the number of instances. Then the "noisy" scene (:mod:`lossbench.bench.suites.noisy`):
an untrained network's prediction with about 80,000 components per ATLAS-sized image, time and peak memory against
Dice + labelling.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lossbench.bench.masks import ball_voxels, instances_mask, sparse_false
from lossbench.bench.record import Recorder
from lossbench.bench.settings import TARGET_SCALING, common_fields, size_name
from lossbench.bench.suites.common import entry_name, import_or_error
from lossbench.bench.suites.losses import loss_cases, loss_configs
from lossbench.bench.suites.noisy import run_noisy_scene
from lossbench.bench.suites.steps import LossConfig, floor_name

__all__ = [
    "run_scaling_suite",
    "scaling_radius",
    "SCALING_COUNTS",
    "SCALING_SIZE",
    "SCALING_RADIUS",
    "SCALING_SERIES",
    "SCALING_LOSSES",
]

#: Instance counts of the scaling suite (at 96^3).
SCALING_COUNTS = (10, 100, 1000)
SCALING_SIZE = (96, 96, 96)
#: Ball radius of the fixed-size series (and of the largest count in the fixed-foreground series).
SCALING_RADIUS = 2.5
#: "fixed foreground": n balls holding about as many voxels as 1000 balls of radius 2.5 (radius 12.4 for 10), so
#: only the number of instances changes; "fixed size": balls of radius 2.5, so the foreground grows with the count
#: (100x from 10 to 1000) and every per-voxel cost, the labelling's included, grows with it.
SCALING_SERIES = ("fixed foreground", "fixed size")
#: The scaling target (cost must not follow the number of instances) is checked on this series.
SCALING_TARGET_SERIES = "fixed foreground"
#: Losses of the scaling suite; their ratio t(most) / t(fewest) is checked against the target.
SCALING_LOSSES = ("ici", "dici", "blob")
_BATCH = 1


def scaling_radius(n: int, series: str) -> float:
    """Ball radius of the scaling suite's ``n`` instances in ``series`` (see :data:`SCALING_SERIES`).

    "fixed size": :data:`SCALING_RADIUS` whatever ``n``. "fixed foreground": the radius (in steps of 0.05) whose
    ``n`` balls hold the number of voxels closest to that of the largest count's balls of :data:`SCALING_RADIUS`.
    """
    if series == "fixed size":
        return SCALING_RADIUS
    total = max(SCALING_COUNTS) * ball_voxels(SCALING_RADIUS)
    radii = SCALING_RADIUS + 0.05 * np.arange(400)
    return float(min(radii, key=lambda r: abs(n * ball_voxels(float(r)) - total)))


def run_scaling_suite(run: Recorder, sizes: list[tuple[int, ...]]) -> None:
    """Time Dice, the floor and the scaling losses at every count of both series, then the noisy scene.

    ``sizes`` is not used: the suite's sizes are its module constants (and those of the noisy scene).
    """
    api = import_or_error(run, "scaling", "lossbench.losses", ("build_loss", "list_losses"))
    if api is None:
        return
    all_configs = loss_configs(api, run, "scaling")
    configs = [c for c in all_configs if c[1] in SCALING_LOSSES]
    registered = {entry_name(e) for e in api["list_losses"]()}  # a loss selection may leave some out on purpose
    missing = [n for n in SCALING_LOSSES if n not in registered]
    if missing:
        run.error("scaling", "(suite)", f"the loss registry has no {missing}: scaling cannot be measured for them")
    configs = [c for c in all_configs if c[0] == "dice"] + configs
    for series in SCALING_SERIES:
        med_by_n = {n: _scaling_group(run, api, configs, series, n) for n in SCALING_COUNTS}
        _scaling_ratios(run, configs, series, med_by_n)
    run_noisy_scene(run, api)


def _scaling_group(
    run: Recorder, api: dict[str, Any], configs: list[LossConfig], series: str, n: int
) -> dict[str, float | None]:
    """Time one instance count of one series; return case -> median seconds."""
    radius = scaling_radius(n, series)
    target = instances_mask(SCALING_SIZE, n, radius=radius, seed=n)[None]
    # prediction: every instance shifted by one voxel (all overlapping) plus 10% false instances elsewhere
    pred = np.roll(target, 1, axis=-1) | sparse_false(target, max(1, n // 10), seed=n)
    extra = {"instances": n, "series": series, "radius": radius, "foreground": int(target.sum())}
    common = {**common_fields(SCALING_SIZE, _BATCH), **extra}
    floor = floor_name(run.device)
    cases = loss_cases(api, configs, target, pred, run.device, floor)
    meta: dict[str, dict[str, Any]] = {label: {"params": kw, **extra} for label, _, kw in configs}
    meta[floor] = dict(extra)
    return run.group("scaling", f"{size_name(SCALING_SIZE)} n={n} ({series})", cases, meta, common)


def _scaling_ratios(
    run: Recorder,
    configs: list[LossConfig],
    series: str,
    med_by_n: dict[int, dict[str, float | None]],
) -> None:
    """t(most instances) / t(fewest) per case; the target applies to the scaling losses on the target series."""
    lo, hi = SCALING_COUNTS[0], SCALING_COUNTS[-1]
    floor = floor_name(run.device)
    for label, name, _ in [*configs, (floor, floor, {})]:
        checked = name in SCALING_LOSSES and label == name and series == SCALING_TARGET_SERIES
        run.ratio(
            "scaling", f"{label}: t({hi}) / t({lo}) ({series})", med_by_n[hi].get(label),
            med_by_n[lo].get(label),
            common={**common_fields(SCALING_SIZE, _BATCH), "instances": f"{hi} vs {lo}", "series": series},
            numerator=f"{hi} instances", denominator=f"{lo} instances",
            group=f"{size_name(SCALING_SIZE)} n={hi} ({series})", case=label, short=f"/n={lo}",
            target=TARGET_SCALING if checked else None, op="<=" if checked else None,
        )  # fmt: skip
