"""The CPU loop of :func:`lossbench.ops.cubes.cube_geometry`, compiled with numba.

Imported on first use, so that importing the losses does not load numba. The volume is streamed one plane of the
first axis at a time: every buffer is a plane, whatever the number of cubes or the size of the volume.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["cube_geometry_cpu"]


@numba.njit(cache=True, nogil=True)
def _order_by_first_axis(center, start, s0):  # pragma: no cover - compiled
    """Cube indices of every image ordered by first-axis center (a counting sort; centers within [-1, s0])."""
    n = center.shape[0]
    order = np.empty(n, dtype=np.int64)
    n_img = start.shape[0] - 1
    bins = s0 + 2
    for b in range(n_img):
        count = np.zeros(bins + 1, dtype=np.int64)
        for i in range(start[b], start[b + 1]):
            count[center[i, 0] + 2] += 1
        for k in range(1, bins + 1):
            count[k] += count[k - 1]
        for i in range(start[b], start[b + 1]):
            slot = center[i, 0] + 1
            order[start[b] + count[slot]] = i
            count[slot] += 1
    return order


@numba.njit(cache=True, nogil=True)
def _add_rectangle(plane, y0, y1, x0, x1, sign):  # pragma: no cover - compiled
    """Corners of the rectangle ``[y0, y1) x [x0, x1)`` in a 2-D difference plane (no-op when it is empty)."""
    if y0 < y1 and x0 < x1:
        plane[y0, x0] += sign
        plane[y0, x1] -= sign
        plane[y1, x0] -= sign
        plane[y1, x1] += sign


@numba.njit(cache=True, nogil=True)
def _advance_coverage(cover, diff, center, order, lo, hi, z, half, s1, s2, sign):  # pragma: no cover - compiled
    """Add ``sign`` x the in-plane rectangles of the cubes ``order[lo:hi]`` to the coverage plane via ``diff``."""
    diff[:, :] = 0
    h1, h2 = half[1], half[2]
    for k in range(lo, hi):
        c = center[order[k]]
        y0, y1 = max(c[1] - h1, 0), min(c[1] + h1 + 1, s1)
        x0, x1 = max(c[2] - h2, 0), min(c[2] + h2 + 1, s2)
        _add_rectangle(diff, y0, y1, x0, x1, sign)
    for y in range(s1):
        for x in range(1, s2):
            diff[y, x] += diff[y, x - 1]
    for y in range(s1):
        if y > 0:
            for x in range(s2):
                diff[y, x] += diff[y - 1, x]
        for x in range(s2):
            cover[y, x] += diff[y, x]


@numba.njit(cache=True, nogil=True)
def _paint_labels(in_label, center, lo, hi, z, half, s1, s2):  # pragma: no cover - compiled
    """The label cubes of ``center[lo:hi]`` that reach plane ``z``, painted into the bool plane; whether any did."""
    in_label[:, :] = False
    painted = False
    for i in range(lo, hi):
        c = center[i]
        if abs(z - c[0]) > half[0]:
            continue
        painted = True
        for y in range(max(c[1] - half[1], 0), min(c[1] + half[1] + 1, s1)):
            for x in range(max(c[2] - half[2], 0), min(c[2] + half[2] + 1, s2)):
                in_label[y, x] = True
    return painted


@numba.njit(cache=True, nogil=True)
def _window_plane(g, prefix, rows, column, sums, half, s1, s2):  # pragma: no cover - compiled
    """In-plane box sums of the fixed-point plane ``g`` for box centers ``-1 .. s`` on both axes (``sums[c + 1]``).

    Along rows, then along columns: a prefix sum and one difference of two prefixes per window. The values are
    uint64 fixed point, so the sums are exact and the same in any order; prefixes may wrap around 2^64, the
    differences are exact as long as every window's sum fits (the caller's scale guarantees it).
    """
    h1, h2 = half[1], half[2]
    for y in range(s1):
        acc = np.uint64(0)
        prefix[0] = acc
        for x in range(s2):
            acc += g[y, x]
            prefix[x + 1] = acc
        for xo in range(-1, s2 + 1):
            rows[y, xo + 1] = prefix[min(xo + h2 + 1, s2)] - prefix[max(xo - h2, 0)]
    # column prefixes of the row sums, one row of the plane at a time; column[k] = sum of rows[:k]
    column[0, :] = 0
    for y in range(s1):
        column[y + 1, :] = column[y, :] + rows[y, :]
    for yo in range(-1, s1 + 1):
        sums[yo + 1, :] = column[min(yo + h1 + 1, s1), :] - column[max(yo - h1, 0), :]


@numba.njit(cache=True, nogil=True)
def _scan_plane(cover, in_label, painted, inverse, g, label_only, n_lo, base, s2):  # pragma: no cover - compiled
    """Counts of one plane, its uncovered label voxels and its fixed-point ``g``.

    Returns ``(label, pred, both, n_lo)``; uncovered label voxels are appended to ``label_only`` from ``n_lo`` on;
    when ``inverse`` is not empty, ``g`` becomes ``inverse[cover]`` outside the labels, 0 inside.
    """
    n_pred = 0
    for y in range(cover.shape[0]):
        for x in range(cover.shape[1]):
            n_pred += cover[y, x] > 0
    n_label = n_both = 0
    if painted:
        for y in range(cover.shape[0]):
            for x in range(cover.shape[1]):
                if in_label[y, x]:
                    n_label += 1
                    if cover[y, x] > 0:
                        n_both += 1
                    else:
                        label_only[n_lo] = base + y * s2 + x
                        n_lo += 1
    if inverse.shape[0] > 0:
        zero = np.uint64(0)
        for y in range(cover.shape[0]):
            for x in range(cover.shape[1]):
                g[y, x] = zero if in_label[y, x] else inverse[cover[y, x]]
    return n_label, n_pred, n_both, n_lo


@numba.njit(cache=True, nogil=True)
def _extent_pointers(center, order, ptr, last, z, h0):  # pragma: no cover - compiled
    """Advance the pointers into the cubes ordered by first-axis center to plane ``z``.

    Cubes before ``ptr[0]`` have started (``c - h0 <= z``), before ``ptr[1]`` have ended (``c + h0 < z``);
    ``ptr[2]`` and ``ptr[3]`` become the previous values of ``ptr[0]`` and ``ptr[1]``.
    """
    ptr[2], ptr[3] = ptr[0], ptr[1]
    while ptr[0] < last and center[order[ptr[0]], 0] - h0 <= z:
        ptr[0] += 1
    while ptr[1] < last and center[order[ptr[1]], 0] + h0 < z:
        ptr[1] += 1


@numba.njit(cache=True, nogil=True)
def cube_geometry_cpu(l_center, l_start, p_center, p_start, shape, half, inverse, label_only):  # pragma: no cover
    """Counts, label-only voxels and fixed-point prediction-cube weights of label and prediction cubes, by planes.

    Args (numpy): ``l_center``/``p_center`` int64 ``(N, 3)`` cube centers within one voxel of the image, grouped by
    image with offsets ``l_start``/``p_start`` (``(B + 1,)``); ``shape`` ``(s0, s1, s2)``; ``half`` ``(3,)``;
    ``inverse`` the uint64 table ``round(2^bits / c)`` (empty: no weights); ``label_only`` an int64 buffer with room
    for every label-cube voxel.

    Returns ``(both, label, pred, n_label_only, weights)``: ``label_only[:n_label_only]`` holds the flat positions
    (ascending) of the label-cube voxels no prediction cube covers; ``weights`` (uint64, in ``p_center``'s order) the
    sums of ``inverse[cover]`` over every cube's voxels outside the labels.
    """
    s0, s1, s2 = shape[0], shape[1], shape[2]
    n_img = l_start.shape[0] - 1
    counts = np.zeros((3, n_img), dtype=np.int64)  # label, pred, both
    weights = np.zeros(p_center.shape[0], dtype=np.uint64)
    order = _order_by_first_axis(p_center, p_start, s0)
    cover = np.empty((s1, s2), dtype=np.int32)
    diff = np.empty((s1 + 1, s2 + 1), dtype=np.int32)
    in_label = np.empty((s1, s2), dtype=np.bool_)
    g = np.zeros((s1, s2), dtype=np.uint64)
    prefix = np.empty(s2 + 1, dtype=np.uint64)
    rows = np.empty((s1, s2 + 2), dtype=np.uint64)
    column = np.empty((s1 + 1, s2 + 2), dtype=np.uint64)
    sums = np.empty((s1 + 2, s2 + 2), dtype=np.uint64)
    # cubes started / ended by the current plane, and by the previous one: the cubes reaching the plane are
    # ``order[started[1]:started[0]]``
    started = np.zeros(4, dtype=np.int64)
    n_lo = 0
    for b in range(n_img):
        cover[:, :] = 0
        last = p_start[b + 1]
        started[:2] = p_start[b]
        for z in range(s0):
            # coverage of plane z: add the cubes whose first-axis extent starts here, remove those that ended
            _extent_pointers(p_center, order, started, last, z, half[0])
            if started[0] > started[2]:
                _advance_coverage(cover, diff, p_center, order, started[2], started[0], z, half, s1, s2, 1)
            if started[1] > started[3]:
                _advance_coverage(cover, diff, p_center, order, started[3], started[1], z, half, s1, s2, -1)
            painted = _paint_labels(in_label, l_center, l_start[b], l_start[b + 1], z, half, s1, s2)
            n_label, n_pred, n_both, n_lo = _scan_plane(
                cover, in_label, painted, inverse, g, label_only, n_lo, (b * s0 + z) * s1 * s2, s2
            )
            counts[0, b] += n_label
            counts[1, b] += n_pred
            counts[2, b] += n_both
            if inverse.shape[0] == 0:
                continue
            _window_plane(g, prefix, rows, column, sums, half, s1, s2)
            # every cube whose first-axis extent holds z adds its in-plane box sum (planes in ascending order)
            for k in range(started[1], started[0]):
                i = order[k]
                weights[i] += sums[p_center[i, 1] + 1, p_center[i, 2] + 1]
    return counts[2], counts[0], counts[1], n_lo, weights
