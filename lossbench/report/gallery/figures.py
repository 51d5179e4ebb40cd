"""The gallery's ICI and blob figures (matplotlib, Agg backend); each function writes PNG files under ``out/img/``.

Every function returns the figure's path relative to the gallery page (``img/<name>.png``) and, where the page shows
a table next to it, the table's rows. The labelling and CC-Dice figures are in
:mod:`~lossbench.report.gallery.figures_labelling` and :mod:`~lossbench.report.gallery.figures_cc`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from lossbench.report.gallery.compute import (
    CUBE,
    TP_NAMES,
    center_reference_value,
    cube_maps,
    ici_voxels,
    instance_sets,
    label,
    loss_terms,
    tp_instance_value,
    tp_weights,
)
from lossbench.report.gallery.plotting import (
    C_BG,
    C_CYAN,
    C_FN,
    C_GREEN,
    C_MAGENTA,
    C_OTHER,
    C_TP,
    C_YELLOW,
    DESCENT_TITLE,
    descent_panel,
    legend,
    mip,
    pyplot,
    rgb,
    save,
)

__all__ = ["scenes_figure", "figure1_figures", "gradients_figure", "bridge_figure", "center_figure"]


def scenes_figure(out: Path, scenes) -> str:
    """Every 2D scene: prediction probability with the label outline."""
    plt = pyplot()
    cols = 4
    rows = math.ceil(len(scenes) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.1 * rows))
    im = None
    for ax, sc in zip(axes.flat, scenes):
        im = ax.imshow(sc.pred, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
        if sc.label.any():
            ax.contour(sc.label, levels=[0.5], colors=[C_CYAN], linewidths=0.9)
        ax.set_title(sc.name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(scenes) :]:
        ax.axis("off")
    fig.suptitle("Scenes (2D): prediction probability, label outline in cyan", fontsize=12)
    fig.colorbar(im, ax=axes, shrink=0.6, label="probability p")
    return save(fig, out, "scenes.png")


def figure1_figures(out: Path, scene) -> tuple[str, str]:
    """Figure 1 of the ICI paper: (A, B) the label and the output; (C, D) per instance, the voxels each loss uses."""
    sets = instance_sets(scene)
    return _figure1_scene(out, scene, sets), _figure1_instances(out, scene, sets)


def _figure1_scene(out: Path, scene, sets: dict[str, Any]) -> str:
    plt = pyplot()
    lab, comp, touch = sets["lab"], sets["comp"], sets["touch"]
    pred_mask = scene.pred >= 0.5
    spurious = np.isin(comp, np.nonzero(~touch[:, 1:].any(0))[0] + 1)

    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.6), gridspec_kw={"width_ratios": [1, 1, 0.8]})
    axes[0].imshow(rgb(lab.shape, [(lab > 0, C_CYAN)]), interpolation="nearest")
    for n in range(1, sets["n_l"] + 1):
        yx = np.argwhere(lab == n).mean(0)
        axes[0].annotate(f"L{n}", (yx[1], yx[0]), color="w", fontsize=8, ha="center", va="center", weight="bold")
    axes[0].set_title(f"A: label, {sets['n_l']} instances")
    axes[1].imshow(rgb(lab.shape, [(pred_mask & ~spurious, C_MAGENTA), (spurious, C_YELLOW)]), interpolation="nearest")
    axes[1].contour(lab > 0, levels=[0.5], colors=[C_CYAN], linewidths=0.8)
    axes[1].set_title(f"B: output (p >= 0.5), {sets['n_p']} components")
    for ax in axes[:2]:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[2].axis("off")
    legend(
        axes[2],
        [
            (C_CYAN, "label instance"),
            (C_MAGENTA, "component touching a label"),
            (C_YELLOW, "spurious component (touches none)"),
        ],
        fontsize=9,
    )
    return save(fig, out, "figure1_scene.png")


def _figure1_instances(out: Path, scene, sets: dict[str, Any]) -> str:
    plt = pyplot()
    lab = sets["lab"]
    pred_mask = scene.pred >= 0.5
    bg = lab == 0
    n_l = sets["n_l"]
    fig, axes = plt.subplots(2, n_l, figsize=(2.3 * n_l, 5.4))
    for n in range(1, n_l + 1):
        inst = lab == n
        other = (lab > 0) & ~inst
        used = ici_voxels(sets, n)
        ici_img = rgb(
            lab.shape,
            [(other, C_OTHER), (inst, C_FN), (used & ~inst, C_MAGENTA), (used & inst, C_TP)],
        )
        blob_img = rgb(
            lab.shape,
            [
                (other, C_OTHER),
                (inst, C_FN),
                (pred_mask & bg & ~used, C_YELLOW),
                (pred_mask & bg & used, C_MAGENTA),
                (pred_mask & inst, C_TP),
            ],
        )
        for row, img in enumerate((ici_img, blob_img)):
            ax = axes[row, n - 1]
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, n - 1].set_title(f"L{n} ({int(inst.sum())} voxels)", fontsize=10)
    axes[0, 0].set_ylabel("C: ICI instance term", fontsize=10)
    axes[1, 0].set_ylabel("D: blob loss", fontsize=10)
    fig.suptitle("Voxels each loss uses for every label instance (Figure 1 of the ICI paper)", fontsize=12)
    from matplotlib.patches import Patch

    fig.legend(
        handles=[
            Patch(facecolor=C_TP, edgecolor="0.3", label="correct (TP)"),
            Patch(facecolor=C_MAGENTA, edgecolor="0.3", label="false voxels from components touching the instance"),
            Patch(facecolor=C_YELLOW, edgecolor="0.3", label="false voxels from other components (blob only)"),
            Patch(facecolor=C_FN, edgecolor="0.3", label="instance voxels not predicted"),
            Patch(facecolor=C_OTHER, edgecolor="0.3", label="other label instances (not used)"),
        ],
        loc="lower center",
        ncol=3,
        fontsize=8.5,
        frameon=False,
    )
    fig.subplots_adjust(bottom=0.17, top=0.88, wspace=0.05, hspace=0.08)
    return save(fig, out, "figure1_instances.png")


def gradients_figure(out: Path, scene) -> tuple[str, list[list[str]]]:
    """The descent direction of four terms on the scene; rows: term, value, gradient norm, non-zero voxels."""
    from lossbench.audit import term_gradient_map

    plt = pyplot()
    panels = [
        ("blob term", "blob", "blob", {}),
        ("ICI instance term (published)", "ici", "instance", {}),
        ("ICI center term (published)", "ici", "center", {}),
        ("ICI center term (lossbench's trainable)", "ici", "center", {"reference": False}),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2))
    rows = []
    for ax, (title, name, term, params) in zip(axes, panels):
        value, g = term_gradient_map(scene, name, term, **params)
        norm = descent_panel(fig, ax, scene, g, f"{title}\nvalue {value:.3f}")
        rows.append([title, f"{value:.4f}", f"{norm:.3g}", f"{int((g != 0).sum())} / {g.size}"])
    fig.suptitle(DESCENT_TITLE.format(scene=scene.name), fontsize=11, y=1.1)
    return save(fig, out, "figure1_gradients.png"), rows


def bridge_figure(out: Path, scene) -> tuple[str, list[list[str]]]:
    """Figure 4: the masked output each tp_mode gives each instance; rows: per-instance loss, panel and loss term."""
    plt = pyplot()
    sets = instance_sets(scene)
    lab = sets["lab"]
    p = scene.pred.astype(np.float64)
    modes = ("keep", "remove", "remove_detached")
    n_l = sets["n_l"]
    fig, axes = plt.subplots(n_l, len(modes) + 1, figsize=(3.3 * (len(modes) + 1), 3.0 * n_l + 0.6))
    loss_vals = {tp: loss_terms(scene, "ici", tp_mode=tp)["instance"] for tp in modes}
    rows = []
    im = None
    for j, tp in enumerate(modes):
        own, per = tp_instance_value(scene, tp)
        rows.append([TP_NAMES[tp], *[f"{v:.4f}" for v in per], f"{own:.4f}", f"{loss_vals[tp]:.4f}"])
        for n in range(1, n_l + 1):
            ax = axes[n - 1, j]
            w = tp_weights(scene, n, tp, sets)
            im = ax.imshow(np.ma.masked_where(w == 0, w * p), cmap="magma", vmin=0, vmax=1, interpolation="nearest")
            ax.set_facecolor(C_BG)
            ax.contour(lab == n, levels=[0.5], colors=[C_CYAN], linewidths=1.2)
            ax.contour((lab > 0) & (lab != n), levels=[0.5], colors=[C_GREEN], linewidths=1.2)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(
                f"tp_mode={tp}\n{TP_NAMES[tp][len(tp) + 1 :]}\ninstance L{n}: loss {per[n - 1]:.3f}",
                fontsize=9,
            )
    for n in range(1, n_l + 1):
        axes[n - 1, 0].set_ylabel(f"label instance L{n}")
    gs = axes[0, -1].get_gridspec()
    for ax in axes[:, -1]:
        ax.remove()
    bar = fig.add_subplot(gs[:, -1])
    bar.bar(range(len(modes)), [loss_vals[m] for m in modes], color=["#c0392b", "#2e86c1", "#28b463"])
    tags = {
        "keep": "keep\n(Eq. 3)",
        "remove": "remove\n(Eq. 5,\nlossbench's)",
        "remove_detached": "remove_\ndetached\n(published)",
    }
    bar.set_xticks(range(len(modes)), [tags[m] for m in modes], fontsize=8)
    bar.set_ylabel("ICI instance term (loss)")
    bar.set_title("instance term per tp_mode")
    for i, m in enumerate(modes):
        bar.annotate(f"{loss_vals[m]:.3f}", (i, loss_vals[m]), ha="center", va="bottom", fontsize=9)
    fig.colorbar(im, ax=axes[:, : len(modes)].ravel().tolist(), shrink=0.7, label="masked output p * w")
    fig.suptitle(
        "Figure 4: the masked output each tp_mode gives instance n (cyan: instance n, green: the other instance)",
        fontsize=11,
    )
    return save(fig, out, "figure4_tp.png"), rows


def center_figure(out: Path) -> tuple[str, list[list[str]]]:
    """Label and prediction cubes of figure1 in 2D and 3D (max-projection); rows: cube counts and center terms."""
    from lossbench.data.scenes import get_scene

    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(11.5, 7.8))
    rows = []
    for r, dims in enumerate((2, 3)):
        sc = get_scene("figure1", dims)
        lab, comp = label(sc.label > 0.5), label(sc.pred >= 0.5)
        lc, lboxes = cube_maps(lab)
        pc, pboxes = cube_maps(comp)
        own = center_reference_value(lc, pc)
        t_ref = loss_terms(sc, "ici")["center"]
        t_tr = loss_terms(sc, "ici", reference=False)["center"]
        rows.append(
            [
                f"{dims}D ({'x'.join(map(str, sc.label.shape))})",
                str(len(lboxes)),
                str(len(pboxes)),
                f"{own:.4f}",
                f"{t_ref:.4f}",
                f"{t_tr:.4f}",
            ]
        )
        lab2, comp2, lc2, pc2 = (mip(a) for a in (lab > 0, comp > 0, lc, pc))
        axes[r, 0].imshow(rgb(lab2.shape, [(lab2, (0.0, 0.38, 0.42))]), interpolation="nearest")
        axes[r, 0].contour(lc2, levels=[0.5], colors=[C_CYAN], linewidths=1.6)
        axes[r, 0].set_title(f"{dims}D label: instances (dark cyan)\nand their cubes (cyan outline)", fontsize=9.5)
        axes[r, 0].set_ylabel("2D, 64x64" if dims == 2 else "3D, 32^3: maximum projection over z", fontsize=10)
        axes[r, 1].imshow(rgb(comp2.shape, [(comp2, (0.45, 0.0, 0.45))]), interpolation="nearest")
        axes[r, 1].contour(pc2, levels=[0.5], colors=[C_MAGENTA], linewidths=1.6)
        axes[r, 1].set_title(
            f"{dims}D prediction: components (dark magenta)\nand their cubes (magenta outline)", fontsize=9.5
        )
        axes[r, 2].imshow(
            rgb(lc2.shape, [(lc2 & ~pc2, C_CYAN), (pc2 & ~lc2, C_MAGENTA), (lc2 & pc2, C_TP)]),
            interpolation="nearest",
        )
        axes[r, 2].set_title(
            f"{dims}D cube maps: label only cyan, prediction\nonly magenta, both white; center term {own:.3f}",
            fontsize=9.5,
        )
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(
        f"Center-of-instance transform, cube side {CUBE} (center ceil(mean) - 1, truncated at the border)",
        fontsize=12,
    )
    return save(fig, out, "center_transform.png"), rows
