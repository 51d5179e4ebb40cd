"""The ICI and blob numbers the gallery draws and checks, derived from the losses' definitions, not their code.

Voxel sets of ICI's instance term and of the blob loss per label instance, the ``tp_mode`` weights and the published
center cubes. Each is compared with what the losses compute (:mod:`lossbench.report.gallery.checks_ici`), so a picture
and the loss cannot silently disagree. :data:`PUBLISHED` states the published loss's options in full, and
:func:`caps_scene` builds a scene on which its caps on prediction components matter.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "EPS",
    "CUBE",
    "REF_CUBE",
    "PUBLISHED",
    "TP_NAMES",
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
    "without_spurious",
    "caps_scene",
]

EPS = 1e-5  # MONAI DiceLoss smoothing (smooth_nr = smooth_dr), the default of every Dice-based term
CUBE = 7  # default ICI cube side
REF_CUBE = 1.0 + 1e-7  # the public code's constant cube value

TP_NAMES = {
    "keep": "keep (Eq. 3)",
    "remove": "remove (Eq. 5, lossbench's)",
    "remove_detached": "remove_detached (published)",
}
"""How the gallery names each ``tp_mode``: the paper's equation, lossbench's design, or the published loss's."""

#: The published ICI loss spelled out option by option: what ``ici`` computes with no options (``dici``: the same
#: with the weights a = b = c = d = 1/4). The public code's labelling is replaced by exact labelling (cc3d on CPU).
PUBLISHED: dict[str, Any] = {
    "tp_mode": "remove_detached",
    "center_mode": "reference",
    "cube_size": CUBE,
    "max_pred_instances": 50,
    "too_many_factor": 50.0,
    "cc_backend": "cc3d",
}


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
    """Per label instance: voxel counts of each panel colour and the Dice losses from the panel's voxel sets.

    ``ici``: ICI's instance Dice with ``tp_mode="keep"`` (p on the touching components, Eq. 3); ``published``: the
    same with the published ``tp_mode="remove_detached"`` weights of :func:`tp_weights`; ``blob``: the blob loss.
    """
    sets = instance_sets(scene)
    published = tp_instance_value(scene, "remove_detached")[1]
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
                "published": published[n - 1],
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
    """Union of the published center cubes of every component (the public code's center transform) and their extents.

    Center ``c = ceil(mean index)`` per axis; the cube covers ``c - h - 1 .. c + h - 1`` (inclusive), with
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
    """Published center term from the cube maps: Dice of the constant ``1 + 1e-7`` maps."""
    x = pred_cubes.astype(np.float64) * REF_CUBE
    y = label_cubes.astype(np.float64) * REF_CUBE
    return dice_from_sums((x * y).sum(), x.sum(), y.sum())


def without_spurious(scene):
    """Figure 1 scene with its spurious prediction components (touching no label) set to the background value."""
    from lossbench.audit import scene_regions
    from lossbench.data.scenes import BACKGROUND, Scene

    spur = scene_regions(scene)["spurious"]
    pred = np.where(spur, np.float32(BACKGROUND), scene.pred).astype(np.float32)
    return Scene(scene.name + "_no_spurious", scene.label, pred, "Figure 1 without its spurious blobs."), spur


def caps_scene(size: int = 64, spacing: int = 6):
    """One label square predicted well plus single-voxel spurious components on a grid: more than 50 components.

    The published loss uses the first 50 prediction components of an image and none at all when there are more than
    50 per label instance; lossbench's design (``reference=False``) has no caps. Here there are
    ``1 + (number of grid points)`` prediction components and one label instance, so the published instance term
    sees no prediction component.
    """
    from lossbench.data.scenes import BACKGROUND, Scene

    lab = np.zeros((size, size), np.float32)
    lab[2:8, 2:8] = 1.0
    pred = np.full((size, size), BACKGROUND, np.float32)
    pred[2:8, 2:8] = 0.9
    grid = np.zeros((size, size), bool)
    grid[12::spacing, 12::spacing] = True
    pred[grid] = 0.9
    n = int(grid.sum()) + 1
    return Scene(
        "caps",
        lab,
        pred,
        f"One label instance predicted at 0.9 and {n - 1} single-voxel spurious blobs: {n} prediction components.",
    )
