import importlib.util

import numpy as np
import pytest

from lossbench.cc import label_components
from lossbench.data import build_dataset
from lossbench.data.base import check_subject
from lossbench.data.real import package_data_dir, separate_touching
from lossbench.errors import ConfigError, MissingExtraError

HAVE_NUCLEI = importlib.util.find_spec("stardist") is not None and importlib.util.find_spec("tifffile") is not None
HAVE_NILEARN = importlib.util.find_spec("nilearn") is not None
needs_nuclei = pytest.mark.skipif(not HAVE_NUCLEI, reason="extra 'realdata' (stardist, tifffile) not installed")
needs_nilearn = pytest.mark.skipif(not HAVE_NILEARN, reason="extra 'realdata' (nilearn) not installed")


def test_separate_touching_hand_example():
    inst = np.array(
        [
            [1, 1, 2, 2, 0],
            [1, 1, 2, 2, 0],
            [0, 0, 0, 0, 3],
            [4, 0, 0, 0, 0],
        ]
    )
    out = separate_touching(inst)
    # 2's left column touches 1 -> removed; 3 touches 2 diagonally -> removed; 4 untouched
    np.testing.assert_array_equal(out, [[1, 1, 0, 2, 0], [1, 1, 0, 2, 0], [0, 0, 0, 0, 0], [4, 0, 0, 0, 0]])
    for conn in (1, 2):
        assert label_components((out > 0)[None], connectivity=conn).counts[0] == 3


def test_separate_touching_keeps_largest_piece():
    # instance 5 is a 2x2 block plus a corner-attached voxel: the fragment is dropped
    inst = np.zeros((5, 5), int)
    inst[0:2, 0:2] = 5
    inst[2, 2] = 5
    out = separate_touching(inst)
    assert out.sum() == 20 and out[2, 2] == 0


def test_missing_extra_names_the_extra():
    with pytest.raises(MissingExtraError, match=r"pip install 'lossbench\[realdata\]'"):
        package_data_dir("surely_not_an_installed_package_xyz", "data")


def test_missing_tifffile_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tifffile", None)  # makes `import tifffile` fail
    with pytest.raises(MissingExtraError, match=r"`tifffile` must be installed.*lossbench\[realdata\]"):
        build_dataset("nuclei2d")


@needs_nuclei
def test_nuclei_whole_image_has_125_instances():
    from lossbench.data.real import load_nuclei_image

    image, inst = load_nuclei_image()
    assert image.shape == inst.shape == (512, 512)
    assert len(np.unique(inst)) - 1 == 125
    sep = separate_touching(inst)
    assert len(np.unique(sep)) - 1 == 125
    for conn in (None, 1):
        assert label_components((sep > 0)[None], connectivity=conn).counts[0] == 125
    # without separation touching nuclei merge: fewer components than nuclei
    assert label_components((inst > 0)[None]).counts[0] < 125


@needs_nuclei
def test_nuclei2d_tiles_and_counts():
    ds = build_dataset("nuclei2d", seed=0)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (10, 2, 4)
    ids = set()
    total_fg = 0
    for split in ("train", "val", "test"):
        for s in ds.split(split):
            check_subject(s, 2)
            assert s["image"].shape == (1, 128, 128)
            n = label_components(s["label"][0][None] > 0).counts[0]
            assert n == ds.metadata[s["id"]]["n_instances"]
            total_fg += s["label"].sum()
            ids.add(s["id"])
    assert len(ids) == 16
    # tiles cover the image: the foreground equals the separated mask's foreground
    from lossbench.data.real import load_nuclei_image

    assert total_fg == (separate_touching(load_nuclei_image()[1]) > 0).sum()
    # nuclei cut by tile borders are counted in each tile they appear in
    assert sum(m["n_instances"] for m in ds.metadata.values()) >= 125
    # deterministic; another seed assigns other tiles to the splits
    assert [s["id"] for s in build_dataset("nuclei2d", seed=0).val] == [s["id"] for s in ds.val]
    assert {s["id"] for s in build_dataset("nuclei2d", seed=3).test} != {s["id"] for s in ds.test}


@needs_nuclei
def test_nuclei2d_tile_size_and_errors():
    ds = build_dataset("nuclei2d", tile_size=256, n_val=1, n_test=1)
    assert len(ds.train) == 2 and ds.train[0]["image"].shape == (1, 256, 256)
    with pytest.raises(ConfigError, match="`tile_size` must be an int in \\[32, 512\\]"):
        build_dataset("nuclei2d", tile_size=16)
    with pytest.raises(ConfigError, match="`n_val \\+ n_test` must be < the number of tiles"):
        build_dataset("nuclei2d", tile_size=256, n_val=2, n_test=2)


@needs_nilearn
def test_brain_lesions_shapes_counts_and_determinism():
    kw = dict(n_train=2, n_val=1, n_test=1, seed=0, n_lesions=[2, 5])
    ds = build_dataset("brain_lesions", **kw)
    assert ds.spatial_dims == 3
    s = ds.train[0]
    check_subject(s, 3)
    assert s["image"].shape == (1, 80, 96, 80)  # 2 mm brain bounding box padded to multiples of 16
    from lossbench.data.real import load_mni_template

    t1, wm, gm = load_mni_template(2.0)
    for subj in [*ds.train, *ds.val, *ds.test]:
        meta = ds.metadata[subj["id"]]
        assert 2 <= meta["n_lesions"] <= 5
        for conn in (None, 1):
            assert label_components(subj["label"][0][None] > 0, connectivity=conn).counts[0] == meta["n_lesions"]
        # hypointense: lesion voxels darker than the white matter (mean ~1)
        assert subj["image"][subj["label"] > 0].mean() < 0.85
    again = build_dataset("brain_lesions", **kw)
    np.testing.assert_array_equal(again.test[0]["image"], ds.test[0]["image"])
    assert t1.shape == wm.shape == gm.shape == (74, 91, 78)  # brain bounding box at 2 mm
    assert not t1.flags.writeable  # cached arrays are protected


@needs_nilearn
def test_brain_lesions_size_and_errors():
    ds = build_dataset("brain_lesions", size=[64, 64, 64], n_train=1, n_val=0, n_test=0, resolution=3.0)
    assert ds.train[0]["image"].shape == (1, 64, 64, 64)
    with pytest.raises(ConfigError, match="`resolution` must be a finite number in \\[1.0, 4.0\\]"):
        build_dataset("brain_lesions", resolution=0.5)
    with pytest.raises(ConfigError, match="`max_volume` must be <= a quarter of the brain"):
        build_dataset("brain_lesions", resolution=4.0, max_volume=1e5, n_train=1)
