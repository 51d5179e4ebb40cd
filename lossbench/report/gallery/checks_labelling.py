"""The gallery's labelling checks: exact labelling against the public ICI code's and kornia's iterative max-pooling."""

from __future__ import annotations

from typing import Any

import numpy as np

from lossbench.report.gallery.labelling import KORNIA_DEFAULT, MAXPOOL_ITERS, kornia_rows, stress_rows
from lossbench.report.gallery.registry import CheckContext, check

__all__: list[str] = []


def _stress(c: CheckContext) -> dict[str, dict[str, Any]]:
    """Stress rows by shape; raises if computing them failed (every labelling check then FAILs)."""
    return {r["shape"]: r for r in c.get("stress", stress_rows)}


def _kornia(c: CheckContext) -> dict[str, dict[str, Any]]:
    rows = c.get("stress", stress_rows)
    return c.get("kornia", lambda: kornia_rows(rows))


@check("maxpool_spiral", "The public code's max-pool labelling with few iterations splits the spiral; exact does not")
def _maxpool_spiral(c: CheckContext) -> tuple[bool, str]:
    r = _stress(c)["spiral"]
    few = min(MAXPOOL_ITERS)
    ok = r["exact"] == 1 and all(r["maxpool"][it]["count"] > 1 for it in MAXPOOL_ITERS if it < r["need"])
    ok &= r["maxpool"][few]["count"] > 1
    counts = ", ".join(f"{it} iterations: {r['maxpool'][it]['count']}" for it in MAXPOOL_ITERS)
    return ok, f"exact: {r['exact']} component; max-pool {counts}; converges after {r['need']} iterations"


@check(
    "maxpool_serpentine", "The public code's max-pool labelling at its default (350 iterations) splits the serpentine"
)
def _maxpool_serpentine(c: CheckContext) -> tuple[bool, str]:
    r = _stress(c)["serpentine"]
    c350 = r["maxpool"][350]["count"]
    return r["exact"] == 1 and c350 > 1 and r["need"] > 350, (
        f"exact: {r['exact']}; max-pool at 350 iterations (the public code's default): {c350} pieces; "
        f"needs {r['need']} iterations"
    )


@check(
    "maxpool_converged",
    "Converged max-pool labelling gives exact's partition (except dropped voxels); an independent "
    "step-by-step propagation agrees with label_components(backend='maxpool') in counts and convergence",
)
def _maxpool_converged(c: CheckContext) -> tuple[bool, str]:
    parts, ok = [], True
    for r in _stress(c).values():
        same = r["same_partition"] and r["maxpool"][r["need"]]["converged"] and r["curve_agrees"]
        ok &= same
        parts.append(f"{r['shape']}: {r['need']} iterations, same partition {same}")
    return ok, "; ".join(parts)


@check("maxpool_corner", "The public code's max-pool labelling drops the flat-index-0 corner voxel; exact keeps it")
def _maxpool_corner(c: CheckContext) -> tuple[bool, str]:
    r = _stress(c)["corner_voxel"]
    counts = [r["maxpool"][it]["count"] for it in (*MAXPOOL_ITERS, r["need"])]
    ok = r["exact"] == 2**2 and all(n == r["exact"] - 1 for n in counts) and r["dropped"] == 1
    return ok, f"exact: {r['exact']}; max-pool (any iterations): {sorted(set(counts))}; dropped {r['dropped']}"


@check("diagonal_connectivity", "Diagonal line: 1 component (full connectivity), one per voxel (face connectivity)")
def _diagonal_connectivity(c: CheckContext) -> tuple[bool, str]:
    r = _stress(c)["diagonal_line"]
    return r["exact"] == 1 and r["exact_face"] == r["voxels"], (
        f"full connectivity: {r['exact']} component; face connectivity: {r['exact_face']} (= {r['voxels']} voxels)"
    )


@check(
    "kornia_iterative",
    f"kornia's connected_components is the same propagation: the public code's partition at every iteration count "
    f"(and the corner voxel kept), as many iterations to converge (at least 1), the serpentine and the spiral split "
    f"at its default of {KORNIA_DEFAULT}, and exact's partition once converged",
)
def _kornia_iterative(c: CheckContext) -> tuple[bool, str]:
    stress, kornia = _stress(c), _kornia(c)
    ok, parts = True, []
    for shape, r in stress.items():
        k = kornia[shape]
        n_conv = len(np.unique(k["labels"][r["mask"]]))
        exact = k["same_partition"] and k["dropped"] == 0 and n_conv == r["exact"]
        ok &= k["same_as_maxpool"] and k["need"] == max(r["need"], 1) and exact
        parts.append(
            f"{shape}: converges after {k['need']} iterations (public code {r['need']}), {k['counts'][KORNIA_DEFAULT]} "
            f"components at {KORNIA_DEFAULT}, {n_conv} converged (exact {r['exact']}), same as the public code "
            f"at every iteration count: {k['same_as_maxpool']}"
        )
    ok &= all(kornia[s]["counts"][KORNIA_DEFAULT] > 1 for s in ("serpentine", "spiral"))
    return ok, "; ".join(parts)
