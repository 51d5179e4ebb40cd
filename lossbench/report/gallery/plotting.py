"""Shared drawing helpers of the gallery's figures: matplotlib on the Agg backend, colours, atomic PNG writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lossbench.io import atomic_save_figure

__all__ = [
    "C_BG",
    "C_TP",
    "C_FN",
    "C_MAGENTA",
    "C_YELLOW",
    "C_OTHER",
    "C_GREEN",
    "C_CYAN",
    "pyplot",
    "save",
    "rgb",
    "legend",
    "label_colours",
    "mip",
    "DESCENT_TITLE",
    "descent_panel",
]

_DPI = 100

# colours (RGB in [0, 1]); Figure 1 of the ICI paper: white correct, magenta / yellow the false voxels each loss counts
C_BG = (0.07, 0.07, 0.07)
C_TP = (1.0, 1.0, 1.0)
C_FN = (0.0, 0.45, 0.5)
C_MAGENTA = (1.0, 0.0, 1.0)
C_YELLOW = (1.0, 0.85, 0.0)
C_OTHER = (0.35, 0.35, 0.35)
C_GREEN = (0.2, 0.8, 0.3)
C_CYAN = (0.0, 0.85, 0.95)


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, out: Path, name: str) -> str:
    """Write the figure atomically as ``out/img/name`` and close it; return its path relative to the page.

    The PNG carries no software version, so the committed files change only when a picture does.
    """
    atomic_save_figure(fig, out / "img" / name, dpi=_DPI, bbox_inches="tight", metadata={"Software": None})
    pyplot().close(fig)
    return f"img/{name}"


def rgb(shape: tuple[int, ...], layers: list[tuple[np.ndarray, tuple[float, float, float]]]) -> np.ndarray:
    """An RGB image of ``shape``: the background colour, then each ``(mask, colour)`` layer painted in order."""
    img = np.empty((*shape, 3))
    img[:] = C_BG
    for mask, colour in layers:
        img[mask] = colour
    return img


def legend(ax, items: list[tuple[tuple[float, float, float], str]], **kw) -> None:
    """A legend of colour patches on ``ax`` (centered, no frame unless ``kw`` says otherwise)."""
    from matplotlib.patches import Patch

    ax.legend(
        handles=[Patch(facecolor=c, edgecolor="0.3", label=t) for c, t in items],
        loc=kw.pop("loc", "center"),
        frameon=False,
        **kw,
    )


def label_colours(labels: np.ndarray, saturation: float = 0.75, value: float = 1.0) -> np.ndarray:
    """RGB image of a labelling: one fixed random hue per id, the background colour for 0, cyan for a single id."""
    import matplotlib.colors as mcolors

    n = int(labels.max())
    rng = np.random.default_rng(7)
    hues = rng.permutation(max(n, 1)) / max(n, 1)
    hsv = np.stack([hues, np.full(max(n, 1), saturation), np.full(max(n, 1), value)], 1)[:n]
    pal = np.concatenate([[list(C_BG)], mcolors.hsv_to_rgb(hsv)])
    if n == 1:
        pal[1] = C_CYAN
    return pal[labels]


def mip(a: np.ndarray) -> np.ndarray:
    """Maximum projection over the first (z) axis of a 3D array; 2D arrays are returned unchanged."""
    return a.max(0) if a.ndim == 3 else a


#: Title of a row of :func:`descent_panel` maps (``scene`` to be filled in).
DESCENT_TITLE = (
    "Descent direction (minus the gradient with respect to the probabilities) on {scene}: red raises p, blue lowers "
    "p (symmetric logarithmic colour scale, white = exactly 0); label solid black, prediction (p >= 0.5) dashed grey"
)


def descent_panel(fig, ax, scene, grad: np.ndarray, title: str) -> float:
    """Draw ``-grad`` of a term on ``ax`` with the scene's outlines and a colour bar; return the gradient's L2 norm.

    The colour scale is symmetric and logarithmic above 1/1000 of the largest magnitude, so small pushes stay
    visible; a gradient that is identically zero says so in the title.
    """
    import matplotlib.colors as mcolors

    norm = float(np.sqrt((grad**2).sum()))
    vmax = float(np.abs(grad).max()) or 1.0
    scale = mcolors.SymLogNorm(linthresh=vmax * 1e-3, vmin=-vmax, vmax=vmax, base=10)
    im = ax.imshow(-grad, cmap="RdBu_r", norm=scale, interpolation="nearest")
    ax.contour(scene.label, levels=[0.5], colors="k", linewidths=0.7)
    ax.contour(scene.pred >= 0.5, levels=[0.5], colors="0.45", linewidths=0.6, linestyles="dashed")
    ax.set_title(f"{title}, gradient L2 norm {norm:.3g}" + ("\n(identically zero)" if norm == 0 else ""))
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, shrink=0.75, label="-d term / d p")
    return norm
