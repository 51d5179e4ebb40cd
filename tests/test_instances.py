"""Batch-global ids, pair tables and centroids against brute-force loops (scipy labelling)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from oracles import component_centroids_ceil, component_last_voxel
from scipy import ndimage

from lossbench.cc import label_batch, label_components
from lossbench.instances import (
    centroids_ceil_from_positions,
    component_images,
    component_sizes,
    foreground_ids,
    global_ids,
    overlap_pairs,
    pair_table,
)
from lossbench.ops import flat_nonzero, torch_only


def _labels(seed, shape=(3, 15, 17), p=0.35):
    rng = np.random.default_rng(seed)
    m = torch.from_numpy(rng.random(shape) < p)
    res = label_components(m)
    gids, off = global_ids(res.labels, res.counts)
    return gids, int(res.counts.sum()), res.counts


def test_global_ids_and_sizes():
    gids, n, counts = _labels(0)
    sizes = component_sizes(gids, n)
    assert sizes.shape == (n + 1,)
    assert int(sizes[1:].sum()) == int((gids > 0).sum())
    img = component_images(counts)
    for i in range(1, n + 1):
        b = int(img[i - 1])
        assert bool((gids[b] == i).any()) and not bool((gids[np.arange(3) != b] == i).any())


@pytest.mark.parametrize("backend", ["cc3d", "scipy", "torch", "maxpool"])
@pytest.mark.parametrize("shape", [(1, 9, 11, 10), (4, 6, 7, 8), (3, 15, 17)])
def test_label_batch_and_foreground_ids_equal_the_global_id_volume(backend, shape):
    rng = np.random.default_rng(sum(shape))
    mask = torch.from_numpy(rng.random(shape) < 0.4)
    mask[1:, 0] |= mask[:-1, -1]  # foreground across image borders: cc3d's multi-label stacking
    ref = label_components(mask, backend=backend)
    gids, _ = global_ids(ref.labels, ref.counts)
    fast = label_batch(mask, backend=backend)
    assert torch.equal(fast.counts, ref.counts)
    assert fast.batch_numbered == (backend == "cc3d")
    pos = flat_nonzero(mask)
    got_pos, got = foreground_ids(fast, pos)
    assert torch.equal(got_pos, pos) and torch.equal(got, gids.reshape(-1)[pos])
    # labelled voxels only, and reads anywhere (background reads 0)
    kept_pos, kept = foreground_ids(fast, pos, drop_unlabelled=True)
    assert bool((kept > 0).all()) and torch.equal(kept, gids.reshape(-1)[kept_pos])
    anywhere = torch.arange(mask.numel())
    assert torch.equal(foreground_ids(fast, anywhere)[1], gids.reshape(-1))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dense", [None, "torch", True, False])
def test_pair_table_matches_loop(seed, dense):
    a, na, _ = _labels(seed)
    b, nb, _ = _labels(seed + 10)
    if dense == "torch":  # the first-partner method on the device-agnostic torch path (numpy on CPU otherwise)
        with torch_only():
            pa, pb, ov, both, vp = pair_table(a, b, na, nb)
    else:
        pa, pb, ov, both, vp = pair_table(a, b, na, nb, dense=dense)
    expected = {}
    for x, z in zip(a.reshape(-1).tolist(), b.reshape(-1).tolist()):
        if x and z:
            expected[(x, z)] = expected.get((x, z), 0) + 1
    got = {(int(i), int(j)): int(k) for i, j, k in zip(pa, pb, ov)}
    assert got == expected
    assert list(zip(pa.tolist(), pb.tolist())) == sorted(expected)
    # voxel_pair indexes the pairs of the shared voxels
    assert torch.equal(pa[vp], a.reshape(-1)[both])
    assert torch.equal(pb[vp], b.reshape(-1)[both])
    # overlap_pairs (kept for the metrics) agrees
    qa, qb, qo = overlap_pairs(a, b, nb)
    assert torch.equal(qa, pa) and torch.equal(qb, pb) and torch.equal(qo, ov)


def test_component_last_voxel_and_centroids_match_loop():
    gids, n, _ = _labels(4, shape=(2, 9, 11, 7))
    last = component_last_voxel(gids, n)
    cen = component_centroids_ceil(gids, n)
    for i in range(1, n + 1):
        b = int(np.nonzero((gids == i).reshape(2, -1).any(1).numpy())[0][0])
        coords = np.argwhere(gids[b].numpy() == i)
        flat = np.ravel_multi_index(coords.T, gids.shape[1:])
        assert int(last[i]) == flat.max()
        assert cen[i - 1].tolist() == [int(np.ceil(c)) for c in ndimage.center_of_mass(gids[b].numpy() == i)]


def test_pair_table_one_partner_fast_path():
    # every a touches exactly one b: the first-partner path sorts nothing; one a touching two b takes the other path
    a = torch.tensor([0, 1, 1, 2, 2, 2, 3, 0, 4, 4])
    b = torch.tensor([5, 2, 2, 1, 1, 0, 3, 3, 4, 4])
    pa, pb, ov, both, vp = pair_table(a, b, 4, 5)
    assert list(zip(pa.tolist(), pb.tolist(), ov.tolist())) == [(1, 2, 2), (2, 1, 2), (3, 3, 1), (4, 4, 2)]
    assert torch.equal(pa[vp], a[both]) and torch.equal(pb[vp], b[both])
    b2 = b.clone()
    b2[9] = 5  # instance 4 now touches b=4 and b=5
    pa, pb, ov, both, vp = pair_table(a, b2, 4, 5)
    assert list(zip(pa.tolist(), pb.tolist(), ov.tolist())) == [(1, 2, 2), (2, 1, 2), (3, 3, 1), (4, 4, 1), (4, 5, 1)]
    assert torch.equal(pa[vp], a[both]) and torch.equal(pb[vp], b2[both])


def test_centroids_exact_at_stride_multiples():
    # flat positions that are exact multiples of the strides, and the last voxel: the float64 division must not
    # round a quotient down
    spatial = (96, 96, 96)
    pos = torch.tensor([0, 9216, 96, 9215, 9216 * 95 + 96 * 95 + 95, 884736 + 9216 * 3 + 96 * 2 + 1])
    ids = torch.arange(1, 7)
    got = centroids_ceil_from_positions(pos, ids, 6, spatial)
    assert got.tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 95, 95], [95, 95, 95], [3, 2, 1]]


@pytest.mark.parametrize("dense", [0.0, 1e18])
@pytest.mark.parametrize("name", ["ici", "dici", "blob"])
def test_torch_path_of_the_helpers_equals_numpy_path(name, dense, monkeypatch):
    """The helpers' device-agnostic torch code (what CUDA runs) gives the numpy fast path's values and gradients."""
    import lossbench.losses.ici.geometry as geometry
    from lossbench.losses import build_loss

    monkeypatch.setattr(geometry, "DENSE_CENTER_FRACTION", {"bitmap": dense, "listing": dense})  # both center paths

    rng = np.random.default_rng(24)
    y = torch.from_numpy(rng.random((2, 1, 12, 13, 11)) < 0.2).float()
    x = torch.from_numpy(rng.normal(size=(2, 1, 12, 13, 11))).requires_grad_(True)
    results = []
    for fast in (True, False):
        with contextlib.nullcontext() if fast else torch_only():
            for kw in ({}, {"reference": False}):
                if name == "blob" and kw:
                    continue
                terms = build_loss(name, sigmoid=True, **kw).terms(x, y)
                grad = torch.autograd.grad(terms["total"], x)[0]
                results.append(({k: float(v.detach()) for k, v in terms.items()}, grad))
    half = len(results) // 2
    for (t1, g1), (t2, g2) in zip(results[:half], results[half:]):
        assert t1 == pytest.approx(t2, rel=1e-12, abs=1e-12)
        assert torch.allclose(g1, g2, rtol=1e-10, atol=1e-12)
