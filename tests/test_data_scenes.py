import numpy as np
import pytest
import torch

from lossbench.cc import label_components
from lossbench.data import scenes as sc
from lossbench.errors import ConfigError, LossbenchError

SIZES = [(2, None), (2, 24), (2, 100), (3, None), (3, 24), (3, 40)]
NAMES = list(sc.SCENES)


def components(mask: np.ndarray, connectivity=None) -> np.ndarray:
    return label_components(mask[None], connectivity=connectivity).labels[0]


def touching(label: np.ndarray, pred: np.ndarray, connectivity=None) -> dict[int, set[int]]:
    """pred instance id -> set of label instance ids it overlaps (brute force over instances)."""
    ll, pl = components(label > 0.5, connectivity), components(pred >= 0.5, connectivity)
    return {k: set(np.unique(ll[pl == k]).tolist()) - {0} for k in range(1, int(pl.max()) + 1)}


def test_required_names_present():
    required = {"figure1", "figure4_bridge", "missed_small", "soft", "empty_label", "empty_pred", "perfect"}
    required |= {"serpentine", "spiral", "diagonal_line", "corner_voxel"}
    assert required <= set(sc.SCENES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("spatial_dims,size", SIZES)
def test_shape_dtype_range(name, spatial_dims, size):
    s = sc.SCENES[name](spatial_dims=spatial_dims, size=size)
    side = size or {2: 64, 3: 32}[spatial_dims]
    assert isinstance(s, sc.Scene) and s.name == name and s.description
    assert s.label.shape == s.pred.shape == (side,) * spatial_dims
    assert s.label.dtype == np.float32 and s.pred.dtype == np.float32
    assert set(np.unique(s.label).tolist()) <= {0.0, 1.0}
    assert 0.0 <= s.pred.min() and s.pred.max() <= 1.0
    assert s.spatial_dims == spatial_dims


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(name):
    a, b = sc.SCENES[name](3), sc.SCENES[name](3)
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_array_equal(a.pred, b.pred)


@pytest.mark.parametrize("connectivity", [None, 1])
@pytest.mark.parametrize("spatial_dims,size", SIZES)
def test_figure1_layout(spatial_dims, size, connectivity):
    s = sc.figure1(spatial_dims, size)
    ll = components(s.label, connectivity)
    assert ll.max() == 5
    sizes = np.bincount(ll.ravel())[1:]
    assert sizes.max() / sizes.min() >= 40  # varied sizes: radii from 16% of the side down to ~1 voxel
    assert len(set(sizes.tolist())) >= 4
    t = touching(s.label, s.pred, connectivity)
    assert len(t) == 9 > 5
    assert sum(1 for v in t.values() if v) == 4
    assert sum(1 for v in t.values() if not v) == 5  # spurious, far away
    assert all(len(v) <= 1 for v in t.values())  # no bridging in figure 1
    hit = set().union(*t.values())
    assert len(hit) == 4  # exactly one label instance missed


@pytest.mark.parametrize("connectivity", [None, 1])
@pytest.mark.parametrize("spatial_dims,size", SIZES)
def test_figure4_bridge(spatial_dims, size, connectivity):
    s = sc.figure4_bridge(spatial_dims, size)
    assert components(s.label, connectivity).max() == 2
    t = touching(s.label, s.pred, connectivity)
    assert t == {1: {1, 2}}
    # the bridge also covers background between the instances
    assert ((s.pred >= 0.5) & (s.label == 0)).any()


@pytest.mark.parametrize("spatial_dims,size", SIZES)
def test_missed_small(spatial_dims, size):
    s = sc.missed_small(spatial_dims, size)
    ll = components(s.label)
    sizes = np.bincount(ll.ravel())[1:]
    assert len(sizes) == 2 and sizes.max() >= 20 * sizes.min()
    small = int(np.argmin(sizes)) + 1
    t = touching(s.label, s.pred)
    assert len(t) == 1 and small not in t[1]
    assert np.all(s.pred[ll == small] < 0.5) and np.all(s.pred[ll == small] > 0.1)  # faint response


@pytest.mark.parametrize("spatial_dims,size", SIZES)
def test_soft_around_half(spatial_dims, size):
    s = sc.soft(spatial_dims, size)
    assert s.pred.min() >= 0.4 - 1e-6 and s.pred.max() <= 0.6 + 1e-6
    assert s.pred[s.label == 1].mean() > 0.5 > s.pred[s.label == 0].mean()


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_empty_and_perfect(spatial_dims):
    e = sc.empty_label(spatial_dims)
    assert e.label.sum() == 0 and components(e.pred >= 0.5).max() == 2
    p = sc.empty_pred(spatial_dims)
    assert components(p.label).max() == 3 and (p.pred < 0.5).all()
    q = sc.perfect(spatial_dims)
    np.testing.assert_array_equal(q.pred, q.label)
    np.testing.assert_array_equal(q.label, sc.figure1(spatial_dims).label)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_stress_shapes(spatial_dims):
    size = sc.DEFAULT_SIZE[spatial_dims]
    assert components(sc.serpentine(spatial_dims).label).max() == 1
    assert components(sc.spiral(spatial_dims).label).max() == 1
    d = sc.diagonal_line(spatial_dims)
    assert components(d.label).max() == 1 and components(d.label, 1).max() == size
    c = sc.corner_voxel(spatial_dims)
    assert components(c.label).max() == 2**spatial_dims and c.label.sum() == 2**spatial_dims
    assert c.label.flat[0] == 1
    for s in (d, c):
        np.testing.assert_array_equal(s.pred >= 0.5, s.label == 1)


def test_all_scenes_and_get_scene():
    out = sc.all_scenes(3)
    assert [s.name for s in out] == NAMES
    assert all(s.label.shape == (32, 32, 32) for s in out)
    np.testing.assert_array_equal(sc.get_scene("soft", 2, 48).pred, sc.soft(2, 48).pred)


def test_tensors_and_logits():
    s = sc.figure1(2)
    x, y = s.tensors()
    assert x.shape == y.shape == (1, 1, 64, 64) and x.dtype == torch.float32
    xl, _ = s.tensors(logits=True)
    np.testing.assert_allclose(torch.sigmoid(xl)[0, 0].numpy(), s.pred, atol=1e-6)
    assert np.isfinite(sc.perfect(2).logits()).all()


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"spatial_dims": 4}, "`spatial_dims` must be 2 or 3"),
        ({"spatial_dims": True}, "`spatial_dims`"),
        ({"spatial_dims": 2, "size": 8}, "`size` must be >= 24"),
        ({"spatial_dims": 2, "size": 32.0}, "`size` must be an int"),
    ],
)
def test_invalid_params(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        sc.figure1(**kwargs)
    with pytest.raises(ConfigError, match=needle):
        sc.all_scenes(**kwargs)


def test_unknown_scene_suggests():
    with pytest.raises(LossbenchError, match="Did you mean 'figure1'"):
        sc.get_scene("figure_1")
