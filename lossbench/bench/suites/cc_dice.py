"""The losses suite's CC-Dice groups: the exact Voronoi labelling, and the CC-Dice losses with and without it.

Per size, batch 1, a label of about :data:`CC_DICE_COMPONENTS` balls (prediction: the label shifted by one voxel
plus 5 false blobs). Cases:

* ``voronoi labelling``: :func:`lossbench.cc.voronoi.batch_regions`, the call the losses make (cc3d components,
  then the exact nearest-component transform); ``scipy EDT``: ``scipy.ndimage.distance_transform_edt`` with
  ``return_indices=True`` on the background (the distance transform alone, without labelling or the lookup of
  the nearest voxel's component), the reference it is compared with;
* ``dice`` and ``blob`` forward + backward (the denominators);
* ``cc_dice`` and ``cc_dicece`` forward + backward, and ``... own work``: the same call with the Voronoi labelling
  replaced by a lookup of its precomputed result, i.e. everything the loss does but the labelling.

Targets at 96^3 and 192^3: own work <= :data:`~lossbench.bench.settings.TARGET_CC_DICE_OWN_VS_BLOB` x blob, and the
whole loss <= :data:`~lossbench.bench.settings.TARGET_CC_DICE_VS_FLOOR` x (Voronoi labelling + Dice).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from lossbench.bench.masks import prediction_mask
from lossbench.bench.record import Recorder
from lossbench.bench.settings import (
    TARGET_CC_DICE_OWN_VS_BLOB,
    TARGET_CC_DICE_VS_FLOOR,
    common_fields,
)
from lossbench.bench.suites.steps import forward_backward, loss_inputs, prime
from lossbench.bench.timing import Case
from lossbench.errors import LossbenchError

__all__ = ["CC_DICE_COMPONENTS", "CC_DICE_TARGET_SIZES", "CC_DICE_LOSSES", "run_cc_dice_group", "cc_dice_label"]

#: Label components (balls, some may touch) of the CC-Dice groups.
CC_DICE_COMPONENTS = 20
#: Sizes whose ratios are checked against the targets.
CC_DICE_TARGET_SIZES = ((96, 96, 96), (192, 192, 192))
#: The losses of the group (each also timed as "own work").
CC_DICE_LOSSES = ("cc_dice", "cc_dicece")
_CPU = torch.device("cpu")
_VORONOI, _EDT = "voronoi labelling", "scipy EDT"


def cc_dice_label(size: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A ``(1, *size)`` label of :data:`CC_DICE_COMPONENTS` balls of radius ``max(1.5, min(size) / 24)``."""
    from lossbench.cc.shapes import blobs_mask

    radius = max(1.5, min(size) / 24)
    return blobs_mask(size, CC_DICE_COMPONENTS, radius=radius, seed=seed)[None]


def run_cc_dice_group(run: Recorder, api: dict[str, Any], size: tuple[int, ...]) -> None:
    """Time the Voronoi labelling, scipy's EDT and the losses at ``size`` (batch 1); record the ratios."""
    import lossbench.losses.cc_dice as cc_module

    if not hasattr(cc_module, "batch_regions"):
        run.error("losses", "CC-Dice", "lossbench.losses.cc_dice does not call batch_regions: own work not measurable")
        return
    target = cc_dice_label(size)
    pred = prediction_mask(target, 5, seed=1)
    common = common_fields(size, 1)
    group = f"{common['size']} B=1 (CC-Dice)"
    cases, n_comp = _cases(run, api, cc_module, target, pred)
    meta: dict[str, dict[str, Any]] = {name: {"components": n_comp} for name in cases}
    meta[_EDT]["note"] = "distance transform with indices only (no labelling, no component lookup)"
    for k in CC_DICE_LOSSES:
        if f"{k} own work" in meta:
            meta[f"{k} own work"]["note"] = "Voronoi labelling replaced by a lookup of its result"
    med = run.group("losses", group, cases, meta, common)
    del cases
    _ratios(run, med, size, group, common)


def _cases(
    run: Recorder, api: dict[str, Any], cc_module: Any, target: np.ndarray, pred: np.ndarray
) -> tuple[dict[str, Case], int]:
    """The group's cases; checks first that the lookup gives the loss the same value as the labelling."""
    from scipy import ndimage

    from lossbench.cc.api import resolve_connectivity

    conn = resolve_connectivity(None, target.ndim - 1)
    regions = cc_module.batch_regions(target, conn, None)
    background = ~target[0]
    x, y = loss_inputs(target, pred, run.device)
    cases: dict[str, Case] = {
        _VORONOI: (lambda: cc_module.batch_regions(target, conn, None), _CPU),
        _EDT: (lambda: ndimage.distance_transform_edt(background, return_distances=False, return_indices=True), _CPU),
    }
    for name in ("dice", "blob", *CC_DICE_LOSSES):
        try:
            loss = api["build_loss"](name, sigmoid=True)
        except LossbenchError as exc:
            run.error("losses", f"CC-Dice / {name}", f"not buildable: {exc}")
            continue
        if isinstance(loss, torch.nn.Module):
            loss = loss.to(run.device)
        prime(loss, x, y)
        cases[name] = (forward_backward(loss, x, y), run.device)
        if name in CC_DICE_LOSSES:
            _check_lookup(run, cc_module, loss, x, y, regions, name)
            cases[f"{name} own work"] = (_own_work(cc_module, forward_backward(loss, x, y), regions), run.device)
    return cases, int(regions[1].sum())


@contextlib.contextmanager
def _lookup(cc_module: Any, regions: tuple[np.ndarray, np.ndarray]) -> Iterator[None]:
    """The CC-Dice module's Voronoi labelling replaced by its precomputed result while the block runs."""
    real = cc_module.batch_regions

    def precomputed(mask: np.ndarray, connectivity: int, spacing: Any) -> tuple[np.ndarray, np.ndarray]:
        return regions

    cc_module.batch_regions = precomputed
    try:
        yield
    finally:
        cc_module.batch_regions = real


def _own_work(cc_module: Any, step: Callable[[], None], regions: tuple[np.ndarray, np.ndarray]) -> Callable[[], None]:
    def own() -> None:
        with _lookup(cc_module, regions):
            step()

    return own


def _check_lookup(
    run: Recorder,
    cc_module: Any,
    loss: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    regions: tuple[np.ndarray, np.ndarray],
    name: str,
) -> None:
    """Record an error if the loss computed on the looked-up regions differs from the loss itself."""
    with torch.no_grad():
        full = float(loss(x, y))
        with _lookup(cc_module, regions):
            looked_up = float(loss(x, y))
    if full != looked_up:
        run.error("losses", f"{name} own work", f"the lookup changes the loss: {looked_up!r} instead of {full!r}")


def _ratios(
    run: Recorder, med: dict[str, float | None], size: tuple[int, ...], group: str, common: dict[str, Any]
) -> None:
    """Voronoi vs scipy's EDT (shown); own work / blob and loss / (Voronoi + Dice) (targets at the target sizes)."""
    checked = tuple(size) in CC_DICE_TARGET_SIZES
    run.ratio(
        "losses", f"{_VORONOI} / {_EDT}", med.get(_VORONOI), med.get(_EDT), common=common,
        numerator=_VORONOI, denominator=_EDT, group=group, case=_VORONOI, short=f"/{_EDT}",
    )  # fmt: skip
    voronoi, dice = med.get(_VORONOI), med.get("dice")
    floor = None if voronoi is None or dice is None else voronoi + dice
    for k in CC_DICE_LOSSES:
        run.ratio(
            "losses", f"{k} own work / blob", med.get(f"{k} own work"), med.get("blob"), common=common,
            numerator=f"{k} own work", denominator="blob", group=group, case=f"{k} own work", short="/blob",
            target=TARGET_CC_DICE_OWN_VS_BLOB if checked else None, op="<=" if checked else None,
        )  # fmt: skip
        run.ratio(
            "losses", f"{k} / (voronoi + dice)", med.get(k), floor, common=common,
            numerator=k, denominator=f"{_VORONOI} + dice", group=group, case=k, short="/(voronoi+dice)",
            target=TARGET_CC_DICE_VS_FLOOR if checked else None, op="<=" if checked else None,
        )  # fmt: skip
