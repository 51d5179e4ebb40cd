"""The gallery's labelling figures: exact labelling against the public code's and kornia's iterative max-pooling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lossbench.report.gallery.labelling import KORNIA_DEFAULT, MAXPOOL_ITERS
from lossbench.report.gallery.plotting import label_colours, pyplot, save

__all__ = ["stress_figures"]

_COLOURS = ["#c0392b", "#2e86c1", "#28b463", "#8e44ad"]


def stress_figures(out: Path, stress: list[dict[str, Any]], kornia: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """Every labelling of the stress shapes side by side, and components against iterations."""
    return _stress_grid(out, stress, kornia), _iterations_figure(out, stress, kornia)


def _panels(r: dict[str, Any], k: dict[str, Any]) -> list[tuple[str, np.ndarray, int, bool]]:
    """(title, labels, components, converged) of every panel of one stress shape's row."""
    panels = [("exact (lossbench)", r["exact_labels"], r["exact"], True)]
    for it in (*MAXPOOL_ITERS, r["need"]):
        mp = r["maxpool"][it]
        panels.append((f"public code, {_iterations(it)}", mp["labels"], mp["count"], mp["converged"]))
    at = KORNIA_DEFAULT
    panels.append((f"kornia, {_iterations(at)}", k["labels_at"][at], k["counts"][at], at >= k["need"]))
    n_conv = int(np.unique(k["labels"][k["labels"] > 0]).size)
    panels.append((f"kornia, {_iterations(k['need'])}", k["labels"], n_conv, True))
    return panels


def _iterations(n: int) -> str:
    return f"{n} iteration" + ("" if n == 1 else "s")


def _stress_grid(out: Path, stress: list[dict[str, Any]], kornia: dict[str, dict[str, Any]]) -> str:
    plt = pyplot()
    cols = len(_panels(stress[0], kornia[stress[0]["shape"]]))
    fig, axes = plt.subplots(len(stress), cols, figsize=(2.45 * cols, 3.1 * len(stress)))
    for i, r in enumerate(stress):
        for j, (title, labels, count, conv) in enumerate(_panels(r, kornia[r["shape"]])):
            ax = axes[i, j]
            ax.imshow(label_colours(_compact(labels)), interpolation="nearest")
            if r["voxels"] <= 16:  # single voxels are invisible at this size: ring every voxel in its colour
                yx = np.argwhere(labels > 0)
                ax.scatter(yx[:, 1], yx[:, 0], s=90, facecolors="none", edgecolors="w", linewidths=1.2)
            lost = r["mask"] & (labels == 0)
            if lost.any():
                yx = np.argwhere(lost)
                ax.scatter(yx[:, 1], yx[:, 0], s=60, facecolors="none", edgecolors="red", linewidths=1.5)
            extra = "" if j == 0 else ("\nconverged" if conv else "\nNOT converged")
            noun = "component" if count == 1 else "components"
            ax.set_title(f"{title}\n{count} {noun}{extra}", fontsize=8.5, color="k" if conv else "#b03a2e")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 0].set_ylabel(r["shape"], fontsize=10)
    fig.suptitle(
        "Exact labelling vs the iterative max-pool labellings of the public ICI code and of kornia (one colour per "
        "component; white ring: a single-voxel component, red ring: a voxel left without a component)",
        fontsize=11,
    )
    return save(fig, out, "labelling_stress.png")


def _compact(labels: np.ndarray) -> np.ndarray:
    """Ids renumbered 1..n in order of first appearance of their value (colours then match across labellings)."""
    _, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape)
    return inverse if (labels == 0).any() else inverse + 1


def _iterations_figure(out: Path, stress: list[dict[str, Any]], kornia: dict[str, dict[str, Any]]) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8.4, 4.8))
    for colour, r in zip(_COLOURS, stress):
        counts = r["curve"]
        its = np.arange(len(counts), dtype=np.float64)
        its[0] = 0.5
        ax.plot(its, counts, color=colour, lw=1.6, label=f"{r['shape']}: public code (exact {r['exact']})")
        ax.plot([its[-1]], [counts[-1]], marker="o", ms=4, color=colour)
        kx, ky = zip(*kornia[r["shape"]]["curve"])
        ax.plot(kx, ky, ls="none", marker="x", ms=6, mew=1.4, color=colour, label=f"{r['shape']}: kornia")
        ax.axhline(r["exact"], color=colour, ls=":", lw=1)
        ax.axvline(r["need"], color=colour, ls="--", lw=0.8)
    for it in sorted({*MAXPOOL_ITERS, KORNIA_DEFAULT}):
        ax.axvline(it, color="0.6", lw=0.6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("max-pool iterations (0 plotted at 0.5; grey lines: 20, 100 = kornia's default, 250, 350)")
    ax.set_ylabel("number of components found")
    ax.set_title(
        "When iterative labelling is right: components against iterations\n"
        "(lines: public code, crosses: kornia; dotted: exact count, dashed: iterations to converge)"
    )
    ax.legend(fontsize=7.5, ncol=2)
    ax.grid(alpha=0.3, which="both")
    return save(fig, out, "labelling_iterations.png")
