"""The CPU loops of :mod:`lossbench.losses._regions`, compiled with numba.

Imported on first use, so that importing the losses does not load numba.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["region_sums_cpu", "region_grad_cpu"]


@numba.njit(cache=True, nogil=True)
def _run_end(row, v, n):  # pragma: no cover - compiled
    """End of the run of equal region ids starting at ``v`` (regions are long runs along the contiguous axis)."""
    r = row[v]
    end = v + 1
    while end < n and row[end] == r:
        end += 1
    return end


@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def region_sums_cpu(regions, base, p, e, n_reg, with_e):  # pragma: no cover - compiled
    n_img, n_vox = regions.shape
    s = np.zeros(n_reg)
    es = np.zeros(n_reg)
    count = np.zeros(n_reg, dtype=np.int64)
    for i in range(n_img):
        row = regions[i]
        v = 0
        while v < n_vox:
            end = _run_end(row, v, n_vox)
            k = base[i] + row[v]
            acc = 0.0
            for u in range(v, end):  # reassociated: a vectorised sum
                acc += p[i, u]
            s[k] += acc
            if with_e:
                acc = 0.0
                for u in range(v, end):
                    acc += e[i, u]
                es[k] += acc
                count[k] += end - v
            v = end
    return s, es, count


@numba.njit(cache=True, nogil=True)
def region_grad_cpu(regions, base, p, g_s, g_e, logits, out):  # pragma: no cover - compiled
    n_img, n_vox = regions.shape
    for i in range(n_img):
        row = regions[i]
        v = 0
        while v < n_vox:
            end = _run_end(row, v, n_vox)
            k = base[i] + row[v]
            gs = g_s[k]
            ge = g_e[k]
            if logits:
                for u in range(v, end):
                    pv = p[i, u]
                    out[i, u] = pv * ((1.0 - pv) * gs + ge)
            else:
                for u in range(v, end):
                    pv = p[i, u]
                    out[i, u] = gs + ge * pv / max((1.0 - pv) * pv, 1e-12)
            v = end
