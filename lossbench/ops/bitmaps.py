"""Row bitmaps (numpy, CPU): sets of voxels of a batch as 64-bit words along the last axis.

A batch ``(B, *spatial)`` is a stack of lines (every index but the last); each line is ``row_words(W)`` words of
64 bits, bit ``x % 64`` of word ``x // 64`` standing for voxel ``x`` of the line. A box is a few rows, each one to a
few words, so unions and intersections of boxes cost O(boxes x rows) word operations instead of O(box voxels).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["row_words", "box_row_words", "union_bitmap", "popcount", "bitmap_positions", "bitmap_contains"]

# A batch ``(B, *spatial)`` is a stack of lines (every index but the last); each line is ``row_words(W)`` words of
# 64 bits, bit ``x % 64`` of word ``x // 64`` standing for voxel ``x`` of the line. A box is a few rows, each one to a
# few words, so unions and intersections of boxes cost O(boxes x rows) word operations instead of O(box voxels).

_ALL_BITS = np.uint64(0xFFFFFFFFFFFFFFFF)


def row_words(width: int) -> int:
    """Number of 64-bit words that hold one line of ``width`` voxels."""
    return (width + 63) // 64


def box_row_words(
    lo: np.ndarray, hi: np.ndarray, image: np.ndarray, spatial: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every box as the 64-bit words of its rows along the last axis (numpy).

    Args:
        lo: int64 ``(N, ndim)`` inclusive lower corners (inside the image).
        hi: int64 ``(N, ndim)`` exclusive upper corners (inside the image); empty boxes give no word.
        image: int64 ``(N,)`` image index of every box.
        spatial: the spatial shape.

    Returns:
        ``(key, mask, box)``: the word index in the batch bitmap (``line * row_words(W) + x // 64``), the uint64
        bits of the box in that word and the box of each entry, boxes in order. OR-ing the masks into a bitmap of
        ``B * prod(spatial[:-1]) * row_words(W)`` words gives the union of the boxes. Cost O(N x rows x words).
    """
    ndim = len(spatial)
    wpl = row_words(spatial[-1])
    size = np.maximum(hi - lo, 0)
    lead = spatial[:-1]
    strides = np.array([math.prod(lead[d + 1 :]) for d in range(ndim - 1)], dtype=np.int64)
    ext = size[:, :-1].max(0) if lo.shape[0] else np.zeros(ndim - 1, dtype=np.int64)
    grid = np.indices(tuple(int(e) for e in ext)).reshape(ndim - 1, -1)
    line = (image * math.prod(lead) + lo[:, :-1] @ strides)[:, None] + (strides @ grid)[None, :]  # (N, rows)
    row_ok = np.ones(line.shape, dtype=bool)
    for d in range(ndim - 1):
        if size.shape[0] and int(size[:, d].min()) < int(ext[d]):
            row_ok &= grid[d][None, :] < size[:, d : d + 1]
    x0, x1 = lo[:, -1], hi[:, -1]
    first = x0 // 64
    n_words = np.where(x1 > x0, (x1 - 1) // 64 - first + 1, 0)
    k = int(n_words.max()) if n_words.size else 0
    # the (box, word) pairs first (a box's rows all hold the same words), then every row of each pair
    pair = np.flatnonzero(np.arange(k)[None, :] < n_words[:, None])
    box, word = pair // max(k, 1), first[pair // max(k, 1)] + pair % max(k, 1)
    a = np.maximum(x0[box], word * 64)
    nbits = np.minimum(x1[box], word * 64 + 64) - a
    mask = (_ALL_BITS >> (64 - nbits).astype(np.uint64)) << (a - word * 64).astype(np.uint64)
    key = (line[box] * wpl + word[:, None]).reshape(-1)  # (pairs, rows)
    rows = line.shape[1]
    if row_ok.all():
        return key, np.repeat(mask, rows), np.repeat(box, rows)
    keep = np.flatnonzero(row_ok[box])
    return key[keep], mask[keep // rows], box[keep // rows]


def union_bitmap(key: np.ndarray, mask: np.ndarray, n_words: int) -> np.ndarray:
    """The uint64 bitmap of ``n_words`` words holding the OR of every ``mask`` at its ``key`` (numpy)."""
    out = np.zeros(n_words, dtype=np.uint64)
    np.bitwise_or.at(out, key, mask)
    return out


def popcount(words: np.ndarray) -> np.ndarray:
    """Set bits of every uint64 word (int64, same shape)."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(words).astype(np.int64)
    bits = np.unpackbits(np.ascontiguousarray(words).view(np.uint8)).reshape(*words.shape, 64)
    return bits.sum(-1, dtype=np.int64)


def bitmap_positions(bitmap: np.ndarray, width: int, at: np.ndarray | None = None) -> np.ndarray:
    """Flat positions (int64, ascending) of the set bits of a row bitmap of lines of ``width`` voxels.

    With ``at`` (ascending word indices), ``bitmap`` holds only those words of the bitmap (the others are 0).
    """
    wpl = row_words(width)
    nz = np.flatnonzero(bitmap != 0)
    bits = np.flatnonzero(np.unpackbits(bitmap[nz].astype("<u8").view(np.uint8), bitorder="little").view(bool))
    word = nz[bits >> 6] if at is None else at[nz[bits >> 6]]
    return (word // wpl) * width + (word % wpl) * 64 + (bits & 63)


def bitmap_contains(bitmap: np.ndarray, flat: np.ndarray, width: int) -> np.ndarray:
    """Whether each flat position of the batch is set in a row bitmap of lines of ``width`` voxels (bool)."""
    line, x = np.divmod(flat, width)
    word = bitmap[line * row_words(width) + x // 64]
    return ((word >> (x % 64).astype(np.uint64)) & np.uint64(1)).astype(bool)
