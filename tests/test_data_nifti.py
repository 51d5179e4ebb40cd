import json

import nibabel as nib
import numpy as np
import pytest

from lossbench.data import build_dataset
from lossbench.data.base import check_subject
from lossbench.data.nifti import find_pairs, nifti_folder
from lossbench.errors import ConfigError, DataError

ATLAS_IMG = "_space-MNI152NLin2009aSym_T1w.nii.gz"
ATLAS_LAB = "_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz"


def write(path, data, zooms=(1.0, 1.0, 1.0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(data), np.diag([*zooms, 1.0]))
    nd = np.asarray(data).ndim
    img.header.set_zooms((tuple(zooms) + (1.0,) * nd)[:nd])
    nib.save(img, str(path))


def case(rng, shape=(10, 12, 8), value=1):
    image = rng.normal(100, 10, shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    label[2:5, 3:6, 2:4] = value
    return image, label


@pytest.fixture
def folders(tmp_path, rng):
    for i in range(10):
        image, label = case(rng)
        write(tmp_path / "images" / f"case{i:02d}.nii.gz", image)
        write(tmp_path / "labels" / f"case{i:02d}.nii.gz", label)
    (tmp_path / "images" / "README.txt").write_text("not nifti")
    return tmp_path


@pytest.fixture
def atlas(tmp_path, rng):
    root = tmp_path / "ATLAS_2" / "Training"
    for site in ("R001", "R002"):
        for s in range(3):
            sub = f"sub-{site.lower()}s00{s}"
            anat = root / site / sub / "ses-1" / "anat"
            image, label = case(rng)
            write(anat / f"{sub}_ses-1{ATLAS_IMG}", image)
            write(anat / f"{sub}_ses-1{ATLAS_LAB}", label)
    return tmp_path / "ATLAS_2"


def test_folders_layout_reads_pairs(folders):
    ds = nifti_folder(str(folders), val_fraction=0.2, test_fraction=0.3, seed=1)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (5, 2, 3)
    assert ds.train.lazy
    ids = sorted(s["id"] for split in ("train", "val", "test") for s in ds.split(split))
    assert ids == [f"case{i:02d}" for i in range(10)]
    s = ds.val[0]
    check_subject(s, 3)
    assert s["image"].shape == (1, 10, 12, 8)
    assert s["label"].sum() == 3 * 3 * 2
    ref = nib.load(ds.metadata[s["id"]]["image"]).get_fdata()
    np.testing.assert_allclose(s["image"][0], ref, rtol=1e-6)
    # deterministic split for a seed, different for another
    again = nifti_folder(str(folders), val_fraction=0.2, test_fraction=0.3, seed=1)
    assert again.test.ids == ds.test.ids
    assert nifti_folder(str(folders), val_fraction=0.2, test_fraction=0.3, seed=2).test.ids != ds.test.ids


def test_atlas_bids_layout(atlas):
    pairs = find_pairs(atlas)
    assert list(pairs) == sorted(f"sub-r00{a}s00{b}_ses-1_space-MNI152NLin2009aSym" for a in (1, 2) for b in range(3))
    for image, label in pairs.values():
        assert image.parent == label.parent and image.name.endswith("_T1w.nii.gz")
    ds = build_dataset("nifti_folder", root=str(atlas), layout="atlas", size=16, val_fraction=0.2, test_fraction=0.2)
    assert len(ds.train) + len(ds.val) + len(ds.test) == 6
    s = ds.train[0]
    assert s["image"].shape == s["label"].shape == (1, 16, 16, 16)
    assert s["label"].sum() == 18  # center pad keeps the whole lesion


def test_size_crop_pad_and_resolution(folders):
    ds = nifti_folder(str(folders), size=[8, 16, 8], val_fraction=0.0, test_fraction=0.0)
    s = ds.train[0]
    assert s["image"].shape == (1, 8, 16, 8)
    # 10 -> 8: crop 1 voxel at the start of axis 0; 12 -> 16: pad 2 before on axis 1
    raw = nib.load(ds.metadata[s["id"]]["image"]).get_fdata()
    np.testing.assert_allclose(s["image"][0, :, 2:14, :], raw[1:9, :, :], rtol=1e-6)
    assert (s["image"][0, :, :2] == 0).all()
    ds2 = nifti_folder(str(folders), resolution=2.0, val_fraction=0.0, test_fraction=0.0)
    s2 = ds2.train[0]
    assert s2["image"].shape == (1, 5, 6, 4)
    assert set(np.unique(s2["label"]).tolist()) <= {0.0, 1.0} and s2["label"].sum() > 0


def test_split_file(folders, tmp_path):
    spec = {"train": ["case00", "case01"], "val": ["case02"], "test": ["case05"]}
    path = tmp_path / "split.json"
    path.write_text(json.dumps(spec))
    ds = nifti_folder(str(folders), split_file=str(path))
    assert ds.train.ids == ["case00", "case01"] and ds.val.ids == ["case02"] and ds.test.ids == ["case05"]
    path.write_text(json.dumps({"train": ["case00", "nope"]}))
    with pytest.raises(DataError, match="unknown ids \\['nope'\\]"):
        nifti_folder(str(folders), split_file=str(path))
    path.write_text(json.dumps({"train": ["case00"], "test": ["case00"]}))
    with pytest.raises(DataError, match="more than once"):
        nifti_folder(str(folders), split_file=str(path))
    path.write_text("{oops")
    with pytest.raises(DataError, match="valid JSON"):
        nifti_folder(str(folders), split_file=str(path))


def test_missing_pairs(folders):
    (folders / "labels" / "case03.nii.gz").unlink()
    write(folders / "labels" / "extra.nii.gz", np.zeros((10, 12, 8), np.uint8))
    with pytest.raises(DataError, match=r"1 image\(s\) without a mask .*case03.*1 mask\(s\) without an image.*extra"):
        nifti_folder(str(folders))


def test_shape_mismatch(folders, rng):
    write(folders / "labels" / "case04.nii.gz", np.zeros((10, 12, 9), np.uint8))
    with pytest.raises(
        DataError, match=r"case04.nii.gz` must have the shape of its image .*\(10, 12, 8\), got \(10, 12, 9\)"
    ):
        nifti_folder(str(folders))


def test_unequal_shapes_need_size(folders, rng):
    image, label = case(rng, shape=(9, 9, 9))
    write(folders / "images" / "case04.nii.gz", image)
    write(folders / "labels" / "case04.nii.gz", label)
    with pytest.raises(DataError, match="`size` must be set"):
        nifti_folder(str(folders))
    assert nifti_folder(str(folders), size=9).train[0]["image"].shape == (1, 9, 9, 9)


def test_non_binary_mask(folders, rng):
    image, label = case(rng, value=2)
    write(folders / "labels" / "case07.nii.gz", label)
    ds = nifti_folder(str(folders), split_file=None, val_fraction=0.0, test_fraction=0.0)
    idx = ds.train.ids.index("case07")
    with pytest.raises(DataError, match=r"case07.nii.gz` must be a binary mask \(0/1\), got values \[0, 2\]"):
        ds.train[idx]
    ok = nifti_folder(str(folders), binarize=True, val_fraction=0.0, test_fraction=0.0)
    assert set(np.unique(ok.train[idx]["label"]).tolist()) == {0.0, 1.0}


def test_suffixes_nnunet_style(tmp_path, rng):
    for i in range(3):
        image, label = case(rng)
        write(tmp_path / "imagesTr" / f"c{i}_0000.nii.gz", image)
        write(tmp_path / "labelsTr" / f"c{i}.nii", label)
    ds = nifti_folder(
        str(tmp_path), image_dir="imagesTr", label_dir="labelsTr", image_suffix="_0000", val_fraction=0, test_fraction=0
    )
    assert ds.train.ids == ["c0", "c1", "c2"]


def test_2d_nifti(tmp_path, rng):
    for i in range(3):
        write(tmp_path / "images" / f"s{i}.nii.gz", rng.random((12, 10, 1)).astype(np.float32))
        write(tmp_path / "labels" / f"s{i}.nii.gz", (rng.random((12, 10, 1)) > 0.8).astype(np.uint8))
    ds = nifti_folder(str(tmp_path), spatial_dims=2, val_fraction=0, test_fraction=0)
    assert ds.train[0]["image"].shape == (1, 12, 10)
    # (12, 10, 1) is also a valid 3D volume of one slice; a 4D volume is neither
    assert nifti_folder(str(tmp_path), val_fraction=0, test_fraction=0).train[0]["image"].shape == (1, 12, 10, 1)
    write(tmp_path / "images" / "s1.nii.gz", rng.random((12, 10, 2, 3)).astype(np.float32))
    with pytest.raises(DataError, match=r"s1.nii.gz` must be a 3D volume, got shape \(12, 10, 2, 3\)"):
        nifti_folder(str(tmp_path), spatial_dims=3)


def test_cache(folders):
    ds = nifti_folder(str(folders), cache=True, val_fraction=0, test_fraction=0)
    assert ds.train[0] is ds.train[0]
    ds2 = nifti_folder(str(folders), cache=False, val_fraction=0, test_fraction=0)
    assert ds2.train[0] is not ds2.train[0]


@pytest.mark.parametrize(
    "kwargs,err,needle",
    [
        ({"root": "/nonexistent/xyz"}, DataError, "`root` must be an existing folder"),
        ({"layout": "bids"}, ConfigError, "`layout` must be one of"),
        ({"size": [4, 4]}, ConfigError, "`size` must be an int or a list of 3 ints"),
        ({"resolution": -1}, ConfigError, "`resolution` must be a finite number > 0"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, ConfigError, "`val_fraction \\+ test_fraction` must be < 1"),
        ({"spatial_dims": 4}, ConfigError, "`spatial_dims` must be 2 or 3"),
        ({"binarize": 1}, ConfigError, "`binarize` must be true or false"),
        ({"image_dir": "nothere"}, DataError, "`image_dir` must be a folder"),
    ],
)
def test_invalid_params(folders, kwargs, err, needle):
    with pytest.raises(err, match=needle):
        nifti_folder(**{"root": str(folders), "layout": "folders", **kwargs})


def test_empty_root(tmp_path):
    with pytest.raises(DataError, match="must contain NIfTI images and masks"):
        nifti_folder(str(tmp_path))
