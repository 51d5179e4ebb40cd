"""The gallery's figures (matplotlib, Agg backend); each function writes PNG files under ``out/img/``.

Every function returns the figure's path relative to the gallery page (``img/<name>.png``) and, where the page shows
a table next to it, the table's rows.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from lossbench.io import atomic_save_figure
from lossbench.report.gallery.compute import (
    CUBE,
    MAXPOOL_ITERS,
    center_reference_value,
    cube_maps,
    ici_voxels,
    instance_sets,
    label,
    loss_terms,
    tp_instance_value,
    tp_weights,
)

__all__ = [
    "scenes_figure",
    "figure1_figures",
    "gradients_figure",
    "bridge_figure",
    "center_figure",
    "stress_figures",
]

_DPI = 100

# colours (RGB in [0, 1]); Figure 1 of the paper: white correct, magenta / yellow the false voxels each loss counts
_C_BG = (0.07, 0.07, 0.07)
_C_TP = (1.0, 1.0, 1.0)
_C_FN = (0.0, 0.45, 0.5)
_C_MAGENTA = (1.0, 0.0, 1.0)
_C_YELLOW = (1.0, 0.85, 0.0)
_C_OTHER = (0.35, 0.35, 0.35)
_C_GREEN = (0.2, 0.8, 0.3)
_C_CYAN = (0.0, 0.85, 0.95)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path, name: str) -> str:
    """Write the figure atomically as ``out/img/name`` and close it; return its path relative to the page.

    The PNG carries no software version, so the committed files change only when a picture does.
    """
    atomic_save_figure(fig, out / "img" / name, dpi=_DPI, bbox_inches="tight", metadata={"Software": None})
    _plt().close(fig)
    return f"img/{name}"


def _rgb(shape: tuple[int, ...], layers: list[tuple[np.ndarray, tuple[float, float, float]]]) -> np.ndarray:
    img = np.empty((*shape, 3))
    img[:] = _C_BG
    for mask, colour in layers:
        img[mask] = colour
    return img


def _legend(ax, items: list[tuple[tuple[float, float, float], str]], **kw) -> None:
    from matplotlib.patches import Patch

    ax.legend(
        handles=[Patch(facecolor=c, edgecolor="0.3", label=t) for c, t in items],
        loc=kw.pop("loc", "center"),
        frameon=False,
        **kw,
    )


def scenes_figure(out: Path, scenes) -> str:
    """Every 2D scene: prediction probability with the label outline."""
    plt = _plt()
    cols = 4
    rows = math.ceil(len(scenes) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.1 * rows))
    im = None
    for ax, sc in zip(axes.flat, scenes):
        im = ax.imshow(sc.pred, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
        if sc.label.any():
            ax.contour(sc.label, levels=[0.5], colors=[_C_CYAN], linewidths=0.9)
        ax.set_title(sc.name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(scenes) :]:
        ax.axis("off")
    fig.suptitle("Scenes (2D): prediction probability, label outline in cyan", fontsize=12)
    fig.colorbar(im, ax=axes, shrink=0.6, label="probability p")
    return _save(fig, out, "scenes.png")


def figure1_figures(out: Path, scene) -> tuple[str, str]:
    """Figure 1 of the ICI paper: (A, B) the label and the output; (C, D) per instance, the voxels each loss uses."""
    sets = instance_sets(scene)
    return _figure1_scene(out, scene, sets), _figure1_instances(out, scene, sets)


def _figure1_scene(out: Path, scene, sets: dict[str, Any]) -> str:
    plt = _plt()
    lab, comp, touch = sets["lab"], sets["comp"], sets["touch"]
    pred_mask = scene.pred >= 0.5
    spurious = np.isin(comp, np.nonzero(~touch[:, 1:].any(0))[0] + 1)

    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.6), gridspec_kw={"width_ratios": [1, 1, 0.8]})
    axes[0].imshow(_rgb(lab.shape, [(lab > 0, _C_CYAN)]), interpolation="nearest")
    for n in range(1, sets["n_l"] + 1):
        yx = np.argwhere(lab == n).mean(0)
        axes[0].annotate(f"L{n}", (yx[1], yx[0]), color="w", fontsize=8, ha="center", va="center", weight="bold")
    axes[0].set_title(f"A: label, {sets['n_l']} instances")
    axes[1].imshow(
        _rgb(lab.shape, [(pred_mask & ~spurious, _C_MAGENTA), (spurious, _C_YELLOW)]), interpolation="nearest"
    )
    axes[1].contour(lab > 0, levels=[0.5], colors=[_C_CYAN], linewidths=0.8)
    axes[1].set_title(f"B: output (p >= 0.5), {sets['n_p']} components")
    for ax in axes[:2]:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[2].axis("off")
    _legend(
        axes[2],
        [
            (_C_CYAN, "label instance"),
            (_C_MAGENTA, "component touching a label"),
            (_C_YELLOW, "spurious component (touches none)"),
        ],
        fontsize=9,
    )
    return _save(fig, out, "figure1_scene.png")


def _figure1_instances(out: Path, scene, sets: dict[str, Any]) -> str:
    plt = _plt()
    lab = sets["lab"]
    pred_mask = scene.pred >= 0.5
    bg = lab == 0
    n_l = sets["n_l"]
    fig, axes = plt.subplots(2, n_l, figsize=(2.3 * n_l, 5.4))
    for n in range(1, n_l + 1):
        inst = lab == n
        other = (lab > 0) & ~inst
        used = ici_voxels(sets, n)
        ici_img = _rgb(
            lab.shape,
            [(other, _C_OTHER), (inst, _C_FN), (used & ~inst, _C_MAGENTA), (used & inst, _C_TP)],
        )
        blob_img = _rgb(
            lab.shape,
            [
                (other, _C_OTHER),
                (inst, _C_FN),
                (pred_mask & bg & ~used, _C_YELLOW),
                (pred_mask & bg & used, _C_MAGENTA),
                (pred_mask & inst, _C_TP),
            ],
        )
        for row, img in enumerate((ici_img, blob_img)):
            ax = axes[row, n - 1]
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, n - 1].set_title(f"L{n} ({int(inst.sum())} px)", fontsize=10)
    axes[0, 0].set_ylabel("C: ICI instance term", fontsize=10)
    axes[1, 0].set_ylabel("D: blob loss", fontsize=10)
    fig.suptitle("Voxels each loss uses for every label instance (Figure 1 of the ICI paper)", fontsize=12)
    from matplotlib.patches import Patch

    fig.legend(
        handles=[
            Patch(facecolor=_C_TP, edgecolor="0.3", label="correct (TP)"),
            Patch(facecolor=_C_MAGENTA, edgecolor="0.3", label="false voxels from components touching the instance"),
            Patch(facecolor=_C_YELLOW, edgecolor="0.3", label="false voxels from other components (blob only)"),
            Patch(facecolor=_C_FN, edgecolor="0.3", label="instance voxels not predicted"),
            Patch(facecolor=_C_OTHER, edgecolor="0.3", label="other label instances (not used)"),
        ],
        loc="lower center",
        ncol=3,
        fontsize=8.5,
        frameon=False,
    )
    fig.subplots_adjust(bottom=0.17, top=0.88, wspace=0.05, hspace=0.08)
    return _save(fig, out, "figure1_instances.png")


def gradients_figure(out: Path, scene) -> tuple[str, list[list[str]]]:
    """The descent direction of four terms on the scene; rows: term, value, gradient norm, non-zero voxels."""
    import matplotlib.colors as mcolors

    from lossbench.audit import term_gradient_map

    plt = _plt()
    panels = [
        ("blob term", "blob", "blob", {}),
        ("ICI instance term (reference)", "ici", "instance", {"reference": True}),
        ("ICI centre term (reference)", "ici", "center", {"reference": True}),
        ("ICI centre term (trainable)", "ici", "center", {"center_mode": "trainable"}),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2))
    rows = []
    for ax, (title, name, term, params) in zip(axes, panels):
        value, g = term_gradient_map(scene, name, term, **params)
        norm = float(np.sqrt((g**2).sum()))
        vmax = float(np.abs(g).max()) or 1.0
        norm_c = mcolors.SymLogNorm(linthresh=vmax * 1e-3, vmin=-vmax, vmax=vmax, base=10)
        im = ax.imshow(-g, cmap="RdBu_r", norm=norm_c, interpolation="nearest")
        ax.contour(scene.label, levels=[0.5], colors="k", linewidths=0.7)
        ax.contour(scene.pred >= 0.5, levels=[0.5], colors="0.45", linewidths=0.6, linestyles="dashed")
        ax.set_title(f"{title}\nvalue {value:.3f}, |grad| {norm:.3g}" + ("\n(identically zero)" if norm == 0 else ""))
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, shrink=0.75, label="-d term / d p")
        rows.append([title, f"{value:.4f}", f"{norm:.3g}", f"{int((g != 0).sum())} / {g.size}"])
    fig.suptitle(
        "Descent direction -grad w.r.t. probabilities on figure1 (red raises p, blue lowers p; symmetric log "
        "colour scale, white = exactly 0); label solid black, prediction dashed grey",
        fontsize=11,
    )
    return _save(fig, out, "figure1_gradients.png"), rows


def bridge_figure(out: Path, scene) -> tuple[str, list[list[str]]]:
    """Figure 4: the masked output each tp_mode gives each instance; rows: per-instance loss, panel and loss term."""
    plt = _plt()
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
        rows.append([tp, *[f"{v:.4f}" for v in per], f"{own:.4f}", f"{loss_vals[tp]:.4f}"])
        for n in range(1, n_l + 1):
            ax = axes[n - 1, j]
            w = tp_weights(scene, n, tp, sets)
            im = ax.imshow(np.ma.masked_where(w == 0, w * p), cmap="magma", vmin=0, vmax=1, interpolation="nearest")
            ax.set_facecolor(_C_BG)
            ax.contour(lab == n, levels=[0.5], colors=[_C_CYAN], linewidths=1.2)
            ax.contour((lab > 0) & (lab != n), levels=[0.5], colors=[_C_GREEN], linewidths=1.2)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"tp_mode={tp}\ninstance L{n}: loss {per[n - 1]:.3f}", fontsize=9.5)
    for n in range(1, n_l + 1):
        axes[n - 1, 0].set_ylabel(f"label instance L{n}")
    gs = axes[0, -1].get_gridspec()
    for ax in axes[:, -1]:
        ax.remove()
    bar = fig.add_subplot(gs[:, -1])
    bar.bar(range(len(modes)), [loss_vals[m] for m in modes], color=["#c0392b", "#2e86c1", "#28b463"])
    bar.set_xticks(range(len(modes)), [m.replace("_", "_\n") for m in modes])
    bar.set_ylabel("ICI instance term (loss)")
    bar.set_title("instance term per tp_mode")
    for i, m in enumerate(modes):
        bar.annotate(f"{loss_vals[m]:.3f}", (i, loss_vals[m]), ha="center", va="bottom", fontsize=9)
    fig.colorbar(im, ax=axes[:, : len(modes)].ravel().tolist(), shrink=0.7, label="masked output p * w")
    fig.suptitle(
        "Figure 4: the masked output each tp_mode gives instance n (cyan: instance n, green: the other instance)",
        fontsize=11,
    )
    return _save(fig, out, "figure4_tp.png"), rows


def center_figure(out: Path) -> tuple[str, list[list[str]]]:
    """Label and prediction cubes of figure1 in 2D and 3D (max-projection); rows: cube counts and centre terms."""
    from lossbench.data.scenes import get_scene

    plt = _plt()
    fig, axes = plt.subplots(2, 3, figsize=(11.5, 7.8))
    rows = []
    for r, dims in enumerate((2, 3)):
        sc = get_scene("figure1", dims)
        lab, comp = label(sc.label > 0.5), label(sc.pred >= 0.5)
        lc, lboxes = cube_maps(lab)
        pc, pboxes = cube_maps(comp)
        own = center_reference_value(lc, pc)
        t_ref = loss_terms(sc, "ici", reference=True)["center"]
        t_tr = loss_terms(sc, "ici", center_mode="trainable")["center"]
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
        lab2, comp2, lc2, pc2 = (_mip(a) for a in (lab > 0, comp > 0, lc, pc))
        axes[r, 0].imshow(_rgb(lab2.shape, [(lab2, (0.0, 0.38, 0.42))]), interpolation="nearest")
        axes[r, 0].contour(lc2, levels=[0.5], colors=[_C_CYAN], linewidths=1.6)
        axes[r, 0].set_title(f"{dims}D label: instances (dark cyan)\nand their cubes (cyan outline)", fontsize=9.5)
        axes[r, 0].set_ylabel("2D, 64x64" if dims == 2 else "3D, 32^3: max-projection over z", fontsize=10)
        axes[r, 1].imshow(_rgb(comp2.shape, [(comp2, (0.45, 0.0, 0.45))]), interpolation="nearest")
        axes[r, 1].contour(pc2, levels=[0.5], colors=[_C_MAGENTA], linewidths=1.6)
        axes[r, 1].set_title(
            f"{dims}D prediction: components (dark magenta)\nand their cubes (magenta outline)", fontsize=9.5
        )
        axes[r, 2].imshow(
            _rgb(lc2.shape, [(lc2 & ~pc2, _C_CYAN), (pc2 & ~lc2, _C_MAGENTA), (lc2 & pc2, _C_TP)]),
            interpolation="nearest",
        )
        axes[r, 2].set_title(
            f"{dims}D cube maps: label only cyan, prediction\nonly magenta, both white; centre term {own:.3f}",
            fontsize=9.5,
        )
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(
        f"Centre-of-instance transform, cube side {CUBE} (centre ceil(mean) - 1, truncated at the border)",
        fontsize=12,
    )
    return _save(fig, out, "center_transform.png"), rows


def _mip(a: np.ndarray) -> np.ndarray:
    """Maximum projection over the first (z) axis of a 3D array; 2D arrays are returned unchanged."""
    return a.max(0) if a.ndim == 3 else a


def _label_colours(labels: np.ndarray) -> np.ndarray:
    import matplotlib.colors as mcolors

    n = int(labels.max())
    rng = np.random.default_rng(7)
    hues = rng.permutation(max(n, 1)) / max(n, 1)
    pal = np.concatenate([[list(_C_BG)], mcolors.hsv_to_rgb(np.stack([hues, np.full(n, 0.75), np.ones(n)], 1))])
    if n == 1:
        pal[1] = _C_CYAN
    return pal[labels]


def stress_figures(out: Path, stress: list[dict[str, Any]]) -> tuple[str, str]:
    """Exact vs max-pool labelling of the stress shapes, and components against iterations."""
    return _stress_grid(out, stress), _iterations_figure(out, stress)


def _stress_grid(out: Path, stress: list[dict[str, Any]]) -> str:
    plt = _plt()
    cols = 2 + len(MAXPOOL_ITERS)
    fig, axes = plt.subplots(len(stress), cols, figsize=(2.7 * cols, 2.9 * len(stress)))
    for i, r in enumerate(stress):
        panels = [("exact (cc3d)", r["exact_labels"], r["exact"], True)]
        for it in (*MAXPOOL_ITERS, r["need"]):
            mp = r["maxpool"][it]
            panels.append((f"max-pool {it} it", mp["labels"], mp["count"], mp["converged"]))
        for j, (title, labels, count, conv) in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(_label_colours(labels), interpolation="nearest")
            if r["voxels"] <= 16:  # single voxels are invisible at this size: ring every voxel in its colour
                yx = np.argwhere(labels > 0)
                ax.scatter(yx[:, 1], yx[:, 0], s=90, facecolors="none", edgecolors="w", linewidths=1.2)
            lost = r["mask"] & (labels == 0)
            if lost.any():
                yx = np.argwhere(lost)
                ax.scatter(yx[:, 1], yx[:, 0], s=60, facecolors="none", edgecolors="red", linewidths=1.5)
            extra = "" if j == 0 else (", converged" if conv else ", NOT converged")
            ax.set_title(f"{title}\n{count} comp.{extra}", fontsize=9, color="k" if conv else "#b03a2e")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 0].set_ylabel(r["shape"], fontsize=10)
    fig.suptitle(
        "Exact labelling vs the reference max-pool propagation (one colour per component; "
        "white ring: kept single voxel, red ring: voxel dropped)",
        fontsize=11,
    )
    return _save(fig, out, "labelling_stress.png")


def _iterations_figure(out: Path, stress: list[dict[str, Any]]) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.6))
    colours = ["#c0392b", "#2e86c1", "#28b463", "#8e44ad"]
    for colour, r in zip(colours, stress):
        counts = r["curve"]
        its = np.arange(len(counts), dtype=np.float64)
        its[0] = 0.5
        ax.plot(
            its,
            counts,
            color=colour,
            lw=1.6,
            label=f"{r['shape']} (exact {r['exact']}, converged max-pool {counts[-1]})",
        )
        ax.plot([its[-1]], [counts[-1]], marker="o", ms=4, color=colour)
        ax.axhline(r["exact"], color=colour, ls=":", lw=1)
        ax.axvline(r["need"], color=colour, ls="--", lw=0.8)
    for it in MAXPOOL_ITERS:
        ax.axvline(it, color="0.6", lw=0.6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("max-pool iterations (0 plotted at 0.5; grey lines: 20, 250, 350)")
    ax.set_ylabel("number of components found")
    ax.set_title(
        "When the reference labelling is right: components vs iterations\n"
        "(dotted: exact count, dashed: iterations to converge)"
    )
    ax.legend(fontsize=8.5)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, out, "labelling_iterations.png")
