"""Per-instance helpers against brute-force loops (scipy labelling)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from lossbench.cc import label_batch, label_components
from lossbench.instances import (
    bitmap_contains,
    bitmap_positions,
    box_row_words,
    centroids_ceil_from_positions,
    component_centroids_ceil,
    component_images,
    component_last_voxel,
    component_sizes,
    count_nonzero_rows,
    coverage_work_size,
    cube_coverage,
    flat_nonzero,
    foreground_ids,
    global_ids,
    multiplicity,
    overlap_pairs,
    pair_table,
    popcount,
    render_boxes,
    row_words,
    segment_sum,
    take_flat,
    take_rows,
    threshold_mask,
    union_bitmap,
    unique_sorted,
    window_sums,
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


@pytest.mark.parametrize("seed", range(4))
def test_unique_sorted_equals_torch_unique(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    runs = [np.sort(rng.integers(0, 500, size=rng.integers(0, 60))) for _ in range(20)]
    x = torch.from_numpy(np.concatenate(runs).astype(np.int64))
    want = torch.unique(x, sorted=True, return_inverse=True, return_counts=True)
    got = unique_sorted(x, return_inverse=True, return_counts=True)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert torch.equal(unique_sorted(x)[0], want[0])
    assert torch.equal(unique_sorted(x, return_counts=True)[1], want[2])
    monkeypatch.setattr("lossbench.instances.NUMPY_ON_CPU", False)  # the torch path (any device)
    got = unique_sorted(x, return_inverse=True, return_counts=True)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert unique_sorted(x[:0], return_inverse=True)[0].numel() == 0


@pytest.mark.parametrize("numpy_on_cpu", [True, False])
def test_multiplicity_counts_each_value(numpy_on_cpu, monkeypatch):
    monkeypatch.setattr("lossbench.instances.NUMPY_ON_CPU", numpy_on_cpu)
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.integers(0, 40, size=200))
    want = torch.tensor([int((x == v).sum()) for v in x.tolist()])
    assert torch.equal(multiplicity(x, 40), want)  # bincount over the 40 values
    assert torch.equal(multiplicity(x, 10**6), want)  # values spread over a large range: the sort
    assert multiplicity(x[:0], 40).numel() == 0


def test_segment_sum_is_differentiable():
    ids = torch.tensor([0, 2, 2, 1, 0, 2])
    v = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], requires_grad=True)
    out = segment_sum(v, ids, 3)
    assert out.tolist() == [6.0, 4.0, 11.0, 0.0]
    (out * torch.tensor([0.0, 1.0, 2.0, 3.0])).sum().backward()
    assert v.grad.tolist() == [0.0, 2.0, 2.0, 1.0, 0.0, 2.0]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dense", [None, "torch", True, False])
def test_pair_table_matches_loop(seed, dense, monkeypatch):
    if dense == "torch":  # the first-partner method on the device-agnostic torch path (numpy on CPU otherwise)
        monkeypatch.setattr("lossbench.instances.NUMPY_ON_CPU", False)
        dense = None
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


@pytest.mark.parametrize("numpy_on_cpu", [True, False])
@pytest.mark.parametrize("shape", [(2, 10, 12), (2, 6, 7, 8)])
def test_box_voxels_matches_render_boxes(shape, numpy_on_cpu, monkeypatch):
    from lossbench.instances import box_voxels

    monkeypatch.setattr("lossbench.instances.NUMPY_ON_CPU", numpy_on_cpu)  # numpy fast path and the torch path

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
    # both paths list the same voxels in the same order (the centre term's sums depend on it)
    monkeypatch.setattr("lossbench.instances.NUMPY_ON_CPU", not numpy_on_cpu)
    other = box_voxels(lo, hi, img, shape[1:])
    assert torch.equal(other[0], flat) and torch.equal(other[1], box)


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


# ---------------------------------------------------------------------------------------------------------------
# CPU fast-path helpers (numpy views of CPU tensors) and the dense cube coverage of the ICI centre term


def test_mask_helpers_match_torch():
    rng = np.random.default_rng(21)
    v = torch.from_numpy(rng.random((2, 5, 6, 7)).astype(np.float32))
    v[0, 0, 0, :3] = torch.tensor([0.3, 0.5, 0.7])
    # the threshold is compared in the tensor's dtype, as torch does (0.300000011921 rounds to float32(0.3))
    for thr in (0.5, 0.3, 0.300000011921):
        assert torch.equal(threshold_mask(v, thr), v >= thr)
        assert torch.equal(threshold_mask(v, thr, strict=True), v > thr)
    m = v > 0.6
    assert torch.equal(flat_nonzero(m), torch.nonzero(m.reshape(-1), as_tuple=True)[0])
    assert flat_nonzero(torch.zeros(3, 4, dtype=torch.bool)).numel() == 0
    assert count_nonzero_rows(m).tolist() == [int(m[0].sum()), int(m[1].sum())]
    # strided views (the coverage maps are views into padded buffers)
    view = m[:, 1:4, ::2, 2:]
    assert count_nonzero_rows(view).tolist() == [int(view[0].sum()), int(view[1].sum())]
    idx = torch.tensor([[0, 5], [17, 419]])
    assert torch.equal(take_flat(v, idx), v.reshape(-1)[idx])
    assert torch.equal(take_flat(v, idx.to(torch.int16)), v.reshape(-1)[idx])


def test_take_rows_by_hand():
    buf = torch.arange(20, dtype=torch.int16)
    rows = take_rows(buf, torch.tensor([0, 7, 15]), 5)
    assert rows.tolist() == [[0, 1, 2, 3, 4], [7, 8, 9, 10, 11], [15, 16, 17, 18, 19]]


@pytest.mark.parametrize("dtype", [torch.int16, torch.int32, torch.bool])
def test_window_sums_match_loop(dtype):
    rng = np.random.default_rng(22)
    shape, widths = (9, 8, 11), (3, 1, 7)
    strides = (shape[1] * shape[2], shape[2], 1)
    a = rng.integers(0, 3, shape) * (rng.random(shape) < 0.3)
    buf = torch.from_numpy(a.reshape(-1)).to(dtype)
    before = buf.clone()
    out = window_sums(buf, widths, strides).view(shape)
    assert torch.equal(buf, before)  # the input is not modified without scratch
    exp = a.astype(np.int64)
    for ax, w in enumerate(widths):  # forward window sums along every axis, positions whose window fits only
        n = exp.shape[ax] - w + 1
        exp = sum(np.take(exp, np.arange(k, k + n), axis=ax) for k in range(w))
    got = out[: exp.shape[0], : exp.shape[1], : exp.shape[2]].long().numpy()
    assert np.array_equal(got, exp > 0 if dtype == torch.bool else exp)
    # with a scratch buffer: same result, no allocation of the output
    scratch = torch.empty_like(buf)
    res = window_sums(buf.clone(), widths, strides, scratch=scratch).view(shape)
    assert torch.equal(
        res[: exp.shape[0], : exp.shape[1], : exp.shape[2]], out[: exp.shape[0], : exp.shape[1], : exp.shape[2]]
    )


@pytest.mark.parametrize("dtype", [torch.int16, torch.int32, torch.bool])
@pytest.mark.parametrize(
    ("shape", "half"),
    [((2, 13, 11, 9), (3, 2, 1)), ((3, 17, 12), (2, 4)), ((1, 5, 6, 7), (0, 1, 3)), ((2, 4, 5), (6, 6))],
)
def test_cube_coverage_matches_render_boxes(shape, half, dtype):
    rng = np.random.default_rng(23)
    nd = len(shape) - 1
    n = 30
    # centres anywhere, also outside the image (boxes partly or wholly outside)
    centre = torch.from_numpy(np.stack([rng.integers(-h - 3, s + h + 3, n) for s, h in zip(shape[1:], half)], 1))
    img = torch.from_numpy(rng.integers(0, shape[0], n))
    h = torch.tensor(half)
    size = torch.tensor(shape[1:])
    hi = torch.minimum((centre + h + 1).clamp(min=0), size)
    lo = torch.minimum((centre - h).clamp(min=0), hi)
    count, _ = render_boxes(lo, hi, img, shape)
    expected = count > 0 if dtype == torch.bool else count.to(dtype)
    assert torch.equal(cube_coverage(centre, img, half, shape, dtype), expected)
    # through a caller's work buffer, twice (the second call reuses it)
    work = torch.full((2 * coverage_work_size(shape, half),), 7, dtype=torch.int8).to(dtype)
    assert torch.equal(cube_coverage(centre, img, half, shape, dtype, work=work), expected)
    assert torch.equal(cube_coverage(centre[:0], img[:0], half, shape, dtype, work=work).long().sum(), torch.tensor(0))
    assert nd == len(half)


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
    import lossbench.instances as inst
    import lossbench.losses.ici as ici_mod
    from lossbench.losses import build_loss

    monkeypatch.setattr(ici_mod, "DENSE_CENTER_FRACTION", {"bitmap": dense, "listing": dense})  # both centre paths

    rng = np.random.default_rng(24)
    y = torch.from_numpy(rng.random((2, 1, 12, 13, 11)) < 0.2).float()
    x = torch.from_numpy(rng.normal(size=(2, 1, 12, 13, 11))).requires_grad_(True)
    results = []
    for fast in (True, False):
        monkeypatch.setattr(inst, "NUMPY_ON_CPU", fast)
        for kw in ({}, {"reference": True}):
            if name == "blob" and kw:
                continue
            terms = build_loss(name, sigmoid=True, **kw).terms(x, y)
            grad = torch.autograd.grad(terms["total"], x)[0]
            results.append(({k: float(v.detach()) for k, v in terms.items()}, grad))
    half = len(results) // 2
    for (t1, g1), (t2, g2) in zip(results[:half], results[half:]):
        assert t1 == pytest.approx(t2, rel=1e-12, abs=1e-12)
        assert torch.allclose(g1, g2, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 10, 12), (2, 5, 150), (2, 6, 7, 8), (1, 3, 4, 130)])
def test_row_bitmaps_match_render_boxes(shape):
    """Unions of boxes as row bitmaps (lines wider than one and two 64-bit words included) against a dense render."""
    rng = np.random.default_rng(11)
    nd = len(shape) - 1
    n = 14
    lo = np.stack([rng.integers(0, s, n) for s in shape[1:]], 1).astype(np.int64)
    hi = np.minimum(lo + rng.integers(0, 90, (n, nd)), np.array(shape[1:])).astype(np.int64)
    hi[0] = lo[0]  # an empty box gives no word
    img = rng.integers(0, shape[0], n).astype(np.int64)
    count, _ = render_boxes(torch.from_numpy(lo), torch.from_numpy(hi), torch.from_numpy(img), shape)
    key, mask, box = box_row_words(lo, hi, img, shape[1:])
    assert (np.diff(box) >= 0).all() and 0 not in box
    n_words = shape[0] * int(np.prod(shape[1:-1])) * row_words(shape[-1])
    bitmap = union_bitmap(key, mask, n_words)
    covered = np.flatnonzero(count.numpy().reshape(-1) > 0)
    assert np.array_equal(bitmap_positions(bitmap, shape[-1]), covered)
    assert int(popcount(bitmap).sum()) == covered.size
    every = np.arange(count.numel())
    assert np.array_equal(bitmap_contains(bitmap, every, shape[-1]), count.numpy().reshape(-1) > 0)
    # each box's own words hold exactly its voxels
    for i in range(1, n):
        words = union_bitmap(key[box == i], mask[box == i], n_words)
        assert int(popcount(words).sum()) == int(np.prod(np.clip(hi[i] - lo[i], 0, None)))


def test_popcount_without_numpy_bitwise_count(monkeypatch):
    words = np.array([0, 1, 2**63, 2**64 - 1, 0x0F0F], dtype=np.uint64)
    expected = [0, 1, 1, 64, 8]
    assert popcount(words).tolist() == expected
    monkeypatch.delattr(np, "bitwise_count", raising=False)  # numpy < 2.0
    assert popcount(words).tolist() == expected
    assert popcount(words.reshape(5, 1)).shape == (5, 1)
