import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, list_data_collate
from monai.utils import set_determinism

from lossbench.data import build_dataset, make_transforms
from lossbench.errors import ConfigError


@pytest.fixture(scope="module")
def ds3():
    return build_dataset(
        "synthetic_lesions",
        spatial_dims=3,
        size=24,
        n_train=4,
        n_val=1,
        n_test=0,
        seed=0,
        n_lesions=[2, 4],
        max_volume=300,
    )


@pytest.fixture(scope="module")
def ds2():
    return build_dataset(
        "synthetic_lesions", spatial_dims=2, size=48, n_train=4, n_val=1, n_test=0, seed=0, n_lesions=[2, 4]
    )


def test_eval_is_zscore_per_subject(ds3):
    _, ev = make_transforms("whole", 3)
    s = ds3.val[0]
    out = ev(s)
    assert type(out["image"]) is torch.Tensor and out["image"].dtype == torch.float32
    img = s["image"][0].astype(np.float64)
    np.testing.assert_allclose(out["image"][0].numpy(), (img - img.mean()) / img.std(), atol=1e-4)
    np.testing.assert_array_equal(out["label"].numpy(), s["label"])
    assert abs(float(s["image"].std()) - 1.0) > 0.05  # the input is not normalised in place


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_whole_train_keeps_shape_and_binary_label(spatial_dims, ds2, ds3):
    ds = ds2 if spatial_dims == 2 else ds3
    set_determinism(0)
    tr, _ = make_transforms("whole", spatial_dims, flip_prob=1.0, rotate_prob=1.0, zoom_prob=1.0, intensity_prob=1.0)
    for s in ds.train:
        out = tr(s)
        assert out["image"].shape == s["image"].shape and out["label"].shape == s["label"].shape
        assert set(torch.unique(out["label"]).tolist()) <= {0.0, 1.0}
        assert out["id"] == s["id"]
    set_determinism(None)


def test_flip_is_left_right_axis0(ds2):
    tr, _ = make_transforms("whole", 2, flip_prob=1.0, rotate_prob=0.0, zoom_prob=0.0, intensity_prob=0.0)
    s = ds2.train[0]
    out = tr(s)
    np.testing.assert_array_equal(out["label"][0].numpy(), s["label"][0][::-1, :])


def test_no_augment_train_equals_eval(ds2):
    tr, ev = make_transforms("whole", 2, augment=False)
    s = ds2.train[1]
    np.testing.assert_array_equal(tr(s)["image"].numpy(), ev(s)["image"].numpy())


def test_patch_mode_pos_neg_ratio(ds3):
    set_determinism(0)
    tr, _ = make_transforms("patch", 3, patch_size=8, num_samples=200, augment=False)
    s = ds3.train[0]
    patches = tr(s)
    assert isinstance(patches, list) and len(patches) == 200
    assert all(p["image"].shape == (1, 8, 8, 8) for p in patches)
    # a positive patch is centered on a lesion voxel; negative on background
    center_fg = [float(p["label"][0, 4, 4, 4]) for p in patches]  # MONAI centers at size // 2
    frac = np.mean(center_fg)
    assert 0.35 < frac < 0.65  # 1:1 (negatives are background-centered, lesion fraction ~1%)
    set_determinism(None)


def test_patch_mode_pads_small_images_and_collates(ds2):
    tr, _ = make_transforms("patch", 2, patch_size=[64, 32], num_samples=3)
    out = tr(ds2.train[0])
    assert len(out) == 3 and out[0]["image"].shape == (1, 64, 32)
    dl = DataLoader(Dataset(list(ds2.train), tr), batch_size=2, collate_fn=list_data_collate)
    batch = next(iter(dl))
    assert batch["image"].shape == (6, 1, 64, 32) and batch["label"].shape == (6, 1, 64, 32)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"mode": "patches"}, "`mode` must be one of \\['whole', 'patch'\\]"),
        ({"mode": "patch"}, "`patch_size` must be an int or a list of ints in patch mode"),
        ({"mode": "whole", "patch_size": 32}, "`patch_size` must be None in whole mode"),
        ({"mode": "patch", "patch_size": [32, 32]}, "`patch_size` must be an int or a list of 3 ints"),
        ({"spatial_dims": 1}, "`spatial_dims` must be 2 or 3"),
        ({"flip_prob": 1.5}, "`flip_prob` must be a finite number in \\[0.0, 1.0\\]"),
        ({"zoom_range": (1.2, 0.9)}, "`zoom_range\\[1\\]`"),
        ({"augment": "yes"}, "`augment` must be true or false"),
        ({"num_samples": 0}, "`num_samples` must be an int >= 1"),
        ({"pos": 0, "neg": 0}, "`pos` must be positive"),
    ],
)
def test_invalid_params(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        make_transforms(**{"spatial_dims": 3, **kwargs})


def test_dataset_arrays_never_modified(ds2):
    s = ds2.train[2]
    before = {k: s[k].copy() for k in ("image", "label")}
    tr, ev = make_transforms("whole", 2, intensity_prob=1.0)
    for _ in range(3):
        tr(s)
        ev(s)
    tp, _ = make_transforms("patch", 2, patch_size=16)
    tp(s)
    for k in before:
        np.testing.assert_array_equal(s[k], before[k])


def test_transforms_pickle():
    import pickle

    tr, ev = make_transforms("patch", 3, patch_size=16)
    pickle.loads(pickle.dumps(tr))
    pickle.loads(pickle.dumps(ev))
