import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage
from skimage import measure

from lossbench.cc import CCResult, label_components
from lossbench.cc.shapes import corner_voxels, diagonal_line, serpentine, spiral
from lossbench.errors import ConfigError, DataError, LossbenchError, ShapeError

EXACT = ["cc3d", "scipy", "torch", "auto"]


def scipy_oracle(mask: np.ndarray, connectivity: int | None) -> np.ndarray:
    nd = mask.ndim - 1
    st_ = ndimage.generate_binary_structure(nd, connectivity or nd)
    return np.stack([ndimage.label(m, structure=st_)[0] for m in mask]).astype(np.int64)


@st.composite
def batched_masks(draw, dims=(2, 3)):
    nd = draw(st.sampled_from(dims))
    max_side = 24 if nd == 2 else 10
    shape = (draw(st.integers(1, 3)),) + tuple(draw(st.integers(1, max_side)) for _ in range(nd))
    density = draw(st.sampled_from([0.05, 0.2, 0.4, 0.55, 0.8]))
    seed = draw(st.integers(0, 2**31 - 1))
    return np.random.default_rng(seed).random(shape) < density


@pytest.mark.parametrize("backend", EXACT)
@given(mask=batched_masks(), data=st.data())
def test_exact_backends_equal_scipy_label_arrays(backend, mask, data):
    nd = mask.ndim - 1
    conn = data.draw(st.sampled_from([None, *range(1, nd + 1)]))
    res = label_components(mask, connectivity=conn, backend=backend)
    expected = scipy_oracle(mask, conn)
    assert res.labels.dtype == np.int64
    np.testing.assert_array_equal(res.labels, expected)
    np.testing.assert_array_equal(res.counts, expected.reshape(len(mask), -1).max(1))


@given(mask=batched_masks())
def test_skimage_label_is_a_second_cpu_reference(mask):
    """scikit-image's measure.label numbers components as scipy does, for every connectivity (hops, as ours)."""
    nd = mask.ndim - 1
    for conn in range(1, nd + 1):
        skimage_labels = np.stack([measure.label(m, connectivity=conn, background=0) for m in mask])
        np.testing.assert_array_equal(skimage_labels, scipy_oracle(mask, conn))
        np.testing.assert_array_equal(label_components(mask, connectivity=conn).labels, skimage_labels)


@given(mask=arrays(np.bool_, st.tuples(st.just(1), st.integers(1, 12), st.integers(1, 12))))
def test_torch_backend_tensor_in_tensor_out(mask):
    t = torch.from_numpy(mask)
    res = label_components(t, connectivity=1, backend="torch")
    assert isinstance(res.labels, torch.Tensor) and res.labels.dtype == torch.int64
    assert res.labels.device == t.device
    np.testing.assert_array_equal(res.labels.numpy(), scipy_oracle(mask, 1))


SHAPES = {
    "serpentine": serpentine,
    "spiral": spiral,
    "diagonal": diagonal_line,
    "corners": corner_voxels,
}


@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize("nd", [2, 3])
@pytest.mark.parametrize("backend", EXACT)
def test_adversarial_shapes(name, nd, backend):
    size = 24 if nd == 3 else 40
    mask = SHAPES[name](size, spatial_dims=nd)[None]
    for conn in range(1, nd + 1):
        res = label_components(mask, connectivity=conn, backend=backend)
        np.testing.assert_array_equal(res.labels, scipy_oracle(mask, conn))


def test_known_counts_of_adversarial_shapes():
    assert label_components(serpentine(40)[None]).counts[0] == 1
    assert label_components(spiral(40)[None]).counts[0] == 1
    line = diagonal_line(10, spatial_dims=3)[None]
    assert label_components(line).counts[0] == 1
    assert label_components(line, connectivity=2).counts[0] == 10
    assert label_components(corner_voxels(8, 3)[None]).counts[0] == 8


@pytest.mark.parametrize("backend", EXACT + ["maxpool"])
@pytest.mark.parametrize("fill", [0, 1])
def test_empty_and_full(backend, fill):
    mask = np.full((2, 7, 5, 6), fill, dtype=np.uint8)
    res = label_components(mask, backend=backend)
    assert res.counts.tolist() == [fill, fill]
    assert res.labels.max() == fill and res.labels.min() == fill


def test_tensor_float_mask_and_counts_type():
    t = torch.tensor([[[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]])
    res = label_components(t)
    assert torch.equal(res.labels, torch.tensor([[[1, 0, 2], [0, 0, 0]]]))
    assert torch.equal(res.counts, torch.tensor([2]))
    labels, counts = res  # unpacks like a tuple
    assert isinstance(res, CCResult) and counts.tolist() == [2]


def test_maxpool_splits_spiral_without_enough_iterations():
    mask = spiral(48)[None]
    exact = label_components(mask)
    short = label_components(mask, backend="maxpool", num_iterations=100)
    assert exact.counts[0] == 1
    assert short.counts[0] > 1
    assert not short.converged[0]
    long = label_components(mask, backend="maxpool", num_iterations=1500)
    assert long.converged[0]
    np.testing.assert_array_equal(long.labels, exact.labels)


def test_maxpool_equals_exact_on_blobs_and_drops_lone_corner_voxel():
    rng = np.random.default_rng(3)
    mask = rng.random((2, 12, 12, 12)) < 0.3
    mask[:, 0, 0, 0] = True
    mask[:, 0, 0, 1] = mask[:, 0, 1, 0] = mask[:, 1, 0, 0] = False
    mask[:, 0, 1, 1] = mask[:, 1, 1, 0] = mask[:, 1, 0, 1] = mask[:, 1, 1, 1] = False
    res = label_components(mask, backend="maxpool", num_iterations=300)
    exact = label_components(np.where(np.arange(mask[0].size).reshape(mask.shape[1:]) == 0, False, mask))
    assert res.converged.all()
    np.testing.assert_array_equal(res.labels, exact.labels)  # corner voxel dropped, the rest exact


def test_maxpool_tensor_returns_converged_tensor():
    res = label_components(torch.ones(1, 5, 5), backend="maxpool", num_iterations=2)
    assert isinstance(res.converged, torch.Tensor) and bool(res.converged[0]) is False


@pytest.mark.parametrize(
    ("kwargs", "mask", "exc", "fragment"),
    [
        ({}, np.zeros((4, 4)), ShapeError, "2 or 3 spatial dims"),
        ({}, np.zeros((1, 2, 2, 2, 2)), ShapeError, "spatial dims"),
        ({}, np.full((1, 3, 3), 2), DataError, "binary"),
        ({}, np.full((1, 3, 3), 0.5), DataError, "binary"),
        ({"connectivity": 3}, np.zeros((1, 3, 3)), ConfigError, "connectivity"),
        ({"connectivity": 0}, np.zeros((1, 3, 3, 3)), ConfigError, "connectivity"),
        ({"backend": "cc3"}, np.zeros((1, 3, 3)), ConfigError, "Did you mean 'cc3d'"),
        ({"backend": "maxpool", "connectivity": 1}, np.zeros((1, 3, 3)), ConfigError, "maxpool"),
        ({"backend": "torch", "num_iterations": 3}, np.zeros((1, 3, 3)), ConfigError, "num_iterations"),
    ],
)
def test_bad_input(kwargs, mask, exc, fragment):
    with pytest.raises(exc, match=fragment) as info:
        label_components(mask, **kwargs)
    assert isinstance(info.value, LossbenchError) and isinstance(info.value, ValueError)


def test_bad_type():
    with pytest.raises(DataError, match="Tensor or numpy"):
        label_components([[[0, 1]]])
