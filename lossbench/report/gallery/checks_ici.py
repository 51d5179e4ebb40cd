"""The gallery's checks of ICI/DICI and the blob loss: what each term sees and moves, and that the panels are right.

``ici`` and ``dici`` with no options are the published loss (:data:`~lossbench.report.gallery.compute.PUBLISHED`);
lossbench's own designs are options (``reference=False`` selects all of them). Every check below names which of the
two it looks at.
"""

from __future__ import annotations

import numpy as np

from lossbench.report.gallery.compute import (
    PUBLISHED,
    TP_NAMES,
    caps_scene,
    center_reference_value,
    cube_maps,
    figure1_instance_rows,
    label,
    loss_terms,
    tp_instance_value,
)
from lossbench.report.gallery.registry import CheckContext, check, norm

__all__: list[str] = []

TP_MODES = ("keep", "remove", "remove_detached")
LOSSBENCH = {"reference": False}


def _tp_values(c: CheckContext) -> dict[str, float]:
    return c.get("tp_loss", lambda: {tp: loss_terms(c.bridge, "ici", tp_mode=tp)["instance"] for tp in TP_MODES})


def _largest_difference(a: dict[str, float], b: dict[str, float]) -> float:
    return max(abs(a[k] - b[k]) for k in a) if a.keys() == b.keys() else float("inf")


@check(
    "default_is_published",
    "ici and dici with no options compute the published loss (tp_mode='remove_detached', constant center cubes, caps "
    "50/50, exact labelling), also with reference=True; each of lossbench's choices changes a term",
)
def _default_is_published(c: CheckContext) -> tuple[bool, str]:
    from lossbench.data.scenes import get_scene

    scenes = [c.fig1, c.bridge, get_scene("serpentine"), caps_scene()]
    worst = 0.0
    for name in ("ici", "dici"):
        for sc in scenes:
            default = loss_terms(sc, name)
            for params in (PUBLISHED, {"reference": True}):
                worst = max(worst, _largest_difference(default, loss_terms(sc, name, **params)))
    changes = [  # (what, scene, term, lossbench's option or another labelling)
        ("tp_mode='remove'", c.bridge, "instance", {"tp_mode": "remove"}),
        ("center_mode='trainable'", c.fig1, "center", {"center_mode": "trainable"}),
        ("no caps", scenes[3], "instance", {"max_pred_instances": 0, "too_many_factor": 0.0}),
        ("max-pool labelling, 350 iterations", scenes[2], "instance", {"cc_backend": "maxpool", "num_iterations": 350}),
    ]
    ok, parts = worst <= 1e-12, []
    for what, sc, term, params in changes:
        a, b = loss_terms(sc, "ici")[term], loss_terms(sc, "ici", **params)[term]
        ok &= abs(a - b) > 1e-3
        parts.append(f"{what} on {sc.name}: {term} {a:.4f} -> {b:.4f}")
    return ok, (
        f"largest difference between no options and the published options spelled out (or reference=True), ici and "
        f"dici on 4 scenes: {worst:.3g}; " + "; ".join(parts)
    )


@check("spurious_blob", "Far spurious blobs raise the blob term (Figure 1D)")
def _spurious_blob(c: CheckContext) -> tuple[bool, str]:
    a, b = loss_terms(c.fig1, "blob")["blob"], loss_terms(c.no_spur, "blob")["blob"]
    return a > b, f"blob term {a:.4f} with the 5 spurious blobs vs {b:.4f} without"


@check("spurious_ici", "Far spurious blobs leave the ICI instance term unchanged (every tp_mode)")
def _spurious_ici(c: CheckContext) -> tuple[bool, str]:
    parts, ok = [], True
    for tp in TP_MODES:
        a = loss_terms(c.fig1, "ici", tp_mode=tp)["instance"]
        b = loss_terms(c.no_spur, "ici", tp_mode=tp)["instance"]
        ok &= abs(a - b) <= 1e-12
        parts.append(f"{TP_NAMES[tp]}: {a:.6f} vs {b:.6f}")
    return ok, "ICI instance term with vs without spurious blobs: " + "; ".join(parts)


@check(
    "spurious_gradient",
    "Spurious voxels: zero gradient from the published ICI instance term, non-zero from the blob term",
)
def _spurious_gradient(c: CheckContext) -> tuple[bool, str]:
    from lossbench.audit import term_gradient_map

    _, g_ici = term_gradient_map(c.fig1, "ici", "instance")
    _, g_blob = term_gradient_map(c.fig1, "blob", "blob")
    ici_nz, blob_nz = int((g_ici[c.spur] != 0).sum()), int((g_blob[c.spur] != 0).sum())
    n = int(c.spur.sum())
    return ici_nz == 0 and blob_nz == n, (
        f"spurious voxels with non-zero gradient: published ICI instance term {ici_nz}/{n}, blob term {blob_nz}/{n}"
    )


@check(
    "figure1_panel",
    "Figure 1 panel voxel sets reproduce the ICI instance term (keep, and the published remove_detached) and the "
    "blob term",
)
def _figure1_panel(c: CheckContext) -> tuple[bool, str]:
    rows = c.get("fig1_rows", lambda: figure1_instance_rows(c.fig1))
    own = {k: float(np.mean([r[k] for r in rows])) for k in ("ici", "published", "blob")}
    loss = {
        "ici": loss_terms(c.fig1, "ici", tp_mode="keep")["instance"],
        "published": loss_terms(c.fig1, "ici")["instance"],
        "blob": loss_terms(c.fig1, "blob")["blob"],
    }
    ok = all(abs(own[k] - loss[k]) < 1e-9 for k in own)
    names = {"ici": "ICI keep", "published": "ICI published", "blob": "blob"}
    return ok, "from the panel's voxel sets: " + ", ".join(f"{names[k]} {own[k]:.6f} (loss {loss[k]:.6f})" for k in own)


@check(
    "tp_bridge",
    "-TP below TP on the bridge: remove (Eq. 5, lossbench's) and remove_detached (published) below keep (Figure 4)",
)
def _tp_bridge(c: CheckContext) -> tuple[bool, str]:
    vals = _tp_values(c)
    ok = vals["remove"] < vals["keep"] and vals["remove_detached"] < vals["keep"]
    return ok, ", ".join(f"{TP_NAMES[k]}: {v:.4f}" for k, v in vals.items())


@check("figure4_panel", "Figure 4 panel weights reproduce the instance term of every tp_mode")
def _figure4_panel(c: CheckContext) -> tuple[bool, str]:
    vals = _tp_values(c)
    own = {tp: tp_instance_value(c.bridge, tp)[0] for tp in vals}
    ok = all(abs(own[tp] - vals[tp]) < 1e-9 for tp in vals)
    return ok, ", ".join(f"{tp}: panel {own[tp]:.6f} / loss {vals[tp]:.6f}" for tp in vals)


@check("published_center_zero", "The published center term (the default) has identically zero gradient")
def _published_center_zero(c: CheckContext) -> tuple[bool, str]:
    from lossbench.audit import term_gradient_map

    parts, ok = [], True
    for sc in (c.fig1, c.bridge, c.missed):
        v, g = term_gradient_map(sc, "ici", "center")
        ok &= norm(g) == 0.0
        parts.append(f"{sc.name}: value {v:.4f}, |grad| {norm(g):.3g}")
    return ok, "; ".join(parts)


@check(
    "trainable_center_moves",
    "lossbench's trainable center term has a gradient that pushes every spurious-component voxel down",
)
def _trainable_center_moves(c: CheckContext) -> tuple[bool, str]:
    from lossbench.audit import term_gradient_map

    v, g = term_gradient_map(c.fig1, "ici", "center", **LOSSBENCH)
    spur_nz = int((g[c.spur] != 0).sum())
    pushes_down = bool((g[c.spur] > 0).all())  # descent lowers p where the gradient is positive
    return norm(g) > 0 and spur_nz == int(c.spur.sum()) and pushes_down, (
        f"figure1, reference=False: value {v:.4f}, |grad| {norm(g):.3g}, non-zero on {spur_nz}/{int(c.spur.sum())} "
        f"spurious voxels, all of them pushed down: {pushes_down}"
    )


@check(
    "trainable_center_perfect",
    "lossbench's trainable center term is 0 with zero gradient when prediction equals label",
)
def _trainable_center_perfect(c: CheckContext) -> tuple[bool, str]:
    from lossbench.audit import term_gradient_map

    v, g = term_gradient_map(c.perfect, "ici", "center", **LOSSBENCH)
    return norm(g) == 0.0 and abs(v) < 1e-9, f"perfect scene, reference=False: value {v:.3g}, |grad| {norm(g):.3g}"


@check(
    "missed_instance_zero_grad",
    "A missed instance gets zero gradient from the published instance term (no prediction component touches it)",
)
def _missed_instance_zero_grad(c: CheckContext) -> tuple[bool, str]:
    from lossbench.audit import term_gradient_map

    lab = label(c.missed.label > 0.5)
    sizes = np.bincount(lab.ravel())[1:]
    small = lab == (int(np.argmin(sizes)) + 1)
    _, g = term_gradient_map(c.missed, "ici", "instance")
    nz = int((g[small] != 0).sum())
    is_missed = not bool((c.missed.pred[small] >= 0.5).any())
    return nz == 0 and is_missed, (
        f"missed instance ({int(small.sum())} voxels, largest p {float(c.missed.pred[small].max()):.2f}): "
        f"{nz} voxels with non-zero gradient from the published instance term"
    )


@check("perfect_zero", "Perfect prediction gives ~0 for every loss variant")
def _perfect_zero(c: CheckContext) -> tuple[bool, str]:
    from lossbench.audit import audit_variants

    worst, who = 0.0, ""
    for var in audit_variants():
        t = loss_terms(c.perfect, var.name, **var.params)["total"]
        if abs(t) >= abs(worst):
            worst, who = t, var.label
    return abs(worst) < 1e-6, f"largest |total| over {len(audit_variants())} loss variants: {worst:.3g} ({who})"


@check("center_panel", "Drawn center cubes reproduce the published center term (2D and 3D)")
def _center_panel(c: CheckContext) -> tuple[bool, str]:
    from lossbench.data.scenes import get_scene

    parts, ok = [], True
    for dims in (2, 3):
        sc = get_scene("figure1", dims)
        lc, _ = cube_maps(label(sc.label > 0.5))
        pc, _ = cube_maps(label(sc.pred >= 0.5))
        own = center_reference_value(lc, pc)
        loss = loss_terms(sc, "ici")["center"]
        ok &= abs(own - loss) < 1e-9
        parts.append(f"{dims}D: cubes drawn {own:.6f} / loss {loss:.6f}")
    return ok, "; ".join(parts)
