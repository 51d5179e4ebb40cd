"""The CPU loops of :mod:`lossbench.losses._regions`, compiled with numba.

Imported on first use, so that importing the losses does not load numba.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["region_sums_cpu", "region_grad_cpu"]


#: Region ids compared per step when looking for the end of a run (a branch-free, vectorised comparison).
_BLOCK = 8


@numba.njit(cache=True, nogil=True)
def _run_end(row, v, n):  # pragma: no cover - compiled
    """End of the run of equal region ids starting at ``v`` (regions are long runs along the contiguous axis)."""
    r = row[v]
    end = v + 1
    while end + _BLOCK <= n:
        same = True
        for t in range(_BLOCK):
            same &= row[end + t] == r
        if not same:
            break
        end += _BLOCK
    while end < n and row[end] == r:
        end += 1
    return end


@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def _run_sum(values, v, end):  # pragma: no cover - compiled
    """``sum(values[v:end])`` in float64, reassociated (a vectorised sum)."""
    acc = 0.0
    for u in range(v, end):
        acc += values[u]
    return acc


@numba.njit(cache=True, nogil=True)
def region_sums_cpu(regions, base, p, e, n_reg, with_e):  # pragma: no cover - compiled
    n_img, n_vox = regions.shape
    s = np.zeros(n_reg)
    es = np.zeros(n_reg)
    count = np.zeros(n_reg, dtype=np.int64)
    for i in range(n_img):
        row, p_row, e_row = regions[i], p[i], e[i]
        v = 0
        while v < n_vox:
            end = _run_end(row, v, n_vox)
            k = base[i] + row[v]
            s[k] += _run_sum(p_row, v, end)
            if with_e:
                es[k] += _run_sum(e_row, v, end)
                count[k] += end - v
            v = end
    return s, es, count


@numba.njit(cache=True, nogil=True)
def region_grad_cpu(regions, base, p, g_s, g_e, logits, out):  # pragma: no cover - compiled
    n_img, n_vox = regions.shape
    for i in range(n_img):
        row, p_row, out_row = regions[i], p[i], out[i]
        v = 0
        while v < n_vox:
            end = _run_end(row, v, n_vox)
            k = base[i] + row[v]
            gs = g_s[k]
            ge = g_e[k]
            if logits:
                for u in range(v, end):
                    pv = p_row[u]
                    out_row[u] = pv * ((1.0 - pv) * gs + ge)
            else:
                for u in range(v, end):
                    pv = p_row[u]
                    out_row[u] = gs + ge * pv / max((1.0 - pv) * pv, 1e-12)
            v = end
