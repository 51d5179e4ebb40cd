"""The gallery's expectation checks: small named functions in a registry, each computed, never hard-coded.

A check takes the :class:`CheckContext` (the scenes and the labelling stress rows) and returns ``(passed, detail)``;
:func:`run_checks` runs every registered check in gallery order, and a check that raises is a FAIL with the error as
its detail. Register a new one with the :func:`check` decorator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lossbench.report.gallery.compute import (
    MAXPOOL_ITERS,
    center_reference_value,
    cube_maps,
    figure1_instance_rows,
    label,
    loss_terms,
    stress_rows,
    tp_instance_value,
    without_spurious,
)

__all__ = ["Check", "CheckContext", "CHECKS", "check", "run_checks"]

_TP_MODES = ("keep", "remove", "remove_detached")


@dataclass(frozen=True)
class Check:
    """One computed expectation of the gallery.

    Attributes:
        name: short identifier.
        expectation: what should hold, in words.
        passed: whether it held.
        detail: the numbers it was decided on.
    """

    name: str
    expectation: str
    passed: bool
    detail: str

    @property
    def status(self) -> str:
        """``"PASS"`` or ``"FAIL"``."""
        return "PASS" if self.passed else "FAIL"


@dataclass
class CheckContext:
    """What the checks look at: the 2D scenes, the Figure 1 scene without its spurious blobs, the stress rows.

    ``cache`` is shared with the gallery's figures (``fig1_rows``, ``tp_loss``, ``stress``), so that they show the
    numbers the checks decided on without computing them twice.
    """

    fig1: Any
    bridge: Any
    missed: Any
    perfect: Any
    no_spur: Any
    spur: np.ndarray
    cache: dict[str, Any] = field(default_factory=dict)
    stress_error: str = ""

    def stress(self) -> dict[str, dict[str, Any]]:
        """Stress rows by shape; raises if computing them failed (every labelling check then FAILs)."""
        if self.stress_error:
            raise RuntimeError(f"labelling stress rows failed: {self.stress_error}")
        return {r["shape"]: r for r in self.cache["stress"]}


@dataclass(frozen=True)
class _Spec:
    name: str
    expectation: str
    fn: Callable[[CheckContext], tuple[bool, str]]


#: Every check, in gallery order (the order of registration).
CHECKS: list[_Spec] = []


def check(name: str, expectation: str) -> Callable[[Callable[[CheckContext], tuple[bool, str]]], Any]:
    """Register the decorated function as the check ``name`` with its expectation in words."""

    def register(fn: Callable[[CheckContext], tuple[bool, str]]) -> Callable[[CheckContext], tuple[bool, str]]:
        CHECKS.append(_Spec(name, expectation, fn))
        return fn

    return register


def run_checks(context: dict[str, Any] | None = None) -> list[Check]:
    """Compute every expectation check of the gallery (2D scenes, default sizes).

    Args:
        context: optional cache of intermediate results shared with the figures (filled in place).

    Returns:
        One :class:`Check` per expectation, in gallery order.
    """
    c = _context({} if context is None else context)
    return [_run(spec, c) for spec in CHECKS]


def _context(cache: dict[str, Any]) -> CheckContext:
    from lossbench.data.scenes import get_scene

    fig1 = get_scene("figure1")
    no_spur, spur = without_spurious(fig1)
    c = CheckContext(
        fig1=fig1,
        bridge=get_scene("figure4_bridge"),
        missed=get_scene("missed_small"),
        perfect=get_scene("perfect"),
        no_spur=no_spur,
        spur=spur,
        cache=cache,
    )
    try:
        cache["stress"] = cache.get("stress") or stress_rows()
    except Exception as exc:  # every labelling check then FAILs with this message
        c.stress_error = f"{type(exc).__name__}: {exc}"
    return c


def _run(spec: _Spec, c: CheckContext) -> Check:
    try:
        ok, detail = spec.fn(c)
    except Exception as exc:  # a crash is a failed expectation, reported with its message
        ok, detail = False, f"raised {type(exc).__name__}: {exc}"
    return Check(spec.name, spec.expectation, bool(ok), detail)


def _norm(g: np.ndarray) -> float:
    return float(np.sqrt((g**2).sum()))


# ------------------------------------------------------------------------------------- what each loss sees


@check("spurious_blob", "Far spurious blobs raise the blob term (Figure 1D)")
def _spurious_blob(c: CheckContext) -> tuple[bool, str]:
    a, b = loss_terms(c.fig1, "blob")["blob"], loss_terms(c.no_spur, "blob")["blob"]
    return a > b, f"blob term {a:.4f} with the 5 spurious blobs vs {b:.4f} without"


@check("spurious_ici", "Far spurious blobs leave the ICI instance term unchanged (every tp_mode)")
def _spurious_ici(c: CheckContext) -> tuple[bool, str]:
    parts, ok = [], True
    for tp in _TP_MODES:
        a = loss_terms(c.fig1, "ici", tp_mode=tp)["instance"]
        b = loss_terms(c.no_spur, "ici", tp_mode=tp)["instance"]
        ok &= abs(a - b) <= 1e-12
        parts.append(f"{tp}: {a:.6f} vs {b:.6f}")
    return ok, "ICI instance term with vs without spurious blobs: " + "; ".join(parts)


@check("spurious_gradient", "Spurious voxels: zero gradient from the ICI instance term, non-zero from the blob term")
def _spurious_gradient(c: CheckContext) -> tuple[bool, str]:
    from lossbench.audit import term_gradient_map

    _, g_ici = term_gradient_map(c.fig1, "ici", "instance", reference=True)
    _, g_blob = term_gradient_map(c.fig1, "blob", "blob")
    ici_nz, blob_nz = int((g_ici[c.spur] != 0).sum()), int((g_blob[c.spur] != 0).sum())
    n = int(c.spur.sum())
    return ici_nz == 0 and blob_nz == n, (
        f"spurious voxels with non-zero gradient: ICI instance term {ici_nz}/{n}, blob term {blob_nz}/{n}"
    )


@check("figure1_panel", "Figure 1 panel voxel sets reproduce the ICI (keep) instance and blob terms")
def _figure1_panel(c: CheckContext) -> tuple[bool, str]:
    rows = figure1_instance_rows(c.fig1)
    ici = float(np.mean([r["ici"] for r in rows]))
    blob = float(np.mean([r["blob"] for r in rows]))
    li = loss_terms(c.fig1, "ici", tp_mode="keep")["instance"]
    lb = loss_terms(c.fig1, "blob")["blob"]
    c.cache["fig1_rows"] = rows
    ok = abs(ici - li) < 1e-9 and abs(blob - lb) < 1e-9
    return ok, f"from the panel's voxel sets: ICI {ici:.6f} (loss {li:.6f}), blob {blob:.6f} (loss {lb:.6f})"


@check("tp_bridge", "-TP < TP on the bridge: remove and remove_detached below keep (Figure 4)")
def _tp_bridge(c: CheckContext) -> tuple[bool, str]:
    vals = {tp: loss_terms(c.bridge, "ici", tp_mode=tp)["instance"] for tp in _TP_MODES}
    c.cache["tp_loss"] = vals
    ok = vals["remove"] < vals["keep"] and vals["remove_detached"] < vals["keep"]
    return ok, ", ".join(f"{k}: {v:.4f}" for k, v in vals.items())


@check("figure4_panel", "Figure 4 panel weights reproduce the instance term of every tp_mode")
def _figure4_panel(c: CheckContext) -> tuple[bool, str]:
    vals = c.cache.get("tp_loss") or {tp: loss_terms(c.bridge, "ici", tp_mode=tp)["instance"] for tp in _TP_MODES}
    own = {tp: tp_instance_value(c.bridge, tp)[0] for tp in vals}
    ok = all(abs(own[tp] - vals[tp]) < 1e-9 for tp in vals)
    return ok, ", ".join(f"{tp}: panel {own[tp]:.6f} / loss {vals[tp]:.6f}" for tp in vals)


# ---------------------------------------------------------------------------------------- gradients


@check("reference_center_zero", "Reference centre term has identically zero gradient")
def _reference_center_zero(c: CheckContext) -> tuple[bool, str]:
    from lossbench.audit import term_gradient_map

    parts, ok = [], True
    for sc in (c.fig1, c.bridge, c.missed):
        v, g = term_gradient_map(sc, "ici", "center", reference=True)
        norm = _norm(g)
        ok &= norm == 0.0
        parts.append(f"{sc.name}: value {v:.4f}, |grad| {norm:.3g}")
    return ok, "; ".join(parts)


@check("trainable_center_moves", "Trainable centre term has a gradient that pushes every spurious-component voxel down")
def _trainable_center_moves(c: CheckContext) -> tuple[bool, str]:
    from lossbench.audit import term_gradient_map

    v, g = term_gradient_map(c.fig1, "ici", "center", center_mode="trainable")
    norm = _norm(g)
    spur_nz = int((g[c.spur] != 0).sum())
    pushes_down = bool((g[c.spur] > 0).all())  # descent lowers p where the gradient is positive
    return norm > 0 and spur_nz == int(c.spur.sum()) and pushes_down, (
        f"figure1: value {v:.4f}, |grad| {norm:.3g}, non-zero on {spur_nz}/{int(c.spur.sum())} spurious voxels, "
        f"all of them pushed down: {pushes_down}"
    )


@check("trainable_center_perfect", "Trainable centre term is 0 with zero gradient when prediction equals label")
def _trainable_center_perfect(c: CheckContext) -> tuple[bool, str]:
    from lossbench.audit import term_gradient_map

    v, g = term_gradient_map(c.perfect, "ici", "center", center_mode="trainable")
    norm = _norm(g)
    return norm == 0.0 and abs(v) < 1e-9, f"perfect scene: value {v:.3g}, |grad| {norm:.3g}"


@check(
    "missed_instance_zero_grad",
    "A missed instance gets zero gradient from the reference instance term (no prediction component touches it)",
)
def _missed_instance_zero_grad(c: CheckContext) -> tuple[bool, str]:
    from lossbench.audit import term_gradient_map

    lab = label(c.missed.label > 0.5)
    sizes = np.bincount(lab.ravel())[1:]
    small = lab == (int(np.argmin(sizes)) + 1)
    _, g = term_gradient_map(c.missed, "ici", "instance", reference=True)
    nz = int((g[small] != 0).sum())
    is_missed = not bool((c.missed.pred[small] >= 0.5).any())
    return nz == 0 and is_missed, (
        f"missed instance ({int(small.sum())} voxels, max p {float(c.missed.pred[small].max()):.2f}): "
        f"{nz} voxels with non-zero reference instance-term gradient"
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


@check("center_panel", "Drawn centre cubes reproduce the reference centre term (2D and 3D)")
def _center_panel(c: CheckContext) -> tuple[bool, str]:
    from lossbench.data.scenes import get_scene

    parts, ok = [], True
    for dims in (2, 3):
        sc = get_scene("figure1", dims)
        lc, _ = cube_maps(label(sc.label > 0.5))
        pc, _ = cube_maps(label(sc.pred >= 0.5))
        own = center_reference_value(lc, pc)
        loss = loss_terms(sc, "ici", reference=True)["center"]
        ok &= abs(own - loss) < 1e-9
        parts.append(f"{dims}D: cubes drawn {own:.6f} / loss {loss:.6f}")
    return ok, "; ".join(parts)


# ----------------------------------------------------------------------------------------- labelling


@check("maxpool_spiral", "Max-pool labelling with few iterations splits the spiral; exact does not")
def _maxpool_spiral(c: CheckContext) -> tuple[bool, str]:
    r = c.stress()["spiral"]
    few = min(MAXPOOL_ITERS)
    ok = r["exact"] == 1 and all(r["maxpool"][it]["count"] > 1 for it in MAXPOOL_ITERS if it < r["need"])
    ok &= r["maxpool"][few]["count"] > 1
    counts = ", ".join(f"{it} it: {r['maxpool'][it]['count']}" for it in MAXPOOL_ITERS)
    return ok, f"exact: {r['exact']} component; max-pool {counts}; converges after {r['need']} iterations"


@check("maxpool_serpentine", "Max-pool labelling at the reference default (350) splits the serpentine")
def _maxpool_serpentine(c: CheckContext) -> tuple[bool, str]:
    r = c.stress()["serpentine"]
    c350 = r["maxpool"][350]["count"]
    return r["exact"] == 1 and c350 > 1 and r["need"] > 350, (
        f"exact: {r['exact']}; max-pool at 350 iterations (reference default): {c350} pieces; "
        f"needs {r['need']} iterations"
    )


@check(
    "maxpool_converged",
    "Converged max-pool labelling gives exact's partition (except dropped voxels); an independent "
    "step-by-step propagation agrees with label_components(backend='maxpool') in counts and convergence",
)
def _maxpool_converged(c: CheckContext) -> tuple[bool, str]:
    c.stress()
    parts, ok = [], True
    for r in c.cache["stress"]:
        same = r["same_partition"] and r["maxpool"][r["need"]]["converged"] and r["curve_agrees"]
        ok &= same
        parts.append(f"{r['shape']}: {r['need']} it, same partition {same}")
    return ok, "; ".join(parts)


@check("maxpool_corner", "Max-pool labelling drops the flat-index-0 corner voxel; exact keeps it")
def _maxpool_corner(c: CheckContext) -> tuple[bool, str]:
    r = c.stress()["corner_voxel"]
    counts = [r["maxpool"][it]["count"] for it in (*MAXPOOL_ITERS, r["need"])]
    ok = r["exact"] == 2**2 and all(n == r["exact"] - 1 for n in counts) and r["dropped"] == 1
    return ok, f"exact: {r['exact']}; max-pool (any iterations): {sorted(set(counts))}; dropped {r['dropped']}"


@check("diagonal_connectivity", "Diagonal line: 1 component (full), one per voxel (face)")
def _diagonal_connectivity(c: CheckContext) -> tuple[bool, str]:
    r = c.stress()["diagonal_line"]
    return r["exact"] == 1 and r["exact_face"] == r["voxels"], (
        f"full connectivity: {r['exact']} component; face connectivity: {r['exact_face']} (= {r['voxels']} voxels)"
    )
