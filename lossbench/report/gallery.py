r"""Synthetic sanity-check gallery: what every loss term sees and moves, on small hand-made scenes.

``write_gallery(out)`` (``lossbench gallery --out DIR``) writes ``gallery.md``, ``gallery.html`` (jinja2, autoescaped,
images referenced relatively), ``checks.json`` and PNG figures under ``out/img/``:

1. **Scenes**: every scene of :mod:`lossbench.data.scenes` (probabilities with the label outline).
2. **Figure 1** (ICI paper): for each label instance, the voxels that ICI's instance term uses and the voxels that
   the blob loss uses. The voxel sets are derived from the definitions (REFERENCE.md sections 2 and 5) with
   :func:`lossbench.cc.label_components`: ICI's masked output for instance n is ``p`` on the prediction components
   (``p >= 0.5``) that share a voxel with n; blob's is ``p`` on n and on every background voxel. Per-instance Dice
   values computed from these sets are checked against the losses' own instance/blob terms, so the picture and
   the loss cannot silently disagree. A second figure shows the actual gradients of the terms.
3. **Figure 4**: the weight each ``tp_mode`` gives the voxels of a prediction bridging two label instances, with
   the instance-term values (again cross-checked against the loss).
4. **Centre-of-instance transform**: label and prediction cubes (REFERENCE.md section 3: centre ``ceil(mean) - 1``,
   half width ``ceil(size_axis / max(size) * offset)``, border truncation), 2D and a 3D max-projection; the Dice
   of the drawn cube maps is checked against the reference centre term.
5. **Exact vs reference max-pool labelling** on the stress shapes: where the fixed-iteration propagation splits an
   object or drops the flat-index-0 corner voxel, and after how many iterations it converges.
6. **Every loss term on every scene** (probabilities in, ``sigmoid=False``).
7. **Gradient audit** of the Figure 1 scene (:mod:`lossbench.audit`).
8. **Expectation checks**, each computed (never hard-coded) and printed PASS/FAIL.

All numbers use float64 probabilities and the losses' defaults unless a panel says otherwise.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lossbench.errors import expect

__all__ = ["Check", "write_gallery", "run_checks", "GALLERY_COMMAND"]

GALLERY_COMMAND = ".venv/bin/python -m lossbench gallery --out reports/gallery"
"""The command that regenerates the committed gallery (run from the repository root)."""

_EPS = 1e-5  # MONAI DiceLoss smoothing (smooth_nr = smooth_dr), the default of every Dice-based term
_CUBE = 7  # default ICI cube side
_REF_CUBE = 1.0 + 1e-7  # the reference code's constant cube value
_MAXPOOL_ITERS = (20, 250, 350)  # few; the paper's patch setting; the reference class default
_STRESS = ("serpentine", "spiral", "diagonal_line", "corner_voxel")
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
class _Section:
    anchor: str
    title: str
    text: list[str] = field(default_factory=list)
    figures: list[dict[str, str]] = field(default_factory=list)
    tables: list[dict[str, Any]] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------- computations


def _dice(inter: float, pred_sum: float, ground: float) -> float:
    """MONAI DiceLoss of one entry from its sums: ``1 - (2 I + eps) / (P + G + eps)``."""
    return 1.0 - (2.0 * inter + _EPS) / (pred_sum + ground + _EPS)


def _terms(scene, name: str, **params: Any) -> dict[str, float]:
    """Every term of a loss on a scene (probabilities in, float64), as floats."""
    import torch

    from lossbench.losses import build_loss

    x = torch.from_numpy(scene.pred.astype(np.float64))[None, None]
    y = torch.from_numpy(scene.label.astype(np.float64))[None, None]
    with torch.no_grad():
        out = build_loss(name, sigmoid=False, **params).terms(x, y)
    return {k: float(v) for k, v in out.items()}


def _label(mask: np.ndarray, connectivity: int | None = None) -> np.ndarray:
    from lossbench.cc import label_components

    return label_components(np.ascontiguousarray(mask)[None], connectivity=connectivity).labels[0]


def _instance_sets(scene) -> dict[str, Any]:
    """Label instances, prediction components and which touch which (the masks of the Figure 1/4 panels)."""
    lab = _label(scene.label > 0.5)
    comp = _label(scene.pred >= 0.5)
    n_l, n_p = int(lab.max()), int(comp.max())
    touch = np.zeros((n_l + 1, n_p + 1), dtype=bool)
    both = (lab > 0) & (comp > 0)
    touch[lab[both], comp[both]] = True
    return {"lab": lab, "comp": comp, "n_l": n_l, "n_p": n_p, "touch": touch}


def _ici_masks(sets: dict[str, Any], n: int) -> np.ndarray:
    """Voxels of the prediction components touching label instance ``n`` (REFERENCE.md section 2)."""
    ms = np.nonzero(sets["touch"][n])[0]
    return np.isin(sets["comp"], ms[ms > 0])


def _per_instance_figure1(scene) -> list[dict[str, Any]]:
    """Per label instance: voxel counts of each panel colour and the Dice of ICI (keep) and blob from the sets."""
    sets = _instance_sets(scene)
    lab, p = sets["lab"], scene.pred.astype(np.float64)
    pred_mask = scene.pred >= 0.5
    bg = lab == 0
    rows = []
    for n in range(1, sets["n_l"] + 1):
        inst = lab == n
        used = _ici_masks(sets, n)
        ici = _dice(p[inst & used].sum(), p[used].sum(), inst.sum())
        blob = _dice(p[inst].sum(), p[inst].sum() + p[bg].sum(), inst.sum())
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
                "blob": blob,
            }
        )
    return rows


def _tp_weights(scene, n: int, mode: str, sets: dict[str, Any]) -> np.ndarray:
    """The factor ``w`` with ``out_n = p * w`` for label instance ``n`` under ``tp_mode`` (REFERENCE.md section 2).

    keep: 1 on the touching components; remove: 1 there except on other label instances (Eq. 5);
    remove_detached: 1 on instance n, the detached probability on background voxels, 0 on other instances.
    """
    used = _ici_masks(sets, n).astype(np.float64)
    lab = sets["lab"]
    if mode == "keep":
        return used
    other = (lab > 0) & (lab != n)
    if mode == "remove":
        return used * ~other
    return used * np.where(lab == n, 1.0, np.where(lab == 0, scene.pred.astype(np.float64), 0.0))


def _tp_instance_value(scene, mode: str) -> tuple[float, list[float]]:
    """Instance term from the ``tp_mode`` weights: mean over label instances of ``Dice(p * w_n, [n])``."""
    sets = _instance_sets(scene)
    p = scene.pred.astype(np.float64)
    vals = []
    for n in range(1, sets["n_l"] + 1):
        inst = sets["lab"] == n
        w = _tp_weights(scene, n, mode, sets)
        vals.append(_dice((p * w)[inst].sum(), (p * w).sum(), inst.sum()))
    return float(np.mean(vals)), vals


def _cube_maps(mask_labels: np.ndarray, cube_size: int = _CUBE) -> tuple[np.ndarray, list[tuple]]:
    """Union of the reference centre cubes of every component (REFERENCE.md section 3) and their extents.

    Centre ``c = ceil(mean index)`` per axis; the cube covers ``c - h - 1 .. c + h - 1`` (inclusive), with
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


def _center_reference_value(label_cubes: np.ndarray, pred_cubes: np.ndarray) -> float:
    """Reference centre term from the cube maps: Dice of the constant ``1 + 1e-7`` maps."""
    x = pred_cubes.astype(np.float64) * _REF_CUBE
    y = label_cubes.astype(np.float64) * _REF_CUBE
    return _dice((x * y).sum(), x.sum(), y.sum())


def _maxpool_count(mask: np.ndarray, iters: int) -> tuple[int, bool, np.ndarray]:
    from lossbench.cc import label_components

    res = label_components(np.ascontiguousarray(mask)[None], backend="maxpool", num_iterations=int(iters))
    return int(res.counts[0]), bool(res.converged[0]), res.labels[0]


def _propagation_curve(mask: np.ndarray, limit: int = 1 << 16) -> tuple[np.ndarray, int]:
    """Run the max-pool propagation step by step until it is stable; count the ids after every step.

    An independent re-run of REFERENCE.md section 1 (ids = flat index on the foreground, then repeated
    3x3(x3) max-pooling masked to the foreground), used for the "when" plot and to find the iteration count
    at which the reference labelling converges; the gallery checks it against
    ``label_components(..., backend="maxpool")``.

    Args:
        mask: bool array without batch axis (2 or 3 dims).
        limit: give up after this many steps.

    Returns:
        ``(counts, need)``: ``counts[k]`` = number of distinct non-zero ids after ``k`` steps (``k = 0 .. need``)
        and ``need``, the smallest ``k`` after which one more step changes nothing.
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


def _iterations_to_converge(mask: np.ndarray) -> int:
    """Smallest number of max-pool iterations after which the propagation has converged."""
    return _propagation_curve(mask)[1]


def _stress_rows(size: int | None = None) -> list[dict[str, Any]]:
    """Exact vs max-pool labelling on the stress scenes (counts, convergence, dropped voxels)."""
    from lossbench.data.scenes import get_scene

    rows = []
    for name in _STRESS:
        mask = get_scene(name, 2, size).label > 0.5
        exact = _label(mask)
        face = _label(mask, connectivity=1)
        curve, need = _propagation_curve(mask)
        row: dict[str, Any] = {
            "shape": name,
            "mask": mask,
            "voxels": int(mask.sum()),
            "exact": int(exact.max()),
            "exact_face": int(face.max()),
            "exact_labels": exact,
            "need": need,
            "curve": curve,
            "maxpool": {},
        }
        for it in (*_MAXPOOL_ITERS, need):
            count, conv, labels = _maxpool_count(mask, it)
            row["maxpool"][it] = {"count": count, "converged": conv, "labels": labels}
            # the independent step-by-step run must agree with label_components(backend="maxpool")
            row.setdefault("curve_agrees", True)
            row["curve_agrees"] &= count == int(curve[min(it, need)]) and conv == (it >= need)
        conv_labels = row["maxpool"][need]["labels"]
        row["dropped"] = int((mask & (conv_labels == 0)).sum())
        row["same_partition"] = _same_partition(exact, conv_labels)
        rows.append(row)
    return rows


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two labellings define the same components on the voxels ``b`` labels (ids may differ)."""
    m = b > 0
    pairs = np.unique(np.stack([a[m], b[m]]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def _without_spurious(scene):
    """Figure 1 scene with its spurious prediction components (touching no label) set to the background value."""
    from lossbench.audit import scene_regions
    from lossbench.data.scenes import BACKGROUND, Scene

    spur = scene_regions(scene)["spurious"]
    pred = np.where(spur, np.float32(BACKGROUND), scene.pred).astype(np.float32)
    return Scene(scene.name + "_no_spurious", scene.label, pred, "Figure 1 without its spurious blobs."), spur


# ------------------------------------------------------------------------------------------------------ checks


def run_checks(context: dict[str, Any] | None = None) -> list[Check]:
    """Compute every expectation check of the gallery (2D scenes, default sizes).

    Args:
        context: optional cache of intermediate results shared with the figures (filled in place).

    Returns:
        One :class:`Check` per expectation, in gallery order.
    """
    from lossbench.audit import term_gradient_map
    from lossbench.data.scenes import get_scene

    ctx = {} if context is None else context
    checks: list[Check] = []

    def add(name: str, expectation: str, fn: Callable[[], tuple[bool, str]]) -> None:
        try:
            ok, detail = fn()
        except Exception as exc:  # a crash is a failed expectation, reported with its message
            ok, detail = False, f"raised {type(exc).__name__}: {exc}"
        checks.append(Check(name, expectation, bool(ok), detail))

    fig1 = get_scene("figure1")
    bridge = get_scene("figure4_bridge")
    missed = get_scene("missed_small")
    perfect = get_scene("perfect")
    no_spur, spur = _without_spurious(fig1)

    def c_spurious_blob() -> tuple[bool, str]:
        a, b = _terms(fig1, "blob")["blob"], _terms(no_spur, "blob")["blob"]
        return a > b, f"blob term {a:.4f} with the 5 spurious blobs vs {b:.4f} without"

    def c_spurious_ici() -> tuple[bool, str]:
        parts, ok = [], True
        for tp in ("keep", "remove", "remove_detached"):
            a = _terms(fig1, "ici", tp_mode=tp)["instance"]
            b = _terms(no_spur, "ici", tp_mode=tp)["instance"]
            ok &= abs(a - b) <= 1e-12
            parts.append(f"{tp}: {a:.6f} vs {b:.6f}")
        return ok, "ICI instance term with vs without spurious blobs: " + "; ".join(parts)

    def c_spurious_grad() -> tuple[bool, str]:
        _, g_ici = term_gradient_map(fig1, "ici", "instance", reference=True)
        _, g_blob = term_gradient_map(fig1, "blob", "blob")
        ici_nz, blob_nz = int((g_ici[spur] != 0).sum()), int((g_blob[spur] != 0).sum())
        n = int(spur.sum())
        return ici_nz == 0 and blob_nz == n, (
            f"spurious voxels with non-zero gradient: ICI instance term {ici_nz}/{n}, blob term {blob_nz}/{n}"
        )

    def c_panel_fig1() -> tuple[bool, str]:
        rows = _per_instance_figure1(fig1)
        ici = float(np.mean([r["ici"] for r in rows]))
        blob = float(np.mean([r["blob"] for r in rows]))
        li = _terms(fig1, "ici", tp_mode="keep")["instance"]
        lb = _terms(fig1, "blob")["blob"]
        ctx["fig1_rows"] = rows
        ok = abs(ici - li) < 1e-9 and abs(blob - lb) < 1e-9
        return ok, f"from the panel's voxel sets: ICI {ici:.6f} (loss {li:.6f}), blob {blob:.6f} (loss {lb:.6f})"

    def c_tp_keep_vs_remove() -> tuple[bool, str]:
        vals = {tp: _terms(bridge, "ici", tp_mode=tp)["instance"] for tp in ("keep", "remove", "remove_detached")}
        ctx["tp_loss"] = vals
        ok = vals["remove"] < vals["keep"] and vals["remove_detached"] < vals["keep"]
        return ok, ", ".join(f"{k}: {v:.4f}" for k, v in vals.items())

    def c_panel_fig4() -> tuple[bool, str]:
        vals = ctx.get("tp_loss") or {
            tp: _terms(bridge, "ici", tp_mode=tp)["instance"] for tp in ("keep", "remove", "remove_detached")
        }
        own = {tp: _tp_instance_value(bridge, tp)[0] for tp in vals}
        ok = all(abs(own[tp] - vals[tp]) < 1e-9 for tp in vals)
        return ok, ", ".join(f"{tp}: panel {own[tp]:.6f} / loss {vals[tp]:.6f}" for tp in vals)

    def c_ref_center_zero() -> tuple[bool, str]:
        parts, ok = [], True
        for sc in (fig1, bridge, missed):
            v, g = term_gradient_map(sc, "ici", "center", reference=True)
            norm = float(np.sqrt((g**2).sum()))
            ok &= norm == 0.0
            parts.append(f"{sc.name}: value {v:.4f}, |grad| {norm:.3g}")
        return ok, "; ".join(parts)

    def c_trainable_center_moves() -> tuple[bool, str]:
        v, g = term_gradient_map(fig1, "ici", "center", center_mode="trainable")
        norm = float(np.sqrt((g**2).sum()))
        spur_nz = int((g[spur] != 0).sum())
        pushes_down = bool((g[spur] > 0).all())  # descent lowers p where the gradient is positive
        return norm > 0 and spur_nz == int(spur.sum()) and pushes_down, (
            f"figure1: value {v:.4f}, |grad| {norm:.3g}, non-zero on {spur_nz}/{int(spur.sum())} spurious voxels, "
            f"all of them pushed down: {pushes_down}"
        )

    def c_trainable_center_perfect() -> tuple[bool, str]:
        v, g = term_gradient_map(perfect, "ici", "center", center_mode="trainable")
        norm = float(np.sqrt((g**2).sum()))
        return norm == 0.0 and abs(v) < 1e-9, f"perfect scene: value {v:.3g}, |grad| {norm:.3g}"

    def c_missed_zero_grad() -> tuple[bool, str]:
        lab = _label(missed.label > 0.5)
        sizes = np.bincount(lab.ravel())[1:]
        small = lab == (int(np.argmin(sizes)) + 1)
        _, g = term_gradient_map(missed, "ici", "instance", reference=True)
        nz = int((g[small] != 0).sum())
        is_missed = not bool((missed.pred[small] >= 0.5).any())
        return nz == 0 and is_missed, (
            f"missed instance ({int(small.sum())} voxels, max p {float(missed.pred[small].max()):.2f}): "
            f"{nz} voxels with non-zero reference instance-term gradient"
        )

    def c_perfect_all() -> tuple[bool, str]:
        from lossbench.audit import audit_variants

        worst, who = 0.0, ""
        for var in audit_variants():
            t = _terms(perfect, var.name, **var.params)["total"]
            if abs(t) >= abs(worst):
                worst, who = t, var.label
        return abs(worst) < 1e-6, f"largest |total| over {len(audit_variants())} loss variants: {worst:.3g} ({who})"

    def c_center_panel() -> tuple[bool, str]:
        parts, ok = [], True
        for dims in (2, 3):
            sc = get_scene("figure1", dims)
            lc, _ = _cube_maps(_label(sc.label > 0.5))
            pc, _ = _cube_maps(_label(sc.pred >= 0.5))
            own = _center_reference_value(lc, pc)
            loss = _terms(sc, "ici", reference=True)["center"]
            ok &= abs(own - loss) < 1e-9
            parts.append(f"{dims}D: cubes drawn {own:.6f} / loss {loss:.6f}")
        return ok, "; ".join(parts)

    try:
        stress = ctx.get("stress") or _stress_rows()
        ctx["stress"] = stress
        by = {r["shape"]: r for r in stress}
        stress_error = ""
    except Exception as exc:  # every labelling check then FAILs with this message
        stress, by, stress_error = [], {}, f"{type(exc).__name__}: {exc}"

    def need_stress() -> None:
        if stress_error:
            raise RuntimeError(f"labelling stress rows failed: {stress_error}")

    def c_spiral_split() -> tuple[bool, str]:
        need_stress()
        r = by["spiral"]
        few = min(_MAXPOOL_ITERS)
        ok = r["exact"] == 1 and all(r["maxpool"][it]["count"] > 1 for it in _MAXPOOL_ITERS if it < r["need"])
        ok &= r["maxpool"][few]["count"] > 1
        counts = ", ".join(f"{it} it: {r['maxpool'][it]['count']}" for it in _MAXPOOL_ITERS)
        return ok, f"exact: {r['exact']} component; max-pool {counts}; converges after {r['need']} iterations"

    def c_serpentine_split() -> tuple[bool, str]:
        need_stress()
        r = by["serpentine"]
        c350 = r["maxpool"][350]["count"]
        return r["exact"] == 1 and c350 > 1 and r["need"] > 350, (
            f"exact: {r['exact']}; max-pool at 350 iterations (reference default): {c350} pieces; "
            f"needs {r['need']} iterations"
        )

    def c_converged_equal() -> tuple[bool, str]:
        need_stress()
        parts, ok = [], True
        for r in stress:
            same = r["same_partition"] and r["maxpool"][r["need"]]["converged"] and r["curve_agrees"]
            ok &= same
            parts.append(f"{r['shape']}: {r['need']} it, same partition {same}")
        return ok, "; ".join(parts)

    def c_corner() -> tuple[bool, str]:
        need_stress()
        r = by["corner_voxel"]
        counts = [r["maxpool"][it]["count"] for it in (*_MAXPOOL_ITERS, r["need"])]
        ok = r["exact"] == 2**2 and all(c == r["exact"] - 1 for c in counts) and r["dropped"] == 1
        return ok, f"exact: {r['exact']}; max-pool (any iterations): {sorted(set(counts))}; dropped {r['dropped']}"

    def c_diagonal() -> tuple[bool, str]:
        need_stress()
        r = by["diagonal_line"]
        return r["exact"] == 1 and r["exact_face"] == r["voxels"], (
            f"full connectivity: {r['exact']} component; face connectivity: {r['exact_face']} (= {r['voxels']} voxels)"
        )

    add("spurious_blob", "Far spurious blobs raise the blob term (Figure 1D)", c_spurious_blob)
    add("spurious_ici", "Far spurious blobs leave the ICI instance term unchanged (every tp_mode)", c_spurious_ici)
    add(
        "spurious_gradient",
        "Spurious voxels: zero gradient from the ICI instance term, non-zero from the blob term",
        c_spurious_grad,
    )
    add("figure1_panel", "Figure 1 panel voxel sets reproduce the ICI (keep) instance and blob terms", c_panel_fig1)
    add("tp_bridge", "-TP < TP on the bridge: remove and remove_detached below keep (Figure 4)", c_tp_keep_vs_remove)
    add("figure4_panel", "Figure 4 panel weights reproduce the instance term of every tp_mode", c_panel_fig4)
    add("reference_center_zero", "Reference centre term has identically zero gradient", c_ref_center_zero)
    add(
        "trainable_center_moves",
        "Trainable centre term has a gradient that pushes every spurious-component voxel down",
        c_trainable_center_moves,
    )
    add(
        "trainable_center_perfect",
        "Trainable centre term is 0 with zero gradient when prediction equals label",
        c_trainable_center_perfect,
    )
    add(
        "missed_instance_zero_grad",
        "A missed instance gets zero gradient from the reference instance term (REFERENCE.md section 2)",
        c_missed_zero_grad,
    )
    add("perfect_zero", "Perfect prediction gives ~0 for every loss variant", c_perfect_all)
    add("center_panel", "Drawn centre cubes reproduce the reference centre term (2D and 3D)", c_center_panel)
    add("maxpool_spiral", "Max-pool labelling with few iterations splits the spiral; exact does not", c_spiral_split)
    add(
        "maxpool_serpentine",
        "Max-pool labelling at the reference default (350) splits the serpentine",
        c_serpentine_split,
    )
    add(
        "maxpool_converged",
        "Converged max-pool labelling gives exact's partition (except dropped voxels); an independent "
        "step-by-step propagation agrees with label_components(backend='maxpool') in counts and convergence",
        c_converged_equal,
    )
    add("maxpool_corner", "Max-pool labelling drops the flat-index-0 corner voxel; exact keeps it", c_corner)
    add("diagonal_connectivity", "Diagonal line: 1 component (full), one per voxel (face)", c_diagonal)
    return checks


# ----------------------------------------------------------------------------------------------------- figures


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path, name: str) -> str:
    path = out / "img" / name
    fig.savefig(path, dpi=_DPI, bbox_inches="tight", metadata={"Software": None})
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


def _fig_scenes(out: Path, scenes) -> str:
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


def _fig_figure1(out: Path, scene) -> tuple[str, str]:
    plt = _plt()
    sets = _instance_sets(scene)
    lab, comp, touch = sets["lab"], sets["comp"], sets["touch"]
    pred_mask = scene.pred >= 0.5
    bg = lab == 0
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
    scene_png = _save(fig, out, "figure1_scene.png")

    n_l = sets["n_l"]
    fig, axes = plt.subplots(2, n_l, figsize=(2.3 * n_l, 5.4))
    for n in range(1, n_l + 1):
        inst = lab == n
        other = (lab > 0) & ~inst
        used = _ici_masks(sets, n)
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
    return scene_png, _save(fig, out, "figure1_instances.png")


def _fig_gradients(out: Path, scene) -> tuple[str, list[list[str]]]:
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


def _fig_bridge(out: Path, scene) -> tuple[str, list[list[str]]]:
    plt = _plt()
    sets = _instance_sets(scene)
    lab = sets["lab"]
    p = scene.pred.astype(np.float64)
    modes = ("keep", "remove", "remove_detached")
    n_l = sets["n_l"]
    fig, axes = plt.subplots(n_l, len(modes) + 1, figsize=(3.3 * (len(modes) + 1), 3.0 * n_l + 0.6))
    loss_vals = {tp: _terms(scene, "ici", tp_mode=tp)["instance"] for tp in modes}
    rows = []
    im = None
    for j, tp in enumerate(modes):
        own, per = _tp_instance_value(scene, tp)
        rows.append([tp, *[f"{v:.4f}" for v in per], f"{own:.4f}", f"{loss_vals[tp]:.4f}"])
        for n in range(1, n_l + 1):
            ax = axes[n - 1, j]
            w = _tp_weights(scene, n, tp, sets)
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


def _fig_center(out: Path) -> tuple[str, list[list[str]]]:
    from lossbench.data.scenes import get_scene

    plt = _plt()
    fig, axes = plt.subplots(2, 3, figsize=(11.5, 7.8))
    rows = []
    for r, dims in enumerate((2, 3)):
        sc = get_scene("figure1", dims)
        lab, comp = _label(sc.label > 0.5), _label(sc.pred >= 0.5)
        lc, lboxes = _cube_maps(lab)
        pc, pboxes = _cube_maps(comp)
        own = _center_reference_value(lc, pc)
        t_ref = _terms(sc, "ici", reference=True)["center"]
        t_tr = _terms(sc, "ici", center_mode="trainable")["center"]
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
        f"Centre-of-instance transform, cube side {_CUBE} (centre ceil(mean) - 1, truncated at the border)",
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


def _fig_stress(out: Path, stress: list[dict[str, Any]]) -> tuple[str, str]:
    plt = _plt()
    cols = 2 + len(_MAXPOOL_ITERS)
    fig, axes = plt.subplots(len(stress), cols, figsize=(2.7 * cols, 2.9 * len(stress)))
    for i, r in enumerate(stress):
        panels = [("exact (cc3d)", r["exact_labels"], r["exact"], True)]
        for it in (*_MAXPOOL_ITERS, r["need"]):
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
    grid_png = _save(fig, out, "labelling_stress.png")

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
    for it in _MAXPOOL_ITERS:
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
    return grid_png, _save(fig, out, "labelling_iterations.png")


# ------------------------------------------------------------------------------------------------------ tables


def _terms_table(scenes) -> dict[str, Any]:
    from lossbench.audit import audit_variants

    header = ["loss", "term", *[sc.name for sc in scenes]]
    rows = []
    for var in audit_variants():
        per_scene = [_terms(sc, var.name, **var.params) for sc in scenes]
        for term in per_scene[0]:
            vals = [d[term] for d in per_scene]
            rows.append([var.label, term, *[f"{(v if abs(v) >= 5e-5 else 0.0):.4f}" for v in vals]])
    return {
        "caption": "Every term of every loss variant on every 2D scene (probabilities in, sigmoid=False, defaults; "
        "ici[reference] = reference=True, ici[MODE,trainable] = that tp_mode with center_mode='trainable').",
        "header": header,
        "rows": rows,
        "numeric_from": 2,
    }


def _audit_section_table() -> dict[str, Any]:
    from lossbench.audit import GRADIENT_NOTE, REGIONS, audit_table, format_rows

    rows = format_rows(audit_table(scenes=["figure1"]))
    return {
        "caption": "Gradient audit on figure1. " + GRADIENT_NOTE,
        "header": ["loss", "term", "value", "grad L2", *[f"nz {g}" for g in REGIONS]],
        "rows": rows,
        "numeric_from": 2,
    }


# ----------------------------------------------------------------------------------------------------- render


def _versions() -> dict[str, str]:
    import matplotlib
    import torch

    import lossbench

    return {"lossbench": lossbench.__version__, "torch": torch.__version__, "matplotlib": matplotlib.__version__}


def _render(template: str, **data: Any) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("lossbench.report", "templates"),
        autoescape=template.endswith(".html.j2"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return env.get_template(template).render(**data)


def write_gallery(out: str | Path = "reports/gallery") -> Path:
    """Generate the synthetic sanity-check gallery into ``out`` (``lossbench gallery``).

    Writes ``gallery.md``, ``gallery.html`` (images referenced relatively as ``img/*.png``), ``checks.json`` (every
    expectation check with its status and numbers) and the PNG figures under ``out/img/``. Existing files of
    the same names are overwritten; nothing else in ``out`` is touched.

    Args:
        out: output folder (created if needed).

    Returns:
        Path of ``gallery.md`` (``gallery.html`` lies next to it).

    Raises:
        ConfigError: if ``out`` exists and is not a folder.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise expect("out", "a folder (or a path that does not exist yet)", f"the file {str(out)!r}")
    (out / "img").mkdir(parents=True, exist_ok=True)

    from lossbench.data.scenes import all_scenes, get_scene

    ctx: dict[str, Any] = {}
    checks = run_checks(ctx)
    scenes = all_scenes(2)
    fig1 = get_scene("figure1")
    sections: list[_Section] = []

    s = _Section("scenes", "1. Scenes")
    s.text.append(
        "Each scene is a label and a probability map (2D, 64x64; 3D versions are the thick counterparts). "
        "Prediction instances are the connected components of p >= 0.5 (full connectivity)."
    )
    s.figures.append({"src": _fig_scenes(out, scenes), "alt": "scenes", "caption": "The 2D scenes."})
    s.tables.append(
        {
            "caption": "Scenes",
            "header": ["scene", "description"],
            "rows": [[sc.name, sc.description] for sc in scenes],
            "numeric_from": 99,
        }
    )
    sections.append(s)

    s = _Section("figure1", "2. Figure 1: which voxels the ICI instance term and the blob loss use")
    s.text.append(
        "Derived from the definitions (REFERENCE.md sections 2 and 5), not from gradients: for label instance n, "
        "ICI's instance term uses p on the prediction components (p >= 0.5) that share at least one voxel with n; "
        "the blob loss uses p on n and on every background voxel (other label instances masked out). The panels "
        "colour the voxels at p >= 0.5; the losses use the probabilities, so the blob loss additionally counts "
        "the sub-threshold probability mass of the whole background. The per-instance Dice values in the table "
        "are computed from these voxel sets and checked against the losses (check figure1_panel)."
    )
    scene_png, inst_png = _fig_figure1(out, fig1)
    s.figures.append({"src": scene_png, "alt": "figure1 label and output", "caption": "A: label; B: output."})
    s.figures.append(
        {
            "src": inst_png,
            "alt": "figure1 per-instance voxels",
            "caption": "C: ICI instance term (only components touching the instance); D: blob loss (every "
            "predicted voxel outside the other instances). White correct, magenta/yellow the false voxels counted.",
        }
    )
    rows1 = ctx.get("fig1_rows") or _per_instance_figure1(fig1)
    s.tables.append(
        {
            "caption": "Per label instance: voxels and Dice loss of ICI (tp_mode=keep) and blob, from the panel's sets",
            "header": [
                "instance",
                "voxels",
                "touching comps",
                "TP (p>=0.5)",
                "false voxels ICI",
                "false voxels blob",
                "of which blob only",
                "ICI Dice loss",
                "blob Dice loss",
            ],
            "rows": [
                [
                    f"L{r['n']}",
                    r["size"],
                    r["touching"],
                    r["tp"],
                    r["fp_ici"],
                    r["fp_blob"],
                    r["fp_blob_only"],
                    f"{r['ici']:.4f}",
                    f"{r['blob']:.4f}",
                ]
                for r in rows1
            ],
            "numeric_from": 1,
        }
    )
    grad_png, grad_rows = _fig_gradients(out, fig1)
    s.figures.append(
        {
            "src": grad_png,
            "alt": "figure1 gradients",
            "caption": "Where each term actually pushes (from autograd, lossbench.audit.term_gradient_map).",
        }
    )
    s.tables.append(
        {
            "caption": "Gradients of the terms shown above (w.r.t. probabilities)",
            "header": ["term", "value", "grad L2", "voxels with non-zero gradient"],
            "rows": grad_rows,
            "numeric_from": 1,
        }
    )
    sections.append(s)

    s = _Section("figure4", "3. Figure 4: TP vs -TP on a bridge")
    s.text.append(
        "One prediction component bridges two label instances. For instance n the masked output is p * w: "
        "keep (Eq. 3) w = 1 on the whole touching component, so the part inside the other instance is a false "
        "positive; remove (Eq. 5) w = 0 on the other instance; remove_detached (public code) w = 0 on the other "
        "instance and w = stopgrad(p) on background voxels (value p^2, gradient p dp)."
    )
    png, rows4 = _fig_bridge(out, get_scene("figure4_bridge"))
    s.figures.append({"src": png, "alt": "figure4 tp modes", "caption": "Masked output per tp_mode and instance."})
    s.tables.append(
        {
            "caption": "Instance Dice loss per label instance and the instance term (panel formula vs the loss)",
            "header": ["tp_mode", "L1", "L2", "mean (panel)", "instance term (loss)"],
            "rows": rows4,
            "numeric_from": 1,
        }
    )
    sections.append(s)

    s = _Section("center", "4. Centre-of-instance transform")
    s.text.append(
        f"Every label instance and every prediction component becomes a {_CUBE}-voxel cube at its centre "
        "(REFERENCE.md section 3: ceil(mean index) - 1 per axis, half width ceil(size_axis / max(size) * 3), "
        "truncated at the border). The reference term is the Dice between the two constant cube maps, so its "
        "gradient is identically zero; lossbench's trainable mode fills misplaced prediction cubes with the "
        "component's mean probability instead (see the gradients in section 2)."
    )
    png, rows_c = _fig_center(out)
    s.figures.append({"src": png, "alt": "centre transform", "caption": "Cubes in 2D and a 3D max-projection."})
    s.tables.append(
        {
            "caption": "Centre term on figure1",
            "header": [
                "scene",
                "label cubes",
                "prediction cubes",
                "Dice of drawn cubes",
                "centre term (reference)",
                "centre term (trainable)",
            ],
            "rows": rows_c,
            "numeric_from": 1,
        }
    )
    sections.append(s)

    s = _Section("labelling", "5. Exact labelling vs the reference max-pool labelling")
    s.text.append(
        "The reference code labels components by max-pool propagation for a fixed number of iterations (paper: "
        "250 for 96^3 patches, class default 350) without a convergence test. A component whose in-component "
        "geodesic distance exceeds the iteration count is split; a component made only of the flat-index-0 voxel "
        "keeps id 0 and is dropped. lossbench labels exactly (cc3d / scipy / torch)."
    )
    stress = ctx.get("stress") or _stress_rows()
    grid_png, it_png = _fig_stress(out, stress)
    s.figures.append({"src": grid_png, "alt": "labelling stress shapes", "caption": "Where the reference splits."})
    s.figures.append({"src": it_png, "alt": "components vs iterations", "caption": "When the reference is right."})
    s.tables.append(
        {
            "caption": "Components found (2D, 64x64)",
            "header": [
                "shape",
                "voxels",
                "exact (full)",
                "exact (face)",
                *[f"max-pool {it} it" for it in _MAXPOOL_ITERS],
                "iterations to converge",
                "voxels dropped",
            ],
            "rows": [
                [
                    r["shape"],
                    r["voxels"],
                    r["exact"],
                    r["exact_face"],
                    *[r["maxpool"][it]["count"] for it in _MAXPOOL_ITERS],
                    r["need"],
                    r["dropped"],
                ]
                for r in stress
            ],
            "numeric_from": 1,
        }
    )
    sections.append(s)

    s = _Section("terms", "6. Every loss term on every scene")
    s.tables.append(_terms_table(scenes))
    sections.append(s)

    s = _Section("audit", "7. Gradient audit (figure1)")
    s.text.append("Full audit on more scenes: `lossbench audit --out DIR`.")
    s.tables.append(_audit_section_table())
    sections.append(s)

    n_pass = sum(c.passed for c in checks)
    data = {
        "title": "lossbench synthetic sanity-check gallery",
        "command": GALLERY_COMMAND,
        "versions": _versions(),
        "sections": sections,
        "checks": checks,
        "n_pass": n_pass,
        "n_checks": len(checks),
    }
    (out / "gallery.html").write_text(_render("gallery.html.j2", **data), encoding="utf-8")
    md = out / "gallery.md"
    md.write_text(_render("gallery.md.j2", **data), encoding="utf-8")
    (out / "checks.json").write_text(
        json.dumps(
            {"schema_version": 1, "passed": n_pass, "total": len(checks), "checks": [asdict(c) for c in checks]},
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    return md
