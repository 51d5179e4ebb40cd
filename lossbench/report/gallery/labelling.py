"""Exact labelling against the iterative max-pool labellings: the public ICI code's and kornia's, on stress shapes.

Both iterative labellings give every foreground voxel an id from its flat index and then repeat "take the largest
id in the 3x3(x3) neighbourhood, keep it on the foreground" a fixed number of times, with no convergence test:

* the public ICI code: id = flat index, so the voxel at flat index 0 keeps id 0 (background) when it has no
  foreground neighbour; reproduced by ``label_components(..., backend="maxpool")`` and re-run step by step here;
* ``kornia.contrib.connected_components`` (2D only, input ``(*, 1, H, W)``, default 100 iterations): id = 1 + flat
  index, so no voxel is dropped.

A component is labelled as one piece only once the largest id has travelled along its longest in-component path;
:func:`stress_rows` and :func:`kornia_rows` measure after how many iterations that happens on the stress scenes of
:mod:`lossbench.data.scenes` and compare the results with lossbench's exact labelling.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lossbench.report.gallery.compute import label

__all__ = [
    "MAXPOOL_ITERS",
    "KORNIA_DEFAULT",
    "KORNIA_ITERS",
    "STRESS",
    "maxpool_count",
    "propagation_curve",
    "iterations_to_converge",
    "stress_rows",
    "same_partition",
    "kornia_labels",
    "kornia_iterations_to_converge",
    "kornia_rows",
    "same_as_maxpool",
]

MAXPOOL_ITERS = (20, 250, 350)  # few; the paper's setting for 96^3 patches; the public code's class default
KORNIA_DEFAULT = 100  # default ``num_iterations`` of kornia.contrib.connected_components
KORNIA_ITERS = (20, KORNIA_DEFAULT, 250, 350)
STRESS = ("serpentine", "spiral", "diagonal_line", "corner_voxel")


def maxpool_count(mask: np.ndarray, iters: int) -> tuple[int, bool, np.ndarray]:
    """Components, convergence and labels of the public code's max-pool labelling after ``iters`` iterations."""
    from lossbench.cc import label_components

    res = label_components(np.ascontiguousarray(mask)[None], backend="maxpool", num_iterations=int(iters))
    return int(res.counts[0]), bool(res.converged[0]), res.labels[0]


def propagation_curve(mask: np.ndarray, limit: int = 1 << 16) -> tuple[np.ndarray, int]:
    """Run the max-pool propagation step by step until it is stable; count the ids after every step.

    An independent re-run of the public code's labelling (ids = flat index on the foreground, then repeated
    3x3(x3) max-pooling masked to the foreground), used for the "when" plot and to find the iteration count
    at which that labelling converges; the gallery checks it against ``label_components(..., backend="maxpool")``.

    Args:
        mask: bool array without batch axis (2 or 3 dims).
        limit: give up after this many steps.

    Returns:
        ``(counts, need)``: ``counts[k]`` = number of distinct non-zero ids after ``k`` steps (``k = 0 .. need``)
        and ``need``, the smallest ``k`` after which one more step changes nothing.

    Raises:
        RuntimeError: no convergence within ``limit`` steps.
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
    """Exact vs the public code's max-pool labelling on the stress scenes (counts, convergence, dropped voxels)."""
    from lossbench.data.scenes import get_scene

    rows = []
    for name in STRESS:
        mask = get_scene(name, 2, size).label > 0.5
        exact = label(mask)
        curve, need = propagation_curve(mask)
        row: dict[str, Any] = {
            "shape": name,
            "mask": mask,
            "voxels": int(mask.sum()),
            "exact": int(exact.max()),
            "exact_face": int(label(mask, connectivity=1).max()),
            "exact_labels": exact,
            "need": need,
            "curve": curve,
            "maxpool": {},
            "curve_agrees": True,
        }
        for it in sorted({*MAXPOOL_ITERS, KORNIA_DEFAULT, need}):
            count, conv, labels = maxpool_count(mask, it)
            row["maxpool"][it] = {"count": count, "converged": conv, "labels": labels}
            # the independent step-by-step run must agree with label_components(backend="maxpool")
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


def kornia_labels(mask: np.ndarray, iters: int) -> np.ndarray:
    """``kornia.contrib.connected_components`` of a 2D bool mask after ``iters`` iterations (int64, 0 = background)."""
    import torch
    from kornia.contrib import connected_components

    image = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    return connected_components(image, num_iterations=int(iters))[0, 0].numpy()


def kornia_iterations_to_converge(mask: np.ndarray) -> tuple[int, np.ndarray]:
    """Smallest ``n >= 1`` after which kornia's labelling no longer changes, found with kornia's function alone.

    After as many iterations as the mask has voxels every id has travelled the longest possible path, so that
    labelling is the converged one; the smallest ``n`` giving the same labels is found by bisection (the labels are
    stable from the first ``n`` at which they stop changing on).

    Returns:
        ``(n, labels)``: the iteration count and the converged labels.
    """
    hi = max(int(mask.sum()), 1)
    final = kornia_labels(mask, hi)
    lo = 1
    while lo < hi:
        mid = (lo + hi) // 2
        if np.array_equal(kornia_labels(mask, mid), final):
            hi = mid
        else:
            lo = mid + 1
    return lo, final


def kornia_rows(stress: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The iterative labelling of kornia on every stress shape, next to the rows of :func:`stress_rows`.

    Returns:
        ``{shape: row}`` with ``need`` (iterations to converge), ``counts`` and ``labels_at`` (components and labels
        after each of :data:`KORNIA_ITERS`), ``labels`` (converged), ``same_partition`` (converged labels vs exact),
        ``dropped`` (foreground voxels without a label), ``same_as_maxpool`` (:func:`same_as_maxpool` at every
        iteration count of the stress row) and ``curve`` (``(iterations,
        components)`` pairs for the plot).
    """
    out = {}
    for r in stress:
        mask = r["mask"]
        need, final = kornia_iterations_to_converge(mask)
        at = {it: kornia_labels(mask, it) for it in sorted({*KORNIA_ITERS, *r["maxpool"]} - {0})}
        same = all(same_as_maxpool(at[it], r["maxpool"][it]["labels"], mask) for it in r["maxpool"] if it)
        probes = [n for n in (1, 2, 5, 10, 50, 500, 1000, 1500, 2000) if n < need] + [need]
        out[r["shape"]] = {
            "need": need,
            "counts": {it: _count(at[it]) for it in KORNIA_ITERS},
            "labels_at": {it: at[it] for it in KORNIA_ITERS},
            "labels": final,
            "same_partition": same_partition(r["exact_labels"], final),
            "dropped": int((mask & (final == 0)).sum()),
            "same_as_maxpool": same,
            "curve": [(n, _count(at[n] if n in at else kornia_labels(mask, n))) for n in probes],
        }
    return out


def same_as_maxpool(kornia: np.ndarray, maxpool: np.ndarray, mask: np.ndarray) -> bool:
    """Whether kornia's labels and the public code's max-pool labels after the same iterations agree.

    They agree when they split the foreground into the same pieces, kornia labels every foreground voxel, and the
    max-pool labels leave at most the flat-index-0 voxel unlabelled (its id 0 is the background's), which kornia
    then holds as a piece of its own.
    """
    dropped = mask & (maxpool == 0)
    if (mask & (kornia == 0)).any() or dropped.sum() > int(dropped.flat[0]):
        return False
    alone = not dropped.flat[0] or int((kornia == kornia.flat[0]).sum()) == 1
    return alone and same_partition(kornia, maxpool)


def _count(labels: np.ndarray) -> int:
    return int(np.unique(labels[labels > 0]).size)
