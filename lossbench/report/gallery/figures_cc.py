"""The gallery's CC-Dice figures: the Voronoi regions of the label components and the Dice loss inside each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lossbench.report.gallery.plotting import (
    C_YELLOW,
    descent_panel,
    label_colours,
    legend,
    pyplot,
    save,
)

__all__ = ["regions_figure", "missed_figure"]


def _boundaries(regions: np.ndarray) -> np.ndarray:
    """Voxels whose right or lower neighbour lies in another region."""
    edge = np.zeros(regions.shape, bool)
    edge[:, :-1] |= regions[:, :-1] != regions[:, 1:]
    edge[:-1, :] |= regions[:-1, :] != regions[1:, :]
    return edge


def _regions_image(values: dict[str, Any]) -> np.ndarray:
    """Regions in dim colours, their label components in the same hue at full strength, boundaries light grey."""
    regions, lab = values["regions"], values["lab"]
    img = label_colours(regions, saturation=0.5, value=0.45)
    img[lab > 0] = label_colours(regions, saturation=0.85, value=1.0)[lab > 0]
    img[_boundaries(regions)] = (0.8, 0.8, 0.8)
    return img


def _annotate(ax, values: dict[str, Any], fmt: str = "L{k}\nDice loss {dice:.3f}") -> None:
    """Write every region's Dice loss at its label component's center (below it for a small component)."""
    for r in values["rows"]:
        yx = np.argwhere(values["lab"] == r["k"]).mean(0)
        if r["component"] < 40:  # keep small lesions visible: write below them
            yx[0] += 7 if yx[0] < values["lab"].shape[0] - 10 else -7
        ax.annotate(
            fmt.format(**r),
            (yx[1], yx[0]),
            color="k",
            fontsize=7.5,
            ha="center",
            va="center",
            bbox={"boxstyle": "round,pad=0.2", "fc": "w", "ec": "none", "alpha": 0.8},
        )


def regions_figure(out: Path, scene, spurious: dict[str, Any], spur: np.ndarray) -> str:
    """Figure 1 scene: Voronoi regions with each region's Dice loss, and where ``cc_dice`` pushes."""
    plt = pyplot()
    values = spurious["with"]
    fig, axes = plt.subplots(1, 3, figsize=(14.5, 4.6), gridspec_kw={"width_ratios": [1, 1.2, 0.55]})
    axes[0].imshow(_regions_image(values), interpolation="nearest")
    axes[0].contour(scene.pred >= 0.5, levels=[0.5], colors="w", linewidths=0.8, linestyles="dashed")
    axes[0].contour(spur, levels=[0.5], colors=[C_YELLOW], linewidths=1.4)
    _annotate(axes[0], values)
    axes[0].set_title(
        f"Voronoi regions of the {len(values['rows'])} label components\nCC-Dice = mean = {values['dice']:.4f}"
    )
    axes[0].set_xticks([])
    axes[0].set_yticks([])
    descent_panel(fig, axes[1], scene, spurious["grad"], f"cc_dice term: value {values['dice']:.3f}")
    axes[2].axis("off")
    legend(
        axes[2],
        [
            ((0.45, 0.3, 0.3), "Voronoi region (dim)"),
            ((1.0, 0.3, 0.3), "its label component (bright)"),
            ((0.8, 0.8, 0.8), "region boundary"),
            ((1.0, 1.0, 1.0), "prediction p >= 0.5 (dashed)"),
            (C_YELLOW, "spurious blob (touches no label)"),
        ],
        fontsize=8.5,
    )
    fig.suptitle(
        "CC-Dice on figure1. Left: the Voronoi region of every label component and its Dice loss. Right: the descent "
        "direction of cc_dice\n(minus its gradient with respect to p: red raises p, blue lowers p, symmetric "
        "logarithmic colour scale, white = exactly 0; label solid black, prediction dashed grey)",
        fontsize=10,
        y=1.06,
    )
    return save(fig, out, "cc_regions.png")


def missed_figure(out: Path, rows: list[dict[str, Any]]) -> str:
    """The two missed-lesion scenes with their regions and Dice losses, and CC-Dice against plain Dice."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13.0, 4.3), gridspec_kw={"width_ratios": [1, 1, 1.1]})
    for ax, r in zip(axes, rows):
        sc, values = r["scene"], r["values"]
        ax.imshow(_regions_image(values), interpolation="nearest")
        ax.contour(sc.pred >= 0.5, levels=[0.5], colors="w", linewidths=1.0, linestyles="dashed")
        _annotate(ax, values, "L{k} ({component} voxels)\nDice loss {dice:.3f}")
        ax.set_title(f"{sc.name}\n{sc.description}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    bar = axes[2]
    x = np.arange(len(rows))
    bar.bar(x - 0.2, [r["cc_dice"] for r in rows], 0.4, color="#2e86c1", label="cc_dice")
    bar.bar(x + 0.2, [r["dice"] for r in rows], 0.4, color="#c0392b", label="dice (plain)")
    for i, r in enumerate(rows):
        bar.annotate(f"{r['cc_dice']:.3f}", (i - 0.2, r["cc_dice"]), ha="center", va="bottom", fontsize=8.5)
        bar.annotate(f"{r['dice']:.3f}", (i + 0.2, r["dice"]), ha="center", va="bottom", fontsize=8.5)
    bar.set_xticks(x, [f"{r['missed_voxels']}-voxel lesion\nmissed" for r in rows])
    bar.set_ylabel("loss")
    bar.set_ylim(0, 1.1)
    bar.legend(fontsize=8.5, loc="upper left")
    bar.set_title("The same miss costs: CC-Dice counts lesions,\nplain Dice counts voxels", fontsize=9.5)
    fig.suptitle(
        "Missed small vs missed large lesion (found lesion p = 1, everything else p = 0; dashed: prediction)",
        fontsize=10.5,
        y=1.07,
    )
    return save(fig, out, "cc_missed.png")
