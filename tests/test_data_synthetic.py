import numpy as np
import pytest

from lossbench.cc import label_components
from lossbench.data import DATASETS, build_dataset, list_datasets
from lossbench.data.base import SegmentationDataset, SubjectList, check_subject
from lossbench.data.synthetic import LesionModel, draw_volumes, lesion_shape, make_subject, synthetic_lesions
from lossbench.errors import ConfigError, LossbenchError, RegistryError

SMALL3 = dict(spatial_dims=3, size=24, n_train=3, n_val=2, n_test=2, seed=0)
SMALL2 = dict(spatial_dims=2, size=32, n_train=4, n_val=2, n_test=2, seed=0)


def count(label: np.ndarray, connectivity=None) -> int:
    return int(label_components(label[0][None] > 0, connectivity=connectivity).counts[0])


@pytest.mark.parametrize("params", [SMALL2, SMALL3])
def test_subject_format(params):
    ds = synthetic_lesions(**params)
    assert isinstance(ds, SegmentationDataset) and ds.spatial_dims == params["spatial_dims"]
    assert set(ds.splits) == {"train", "val", "test"}
    assert (len(ds.train), len(ds.val), len(ds.test)) == (params["n_train"], params["n_val"], params["n_test"])
    side = params["size"]
    ids = []
    for split in ("train", "val", "test"):
        for s in ds.split(split):
            check_subject(s, params["spatial_dims"])
            assert set(s) == {"image", "label", "id"}
            assert s["image"].shape == (1,) + (side,) * params["spatial_dims"]
            assert np.isfinite(s["image"]).all()
            ids.append(s["id"])
    assert len(set(ids)) == len(ids)
    assert set(ds.metadata) == set(ids)


def test_deterministic_and_seed_dependent():
    a, b = synthetic_lesions(**SMALL3), synthetic_lesions(**SMALL3)
    c = synthetic_lesions(**{**SMALL3, "seed": 1})
    for sa, sb, sc in zip(a.train, b.train, c.train):
        np.testing.assert_array_equal(sa["image"], sb["image"])
        np.testing.assert_array_equal(sa["label"], sb["label"])
        assert not np.array_equal(sa["image"], sc["image"])


def test_subjects_independent_of_other_split_sizes():
    a = synthetic_lesions(**SMALL3)
    b = synthetic_lesions(**{**SMALL3, "n_train": 1, "n_test": 3})
    np.testing.assert_array_equal(a.val[1]["image"], b.val[1]["image"])
    np.testing.assert_array_equal(a.test[1]["label"], b.test[1]["label"])
    np.testing.assert_array_equal(a.train[0]["label"], b.train[0]["label"])


@pytest.mark.parametrize("spatial_dims,size", [(2, 48), (3, 32)])
def test_instance_counts_agree_with_label_components(spatial_dims, size):
    model = LesionModel.create(
        spatial_dims=spatial_dims, size=size, n_lesions=(0, 10), max_volume=size**spatial_dims / 16
    )
    counts = []
    for i in range(12):
        s, meta = make_subject(model, 3, "train", i)
        for conn in (None, 1):  # non-touching + face-connected lesions: same count for any connectivity
            assert count(s["label"], conn) == meta["n_lesions"]
        assert sum(meta["volumes"]) == int(s["label"].sum())
        assert min(meta["volumes"], default=1) >= 1
        counts.append(meta["n_lesions"])
    assert 0 <= min(counts) and max(counts) <= 10 and len(set(counts)) > 2


def test_zero_lesions_allowed():
    ds = synthetic_lesions(**{**SMALL2, "n_lesions": [0, 0]})
    assert all(s["label"].sum() == 0 for s in ds.train)
    assert all(m["n_lesions"] == 0 for m in ds.metadata.values())


def test_touching_lesions_may_merge():
    model = LesionModel.create(
        spatial_dims=2, size=32, n_lesions=(12, 12), min_volume=30, max_volume=200, non_touching=False
    )
    merged = 0
    for i in range(6):
        s, meta = make_subject(model, 0, "train", i)
        assert count(s["label"]) <= meta["n_lesions"]
        merged += count(s["label"]) < meta["n_lesions"]
    assert merged > 0


def test_size_spread_heavy_tailed():
    # default 3D: volumes from 4 to 2000 voxels, log-uniform -> spread >= 2 orders of magnitude, many small
    model = LesionModel.create(spatial_dims=3, size=48)
    assert model.max_volume / model.min_volume >= 100
    vols = []
    for i in range(30):
        s, meta = make_subject(model, 0, "train", i)
        lab = label_components(s["label"][0][None] > 0).labels[0]
        vols += np.bincount(lab.ravel())[1:].tolist()  # sizes measured independently of the metadata
    vols = np.array(vols)
    assert vols.max() / vols.min() >= 100
    assert np.median(vols) < 0.2 * vols.max()  # many small, few large
    assert (vols < 50).mean() > 0.3
    # largest few lesions hold most foreground voxels (instance imbalance)
    top = np.sort(vols)[::-1][: max(1, len(vols) // 10)]
    assert top.sum() > 0.4 * vols.sum()


def test_configurable_spread_2d():
    model = LesionModel.create(spatial_dims=2, size=128, min_volume=2, max_volume=2000)
    assert model.max_volume / model.min_volume == 1000
    rng = np.random.default_rng(0)
    v = draw_volumes(rng, 20000, 2.0, 2000.0)
    assert v.min() >= 2 and v.max() <= 2000
    # log-uniform: log10 V is uniform on [log10 2, log10 2000] -> each decade holds ~1/3
    frac = np.histogram(np.log10(v), bins=[np.log10(2), np.log10(20), np.log10(200), np.log10(2000)])[0] / v.size
    np.testing.assert_allclose(frac, 1 / 3, atol=0.02)
    p = draw_volumes(rng, 20000, 2.0, 2000.0, "pareto", 1.0)
    # truncated Pareto(1): P(V > 20) = (2/20 - 2/2000) / (1 - 2/2000)
    np.testing.assert_allclose((p > 20).mean(), (0.1 - 0.001) / 0.999, atol=0.01)


def test_irregular_shapes_are_not_balls():
    rng = np.random.default_rng(5)
    fill = []
    for _ in range(20):
        mask, center = lesion_shape(rng, 800.0, 3)
        assert mask[center]
        assert label_components(mask[None], connectivity=1).counts[0] == 1
        fill.append(mask.sum() / mask.size)  # ball in its bounding box fills pi/6 ~ 0.52
    assert np.std(fill) > 0.03 and min(fill) < 0.45


def test_small_lesions_have_less_contrast():
    model = LesionModel.create(spatial_dims=3, size=48, noise=0.0, texture=0.0, bias_field=0.0)
    c = model.lesion_contrast(np.array([4.0, 60.0, 2000.0]))
    np.testing.assert_allclose(c, [-0.24, -0.6 * (0.4 + 0.6 * np.log(15) / np.log(500)), -0.6])
    # in the image: mean drop inside small lesions is smaller than inside large ones
    small, large = [], []
    for i in range(10):
        s, meta = make_subject(model, 0, "train", i)
        lab = label_components(s["label"][0][None] > 0).labels[0]
        img = s["image"][0]
        for k, v in enumerate(np.bincount(lab.ravel())[1:], start=1):
            drop = 1 - img[lab == k].mean()
            if v < 20:
                small.append(drop)
            elif v > 300:
                large.append(drop)
    assert small and large
    assert np.mean(large) > 0.5 and np.mean(small) < 0.3


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"spatial_dims": 1}, "`spatial_dims` must be 2 or 3"),
        ({"size": 8}, "`size\\[0\\]` must be an int >= 16"),
        ({"size": [32, 32]}, "`size` must be an int or a list of 3 ints"),
        ({"n_train": 0}, "`n_train` must be an int >= 1"),
        ({"n_val": -1}, "`n_val`"),
        ({"n_test": 1.5}, "`n_test` must be an int"),
        ({"seed": "a"}, "`seed` must be an int"),
        ({"n_lesions": 3}, "`n_lesions` must be a pair"),
        ({"n_lesions": [4, 2]}, "`n_lesions\\[1\\]` must be an int in \\[4, 200\\]"),
        ({"min_volume": 0}, "`min_volume` must be a finite number >= 1"),
        ({"max_volume": 2}, "`max_volume` must be a finite number > 4"),
        ({"size": 32, "max_volume": 20000}, "`max_volume` must be <= a quarter"),
        ({"size_distribution": "lognormal"}, "`size_distribution` must be one of"),
        ({"pareto_alpha": 0}, "`pareto_alpha`"),
        ({"non_touching": "yes"}, "`non_touching` must be true or false"),
        ({"contrast": 0.0}, "`contrast` must be non-zero"),
        ({"noise": float("nan")}, "`noise` must be a finite number"),
        ({"small_contrast": 2}, "`small_contrast` must be a finite number in \\[0.0, 1.0\\]"),
    ],
)
def test_invalid_params(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        synthetic_lesions(**{"n_train": 1, "n_val": 0, "n_test": 0, **kwargs})


# ---------------------------------------------------------------------------------------- registry


def test_registry_builds_study_dict():
    study = {"name": "synthetic_lesions", "spatial_dims": 3, "size": 24, "n_train": 2, "n_val": 1, "n_test": 1}
    frozen = dict(study)
    ds = build_dataset(study["name"], **{k: v for k, v in study.items() if k != "name"}, seed=0)
    ds2 = build_dataset(study, seed=0)
    assert study == frozen  # caller's dict untouched
    np.testing.assert_array_equal(ds.train[0]["image"], ds2.train[0]["image"])
    assert ds.params["seed"] == 0 and ds.params["size"] == [24, 24, 24]


def test_registry_names_and_errors():
    assert {"synthetic_lesions", "nuclei2d", "brain_lesions", "nifti_folder"} <= set(DATASETS.names())
    listed = {d["name"]: d for d in list_datasets()}
    assert listed["nifti_folder"]["params"]["root"] == "<required>"
    assert listed["synthetic_lesions"]["params"]["n_train"] == 24
    with pytest.raises(RegistryError, match="Did you mean 'synthetic_lesions'"):
        build_dataset("synthetic_lesion")
    with pytest.raises(ConfigError, match="`n_trian` is not a parameter.*Did you mean 'n_train'"):
        build_dataset("synthetic_lesions", n_trian=3)
    with pytest.raises(ConfigError, match="`dataset` must have a `name` key"):
        build_dataset({"size": 3})
    with pytest.raises(LossbenchError):
        build_dataset("synthetic_lesions", size=-1)


def test_subject_list_lazy():
    calls = []

    def load(i):
        calls.append(i)
        return {"id": i}

    sl = SubjectList(["a", "b", "c"], loader=load)
    assert len(sl) == 3 and sl.lazy and calls == []
    assert [s["id"] for s in sl] == ["a", "b", "c"] and sl[-1]["id"] == "c" and len(sl[0:2]) == 2
    with pytest.raises(ConfigError):
        SubjectList(["a"])


def test_clustering_places_lesions_next_to_each_other_and_keeps_them_separate():
    """clustering puts lesions one voxel apart (still separate components); 0 leaves the generator unchanged."""
    from scipy import ndimage

    def stats(**kw):
        ds = synthetic_lesions(spatial_dims=2, size=64, n_train=30, n_val=0, n_test=0, seed=3, n_lesions=[3, 8], **kw)
        full = np.ones((3, 3), dtype=bool)
        comps = bridged = lesions = 0
        for s in ds.train:
            y = s["label"][0] > 0.5
            n = ndimage.label(y, structure=full)[1]
            comps += n
            bridged += n - ndimage.label(ndimage.binary_dilation(y, structure=full), structure=full)[1]
            lesions += ds.metadata[s["id"]]["n_lesions"]
        return comps, bridged, lesions

    plain, clustered = stats(), stats(clustering=0.9)
    assert plain[0] == plain[2] and clustered[0] == clustered[2]  # non_touching: every lesion its own component
    assert clustered[1] / clustered[0] > plain[1] / plain[0] + 0.15  # many more pairs one voxel apart
    confluent = stats(clustering=0.9, non_touching=False)
    assert confluent[0] < confluent[2]  # touching lesions merge into fewer components
    again = synthetic_lesions(spatial_dims=2, size=64, n_train=3, n_val=0, n_test=0, seed=3, clustering=0.0)
    base = synthetic_lesions(spatial_dims=2, size=64, n_train=3, n_val=0, n_test=0, seed=3)
    assert all(np.array_equal(a["label"], b["label"]) for a, b in zip(again.train, base.train))
