r"""Exact nearest-site labelling along one axis: the lower envelope of parabolas, with a tie rule (numba, CPU).

One pass of the separable exact Euclidean feature transform (Felzenszwalb & Huttenlocher 2012, "Distance
transforms of sampled functions"), carrying a label instead of a position. For one line of ``n`` voxels with
values ``f[j]`` (squared distance to the nearest site found by the earlier passes, ``inf`` where there is none)
and labels ``lab[j]``, every voxel ``i`` of the line gets

.. math::

    F[i] = \min_j \big(f[j] + w\,(i - j)^2\big), \qquad
    L[i] = \min\{\, lab[j] : f[j] + w\,(i - j)^2 = F[i] \,\}

with ``w`` the squared voxel spacing along the axis: the smallest label among all minimisers, not just one of
them. Running the pass along every axis in turn gives, at every voxel, the exact squared Euclidean distance to
the nearest site and the smallest label among the nearest sites: the minimisers of a pass are exactly the lines
whose own nearest sites are nearest overall, so the smallest label propagates.

Ties are found exactly: the envelope's breakpoints are kept as fractions (numerator, denominator) and compared
by cross-multiplication, so with unit (or integer) spacing every quantity is an integer below 2^53 and exact in
float64. A parabola that touches the envelope at a single breakpoint only (equal to both neighbours there) is
removed from the envelope, but its label is remembered at that breakpoint.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["nearest_sites", "envelope_pass"]

#: Label of "no site on this line yet"; larger than every real label so that ``min`` ignores it.
NO_LABEL = np.iinfo(np.int32).max


@numba.njit(cache=True, nogil=True)
def _line(f, lab, n, w, v, zn, zd, ex, out_f, out_lab):  # pragma: no cover - compiled
    """One line: build the lower envelope of the parabolas of ``f`` (with its ties), then read it (:func:`_read`)."""
    k = -1
    for q in range(n):
        fq = f[q]
        if fq == math.inf:
            continue
        if k < 0:
            k = 0
            v[0] = q
            ex[0] = NO_LABEL
            continue
        carried = NO_LABEL
        while True:
            p = v[k]
            num = (fq + w * q * q) - (f[p] + w * p * p)
            den = 2.0 * w * (q - p)
            if k == 0:  # z[0] = -inf
                break
            c = num * zd[k] - zn[k] * den  # sign of (intersection with v[k]) - z[k]
            if c < 0.0:  # v[k] is strictly above q wherever it was lowest: drop it and what tied there
                k -= 1
                carried = NO_LABEL
            elif c == 0.0:  # q, v[k] and v[k-1] meet at z[k]: v[k] keeps only that point, as a tie
                carried = min(carried, lab[p], ex[k])
                k -= 1
            else:
                break
        k += 1
        v[k] = q
        zn[k] = num
        zd[k] = den
        ex[k] = carried
    _read(f, lab, n, w, v, zn, zd, ex, k, out_f, out_lab)


@numba.njit(cache=True, nogil=True)
def _read(f, lab, n, w, v, zn, zd, ex, top, out_f, out_lab):  # pragma: no cover - compiled
    """Read the envelope ``v[0..top]`` (breakpoints ``zn / zd``) at every voxel of the line (``top < 0``: empty)."""
    if top < 0:
        for i in range(n):
            out_f[i] = math.inf
            out_lab[i] = 0
        return
    k = 0
    for i in range(n):
        while k < top and zn[k + 1] <= i * zd[k + 1]:
            k += 1
        p = v[k]
        d = i - p
        out_f[i] = f[p] + w * d * d
        best = lab[p]
        if k > 0 and zn[k] == i * zd[k]:  # i is the breakpoint between v[k-1] and v[k]: a tie
            best = min(best, lab[v[k - 1]], ex[k])
        out_lab[i] = best


#: Lines processed together in a strided pass: their voxels are copied in and out as contiguous runs of this length.
_TILE = 64


@numba.njit(cache=True, nogil=True)
def _pass(f, lab, outer, n, inner, w):  # pragma: no cover - compiled
    tile = min(_TILE, inner)
    fin = np.empty((tile, n), dtype=f.dtype)
    lin = np.empty((tile, n), dtype=np.int32)
    fout = np.empty((tile, n), dtype=f.dtype)
    lout = np.empty((tile, n), dtype=np.int32)
    v = np.empty(n, dtype=np.int64)
    zn = np.empty(n, dtype=np.float64)
    zd = np.empty(n, dtype=np.float64)
    ex = np.empty(n, dtype=np.int32)
    for o in range(outer):
        for c0 in range(0, inner, tile):
            width = min(tile, inner - c0)
            start = o * n * inner + c0
            for j in range(n):
                row = start + j * inner
                for cc in range(width):
                    fin[cc, j] = f[row + cc]
                    lin[cc, j] = lab[row + cc]
            for cc in range(width):
                _line(fin[cc], lin[cc], n, w, v, zn, zd, ex, fout[cc], lout[cc])
            for j in range(n):
                row = start + j * inner
                for cc in range(width):
                    f[row + cc] = fout[cc, j]
                    lab[row + cc] = lout[cc, j]


@numba.njit(cache=True, nogil=True)
def _first_pass(labels, f, lab, lines, n, w):  # pragma: no cover - compiled
    """The pass along the last (contiguous) axis straight from component labels: nearest site left and right."""
    for r in range(lines):
        base = r * n
        last = -1
        for i in range(n):  # nearest site at or before i
            if labels[base + i] > 0:
                last = i
            if last >= 0:
                d = i - last
                f[base + i] = w * d * d
                lab[base + i] = labels[base + last]
            else:
                f[base + i] = math.inf
                lab[base + i] = 0
        nxt = -1
        for i in range(n - 1, -1, -1):  # nearest site at or after i, if closer (smaller label on a tie)
            if labels[base + i] > 0:
                nxt = i
            if nxt >= 0:
                d = nxt - i
                dd = w * d * d
                other = labels[base + nxt]
                if dd < f[base + i] or (dd == f[base + i] and other < lab[base + i]):
                    f[base + i] = dd
                    lab[base + i] = other


def nearest_sites(labels: np.ndarray, weights: tuple[float, ...], out: np.ndarray | None = None) -> np.ndarray:
    """Smallest label among the nearest labelled voxels, at every voxel of one image (int32, ``labels``' shape).

    Args:
        labels: C-contiguous integer array ``(*spatial)``, 0 = no site; at least one site; labels below 2^31.
        weights: squared voxel spacing per axis.
        out: optional C-contiguous int32 array of ``labels``' shape to write the result into.
    """
    shape = labels.shape
    f = np.empty(shape, dtype=np.float64)
    lab = np.empty(shape, dtype=np.int32) if out is None else out
    n = shape[-1]
    _first_pass(labels.reshape(-1), f.reshape(-1), lab.reshape(-1), labels.size // max(n, 1), n, float(weights[-1]))
    for axis in reversed(range(labels.ndim - 1)):
        envelope_pass(f, lab, axis, weights[axis])
    return lab


def envelope_pass(f: np.ndarray, lab: np.ndarray, axis: int, weight: float) -> None:
    """Replace ``f`` and ``lab`` in place by their nearest-site values along ``axis`` (see the module docstring).

    Args:
        f: C-contiguous float array, squared distances (``inf`` = no site yet).
        lab: C-contiguous int32 array of the same shape, labels (any value where ``f`` is ``inf``).
        axis: the axis to run along.
        weight: squared voxel spacing along ``axis`` (> 0).
    """
    shape = f.shape
    n = shape[axis]
    if n <= 1:
        return
    outer = math.prod(shape[:axis])
    inner = math.prod(shape[axis + 1 :])
    _pass(f.reshape(-1), lab.reshape(-1), outer, n, inner, float(weight))
