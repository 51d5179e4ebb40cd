"""Per-instance helpers against brute-force loops (scipy labelling)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from lossbench.cc import label_components
from lossbench.instances import (
    component_centroids_ceil,
    component_images,
    component_last_voxel,
    component_sizes,
    global_ids,
    overlap_pairs,
    pair_table,
    render_boxes,
    segment_sum,
)


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


def test_segment_sum_is_differentiable():
    ids = torch.tensor([0, 2, 2, 1, 0, 2])
    v = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], requires_grad=True)
    out = segment_sum(v, ids, 3)
    assert out.tolist() == [6.0, 4.0, 11.0, 0.0]
    (out * torch.tensor([0.0, 1.0, 2.0, 3.0])).sum().backward()
    assert v.grad.tolist() == [0.0, 2.0, 2.0, 1.0, 0.0, 2.0]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dense", [None, True, False])
def test_pair_table_matches_loop(seed, dense):
    a, na, _ = _labels(seed)
    b, nb, _ = _labels(seed + 10)
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


@pytest.mark.parametrize("shape", [(2, 10, 12), (2, 6, 7, 8)])
def test_render_boxes_matches_loop(shape):
    rng = np.random.default_rng(5)
    nd = len(shape) - 1
    n = 12
    lo = torch.from_numpy(np.stack([rng.integers(0, s, n) for s in shape[1:]], 1))
    hi = torch.minimum(lo + torch.from_numpy(rng.integers(0, 5, (n, nd))), torch.tensor(shape[1:]))
    img = torch.from_numpy(rng.integers(0, shape[0], n))
    vals = torch.rand(n, dtype=torch.float64, requires_grad=True)
    count, vsum = render_boxes(lo, hi, img, shape, values=vals)
    ec = np.zeros(shape, dtype=np.int64)
    ev = torch.zeros(shape, dtype=torch.float64)
    for i in range(n):
        sl = (int(img[i]),) + tuple(slice(int(lo[i, d]), int(hi[i, d])) for d in range(nd))
        ec[sl] += 1
        ev[sl] = ev[sl] + vals[i]
    assert np.array_equal(count.numpy(), ec)
    assert torch.allclose(vsum, ev, atol=1e-12)
    assert float(vsum.detach()[torch.from_numpy(ec == 0)].abs().max()) == 0.0
    w = torch.rand(shape, dtype=torch.float64)
    g1 = torch.autograd.grad((vsum * w).sum(), vals, retain_graph=True)[0]
    g2 = torch.autograd.grad((ev * w).sum(), vals)[0]
    assert torch.allclose(g1, g2)


@pytest.mark.parametrize("shape", [(2, 10, 12), (2, 6, 7, 8)])
def test_box_voxels_matches_render_boxes(shape):
    from lossbench.instances import box_voxels

    rng = np.random.default_rng(6)
    nd = len(shape) - 1
    n = 9
    lo = torch.from_numpy(np.stack([rng.integers(0, s, n) for s in shape[1:]], 1))
    hi = torch.minimum(lo + torch.from_numpy(rng.integers(0, 5, (n, nd))), torch.tensor(shape[1:]))
    img = torch.from_numpy(rng.integers(0, shape[0], n))
    flat, box = box_voxels(lo, hi, img, shape[1:])
    count, _ = render_boxes(lo, hi, img, shape)
    assert torch.equal(torch.bincount(flat, minlength=count.numel()).view(shape), count)
    # every voxel listed lies inside its own box
    coords = np.stack(np.unravel_index(flat.numpy(), shape), 1)
    assert (coords[:, 0] == img[box].numpy()).all()
    assert ((coords[:, 1:] >= lo[box].numpy()) & (coords[:, 1:] < hi[box].numpy())).all()
    assert box_voxels(lo[:0], hi[:0], img[:0], shape[1:])[0].numel() == 0


def test_voxel_categories_by_hand():
    from lossbench.instances import voxel_categories

    y = torch.zeros(1, 6, 8)
    y[0, 1:3, 1:3] = 1
    p = torch.full((1, 6, 8), 0.2)
    p[0, 1:3, 1:4] = 0.9  # covers the instance plus one column: that column is "touching"
    p[0, 4:6, 6:8] = 0.7  # far away: spurious
    p[0, 4, 1] = 0.4  # below threshold: background
    cat = voxel_categories(p, y)
    assert int((cat == 1).sum()) == 4
    assert cat[0, 1, 3] == 2 and cat[0, 2, 3] == 2 and int((cat == 2).sum()) == 2
    assert int((cat == 3).sum()) == 4 and cat[0, 5, 7] == 3
    assert int((cat == 0).sum()) == 48 - 10
