r"""Gradient audit: which voxels does every term of every loss actually move?

For each loss variant (every registered loss with its defaults; ``ici`` and ``dici`` as the published loss, which
is what they compute with no options, and as lossbench's own design, ``reference=False``, with each ``tp_mode``) and
each term of ``loss.terms(input, target)``, on a few small scenes of :mod:`lossbench.data.scenes`, the audit records

* the term value,
* the L2 norm of its gradient :math:`\|\partial\,\mathrm{term} / \partial p\|_2` with respect to the input
  **probabilities** ``p`` (the losses are built with ``sigmoid=False`` and ``p`` is a float64 leaf tensor,
  so no sigmoid Jacobian is folded in: a zero here means the term cannot move the prediction at all),
* the share of voxels with a non-zero gradient (exactly non-zero, ``|g| > 0`` in float64) and the gradient
  norm, separately in four disjoint regions of the scene:

  ==============  ==========================================================================================
  ``label``       voxels of label instances
  ``touching``    voxels of prediction components (``p >= 0.5``) that touch a label instance, outside labels
  ``spurious``    voxels of prediction components that touch no label instance
  ``background``  every other voxel
  ==============  ==========================================================================================

<<<<<<< HEAD
A term whose gradient is identically zero (for example the reference center term, whose cube maps are
constants) shows a norm of 0 and 0 % everywhere: it does not train the network.
=======
A term whose gradient is identically zero (for example the published ICI center term: it compares two maps of
constant cubes drawn at the components' centers, so nothing in it depends on the probabilities) shows a norm of 0 and
0 % everywhere: it does not train the network.
>>>>>>> gallery2

Example:
    >>> from lossbench.audit import run_audit
    >>> df = run_audit(["dice"], show=False)
    >>> sorted(df["term"].unique())
    ['dice', 'total']
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lossbench.cc import label_components
from lossbench.data.scenes import SCENES, Scene, get_scene
from lossbench.errors import ConfigError, expect
from lossbench.registry import suggest

__all__ = [
    "AUDIT_SCENES",
    "REGIONS",
    "GRADIENT_NOTE",
    "VARIANT_NOTE",
    "ICI_VARIANTS",
    "AuditVariant",
    "audit_variants",
    "scene_regions",
    "term_gradients",
    "term_gradient_map",
    "audit_table",
    "format_rows",
    "run_audit",
]

AUDIT_SCENES = ("figure1", "figure4_bridge", "missed_small", "soft")
"""Scenes of the default audit: Figure-1-like, Figure-4-like bridge, a missed instance, a soft prediction."""

REGIONS = ("label", "touching", "spurious", "background")
"""The four disjoint voxel regions the audit splits every gradient into (see the module docstring)."""

VARIANT_NOTE = (
    "ICI/DICI variants (the same for dici): ici[published] = ici with no options, the published loss (what the "
    "authors' public code computes: tp_mode='remove_detached', constant center cubes with zero gradient, the first "
    "50 prediction components of an image and none when it has more than 50 per label instance, exact labelling); "
    "ici[lossbench] = reference=False, lossbench's own design (tp_mode='remove', the set difference of Eq. 5; "
    "center_mode='trainable'; no caps); ici[lossbench,tp=MODE] = reference=False with tp_mode=MODE."
)
"""How the audit names the ``ici``/``dici`` variants of :func:`audit_variants`."""

GRADIENT_NOTE = (
    "Gradients are taken with respect to the input probabilities p (losses built with sigmoid=False, p a float64 "
    "leaf tensor). 'grad L2' = Euclidean norm of the gradient; 'nz' = share of the region's voxels with a gradient "
    "that is exactly non-zero. Regions: label = voxels of label instances; touching = voxels of prediction "
    "components (p >= 0.5, full connectivity) that touch a label instance, outside labels; spurious = voxels of "
    "prediction components touching no label instance; background = all other voxels. " + VARIANT_NOTE
)
"""One-paragraph explanation printed with every audit table."""

#: ``(label suffix, parameters)`` of the ``ici``/``dici`` variants, the published loss first.
ICI_VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("published", {}),
    ("lossbench", {"reference": False}),
    ("lossbench,tp=keep", {"reference": False, "tp_mode": "keep"}),
    ("lossbench,tp=remove_detached", {"reference": False, "tp_mode": "remove_detached"}),
)


@dataclass(frozen=True)
class AuditVariant:
    """One loss configuration of the audit.

    Attributes:
        label: display name, e.g. ``"ici[published]"`` (no options: the published loss) or
            ``"ici[lossbench,tp=keep]"`` (``reference=False, tp_mode="keep"``).
        name: registry name passed to :func:`lossbench.losses.build_loss`.
        params: keyword parameters (``sigmoid=False`` is always added when building).
    """

    label: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def build(self):
        """Build the loss module with probabilities in (``sigmoid=False``)."""
        from lossbench.losses import build_loss

        return build_loss(self.name, **{**self.params, "sigmoid": False})


def audit_variants(losses: Sequence[str | dict[str, Any]] | None = None) -> list[AuditVariant]:
    """The loss configurations audited for the given losses (all registered losses by default).

    A registry name of ``ici`` or ``dici`` gives the four variants of :data:`ICI_VARIANTS`: no options (the
    published loss: ``tp_mode="remove_detached"``, constant center cubes, caps 50/50, exact labelling), then
    lossbench's own design ``reference=False`` (``tp_mode="remove"``, trainable center, no caps) and the same with
    ``tp_mode`` ``keep`` and ``remove_detached``. Any other name (``cc_dice`` and ``cc_dicece`` included) is
    audited with its defaults. A dict ``{"name": ..., "label": ..., **params}`` (for example a study's loss entry)
    gives exactly one variant with those parameters (``label`` defaults to the name; ``sigmoid`` and ``softmax``
    are dropped and the loss is built with ``sigmoid=False``: the audit takes gradients w.r.t. probabilities of one
    binary channel).

    Args:
        losses: registry names and/or loss dicts, or None for every registered name.

    Returns:
        List of :class:`AuditVariant` in the given order (duplicate names/labels removed).

    Raises:
        RegistryError: for an unknown loss name (with a suggestion).
        ConfigError: if ``losses`` is empty or not a list, a dict has no ``"name"``, or a parameter is unknown.
    """
    from lossbench.losses import LOSSES

    if losses is None:
        items: list[str | dict[str, Any]] = list(LOSSES.names())
    else:
        if isinstance(losses, (str, dict)) or not isinstance(losses, Sequence):
            raise expect("losses", "a list of loss names / loss dicts or None", repr(losses))
        if len(losses) == 0:
            raise expect("losses", "a non-empty list of loss names / loss dicts or None", "[]")
        items = list(losses)
    out: list[AuditVariant] = []
    for item in items:
        if isinstance(item, dict):
            params = {k: v for k, v in item.items() if k not in ("name", "label", "sigmoid", "softmax")}
            if "name" not in item:
                raise expect("losses", "dicts with a 'name' key", f"keys {sorted(item)}")
            LOSSES.check_params(item["name"], params)  # unknown name or parameter: RegistryError / ConfigError
            out.append(AuditVariant(str(item.get("label", item["name"])), item["name"], params))
        elif isinstance(item, str):
            LOSSES.get(item)  # raises RegistryError with a "did you mean"
            if item in ("ici", "dici"):
                out.extend(AuditVariant(f"{item}[{suffix}]", item, dict(params)) for suffix, params in ICI_VARIANTS)
            else:
                out.append(AuditVariant(item, item, {}))
        else:
            raise expect("losses", "a list of loss names / loss dicts", f"an item {item!r}")
    unique: dict[str, AuditVariant] = {}
    for var in out:
        unique.setdefault(var.label, var)
    return list(unique.values())


def scene_regions(scene: Scene, *, threshold: float = 0.5, connectivity: int | None = None) -> dict[str, np.ndarray]:
    """Split a scene's voxels into the four disjoint audit regions of :data:`REGIONS`.

    Prediction components are the connected components of ``pred >= threshold``; a component *touches* a
    label instance when it shares at least one voxel with the label foreground.

    Args:
        scene: the scene (label and probabilities without batch/channel axes).
        threshold: prediction threshold (``>=``).
        connectivity: orthogonal hops for the prediction components (None = full).

    Returns:
        ``{region: bool ndarray of the scene's shape}``; the four masks partition the image.
    """
    label = scene.label > 0.5
    pred_mask = scene.pred >= threshold
    comps = label_components(pred_mask[None], connectivity=connectivity).labels[0]
    n = int(comps.max())
    touches = np.zeros(n + 1, dtype=bool)
    touches[np.unique(comps[label & (comps > 0)])] = True
    touches[0] = False
    in_comp = comps > 0
    touching = in_comp & touches[comps] & ~label
    spurious = in_comp & ~touches[comps]
    background = ~label & ~in_comp
    return {"label": label, "touching": touching, "spurious": spurious, "background": background}


def _scene_of(scene: Scene | str, spatial_dims: int, size: int | None) -> Scene:
    if isinstance(scene, Scene):
        return scene
    return get_scene(scene, spatial_dims=spatial_dims, size=size)


def term_gradients(scene: Scene | str, loss: Any, *, spatial_dims: int = 2, size: int | None = None) -> dict:
    """Every term of ``loss`` on ``scene`` with its per-voxel gradient w.r.t. the probabilities.

    Args:
        scene: a :class:`~lossbench.data.scenes.Scene` or a scene name.
        loss: a loss module built with ``sigmoid=False`` (probabilities in), a registry name, or an
            :class:`AuditVariant`.
        spatial_dims: dims of a scene given by name.
        size: side of a scene given by name (default per dims).

    Returns:
        ``{term: (value, grad)}`` with ``value`` a float and ``grad`` a float64 ndarray of the scene's spatial
        shape (all zeros where the term does not depend on the input at all).

    Raises:
        ConfigError: for an unknown scene name.
        RegistryError: for an unknown loss name.
    """
    sc = _scene_of(scene, spatial_dims, size)
    if isinstance(loss, str):
        loss = AuditVariant(loss, loss, {}).build()
    elif isinstance(loss, AuditVariant):
        loss = loss.build()
    x = torch.from_numpy(sc.pred.astype(np.float64))[None, None].requires_grad_(True)
    y = torch.from_numpy(sc.label.astype(np.float64))[None, None]
    terms = loss.terms(x, y)
    out = {}
    names = list(terms)
    for name in names:
        t = terms[name]
        if t.requires_grad:
            (g,) = torch.autograd.grad(t, x, retain_graph=True, allow_unused=True)
        else:
            g = None
        grad = np.zeros(sc.pred.shape, dtype=np.float64) if g is None else g[0, 0].detach().numpy().copy()
        out[name] = (float(t.detach()), grad)
    return out


def term_gradient_map(
    scene: Scene | str,
    loss: Any,
    term: str,
    *,
    spatial_dims: int = 2,
    size: int | None = None,
    **params: Any,
) -> tuple[float, np.ndarray]:
    """Value and per-voxel gradient map of one term of a loss on a scene (used by the gallery).

    Args:
        scene: a scene or its name.
        loss: registry name (built with ``params`` and ``sigmoid=False``) or a loss module (probabilities in).
        term: a key of ``loss.terms(...)``, e.g. ``"instance"`` or ``"center"``.
        spatial_dims: dims of a scene given by name.
        size: side of a scene given by name.
        **params: loss parameters when ``loss`` is a name.

    Returns:
        ``(value, grad)``: the term value and ``d term / d p`` as a float64 array of the scene's shape.

    Raises:
        ConfigError: unknown term name (with a suggestion) or scene name.
        RegistryError: unknown loss name.
    """
    if isinstance(loss, str):
        loss = AuditVariant(loss, loss, dict(params)).build()
    elif params:
        raise ConfigError(f"`params` must be empty when `loss` is a module, got {sorted(params)}")
    res = term_gradients(scene, loss, spatial_dims=spatial_dims, size=size)
    if term not in res:
        raise ConfigError(f"`term` must be one of {list(res)}, got {term!r}." + suggest(str(term), list(res)))
    return res[term]


def audit_table(
    losses: Sequence[str | dict[str, Any]] | None = None,
    *,
    scenes: Sequence[str] = AUDIT_SCENES,
    spatial_dims: int = 2,
    size: int | None = None,
) -> pd.DataFrame:
    """Compute the audit as a tidy table, one row per (scene, loss variant, term).

    Args:
        losses: registry names and/or loss dicts (default: all registered names); see :func:`audit_variants`.
        scenes: scene names of :data:`lossbench.data.scenes.SCENES`.
        spatial_dims: 2 or 3.
        size: scene side (default per dims).

    Returns:
        DataFrame with columns ``scene, loss, name, params, term, value, grad_norm, moves`` and, per region
        ``r`` of :data:`REGIONS`, ``n_r`` (voxels), ``nz_r`` (share in [0, 1] with non-zero gradient;
        NaN for an empty region) and ``norm_r`` (gradient L2 norm inside the region).

    Raises:
        RegistryError: unknown loss name.
        ConfigError: unknown scene name, empty scene list, invalid ``spatial_dims`` / ``size``.
    """
    variants = audit_variants(losses)
    if isinstance(scenes, str) or not isinstance(scenes, Sequence) or len(scenes) == 0:
        raise expect("scenes", f"a non-empty list of scene names from {list(SCENES)}", repr(scenes))
    built = [get_scene(s, spatial_dims=spatial_dims, size=size) for s in scenes]  # validates names and sizes
    modules = [var.build() for var in variants]  # validates every parameter value before any computation
    rows = []
    for sc in built:
        regions = scene_regions(sc)
        for var, loss in zip(variants, modules):
            for term, (value, grad) in term_gradients(sc, loss).items():
                nz = grad != 0
                row: dict[str, Any] = {
                    "scene": sc.name,
                    "loss": var.label,
                    "name": var.name,
                    "params": ", ".join(f"{k}={v}" for k, v in var.params.items()),
                    "term": term,
                    "value": value,
                    "grad_norm": float(np.sqrt((grad**2).sum())),
                }
                row["moves"] = row["grad_norm"] > 0
                for r in REGIONS:
                    m = regions[r]
                    count = int(m.sum())
                    row[f"n_{r}"] = count
                    row[f"nz_{r}"] = float(nz[m].mean()) if count else math.nan
                    row[f"norm_{r}"] = float(np.sqrt((grad[m] ** 2).sum()))
                rows.append(row)
    return pd.DataFrame(rows)


def _pct(v: float) -> str:
    return "-" if v != v else f"{100 * v:.0f}%"


def format_rows(df: pd.DataFrame) -> list[list[str]]:
    """Display rows of an :func:`audit_table` frame: loss, term, value, gradient norm, non-zero share per region."""
    out = []
    for _, r in df.iterrows():
        out.append(
            [
                r["loss"],
                r["term"],
                f"{(r['value'] if abs(r['value']) >= 5e-5 else 0.0):.4f}",
                f"{r['grad_norm']:.3g}" if r["grad_norm"] > 0 else "0",
                *[_pct(r[f"nz_{reg}"]) for reg in REGIONS],
            ]
        )
    return out


_HEADER = ["loss", "term", "value", "grad L2", *[f"nz {r}" for r in REGIONS]]


def _markdown(df: pd.DataFrame) -> str:
    lines = ["# Gradient audit", "", GRADIENT_NOTE, ""]
    for scene, sub in df.groupby("scene", sort=False):
        n = sub.iloc[0]
        counts = ", ".join(f"{r} {int(n[f'n_{r}'])}" for r in REGIONS)
        lines += [f"## Scene `{scene}`", "", f"Voxels per region: {counts}.", ""]
        lines.append("| " + " | ".join(_HEADER) + " |")
        lines.append("|" + "|".join(["---"] * 2 + ["---:"] * (len(_HEADER) - 2)) + "|")
        for row in format_rows(sub):
            lines.append("| " + " | ".join(f"`{row[0]}`" if i == 0 else c for i, c in enumerate(row)) + " |")
        lines.append("")
    return "\n".join(lines)


def _print_rich(df: pd.DataFrame) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    if console.width < 120:  # pipes default to 80 columns, too narrow for the numbers: never truncate them
        console = Console(width=120)
    for scene, sub in df.groupby("scene", sort=False):
        table = Table(title=f"gradient audit: scene {scene!r}", caption=escape(GRADIENT_NOTE), show_lines=False)
        for i, h in enumerate(_HEADER):
            h = h.replace(" ", "\n") if i >= 2 else h
            table.add_column(h, justify="left" if i < 2 else "right", style="bold" if i == 0 else None, no_wrap=i < 2)
        prev = None
        for row, moves in zip(format_rows(sub), sub["moves"]):
            if prev is not None and row[0] != prev:
                table.add_section()
            prev = row[0]
            table.add_row(*[escape(c) for c in row], style=None if moves else "dim")
        console.print(table)


def run_audit(
    losses: Sequence[str | dict[str, Any]] | None = None,
    out: str | Path | None = None,
    show: bool = True,
    *,
    scenes: Sequence[str] = AUDIT_SCENES,
    spatial_dims: int = 2,
    size: int | None = None,
) -> pd.DataFrame:
    """Run the gradient audit (``lossbench audit``): print it and optionally write ``audit.md`` / ``audit.csv``.

    Args:
        losses: registry names and/or loss dicts (default: every registered loss; ``ici``/``dici`` names give
            four variants each, the published loss and lossbench's designs; see :func:`audit_variants`).
        out: folder for ``audit.md`` and ``audit.csv`` (created if needed), or None to write nothing.
        show: print one rich table per scene.
        scenes: scene names (default :data:`AUDIT_SCENES`).
        spatial_dims: 2 or 3.
        size: scene side (default 64 in 2D, 32 in 3D).

    Returns:
        The tidy table of :func:`audit_table`.

    Raises:
        RegistryError: unknown loss name (with a suggestion), before anything is computed.
        ConfigError: unknown scene, invalid sizes, or ``out`` is an existing file.
    """
    if out is not None:
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise expect("out", "a folder (or a path that does not exist yet)", f"the file {str(out)!r}")
    df = audit_table(losses, scenes=scenes, spatial_dims=spatial_dims, size=size)
    if show:
        _print_rich(df)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "audit.md").write_text(_markdown(df), encoding="utf-8")
        df.to_csv(out / "audit.csv", index=False)
    return df
