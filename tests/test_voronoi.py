"""Exact Voronoi regions of components: a brute-force oracle, scipy's distance transform, hand cases, errors.

The oracle measures the distance from every voxel to every component voxel and keeps the smallest component id
among the nearest (the documented tie rule). scipy's ``distance_transform_edt`` with indices breaks ties its own
way, so against it the test checks that our component is at scipy's distance everywhere and equal to scipy's
wherever the nearest component is unique.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from lossbench.cc import label_components, voronoi_components, voronoi_regions
from lossbench.cc.envelope import envelope_pass
from lossbench.errors import ConfigError, DataError, ShapeError


def brute_regions(labels: np.ndarray, spacing=None) -> tuple[np.ndarray, np.ndarray]:
    """(regions, number of nearest components) of one image by measuring every voxel-to-site distance."""
    sp = np.ones(labels.ndim) if spacing is None else np.asarray(spacing, dtype=np.float64)
    coords = np.indices(labels.shape).reshape(labels.ndim, -1).T * sp
    flat = labels.reshape(-1)
    sites, site_lab = coords[flat > 0], flat[flat > 0]
    if len(sites) == 0:
        return np.zeros(labels.shape, np.int64), np.zeros(labels.shape, np.int64)
    d = ((coords[:, None, :] - sites[None]) ** 2).sum(-1)
    nearest = d == d.min(1, keepdims=True)
    regions = np.where(nearest, site_lab[None], np.iinfo(np.int64).max).min(1)
    n_nearest = np.array([len(set(site_lab[row])) for row in nearest])
    return regions.reshape(labels.shape), n_nearest.reshape(labels.shape)


def random_case(rng, spatial_dims):
    shape = tuple(int(s) for s in rng.integers(1, 13 if spatial_dims == 2 else 8, size=spatial_dims))
    mask = rng.random((2, *shape)) < rng.choice([0.02, 0.06, 0.15, 0.4])
    # spacings that are exact binary fractions keep every distance exact, so ties are ties for the oracle too
    spacing = None if rng.random() < 0.4 else tuple(float(s) for s in rng.choice([0.5, 1.0, 2.0, 3.0], spatial_dims))
    return mask, int(rng.integers(1, spatial_dims + 1)), spacing


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_equals_brute_force_oracle_on_random_masks(spatial_dims):
    rng = np.random.default_rng(11 + spatial_dims)
    ties = 0
    for _ in range(120):
        mask, conn, spacing = random_case(rng, spatial_dims)
        res = voronoi_components(mask, connectivity=conn, spacing=spacing)
        labels = label_components(mask, connectivity=conn).labels
        assert res.regions.dtype == np.int64
        np.testing.assert_array_equal(res.counts, labels.reshape(2, -1).max(1))
        for b in range(2):
            want, n_nearest = brute_regions(labels[b], spacing)
            np.testing.assert_array_equal(res.regions[b], want, err_msg=f"{mask.shape} {conn} {spacing}")
            ties += int((n_nearest > 1).sum())
    assert ties > 50  # the random masks do exercise the tie rule


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_agrees_with_scipy_distance_transforms(spatial_dims):
    """One scipy transform per component, first strictly smaller distance wins (the original CC-Metrics loop): equal.

    scipy's single transform with indices: the same distance everywhere, the same component except at ties.
    """
    rng = np.random.default_rng(5)
    shape = (40, 37) if spatial_dims == 2 else (18, 15, 17)
    checked = 0
    for density in (0.003, 0.01, 0.05):
        for spacing in (None, (2.0, 1.0, 0.5)[:spatial_dims]):
            mask = rng.random(shape) < density
            labels = label_components(mask[None], connectivity=1).labels[0]
            if labels.max() < 2:
                continue
            ours = voronoi_regions(labels[None], spacing=spacing).regions[0]
            per_k = np.stack(
                [ndimage.distance_transform_edt(labels != k, sampling=spacing) for k in range(1, labels.max() + 1)]
            )
            loop = np.argmin(per_k, axis=0) + 1  # argmin keeps the first (smallest id) of equal minima
            np.testing.assert_array_equal(ours, loop)
            dist, idx = ndimage.distance_transform_edt(labels == 0, sampling=spacing, return_indices=True)
            np.testing.assert_allclose(np.take_along_axis(per_k, (ours - 1)[None], 0)[0], dist, rtol=1e-12)
            tie = ((per_k == per_k.min(0)).sum(0)) > 1
            differ = ours != labels[tuple(idx)]
            assert not (differ & ~tie).any()
            checked += 1
    assert checked >= 4


def test_tie_goes_to_the_smallest_id_hand_case():
    # components 1 (left column) and 2 (right column); the middle column is equidistant
    mask = np.zeros((1, 3, 5), bool)
    mask[0, :, 0] = mask[0, :, 4] = True
    np.testing.assert_array_equal(voronoi_components(mask).regions[0], [[1, 1, 1, 2, 2]] * 3)
    # given labels keep their ids: 5 at (0, 4), 2 at (2, 0); squared distances (to 2, to 5) per voxel:
    #   row 0: (4, 16) (5, 9) (8, 4) (13, 1) (16, 0)  -> 2 2 5 5 5
    #   row 1: (1, 17) (2, 10) (5, 5) (10, 2) (17, 1) -> 2 2 2 5 5   ((1, 2) is a tie: the smaller id, 2)
    #   row 2: (0, 20) (1, 13) (4, 8) (9, 5) (16, 4)  -> 2 2 2 5 5
    labels = np.array([[[0, 0, 0, 0, 5], [0, 0, 0, 0, 0], [2, 0, 0, 0, 0]]])
    want = [[2, 2, 5, 5, 5], [2, 2, 2, 5, 5], [2, 2, 2, 5, 5]]
    np.testing.assert_array_equal(voronoi_regions(labels).regions[0], want)


def test_anisotropic_spacing_moves_the_boundary():
    mask = np.zeros((1, 1, 7), bool)
    mask[0, 0, 0] = mask[0, 0, 6] = True
    np.testing.assert_array_equal(voronoi_components(mask).regions[0, 0], [1, 1, 1, 1, 2, 2, 2])
    m2 = np.zeros((1, 5, 3), bool)
    m2[0, 0, 0] = True  # component 1 at (0, 0)
    m2[0, 4, 2] = True  # component 2 at (4, 2)
    # spacing (2, 1): voxel (2, 0): d1^2 = (2*2)^2 = 16, d2^2 = (2*2)^2 + 2^2 = 20 -> 1
    #                 voxel (2, 2): d1^2 = 16 + 4 = 20, d2^2 = 16 -> 2;  voxel (2, 1): 17 vs 17 -> tie -> 1
    reg = voronoi_components(m2, spacing=(2.0, 1.0)).regions[0]
    assert (reg[2, 0], reg[2, 1], reg[2, 2]) == (1, 1, 2)
    # spacing (1, 2): voxel (2, 1): d1^2 = 4 + 4 = 8, d2^2 = 4 + 4 = 8 -> tie -> 1; voxel (1, 2): 1+16=17 vs 9 -> 2
    reg = voronoi_components(m2, spacing=(1.0, 2.0)).regions[0]
    assert (reg[2, 1], reg[1, 2]) == (1, 2)


def test_breakpoint_tie_with_a_parabola_that_touches_the_envelope_at_one_point():
    # sites at 0 (label 3) and 4 (label 2) and a value 4 at 2 (label 1): at voxel 2 all three are at 4
    f = np.array([[0.0, np.inf, 4.0, np.inf, 0.0]])
    lab = np.array([[3, 0, 1, 0, 2]], dtype=np.int32)
    envelope_pass(f, lab, 1, 1.0)
    np.testing.assert_array_equal(lab[0], [3, 3, 1, 2, 2])
    np.testing.assert_array_equal(f[0], [0, 1, 4, 1, 0])


def test_one_component_and_no_component_skip_the_distance_transform(monkeypatch):
    import lossbench.cc.envelope as env

    def fail(*args, **kwargs):
        raise AssertionError("distance transform ran")

    monkeypatch.setattr(env, "nearest_sites", fail)
    mask = np.zeros((3, 6, 7), bool)
    mask[0, 2:4, 2:4] = True  # one component
    mask[2, 0, 0] = True  # one component
    res = voronoi_components(mask)
    np.testing.assert_array_equal(res.counts, [1, 0, 1])
    assert (res.regions[0] == 1).all() and (res.regions[1] == 0).all() and (res.regions[2] == 1).all()


def test_torch_in_torch_out_and_batch_numbering():
    rng = np.random.default_rng(2)
    mask = rng.random((3, 9, 10, 11)) < 0.02
    mask[1] = False
    t = torch.from_numpy(mask)
    res = voronoi_components(t, connectivity=1)
    assert isinstance(res.regions, torch.Tensor) and res.regions.dtype == torch.int64
    assert res.regions.device == t.device and res.counts.dtype == torch.int64
    ref = voronoi_components(mask, connectivity=1)
    np.testing.assert_array_equal(res.regions.numpy(), ref.regions)
    assert (res.regions[1] == 0).all()
    # every component voxel keeps its own id (numbering of label_components, per image)
    labels = label_components(mask, connectivity=1).labels
    np.testing.assert_array_equal(res.regions.numpy()[mask], labels[mask])


def test_labels_need_not_be_contiguous_and_any_integer_dtype():
    labels = np.zeros((1, 4, 6), dtype=np.uint8)
    labels[0, 0, 0] = 7
    labels[0, 3, 5] = 3
    res = voronoi_regions(labels)
    assert res.counts.tolist() == [7]
    want, _ = brute_regions(labels[0].astype(np.int64))
    np.testing.assert_array_equal(res.regions[0], want)


@pytest.mark.parametrize(
    "call, exc, fragment",
    [
        (lambda: voronoi_components(np.zeros((1, 4, 4)), spacing=(1.0,)), ConfigError, "spacing"),
        (lambda: voronoi_components(np.zeros((1, 4, 4)), spacing=(1.0, 0.0)), ConfigError, "spacing"),
        (lambda: voronoi_components(np.zeros((1, 4, 4)), spacing="ab"), ConfigError, "spacing"),
        (lambda: voronoi_components(np.zeros((1, 4, 4)), connectivity=3), ConfigError, "connectivity"),
        (lambda: voronoi_components(np.zeros((4, 4))), ShapeError, "spatial dims"),
        (lambda: voronoi_components(np.full((1, 4, 4), 0.5)), DataError, "binary"),
        (lambda: voronoi_regions(np.zeros((1, 4, 4), np.float32)), DataError, "integer component labels"),
        (lambda: voronoi_regions(-np.ones((1, 4, 4), np.int64)), DataError, "integer component labels"),
        (lambda: voronoi_regions(np.zeros((4, 4), np.int64)), ShapeError, "shape"),
        (lambda: voronoi_regions([[1]]), DataError, "ndarray"),
    ],
)
def test_bad_input(call, exc, fragment):
    with pytest.raises(exc, match=fragment):
        call()


def test_batch_regions_number_over_the_batch():
    from lossbench.cc.voronoi import batch_regions

    rng = np.random.default_rng(4)
    mask = rng.random((4, 7, 9, 8)) < 0.03
    mask[1] = False
    mask[2] = False
    mask[2, 3, 3, 3] = True  # one component: one region
    regions, counts = batch_regions(mask, 3, None)
    per_image = voronoi_components(mask)
    assert regions.dtype == np.int32
    np.testing.assert_array_equal(counts, per_image.counts)
    offsets = np.cumsum(counts) - counts
    for b in range(4):
        want = per_image.regions[b] + (offsets[b] if counts[b] else 0)
        np.testing.assert_array_equal(regions[b], want)
    assert (regions[1] == 0).all() and (regions[2] == offsets[2] + 1).all()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensor_regions_equal_cpu():
    rng = np.random.default_rng(6)
    mask = torch.from_numpy(rng.random((2, 20, 21, 22)) < 0.01)
    cpu = voronoi_components(mask, connectivity=1)
    gpu = voronoi_components(mask.cuda(), connectivity=1)
    assert gpu.regions.device.type == "cuda"
    assert torch.equal(gpu.regions.cpu(), cpu.regions) and torch.equal(gpu.counts.cpu(), cpu.counts)
