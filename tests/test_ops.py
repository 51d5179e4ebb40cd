"""The primitives of lossbench.ops against brute-force loops and dense renders, on both the numpy and the torch path."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from oracles import render_boxes

from lossbench.ops import (
    bitmap_contains,
    bitmap_positions,
    box_grid,
    box_row_words,
    box_sums,
    box_voxels,
    count_nonzero_rows,
    coverage_dtype,
    coverage_work_size,
    covering_sums,
    cube_coverage,
    cube_geometry,
    flat_nonzero,
    inverse_coverage_sums,
    popcount,
    row_words,
    segment_sum,
    take_flat,
    take_rows,
    threshold_mask,
    torch_only,
    union_bitmap,
    unique_sorted,
    use_numpy,
    window_sums,
)


def test_torch_only_switches_the_numpy_path_off_and_back():
    t = torch.zeros(3)
    assert use_numpy(t)
    with torch_only():
        assert not use_numpy(t)
    assert use_numpy(t) and not use_numpy(t.to(torch.bfloat16))


@pytest.mark.parametrize("seed", range(4))
def test_unique_sorted_equals_torch_unique(seed):
    rng = np.random.default_rng(seed)
    runs = [np.sort(rng.integers(0, 500, size=rng.integers(0, 60))) for _ in range(20)]
    x = torch.from_numpy(np.concatenate(runs).astype(np.int64))
    want = torch.unique(x, sorted=True, return_inverse=True, return_counts=True)
    got = unique_sorted(x, return_inverse=True, return_counts=True)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert torch.equal(unique_sorted(x)[0], want[0])
    assert torch.equal(unique_sorted(x, return_counts=True)[1], want[2])
    with torch_only():  # the torch path (any device)
        got = unique_sorted(x, return_inverse=True, return_counts=True)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert unique_sorted(x[:0], return_inverse=True)[0].numel() == 0


def test_segment_sum_is_differentiable():
    ids = torch.tensor([0, 2, 2, 1, 0, 2])
    v = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], requires_grad=True)
    out = segment_sum(v, ids, 3)
    assert out.tolist() == [6.0, 4.0, 11.0, 0.0]
    (out * torch.tensor([0.0, 1.0, 2.0, 3.0])).sum().backward()
    assert v.grad.tolist() == [0.0, 2.0, 2.0, 1.0, 0.0, 2.0]


@pytest.mark.parametrize("numpy_on_cpu", [True, False])
@pytest.mark.parametrize("shape", [(2, 10, 12), (2, 6, 7, 8)])
def test_box_voxels_matches_render_boxes(shape, numpy_on_cpu):
    rng = np.random.default_rng(6)
    nd = len(shape) - 1
    n = 9
    lo = torch.from_numpy(np.stack([rng.integers(0, s, n) for s in shape[1:]], 1))
    hi = torch.minimum(lo + torch.from_numpy(rng.integers(0, 5, (n, nd))), torch.tensor(shape[1:]))
    img = torch.from_numpy(rng.integers(0, shape[0], n))
    with contextlib.nullcontext() if numpy_on_cpu else torch_only():  # numpy fast path and the torch path
        flat, box = box_voxels(lo, hi, img, shape[1:])
    count, _ = render_boxes(lo, hi, img, shape)
    assert torch.equal(torch.bincount(flat, minlength=count.numel()).view(shape), count)
    # every voxel listed lies inside its own box
    coords = np.stack(np.unravel_index(flat.numpy(), shape), 1)
    assert (coords[:, 0] == img[box].numpy()).all()
    assert ((coords[:, 1:] >= lo[box].numpy()) & (coords[:, 1:] < hi[box].numpy())).all()
    assert box_voxels(lo[:0], hi[:0], img[:0], shape[1:])[0].numel() == 0
    # both paths list the same voxels in the same order (the center term's sums depend on it)
    with torch_only() if numpy_on_cpu else contextlib.nullcontext():
        other = box_voxels(lo, hi, img, shape[1:])
    assert torch.equal(other[0], flat) and torch.equal(other[1], box)


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
    # centers anywhere, also outside the image (boxes partly or wholly outside)
    center = torch.from_numpy(np.stack([rng.integers(-h - 3, s + h + 3, n) for s, h in zip(shape[1:], half)], 1))
    img = torch.from_numpy(rng.integers(0, shape[0], n))
    h = torch.tensor(half)
    size = torch.tensor(shape[1:])
    hi = torch.minimum((center + h + 1).clamp(min=0), size)
    lo = torch.minimum((center - h).clamp(min=0), hi)
    count, _ = render_boxes(lo, hi, img, shape)
    expected = count > 0 if dtype == torch.bool else count.to(dtype)
    assert torch.equal(cube_coverage(center, img, half, shape, dtype), expected)
    # through a caller's work buffer, twice (the second call reuses it)
    work = torch.full((2 * coverage_work_size(shape, half),), 7, dtype=torch.int8).to(dtype)
    assert torch.equal(cube_coverage(center, img, half, shape, dtype, work=work), expected)
    assert torch.equal(cube_coverage(center[:0], img[:0], half, shape, dtype, work=work).long().sum(), torch.tensor(0))
    assert nd == len(half)


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


def _brute_box_sum(values, center, image, half):
    """Sum of values over every box |x - c| <= half (truncated at the border), by slicing."""
    out = []
    for c, b in zip(center.tolist(), image.tolist()):
        sl = tuple(slice(max(ci - h, 0), max(ci + h + 1, 0)) for ci, h in zip(c, half))
        out.append(float(values[b][sl].sum()))
    return torch.tensor(out, dtype=values.dtype)


@pytest.mark.parametrize(
    ("shape", "half"), [((2, 9, 11, 10), (3, 2, 1)), ((3, 14, 12), (2, 4)), ((1, 4, 5, 6), (0, 3, 3))]
)
def test_box_sums_match_slicing(shape, half):
    rng = np.random.default_rng(31)
    values = torch.from_numpy(rng.random(shape))
    n = 25
    # centers inside the image and one voxel outside it on either side (the center cubes' reach)
    center = torch.from_numpy(np.stack([rng.integers(-1, s + 1, n) for s in shape[1:]], 1))
    image = torch.from_numpy(rng.integers(0, shape[0], n))
    expected = _brute_box_sum(values, center, image, half)
    grid, inner = box_grid(shape, half, torch.float64, values.device)
    inner.copy_(values)
    assert torch.allclose(box_sums(grid, center, image, half), expected, rtol=1e-12, atol=1e-12)
    assert box_sums(grid, center[:0], image[:0], half).numel() == 0


@pytest.mark.parametrize("numpy_path", [True, False])
@pytest.mark.parametrize("method", ["incidences", "dense"])
@pytest.mark.parametrize("half", [(2, 2, 3), (1, 2, 5)])  # rows of 7 (one 8-byte read) and of 11 voxels
def test_inverse_coverage_sums_match_brute_force(half, method, numpy_path, monkeypatch):
    """Per box, the sum over its voxels outside the skip mask of 1 / (boxes covering the voxel): both algorithms,
    both code paths, against slicing; and the count dtype from coverage_dtype never overflows."""
    import lossbench.ops.boxes as boxes

    monkeypatch.setattr(boxes, "INCIDENCE_LIMIT", 1e18 if method == "incidences" else 0.0)
    rng = np.random.default_rng(8)
    spatial, n_img = (11, 12, 13), 2
    shape = (n_img, *spatial)
    center_l = torch.from_numpy(np.stack([rng.integers(0, s, 9) for s in spatial], 1))
    center_p = torch.from_numpy(np.stack([rng.integers(-1, s, 40) for s in spatial], 1))
    img_l, img_p = torch.from_numpy(rng.integers(0, n_img, 9)), torch.from_numpy(rng.integers(0, n_img, 40))
    size = coverage_work_size(shape, half)
    dtype = coverage_dtype(center_p, img_p, half, n_img)
    assert dtype == torch.uint8
    work_l, work_p = torch.empty(2 * size, dtype=torch.bool), torch.empty(2 * size, dtype=dtype)
    in_l = cube_coverage(center_l, img_l, half, shape, torch.bool, work=work_l)
    count = cube_coverage(center_p, img_p, half, shape, dtype, work=work_p)
    skip = work_l[:size] if in_l.storage_offset() < size else work_l[size:]
    counts = work_p[:size] if count.storage_offset() < size else work_p[size:]
    inverse = torch.where(~in_l & (count > 0), 1.0 / count.double().clamp(min=1), 0.0)
    expected = _brute_box_sum(inverse, center_p, img_p, half)
    with contextlib.nullcontext() if numpy_path else torch_only():
        got = inverse_coverage_sums(skip.clone(), counts, center_p, img_p, half, spatial)
    assert expected.sum() > 0 and torch.allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_coverage_dtype_widens_when_a_slab_holds_many_centers():
    """More than 255 box centers within 2 half + 1 planes of one image: a byte could overflow, int32 is chosen."""
    center = torch.tensor([[5, 1, 1]] * 200 + [[7, 2, 2]] * 100)
    image = torch.zeros(300, dtype=torch.int64)
    assert coverage_dtype(center, image, (1, 1, 1), 1) == torch.int32  # planes 5 and 7 lie within 3 planes
    assert coverage_dtype(center, image, (0, 1, 1), 1) == torch.uint8  # 200 and 100 centers, in separate planes
    counts = cube_coverage(center, image, (1, 1, 1), (1, 9, 5, 5), torch.int32)
    assert int(counts.max()) == 300


@pytest.mark.parametrize(("shape", "half"), [((2, 8, 9, 7), (2, 1, 3)), ((3, 11, 10), (1, 2))])
def test_covering_sums_match_brute_force_in_value_and_gradient(shape, half):
    """Per position, the sum of the values of the boxes that cover it (and its gradient) against a dense render."""
    rng = np.random.default_rng(41)
    n = 15
    center = torch.from_numpy(np.stack([rng.integers(-1, s + 1, n) for s in shape[1:]], 1))
    image = torch.from_numpy(rng.integers(0, shape[0], n))
    positions = torch.from_numpy(np.sort(rng.choice(int(np.prod(shape)), 40, replace=False)))
    values = torch.rand(n, dtype=torch.float64, requires_grad=True)
    h = torch.tensor(half)
    hi = torch.minimum((center + h + 1).clamp(min=0), torch.tensor(shape[1:]))
    lo = torch.minimum((center - h).clamp(min=0), hi)
    _, dense = render_boxes(lo, hi, image, shape, values=values)
    expected = dense.reshape(-1)[positions]
    got = covering_sums(values, center, image, half, shape, positions)
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)
    weights = torch.rand(40, dtype=torch.float64)
    g1 = torch.autograd.grad((got * weights).sum(), values)[0]
    g2 = torch.autograd.grad((expected * weights).sum(), values)[0]
    assert torch.allclose(g1, g2, rtol=1e-12, atol=1e-12)


def _brute_cube_geometry(label_center, label_image, pred_center, pred_image, n_img, spatial, half):
    """The quantities of cube_geometry by slicing every cube into dense maps (float64 weights)."""
    shape = (n_img, *spatial)
    in_label = torch.zeros(shape, dtype=torch.bool)
    count = torch.zeros(shape, dtype=torch.int64)

    def window(c):
        return tuple(slice(max(ci - h, 0), max(ci + h + 1, 0)) for ci, h in zip(c, half))

    for c, b in zip(label_center.tolist(), label_image.tolist()):
        in_label[b][window(c)] = True
    for c, b in zip(pred_center.tolist(), pred_image.tolist()):
        count[b][window(c)] += 1
    covered = count > 0
    inverse = torch.where(~in_label & covered, 1.0 / count.double().clamp(min=1), 0.0)
    weights = [float(inverse[b][window(c)].sum()) for c, b in zip(pred_center.tolist(), pred_image.tolist())]
    per_image = lambda m: m.reshape(n_img, -1).sum(1)  # noqa: E731
    return (
        per_image(in_label & covered), per_image(in_label), per_image(covered),
        torch.nonzero((in_label & ~covered).reshape(-1)).reshape(-1), torch.tensor(weights, dtype=torch.float64),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("spatial", "half", "n_label", "n_pred"),
    [
        ((11, 12, 13), (2, 1, 3), 9, 60),
        ((9, 10, 8), (0, 2, 1), 4, 40),
        ((17, 9), (3, 1), 5, 30),
        ((21,), (2,), 3, 8),
        ((7, 8, 9), (1, 1, 1), 0, 25),  # no label cube anywhere
        ((7, 8, 9), (3, 3, 3), 6, 0),  # no prediction cube
    ],
)
def test_cube_geometry_matches_slicing(spatial, half, n_label, n_pred):
    """Counts, uncovered label voxels and cube weights of the streamed kernel against dense slicing: centers one
    voxel outside the image on either side, images without cubes (batch of 3, cubes drawn in images 0 and 2)."""
    rng = np.random.default_rng(sum(spatial) + n_pred)
    n_img = 3
    draw = lambda n: torch.from_numpy(np.stack([rng.integers(-1, s + 1, n) for s in spatial], 1))  # noqa: E731
    label_center, pred_center = draw(n_label), draw(n_pred)
    label_image = torch.from_numpy(rng.choice([0, 2], n_label))
    pred_image = torch.from_numpy(rng.choice([0, 2], n_pred))
    expected = _brute_cube_geometry(label_center, label_image, pred_center, pred_image, n_img, spatial, half)
    got = cube_geometry(label_center, label_image, pred_center, pred_image, n_img, spatial, half, weights=True)
    for name, want, have in zip(("both", "label", "pred", "label_only_pos"), expected, got):
        assert torch.equal(have, want), name
    assert got.pred_cube_weight.dtype == torch.float64
    assert torch.allclose(got.pred_cube_weight, expected[4], rtol=1e-12, atol=1e-13)
    assert n_pred == 0 or expected[4].sum() > 0
    counts_only = cube_geometry(label_center, label_image, pred_center, pred_image, n_img, spatial, half, weights=False)
    assert counts_only.pred_cube_weight is None
    assert all(torch.equal(a, b) for a, b in zip(counts_only[:4], got[:4]))


def test_cube_geometry_weights_exact_zero_inside_labels_and_many_covering_cubes():
    """A prediction cube entirely inside a label cube weighs exactly 0; 300 cubes on the same voxels (a count
    beyond a byte) give each cube 1/300 per voxel, within the fixed point's resolution."""
    spatial, half = (9, 9, 9), (1, 1, 1)
    label_center = torch.tensor([[4, 4, 4]])
    inside = torch.tensor([[4, 4, 4]])  # the same 3^3 voxels as the label cube
    got = cube_geometry(label_center, torch.tensor([0]), inside, torch.tensor([0]), 1, spatial, half, weights=True)
    assert got.pred_cube_weight.tolist() == [0.0]
    pile = torch.tensor([[1, 1, 1]] * 300)
    far = torch.tensor([[7, 7, 7]])
    got = cube_geometry(
        far, torch.tensor([0]), pile, torch.zeros(300, dtype=torch.int64), 1, spatial, half, weights=True
    )
    # each cube of the pile covers the 3^3 voxels 0..2 on every axis, all shared by the 300 cubes
    assert torch.allclose(got.pred_cube_weight, torch.full((300,), 27 / 300, dtype=torch.float64), rtol=1e-14)
    assert got.both.tolist() == [0] and got.pred.tolist() == [27] and got.label.tolist() == [27]
    assert got.label_only_pos.numel() == 27


@pytest.mark.parametrize("cube_size", [3, 7, 31, 101])
def test_cube_geometry_fixed_point_never_overflows(cube_size):
    """The fraction bits leave room for a whole cube of weight-1 voxels: a lone cube's weight is its volume."""
    half = ((cube_size - 1) // 2,) * 3
    side = cube_size + 2
    center = torch.tensor([[side // 2] * 3])
    got = cube_geometry(center[:0], center[:0, 0], center, torch.tensor([0]), 1, (side,) * 3, half, weights=True)
    assert got.pred_cube_weight.tolist() == [float(cube_size**3)]
