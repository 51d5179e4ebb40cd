"""Timing of the Voronoi labelling, the CC-Dice losses and the instance-quality metrics (not collected by pytest).

Run: ``python tests/perf_cc_dice.py [--sizes 96 192] [--repeats 7]``. Everything is timed interleaved in one
process on one thread, so the ratios hold on a loaded machine even when the absolute times do not. Cases:

* ``voronoi``: the loss's exact labelling (cc3d components + the lower-envelope transform,
  :func:`lossbench.cc.voronoi.batch_regions`), ``scipy EDT``: scipy's distance transform with indices (reference);
* ``dice``, ``dicece``, ``blob``, ``blob dicece``: forward + backward of the baselines (sigmoid, logits);
* ``cc_dice``, ``cc_dicece``: forward + backward; ``... own``: the same with the labelling replaced by a lookup of
  its result, i.e. the loss's own work (everything but the Voronoi labelling).

Targets (issue 17): own work <= 2x blob, loss <= 1.5x (voronoi + dice), at 96^3 and 192^3 with batch 1.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy import ndimage

import lossbench.losses.cc_dice as cc_module
from lossbench.cc.voronoi import batch_regions
from lossbench.losses import build_loss
from lossbench.metrics import subject_metrics
from lossbench.metrics.atlas import atlas_from_match
from lossbench.metrics.detection import detection_from_match
from lossbench.metrics.matching import match_validated, validate_pair


def lesions(shape, n, rng, radius):
    """``n`` random balls with radii in ``radius`` (a bool volume)."""
    m = np.zeros(shape, bool)
    grid = np.indices(shape)
    for _ in range(n):
        c = [rng.integers(0, s) for s in shape]
        r = rng.uniform(*radius)
        box = tuple(slice(max(0, int(ci - r - 1)), int(ci + r + 2)) for ci in c)
        m[box] |= sum((grid[d][box] - c[d]) ** 2 for d in range(len(shape))) <= r * r
    return m


def timed(cases, repeats):
    for f in cases.values():
        f()
    times = {k: [] for k in cases}
    for _ in range(repeats):
        for k, f in cases.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: float(np.median(v)) * 1e3 for k, v in times.items()}


def losses(n, repeats, rng):
    shape = (n, n, n)
    mask = lesions(shape, 20, rng, (2, n / 24))
    y = torch.from_numpy(mask).float()[None, None]
    x = torch.randn(1, 1, *shape) * 2
    built = {
        "dice": build_loss("dice", sigmoid=True),
        "dicece": build_loss("dicece", sigmoid=True),
        "blob": build_loss("blob", sigmoid=True),
        "blob dicece": build_loss("blob", base="dicece", sigmoid=True),
        "cc_dice": build_loss("cc_dice", sigmoid=True),
        "cc_dicece": build_loss("cc_dicece", sigmoid=True),
    }

    def fb(loss):
        xi = x.clone().requires_grad_(True)
        loss(xi, y).backward()

    regions = batch_regions(mask[None], 3, None)

    def own(loss):
        real = cc_module.batch_regions
        cc_module.batch_regions = lambda *args: regions
        try:
            fb(loss)
        finally:
            cc_module.batch_regions = real

    edt_input = ~mask
    cases = {
        "voronoi": lambda: batch_regions(mask[None], 3, None),
        "scipy EDT": lambda: ndimage.distance_transform_edt(edt_input, return_distances=False, return_indices=True),
        **{k: (lambda loss=loss: fb(loss)) for k, loss in built.items()},
        "cc_dice own": lambda: own(built["cc_dice"]),
        "cc_dicece own": lambda: own(built["cc_dicece"]),
    }
    med = timed(cases, repeats)
    print(f"{n}^3 B=1, {int(regions[1][0])} components: " + ", ".join(f"{k} {v:.1f} ms" for k, v in med.items()))
    for k, blob, base in (("cc_dice", "blob", "dice"), ("cc_dicece", "blob dicece", "dicece")):
        mine = med[f"{k} own"]
        print(f"  {k}: own work {mine:.1f} ms = {mine / med['blob']:.2f} x blob, {mine / med[blob]:.2f} x {blob}; "
              f"total = {med[k] / (med['voronoi'] + med['dice']):.2f} x (voronoi + dice), "
              f"(own + voronoi) = {(mine + med['voronoi']) / (med['voronoi'] + med['dice']):.2f} x (voronoi + dice), "
              f"total = {med[k] / (med['voronoi'] + med[base]):.2f} x (voronoi + {base})")  # fmt: skip


def metrics(repeats, rng):
    shape = (197, 233, 189)
    t = lesions(shape, 20, rng, (2, 8))
    p = np.roll(t, 2, axis=0) | lesions(shape, 8, rng, (1, 4))
    p[:, :, :60] = False  # some lesions missed

    def before():
        pp, tt = validate_pair(p, t, batched=False)
        match = match_validated(pp, tt, connectivity=1, batched=False)
        atlas_from_match(match)
        detection_from_match(match)

    med = timed({"atlas + detection": before, "subject_metrics": lambda: subject_metrics(p, t)}, repeats)
    print("subject 197x233x189, ~20 lesions: " + ", ".join(f"{k} {v:.1f} ms" for k, v in med.items()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[96, 192])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    for n in args.sizes:
        losses(n, args.repeats, rng)
    metrics(args.repeats, rng)


if __name__ == "__main__":
    main()
