"""The numbers the gallery draws and checks, derived from the losses' definitions independently of their code.

Voxel sets of ICI's instance term and of the blob loss per label instance, the ``tp_mode`` weights, the reference
centre cubes, and a step-by-step re-run of the reference max-pool labelling. Each is compared with what the losses
and :func:`lossbench.cc.label_components` compute (:mod:`lossbench.report.gallery.checks`), so a picture and the
loss cannot silently disagree.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "EPS",
    "CUBE",
    "REF_CUBE",
    "MAXPOOL_ITERS",
    "STRESS",
    "dice_from_sums",
    "loss_terms",
    "label",
    "instance_sets",
    "ici_voxels",
    "figure1_instance_rows",
    "tp_weights",
    "tp_instance_value",
    "cube_maps",
    "center_reference_value",
    "maxpool_count",
    "propagation_curve",
    "iterations_to_converge",
    "stress_rows",
    "same_partition",
    "without_spurious",
]

EPS = 1e-5  # MONAI DiceLoss smoothing (smooth_nr = smooth_dr), the default of every Dice-based term
CUBE = 7  # default ICI cube side
REF_CUBE = 1.0 + 1e-7  # the reference code's constant cube value
MAXPOOL_ITERS = (20, 250, 350)  # few; the paper's patch setting; the reference class default
STRESS = ("serpentine", "spiral", "diagonal_line", "corner_voxel")


def dice_from_sums(inter: float, pred_sum: float, ground: float) -> float:
    """MONAI DiceLoss of one entry from its sums: ``1 - (2 I + eps) / (P + G + eps)``."""
    return 1.0 - (2.0 * inter + EPS) / (pred_sum + ground + EPS)


def loss_terms(scene, name: str, **params: Any) -> dict[str, float]:
    """Every term of a loss on a scene (probabilities in, float64), as floats."""
    import torch

    from lossbench.losses import build_loss

    x = torch.from_numpy(scene.pred.astype(np.float64))[None, None]
    y = torch.from_numpy(scene.label.astype(np.float64))[None, None]
    with torch.no_grad():
        out = build_loss(name, sigmoid=False, **params).terms(x, y)
    return {k: float(v) for k, v in out.items()}


def label(mask: np.ndarray, connectivity: int | None = None) -> np.ndarray:
    """Component labels of one image (no batch axis) with :func:`lossbench.cc.label_components`."""
    from lossbench.cc import label_components

    return label_components(np.ascontiguousarray(mask)[None], connectivity=connectivity).labels[0]


def instance_sets(scene) -> dict[str, Any]:
    """Label instances, prediction components and which touch which (the masks of the Figure 1/4 panels)."""
    lab = label(scene.label > 0.5)
    comp = label(scene.pred >= 0.5)
    n_l, n_p = int(lab.max()), int(comp.max())
    touch = np.zeros((n_l + 1, n_p + 1), dtype=bool)
    both = (lab > 0) & (comp > 0)
    touch[lab[both], comp[both]] = True
    return {"lab": lab, "comp": comp, "n_l": n_l, "n_p": n_p, "touch": touch}


def ici_voxels(sets: dict[str, Any], n: int) -> np.ndarray:
    """Voxels of the prediction components touching label instance ``n`` (what ICI's instance term uses for ``n``)."""
    ms = np.nonzero(sets["touch"][n])[0]
    return np.isin(sets["comp"], ms[ms > 0])


def figure1_instance_rows(scene) -> list[dict[str, Any]]:
    """Per label instance: voxel counts of each panel colour and the Dice of ICI (keep) and blob from the sets."""
    sets = instance_sets(scene)
    lab, p = sets["lab"], scene.pred.astype(np.float64)
    pred_mask = scene.pred >= 0.5
    bg = lab == 0
    rows = []
    for n in range(1, sets["n_l"] + 1):
        inst = lab == n
        used = ici_voxels(sets, n)
        ici = dice_from_sums(p[inst & used].sum(), p[used].sum(), inst.sum())
        blob = dice_from_sums(p[inst].sum(), p[inst].sum() + p[bg].sum(), inst.sum())
        rows.append(
            {
                "n": n,
                "size": int(inst.sum()),
                "touching": int(sets["touch"][n, 1:].sum()),
                "tp": int((inst & pred_mask).sum()),
                "fp_ici": int((used & ~inst).sum()),
                "fp_blob": int((pred_mask & bg).sum()),
                "fp_blob_only": int((pred_mask & bg & ~used).sum()),
                "ici": ici,
                "blob": blob,
            }
        )
    return rows


def tp_weights(scene, n: int, mode: str, sets: dict[str, Any]) -> np.ndarray:
    """The factor ``w`` with ``out_n = p * w`` of ICI's instance term for label instance ``n`` under ``tp_mode``.

    keep: 1 on the touching components; remove: 1 there except on other label instances (Eq. 5);
    remove_detached: 1 on instance n, the detached probability on background voxels, 0 on other instances.
    """
    used = ici_voxels(sets, n).astype(np.float64)
    lab = sets["lab"]
    if mode == "keep":
        return used
    other = (lab > 0) & (lab != n)
    if mode == "remove":
        return used * ~other
    return used * np.where(lab == n, 1.0, np.where(lab == 0, scene.pred.astype(np.float64), 0.0))


def tp_instance_value(scene, mode: str) -> tuple[float, list[float]]:
    """Instance term from the ``tp_mode`` weights: mean over label instances of ``Dice(p * w_n, [n])``."""
    sets = instance_sets(scene)
    p = scene.pred.astype(np.float64)
    vals = []
    for n in range(1, sets["n_l"] + 1):
        inst = sets["lab"] == n
        w = tp_weights(scene, n, mode, sets)
        vals.append(dice_from_sums((p * w)[inst].sum(), (p * w).sum(), inst.sum()))
    return float(np.mean(vals)), vals


def cube_maps(mask_labels: np.ndarray, cube_size: int = CUBE) -> tuple[np.ndarray, list[tuple]]:
    """Union of the reference centre cubes of every component (the public code's centre transform) and their extents.

    Centre ``c = ceil(mean index)`` per axis; the cube covers ``c - h - 1 .. c + h - 1`` (inclusive), with
    ``h = ceil(size_axis / max(size) * offset)``, ``offset = (cube_size - 1) // 2``, truncated at the border.
    """
    shape = mask_labels.shape
    offset = (cube_size - 1) // 2
    half = [math.ceil(s / max(shape) * offset) for s in shape]
    out = np.zeros(shape, dtype=bool)
    boxes = []
    for k in range(1, int(mask_labels.max()) + 1):
        idx = np.argwhere(mask_labels == k)
        if idx.size == 0:
            continue
        # exact integer ceil of the mean index per axis
        c = [-((-int(idx[:, d].sum())) // len(idx)) for d in range(len(shape))]
        lo = [max(ci - h - 1, 0) for ci, h in zip(c, half)]
        hi = [min(ci + h, s) for ci, h, s in zip(c, half, shape)]  # exclusive
        out[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
        boxes.append((tuple(lo), tuple(hi)))
    return out, boxes


def center_reference_value(label_cubes: np.ndarray, pred_cubes: np.ndarray) -> float:
    """Reference centre term from the cube maps: Dice of the constant ``1 + 1e-7`` maps."""
    x = pred_cubes.astype(np.float64) * REF_CUBE
    y = label_cubes.astype(np.float64) * REF_CUBE
    return dice_from_sums((x * y).sum(), x.sum(), y.sum())


def maxpool_count(mask: np.ndarray, iters: int) -> tuple[int, bool, np.ndarray]:
    """Components, convergence and labels of the reference max-pool labelling after ``iters`` iterations."""
    from lossbench.cc import label_components

    res = label_components(np.ascontiguousarray(mask)[None], backend="maxpool", num_iterations=int(iters))
    return int(res.counts[0]), bool(res.converged[0]), res.labels[0]


def propagation_curve(mask: np.ndarray, limit: int = 1 << 16) -> tuple[np.ndarray, int]:
    """Run the max-pool propagation step by step until it is stable; count the ids after every step.

    An independent re-run of the public code's labelling (ids = flat index on the foreground, then repeated
    3x3(x3) max-pooling masked to the foreground), used for the "when" plot and to find the iteration count
    at which the reference labelling converges; the gallery checks it against
    ``label_components(..., backend="maxpool")``.

    Args:
        mask: bool array without batch axis (2 or 3 dims).
        limit: give up after this many steps.

    Returns:
        ``(counts, need)``: ``counts[k]`` = number of distinct non-zero ids after ``k`` steps (``k = 0 .. need``)
        and ``need``, the smallest ``k`` after which one more step changes nothing.
    """
    import torch
    import torch.nn.functional as F

    m = torch.from_numpy(np.ascontiguousarray(mask)).to(torch.float64)[None, None]
    ids = torch.arange(m.numel(), dtype=torch.float64).view(m.shape) * m
    pool = F.max_pool3d if mask.ndim == 3 else F.max_pool2d
    counts = []
    for k in range(limit + 1):
        counts.append(int(torch.unique(ids[ids > 0]).numel()))
        nxt = pool(ids, kernel_size=3, stride=1, padding=1) * m
        if torch.equal(nxt, ids):
            return np.asarray(counts), k
        ids = nxt
    raise RuntimeError(f"max-pool propagation did not converge within {limit} iterations")


def iterations_to_converge(mask: np.ndarray) -> int:
    """Smallest number of max-pool iterations after which the propagation has converged."""
    return propagation_curve(mask)[1]


def stress_rows(size: int | None = None) -> list[dict[str, Any]]:
    """Exact vs max-pool labelling on the stress scenes (counts, convergence, dropped voxels)."""
    from lossbench.data.scenes import get_scene

    rows = []
    for name in STRESS:
        mask = get_scene(name, 2, size).label > 0.5
        exact = label(mask)
        face = label(mask, connectivity=1)
        curve, need = propagation_curve(mask)
        row: dict[str, Any] = {
            "shape": name,
            "mask": mask,
            "voxels": int(mask.sum()),
            "exact": int(exact.max()),
            "exact_face": int(face.max()),
            "exact_labels": exact,
            "need": need,
            "curve": curve,
            "maxpool": {},
        }
        for it in (*MAXPOOL_ITERS, need):
            count, conv, labels = maxpool_count(mask, it)
            row["maxpool"][it] = {"count": count, "converged": conv, "labels": labels}
            # the independent step-by-step run must agree with label_components(backend="maxpool")
            row.setdefault("curve_agrees", True)
            row["curve_agrees"] &= count == int(curve[min(it, need)]) and conv == (it >= need)
        conv_labels = row["maxpool"][need]["labels"]
        row["dropped"] = int((mask & (conv_labels == 0)).sum())
        row["same_partition"] = same_partition(exact, conv_labels)
        rows.append(row)
    return rows


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two labellings define the same components on the voxels ``b`` labels (ids may differ)."""
    m = b > 0
    pairs = np.unique(np.stack([a[m], b[m]]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def without_spurious(scene):
    """Figure 1 scene with its spurious prediction components (touching no label) set to the background value."""
    from lossbench.audit import scene_regions
    from lossbench.data.scenes import BACKGROUND, Scene

    spur = scene_regions(scene)["spurious"]
    pred = np.where(spur, np.float32(BACKGROUND), scene.pred).astype(np.float32)
    return Scene(scene.name + "_no_spurious", scene.label, pred, "Figure 1 without its spurious blobs."), spur
