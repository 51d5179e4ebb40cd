"""Voronoi region ids at a few voxels of one image: a k-d tree over the components' boundary, or a dense box.

The metrics need the region (nearest component, ties to the smallest id; see :mod:`lossbench.cc.voronoi`) only at
the predicted voxels outside the target, usually a small fraction of the image. Two exact ways, chosen by cost:

* **tree**: a voxel's nearest component voxel is always a *boundary* voxel (one with a face neighbour outside the
  components): from any other component voxel, the step towards the query along an axis where they differ lands
  on a component voxel that is closer. A k-d tree over the boundary voxels (``scipy.spatial.cKDTree``) returns the
  nearest few; their squared distances are recomputed from the integer coordinates, every site at the smallest one
  is a tie, and a query whose nearest few are all tied gets a ball query to find every tied site.
* **box**: the dense transform (:func:`lossbench.cc.voronoi.image_regions`) on the bounding box of the components
  and the queried voxels: every component voxel lies inside it and distances do not depend on the box.

With unit, integer or binary-fraction spacing every squared distance is exact in float64, so both give the same ids.
"""

from __future__ import annotations

import numpy as np

__all__ = ["regions_at"]

#: A tree query costs about as much as this many voxels of the dense transform (CPU, 3D, 20 components).
_TREE_QUERY_VOXELS = 64
#: Nearest boundary voxels fetched per query; a query whose nearest ``_K`` are all tied gets a ball query.
_K = 8


def regions_at(
    site_coords: np.ndarray,
    site_ids: np.ndarray,
    query_coords: np.ndarray,
    spacing: tuple[float, ...] | None = None,
    *,
    method: str | None = None,
) -> np.ndarray:
    """Region ids (nearest site's id, ties to the smallest) of some voxels of one image, given its site voxels.

    Args:
        site_coords: ``(S, ndim)`` int64 voxel coordinates of the sites (every voxel of every component), S >= 1.
        site_ids: ``(S,)`` positive integer id of each site (its component; below 2^31).
        query_coords: ``(Q, ndim)`` int64 voxel coordinates to read.
        spacing: voxel size per axis; ``None`` = 1.
        method: ``"tree"`` or ``"box"`` (see the module docstring); ``None`` picks the cheaper one from the number
            of queries and the size of the bounding box.

    Returns:
        ``(Q,)`` int64 region ids.
    """
    if len(query_coords) == 0:
        return np.zeros(0, dtype=np.int64)
    lo = np.minimum(site_coords.min(0), query_coords.min(0))
    hi = np.maximum(site_coords.max(0), query_coords.max(0)) + 1
    shape = tuple(int(e) for e in hi - lo)
    if method is None:
        method = "tree" if len(query_coords) * _TREE_QUERY_VOXELS < np.prod(shape) else "box"
    if method == "box":
        from lossbench.cc.voronoi import image_regions

        box = np.zeros(shape, dtype=np.int32)
        box[tuple((site_coords - lo).T)] = site_ids
        return image_regions(box, spacing)[tuple((query_coords - lo).T)].astype(np.int64)
    keep = _boundary(site_coords - lo, shape)
    return _tree_regions(site_coords[keep], np.asarray(site_ids, dtype=np.int64)[keep], query_coords, spacing)


def _boundary(coords: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Which sites have a face neighbour (inside ``shape``) that is not a site: bool ``(S,)``."""
    keys = np.ravel_multi_index(tuple(coords.T), shape)
    order = np.sort(keys)
    out = np.zeros(len(keys), dtype=bool)
    stride = 1
    for d in reversed(range(len(shape))):
        for step in (-1, 1):
            inside = (coords[:, d] + step >= 0) & (coords[:, d] + step < shape[d])
            nb = keys + step * stride
            at = np.minimum(np.searchsorted(order, nb), len(order) - 1)
            out |= inside & (order[at] != nb)
        stride *= shape[d]
    return out


def _sq_dist(a: np.ndarray, b: np.ndarray, sp: np.ndarray) -> np.ndarray:
    """Squared distances between matching rows of integer coordinates, scaled by ``sp`` (same order of sums)."""
    diff = (a - b) * sp
    return (diff * diff).sum(-1)


def _tree_regions(
    site_coords: np.ndarray, site_ids: np.ndarray, query_coords: np.ndarray, spacing: tuple[float, ...] | None
) -> np.ndarray:
    from scipy.spatial import cKDTree

    sp = np.ones(site_coords.shape[1]) if spacing is None else np.asarray(spacing, dtype=np.float64)
    tree = cKDTree(site_coords * sp)
    k = min(_K, len(site_coords))
    _, idx = tree.query(query_coords * sp, k=k)
    idx = idx.reshape(len(query_coords), k)
    d2 = _sq_dist(query_coords[:, None, :], site_coords[idx], sp)
    best = d2.min(1, keepdims=True)
    ids = np.where(d2 == best, site_ids[idx], np.iinfo(np.int64).max).min(1)
    crowded = np.flatnonzero((d2[:, -1] == best[:, 0]) & (k < len(site_coords)))
    if len(crowded):  # every fetched site is tied: there may be more at the same distance
        radius = np.sqrt(best[crowded, 0]) * (1 + 1e-9) + 1e-9
        hits = tree.query_ball_point(query_coords[crowded] * sp, radius)
        lengths = np.array([len(h) for h in hits])
        flat = np.concatenate([np.asarray(h, dtype=np.int64) for h in hits])
        owner = np.repeat(np.arange(len(crowded)), lengths)
        d2c = _sq_dist(query_coords[crowded][owner], site_coords[flat], sp)
        tied = d2c == best[crowded, 0][owner]
        cand = np.full(len(crowded), np.iinfo(np.int64).max)
        np.minimum.at(cand, owner[tied], site_ids[flat][tied])
        ids[crowded] = cand
    return ids.astype(np.int64)
