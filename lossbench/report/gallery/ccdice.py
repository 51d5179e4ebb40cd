r"""The CC-Dice numbers the gallery draws and checks, recomputed from the loss's definition, not its code.

CC-Dice (``cc_dice``; ``cc_dicece`` adds a cross-entropy term) splits the image into the Voronoi regions
:math:`R_1..R_N` of the label's connected components (every voxel goes to its nearest component) and averages a Dice
loss per region:

.. math::

    \mathrm{dice}_k = 1 - \frac{2 \sum_{R_k} p\,y + \epsilon}{\sum_{R_k} p + \sum_{R_k} y + \epsilon},\qquad
    \mathrm{ce}_k = \frac{1}{|R_k|} \sum_{R_k} \mathrm{BCE}(p, y),\qquad
    \text{loss} = \frac{1}{N} \sum_k \mathrm{dice}_k \;(+ \tfrac{1}{N} \sum_k \mathrm{ce}_k)

Here the regions come from one exact Euclidean distance transform per component (scipy), the nearest component
taken with ties to the smaller id, as the CC-Metrics code assigned them; the gallery checks them against
:func:`lossbench.cc.voronoi_components` and the per-region values against the loss's own terms.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lossbench.report.gallery.compute import dice_from_sums, label, loss_terms

__all__ = [
    "voronoi_by_distance",
    "region_values",
    "missed_scenes",
    "missed_rows",
    "spurious_rows",
]

_LOG_FLOOR = -100.0  # binary cross-entropy clamps log(p) at -100, as torch's


def voronoi_by_distance(lab: np.ndarray) -> np.ndarray:
    """Region id of every voxel: the component (1..N) at the smallest Euclidean distance, ties to the smaller id.

    Args:
        lab: component labels ``1..N`` of one image (0 = background), 2D or 3D.

    Returns:
        int64 array of ``lab``'s shape; all 0 when there is no component.
    """
    from scipy import ndimage

    n = int(lab.max())
    if n == 0:
        return np.zeros(lab.shape, np.int64)
    dist = np.stack([ndimage.distance_transform_edt(lab != k) for k in range(1, n + 1)])
    return dist.argmin(0).astype(np.int64) + 1  # argmin returns the first (smallest id) of equal distances


def region_values(scene) -> dict[str, Any]:
    """Per Voronoi region of the label's components: voxel counts, sums, Dice loss and mean BCE.

    Returns:
        ``{"lab", "regions", "rows", "dice", "ce"}``: the component labels, the region ids, one row per region
        (``k``, ``component`` voxels, ``region`` voxels, ``predicted`` voxels with p >= 0.5, ``p_sum``, ``inter``,
        ``dice``, ``ce``) and the means over the regions (what ``cc_dice`` / ``cc_dicece`` should return).
    """
    y = scene.label > 0.5
    p = scene.pred.astype(np.float64)
    lab = label(y)
    regions = voronoi_by_distance(lab)
    with np.errstate(divide="ignore"):  # log(0) = -inf, clamped to the floor
        bce = -np.where(y, np.maximum(np.log(p), _LOG_FLOOR), np.maximum(np.log1p(-p), _LOG_FLOOR))
    rows = []
    for k in range(1, int(lab.max()) + 1):
        r = regions == k
        inter, p_sum, ground = float(p[r & y].sum()), float(p[r].sum()), float((r & y).sum())
        rows.append(
            {
                "k": k,
                "component": int((lab == k).sum()),
                "region": int(r.sum()),
                "predicted": int((r & (p >= 0.5)).sum()),
                "p_sum": p_sum,
                "inter": inter,
                "dice": dice_from_sums(inter, p_sum, ground),
                "ce": float(bce[r].mean()),
            }
        )
    dice = float(np.mean([r["dice"] for r in rows])) if rows else 1.0
    ce = float(np.mean([r["ce"] for r in rows])) if rows else float(bce.mean())
    return {"lab": lab, "regions": regions, "rows": rows, "dice": dice, "ce": ce}


def missed_scenes(size: int = 64) -> tuple[Any, Any]:
    """Two 2D scenes with the same two lesions (3x3 and 16x16 voxels): one misses the small, the other the large.

    The found lesion is predicted at p = 1 and everything else at p = 0, so a missed lesion's region has Dice loss
    ``1 - eps / (|lesion| + eps)`` (essentially 1) and the found one's 0, whatever their sizes.
    """
    from lossbench.data.scenes import Scene

    small = np.zeros((size, size), bool)
    small[10:13, 10:13] = True
    large = np.zeros((size, size), bool)
    large[36:52, 36:52] = True
    y = (small | large).astype(np.float32)
    return (
        Scene("cc_missed_small", y, large.astype(np.float32), "The 3x3 lesion missed, the 16x16 lesion found."),
        Scene("cc_missed_large", y, small.astype(np.float32), "The 16x16 lesion missed, the 3x3 lesion found."),
    )


def missed_rows() -> list[dict[str, Any]]:
    """For each scene of :func:`missed_scenes`: per-region Dice, the losses, and the push on the missed lesion.

    ``push_cc`` / ``push_dice``: the sum over the missed lesion's voxels of ``-d loss / d p`` for ``cc_dice`` and
    plain Dice (positive: descent raises p there).
    """
    from lossbench.audit import term_gradient_map

    rows = []
    for sc in missed_scenes():
        vals = region_values(sc)
        missed = (sc.label > 0.5) & (sc.pred < 0.5)
        k_missed = int(np.unique(vals["lab"][missed])[0])
        by_k = {r["k"]: r for r in vals["rows"]}
        _, g_cc = term_gradient_map(sc, "cc_dice", "dice")
        _, g_dice = term_gradient_map(sc, "dice", "dice")
        rows.append(
            {
                "scene": sc,
                "values": vals,
                "missed_voxels": int(missed.sum()),
                "dice_missed": by_k[k_missed]["dice"],
                "dice_found": next(r["dice"] for k, r in by_k.items() if k != k_missed),
                "cc_dice": loss_terms(sc, "cc_dice")["dice"],
                "dice": loss_terms(sc, "dice")["dice"],
                "push_cc": float(-g_cc[missed].sum()),
                "push_dice": float(-g_dice[missed].sum()),
            }
        )
    return rows


def spurious_rows(fig1, no_spur, spur: np.ndarray) -> dict[str, Any]:
    """CC-Dice on the Figure 1 scene with and without its spurious blobs, region by region.

    Returns:
        ``{"with", "without"}`` (:func:`region_values` of both scenes), ``"holding"`` (sorted ids of the regions
        that hold a spurious voxel), ``"blobs"`` (per spurious blob: voxels, distance in voxels from its nearest
        voxel to the nearest label voxel, and the regions it lies in) and ``"grad"`` (``d cc_dice / d p`` on
        ``fig1``).
    """
    from scipy import ndimage

    from lossbench.audit import term_gradient_map

    with_, without = region_values(fig1), region_values(no_spur)
    to_label = ndimage.distance_transform_edt(fig1.label <= 0.5)
    blobs_lab = label(spur)
    blobs = [
        {
            "voxels": int((blobs_lab == b).sum()),
            "distance": float(to_label[blobs_lab == b].min()),
            "regions": sorted(int(k) for k in np.unique(with_["regions"][blobs_lab == b])),
        }
        for b in range(1, int(blobs_lab.max()) + 1)
    ]
    _, grad = term_gradient_map(fig1, "cc_dice", "dice")
    holding = sorted(int(k) for k in np.unique(with_["regions"][spur]))
    return {"with": with_, "without": without, "holding": holding, "blobs": blobs, "grad": grad}
