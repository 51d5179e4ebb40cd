"""External labelling references of the ``cc`` suite: scikit-image on the CPU, kornia's torch labellings in 2D.

* ``skimage``: ``skimage.measure.label`` per image with full connectivity, another exact CPU reference next to
  cc3d and scipy (its labels must be the same partition as scipy's, else the run records an error).
* ``kornia (N iterations)``: ``kornia.contrib.connected_components``, the torch labelling users reach for: 2D only,
  a float image whose foreground is exactly 1, a fixed number of 3x3 max-pooling steps (default
  :data:`KORNIA_DEFAULT_ITERATIONS`) that carry the largest pixel id one pixel per step. It is exact only when the
  steps cover every component's geodesic radius; the row records whether the default is exact on the masks and the
  smallest exact count (searched, at most :data:`KORNIA_MAX_ITERATIONS`), which a user cannot know in advance. When
  that count differs from the default it is timed as well.
* ``kornia union-find``: ``kornia.contrib.connected_components_union_find`` where the installed kornia has it
  (iterated to convergence), checked the same way.

Both kornia functions number components by pixel ids (not 1..N), so exactness is checked as "the same
partition": the same foreground, and a one-to-one map between the two labellings' ids in every image.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from lossbench.bench.timing import Case

__all__ = [
    "KORNIA_DEFAULT_ITERATIONS",
    "KORNIA_MAX_ITERATIONS",
    "same_partition",
    "skimage_case",
    "kornia_cases",
    "smallest_exact_iterations",
]

#: kornia's default number of max-pooling steps, and the most the search for the smallest exact count tries.
KORNIA_DEFAULT_ITERATIONS = 100
KORNIA_MAX_ITERATIONS = 4096
_CPU = torch.device("cpu")


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two ``(B, *spatial)`` labellings split every image into the same components (ids may differ).

    Same background, and in each image the pairs (id in ``a``, id in ``b``) over the foreground are as many as the
    distinct ids of either: each id of one labelling meets exactly one id of the other.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or not np.array_equal(a != 0, b != 0):
        return False
    for ai, bi in zip(a, b):
        fa, fb = ai[ai != 0], bi[bi != 0]
        ua, ia = np.unique(fa, return_inverse=True)
        ub, ib = np.unique(fb, return_inverse=True)
        pairs = np.unique(ia.astype(np.int64) * len(ub) + ib)
        if not len(pairs) == len(ua) == len(ub):
            return False
    return True


def skimage_case(masks: np.ndarray, reference: np.ndarray) -> tuple[Case, dict[str, Any]] | None:
    """``skimage.measure.label`` per image (full connectivity) and its row fields; None without scikit-image."""
    try:
        from skimage import measure
    except ImportError:
        return None
    conn = masks.ndim - 1

    def label() -> list[np.ndarray]:
        return [measure.label(m, connectivity=conn, background=0) for m in masks]

    exact = same_partition(np.stack(label()), reference)
    return (label, _CPU), {"exact": exact}


def kornia_cases(
    masks: np.ndarray, reference: np.ndarray, device: torch.device
) -> tuple[dict[str, Case], dict[str, dict[str, Any]]]:
    """Kornia's iterative labelling (default steps, and the smallest exact count) and its union-find, 2D masks.

    Returns:
        (cases, row fields per case: ``exact``, ``iterations``, ``smallest_exact_iterations`` and a note); empty when
        kornia is not installed.
    """
    try:
        from kornia import contrib
    except ImportError:
        return {}, {}
    image = torch.from_numpy(masks).to(device=device, dtype=torch.float32).unsqueeze(1)

    def iterative(n: int) -> Callable[[], torch.Tensor]:
        return lambda: contrib.connected_components(image, num_iterations=n)

    def exact(fn: Callable[[], torch.Tensor]) -> bool:
        return same_partition(fn().squeeze(1).cpu().numpy(), reference)

    smallest = smallest_exact_iterations(lambda n: exact(iterative(n)), KORNIA_MAX_ITERATIONS)
    found = f"smallest exact count {smallest}" if smallest else f"not exact within {KORNIA_MAX_ITERATIONS} steps"
    common = {"smallest_exact_iterations": smallest}
    cases: dict[str, Case] = {}
    meta: dict[str, dict[str, Any]] = {}
    counts = [KORNIA_DEFAULT_ITERATIONS] + ([smallest] if smallest and smallest != KORNIA_DEFAULT_ITERATIONS else [])
    for n in counts:
        name = f"kornia ({n} iterations)"
        ok = smallest is not None and n >= smallest
        cases[name] = (iterative(n), device)
        what = "kornia's default" if n == KORNIA_DEFAULT_ITERATIONS else "known only after a search"
        note = f"{what}; exact partition: {'yes' if ok else 'no'}; {found}"
        meta[name] = {**common, "iterations": n, "exact": ok, "note": note}
    union_find = getattr(contrib, "connected_components_union_find", None)
    if union_find is not None:
        cases["kornia union-find"] = ((lambda: union_find(image)), device)
        ok = exact(lambda: union_find(image))
        meta["kornia union-find"] = {"exact": ok, "note": f"exact partition: {'yes' if ok else 'no'}"}
    return cases, meta


def smallest_exact_iterations(is_exact: Callable[[int], bool], cap: int) -> int | None:
    """The smallest ``n`` in ``1..cap`` with ``is_exact(n)``, for a predicate that stays true once true; else None.

    Doubling, then bisection: about ``2 log2(n)`` evaluations. (Max-pooling propagation stays exact once exact: a
    component holding one id holds its largest pixel id, which no further step changes.)
    """
    lo, hi = 0, 1  # is_exact(lo) is false (or lo = 0), is_exact(hi) is unknown
    while not is_exact(hi):
        if hi >= cap:
            return None
        lo, hi = hi, min(2 * hi, cap)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if is_exact(mid) else (mid, hi)
    return hi
