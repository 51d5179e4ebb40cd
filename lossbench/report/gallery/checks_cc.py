"""The gallery's CC-Dice checks: what ``cc_dice`` / ``cc_dicece`` reward; the panel's numbers are the loss's."""

from __future__ import annotations

from typing import Any

import numpy as np

from lossbench.report.gallery.ccdice import missed_rows, spurious_rows
from lossbench.report.gallery.compute import label, loss_terms
from lossbench.report.gallery.registry import CheckContext, check

__all__: list[str] = []


def _missed(c: CheckContext) -> list[dict[str, Any]]:
    return c.get("cc_missed", missed_rows)


def _spurious(c: CheckContext) -> dict[str, Any]:
    return c.get("cc_spurious", lambda: spurious_rows(c.fig1, c.no_spur, c.spur))


@check(
    "cc_missed_equal",
    "CC-Dice: a missed small lesion costs as much as a missed large one (Dice loss 1 in the missed lesion's region, "
    "0 in the found one's); plain Dice charges the large miss far more",
)
def _cc_missed_equal(c: CheckContext) -> tuple[bool, str]:
    small, large = _missed(c)
    ok = all(r["dice_missed"] > 1 - 1e-4 and r["dice_found"] < 1e-4 for r in (small, large))
    ok &= abs(small["cc_dice"] - large["cc_dice"]) < 1e-4 and large["dice"] - small["dice"] > 0.5
    return ok, "; ".join(
        f"{r['missed_voxels']}-voxel lesion missed: region Dice loss missed {r['dice_missed']:.6f} / found "
        f"{r['dice_found']:.6f}, CC-Dice {r['cc_dice']:.6f}, plain Dice {r['dice']:.4f}"
        for r in (small, large)
    )


@check(
    "cc_missed_push",
    "CC-Dice pushes a missed lesion up as a whole by the same amount whatever its size (plain Dice: in proportion "
    "to its size), and pushes up every voxel of the faintly detected lesion of missed_small",
)
def _cc_missed_push(c: CheckContext) -> tuple[bool, str]:
    from lossbench.audit import term_gradient_map

    small, large = _missed(c)
    same = abs(small["push_cc"] / large["push_cc"] - 1) < 0.01
    dice_ratio = large["push_dice"] / small["push_dice"]
    lab = label(c.missed.label > 0.5)
    faint = lab == int(np.argmin(np.bincount(lab.ravel())[1:]) + 1)
    _, g = term_gradient_map(c.missed, "cc_dice", "dice")
    up = int((g[faint] < 0).sum())  # descent raises p where the gradient is negative
    ok = same and dice_ratio > 10 and up == int(faint.sum())
    return ok, (
        f"summed -gradient over the missed lesion: CC-Dice {small['push_cc']:.4f} (3x3) vs {large['push_cc']:.4f} "
        f"(16x16); plain Dice {small['push_dice']:.4f} vs {large['push_dice']:.4f} (ratio {dice_ratio:.1f}); "
        f"missed_small: {up}/{int(faint.sum())} voxels of the missed lesion pushed up by CC-Dice"
    )


@check(
    "cc_spurious_penalised",
    "CC-Dice: spurious blobs far from every lesion raise the Dice loss of exactly the Voronoi regions that hold "
    "them, and every spurious voxel is pushed down",
)
def _cc_spurious_penalised(c: CheckContext) -> tuple[bool, str]:
    s = _spurious(c)
    diff = {a["k"]: a["dice"] - b["dice"] for a, b in zip(s["with"]["rows"], s["without"]["rows"])}
    raised = sorted(k for k, d in diff.items() if d > 1e-9)
    unchanged = all(abs(d) <= 1e-12 for k, d in diff.items() if k not in s["holding"])
    down = int((s["grad"][c.spur] > 0).sum())
    far = min(b["distance"] for b in s["blobs"])
    ok = raised == s["holding"] and unchanged and down == int(c.spur.sum()) and far >= 5
    a, b = loss_terms(c.fig1, "cc_dice")["dice"], loss_terms(c.no_spur, "cc_dice")["dice"]
    return ok, (
        f"{len(s['blobs'])} spurious blobs, at least {far:.1f} voxels from every lesion, in the regions of "
        f"{', '.join(f'L{k}' for k in s['holding'])}; regions with a raised Dice loss: "
        f"{', '.join(f'L{k} (+{diff[k]:.4f})' for k in raised)}; other regions unchanged: {unchanged}; "
        f"spurious voxels pushed down {down}/{int(c.spur.sum())}; CC-Dice {a:.4f} with vs {b:.4f} without"
    )


@check(
    "cc_dice_panel",
    "The panel's Voronoi regions (one exact distance transform per component) equal lossbench's, and their "
    "per-region Dice and cross-entropy reproduce the cc_dice and cc_dicece terms",
)
def _cc_dice_panel(c: CheckContext) -> tuple[bool, str]:
    from lossbench.cc import voronoi_components

    s = _spurious(c)
    scenes = [(c.fig1, s["with"]), (c.no_spur, s["without"]), *[(r["scene"], r["values"]) for r in _missed(c)]]
    ok, parts = True, []
    for sc, vals in scenes:
        regions = voronoi_components((sc.label > 0.5)[None]).regions[0]
        same = bool(np.array_equal(regions, vals["regions"]))
        cc, cce = loss_terms(sc, "cc_dice"), loss_terms(sc, "cc_dicece")
        err = max(abs(vals["dice"] - cc["dice"]), abs(vals["dice"] - cce["dice"]), abs(vals["ce"] - cce["ce"]))
        ok &= same and err < 1e-9
        parts.append(f"{sc.name}: regions equal {same}, largest difference {err:.2g}")
    f1 = s["with"]
    return ok, "; ".join(parts) + f"; figure1: Dice {f1['dice']:.6f}, cross-entropy {f1['ce']:.6f}"
