"""ATLAS R2.0 metrics, detection metrics, study aggregates and metric metadata.

Hand-worked cases (2D and 3D) give every value with its arithmetic; a brute-force oracle (scipy labelling
and a Python loop over instances, independent of lossbench.cc / lossbench.instances) checks random masks;
Dice is compared with MONAI's DiceMetric.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from monai.metrics import DiceMetric
from scipy import ndimage

from lossbench.errors import ConfigError, DataError, LossbenchError, RegistryError, ShapeError
from lossbench.metrics import (
    METRICS,
    STUDY_AGGREGATES,
    atlas_metrics,
    bin_names,
    cc_metrics,
    detection_metrics,
    list_metrics,
    match_instances,
    metric_directions,
    metric_info,
    panoptic_metrics,
    study_aggregates,
    subject_metrics,
)

# --- hand-worked cases ------------------------------------------------------------------------------


def corner_pair_2d():
    """Two 2x2 lesions touching only at a corner; the prediction finds the top-left one.

    target        pred
    1 1 . .       1 1 . .
    1 1 . .       1 1 . .
    . . 1 1       . . . .
    . . 1 1       . . . .
    """
    t = np.zeros((4, 4), dtype=bool)
    t[:2, :2] = True
    t[2:, 2:] = True
    p = np.zeros((4, 4), dtype=bool)
    p[:2, :2] = True
    return p, t


def test_corner_pair_face_connectivity():
    p, t = corner_pair_2d()
    m = atlas_metrics(p, t, connectivity=1)
    assert m["dice"] == pytest.approx(2 * 4 / (4 + 8))  # 2/3
    assert m["volume_difference"] == 4  # |4 - 8|
    assert m["simple_lesion_count"] == 1  # |1 - 2|
    assert (m["lesion_tp"], m["lesion_fp"], m["lesion_fn"]) == (1, 0, 1)
    assert m["lesionwise_f1"] == pytest.approx(1 / (1 + (0 + 1) / 2))  # 2/3
    assert m["connectivity"] == 1
    assert "volume_difference_ml" not in m


def test_corner_pair_full_connectivity_is_one_lesion():
    p, t = corner_pair_2d()
    for conn in (2, None):
        m = atlas_metrics(p, t, connectivity=conn)
        assert m["dice"] == pytest.approx(2 / 3)  # voxel metrics do not depend on connectivity
        assert m["simple_lesion_count"] == 0  # |1 - 1|
        assert (m["lesion_tp"], m["lesion_fp"], m["lesion_fn"]) == (1, 0, 0)
        assert m["lesionwise_f1"] == 1.0
        assert m["connectivity"] == 2


def test_corner_pair_detection_by_size():
    p, t = corner_pair_2d()
    d = detection_metrics(p, t, connectivity=1, size_bins=(2, 5))
    assert (d["n_target"], d["n_pred"], d["detected"], d["missed"], d["false"]) == (2, 1, 1, 1, 0)
    assert d["recall"] == 0.5
    # both target lesions have 4 voxels -> bin [2, 5)
    assert (d["n_target_2_5"], d["detected_2_5"], d["missed_2_5"], d["recall_2_5"]) == (2, 1, 1, 0.5)
    assert d["n_target_1_2"] == 0 and math.isnan(d["recall_1_2"])
    assert d["n_target_5_inf"] == 0
    d = detection_metrics(p, t, connectivity=None, size_bins=(2, 5))
    # one 8-voxel target lesion -> bin [5, inf), detected by the 4-voxel prediction (bin [2, 5))
    assert (d["n_target"], d["missed"], d["n_target_5_inf"], d["detected_5_inf"], d["n_pred_2_5"]) == (1, 0, 1, 1, 1)
    assert d["connectivity"] == 2


def spurious_2d():
    """target: A = (0,0) (1 voxel), B = rows 3-4 x cols 3-4 (4 voxels).

    pred: (4,4) inside B (1 voxel, detects B), row 0 cols 3-5 (3 voxels, false), (2,0) (1 voxel, false).
    """
    t = np.zeros((6, 6), dtype=np.uint8)
    t[0, 0] = 1
    t[3:5, 3:5] = 1
    p = np.zeros((6, 6), dtype=np.uint8)
    p[4, 4] = 1
    p[0, 3:6] = 1
    p[2, 0] = 1
    return p, t


def test_spurious_instances_2d():
    p, t = spurious_2d()
    m = atlas_metrics(p, t)
    assert m["dice"] == pytest.approx(2 * 1 / (5 + 5))  # 0.2
    assert m["volume_difference"] == 0
    assert m["simple_lesion_count"] == 1  # |3 - 2|
    assert (m["lesion_tp"], m["lesion_fp"], m["lesion_fn"]) == (1, 2, 1)
    assert m["lesionwise_f1"] == pytest.approx(1 / (1 + (2 + 1) / 2))  # 0.4
    d = detection_metrics(p, t, connectivity=1, size_bins=(2, 4))
    assert (d["n_target"], d["n_pred"], d["detected"], d["missed"], d["false"]) == (2, 3, 1, 1, 2)
    # A (size 1) missed in [1, 2); B (size 4) detected in [4, inf)
    assert (d["missed_1_2"], d["detected_1_2"], d["missed_4_inf"], d["detected_4_inf"]) == (1, 0, 0, 1)
    assert d["recall_1_2"] == 0.0 and d["recall_4_inf"] == 1.0 and math.isnan(d["recall_2_4"])
    # false instances by predicted size: (2,0) size 1 -> [1, 2); row 0 size 3 -> [2, 4); (4,4) is a hit
    assert (d["false_1_2"], d["false_2_4"], d["false_4_inf"]) == (1, 1, 0)
    assert (d["n_pred_1_2"], d["n_pred_2_4"], d["n_pred_4_inf"]) == (2, 1, 0)


def test_3d_hand_case():
    """target: cube A [0:2]^3 (8 voxels), line B (5, 5, 3:6) (3 voxels).
    pred: cube [1:3]^3 (8 voxels, overlaps A in (1,1,1) only), voxel (7,7,7) (false).
    """
    t = np.zeros((8, 8, 8), dtype=bool)
    t[0:2, 0:2, 0:2] = True
    t[5, 5, 3:6] = True
    p = np.zeros((8, 8, 8), dtype=bool)
    p[1:3, 1:3, 1:3] = True
    p[7, 7, 7] = True
    m = atlas_metrics(p, t, spacing=(1.0, 1.0, 2.5))
    assert m["dice"] == pytest.approx(2 * 1 / (9 + 11))  # 0.1
    assert m["volume_difference"] == 2
    assert m["volume_difference_ml"] == pytest.approx(2 * 2.5 / 1000)
    assert m["simple_lesion_count"] == 0
    assert (m["lesion_tp"], m["lesion_fp"], m["lesion_fn"]) == (1, 1, 1)
    assert m["lesionwise_f1"] == pytest.approx(1 / (1 + 1))
    d = detection_metrics(p, t, size_bins=(4,))
    assert (d["n_target"], d["missed"], d["false"]) == (2, 1, 1)
    assert (d["missed_1_4"], d["detected_4_inf"], d["false_1_4"], d["false_4_inf"]) == (1, 1, 1, 0)
    assert d["connectivity"] == 3


@pytest.mark.parametrize(
    "second, counts",
    [
        ((1, 1, 1), {1: 2, 2: 2, 3: 1, None: 1}),  # corner contact: only 26-connectivity joins them
        ((0, 1, 1), {1: 2, 2: 1, 3: 1, None: 1}),  # edge contact: 18- and 26-connectivity
        ((0, 0, 1), {1: 1, 2: 1, 3: 1, None: 1}),  # face contact
    ],
)
def test_3d_connectivity_changes_lesion_count(second, counts):
    t = np.zeros((3, 3, 3), dtype=bool)
    t[0, 0, 0] = True
    t[second] = True
    p = np.zeros_like(t)
    p[0, 0, 0] = True
    for conn, n in counts.items():
        m = atlas_metrics(p, t, connectivity=conn)
        assert m["dice"] == pytest.approx(2 / 3)
        assert m["simple_lesion_count"] == n - 1
        assert m["lesionwise_f1"] == pytest.approx(1.0 if n == 1 else 2 / 3)
        assert detection_metrics(p, t, connectivity=conn)["missed"] == n - 1


@pytest.mark.parametrize("shape", [(5, 6), (4, 5, 6)])
def test_both_empty(shape):
    z = np.zeros(shape, dtype=bool)
    m = atlas_metrics(z, z, spacing=(1.0,) * len(shape))
    assert m == {
        "dice": 1.0,
        "volume_difference": 0,
        "volume_difference_ml": 0.0,
        "simple_lesion_count": 0,
        "lesionwise_f1": 1.0,
        "lesion_tp": 0,
        "lesion_fp": 0,
        "lesion_fn": 0,
        "connectivity": 1,
    }
    d = detection_metrics(z, z)
    assert (d["n_target"], d["n_pred"], d["detected"], d["missed"], d["false"]) == (0, 0, 0, 0, 0)
    assert math.isnan(d["recall"])


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_empty_prediction(spatial_dims):
    t = np.zeros((6,) * spatial_dims, dtype=bool)
    t[(0,) * spatial_dims] = True
    t[(slice(3, 5),) * spatial_dims] = True  # 2^d voxels
    p = np.zeros_like(t)
    m = atlas_metrics(p, t)
    assert m["dice"] == 0.0 and m["lesionwise_f1"] == 0.0
    assert m["volume_difference"] == 1 + 2**spatial_dims
    assert m["simple_lesion_count"] == 2
    assert (m["lesion_tp"], m["lesion_fp"], m["lesion_fn"]) == (0, 0, 2)
    d = detection_metrics(p, t)
    assert (d["missed"], d["false"], d["recall"]) == (2, 0, 0.0)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_empty_target(spatial_dims):
    p = np.zeros((6,) * spatial_dims, dtype=bool)
    p[(slice(1, 3),) * spatial_dims] = True
    t = np.zeros_like(p)
    m = atlas_metrics(p, t)
    assert m["dice"] == 0.0 and m["lesionwise_f1"] == 0.0
    assert m["volume_difference"] == 2**spatial_dims
    assert (m["simple_lesion_count"], m["lesion_fp"]) == (1, 1)
    d = detection_metrics(p, t, size_bins=(4,))
    assert (d["n_target"], d["false"], d["missed"]) == (0, 1, 0)
    assert d["false_4_inf"] == 1 and math.isnan(d["recall"])


# --- batched input, types, dtypes ---------------------------------------------------------------------


def test_batched_equals_per_subject():
    cases = [corner_pair_2d(), spurious_2d()]
    z = np.zeros((6, 6), dtype=bool)
    pads = []
    for p, t in cases:
        pp, tt = z.copy(), z.copy()
        pp[: p.shape[0], : p.shape[1]] = p
        tt[: t.shape[0], : t.shape[1]] = t
        pads.append((pp, tt))
    pads.append((z, z))
    pads.append((pads[1][0], z))
    P = np.stack([p for p, _ in pads])
    T = np.stack([t for _, t in pads])
    for conn in (1, None):
        batch = subject_metrics(P, T, connectivity=conn, size_bins=(2, 4), batched=True)
        assert isinstance(batch, list) and len(batch) == 4
        for b, (p, t) in enumerate(pads):
            single = subject_metrics(p, t, connectivity=conn, size_bins=(2, 4))
            assert _same(batch[b], single)


def _same(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    return all((isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in a)


def test_subject_metrics_is_atlas_plus_detection_plus_instance_quality():
    p, t = spurious_2d()
    both = subject_metrics(p, t, connectivity=1, size_bins=(2, 4), spacing=(0.5, 0.5))
    sep = {
        **atlas_metrics(p, t, connectivity=1, spacing=(0.5, 0.5)),
        **detection_metrics(p, t, connectivity=1, size_bins=(2, 4)),
        **panoptic_metrics(p, t, connectivity=1),
        **cc_metrics(p, t, connectivity=1, spacing=(0.5, 0.5)),
    }
    del sep["cc_dice_components"]
    assert _same(both, sep)


def test_numpy_torch_and_dtypes_agree():
    p, t = spurious_2d()
    ref = subject_metrics(p, t)
    for conv in (
        lambda x: x.astype(bool),
        lambda x: x.astype(np.float32),
        lambda x: x.astype(np.int64),
        lambda x: torch.from_numpy(x.astype(np.float32)),
        lambda x: torch.from_numpy(x.astype(bool)),
        lambda x: torch.from_numpy(x).to(torch.bfloat16),
    ):
        assert _same(subject_metrics(conv(p), conv(t)), ref)
    assert _same(subject_metrics(torch.from_numpy(p), t), ref)  # mixed families


def test_requires_grad_tensor_accepted():
    p, t = corner_pair_2d()
    pt = torch.from_numpy(p.astype(np.float32)).requires_grad_(True)
    assert atlas_metrics(pt, t)["dice"] == pytest.approx(2 / 3)


def test_match_instances_arrays():
    p, t = spurious_2d()
    m = match_instances(p, t, connectivity=1)
    # target instances in raster order of first voxel: A (0,0) then B; predictions: row 0, (2,0), (4,4)
    assert m.target_sizes.tolist() == [1, 4] and m.target_hit.tolist() == [False, True]
    assert m.pred_sizes.tolist() == [3, 1, 1] and m.pred_hit.tolist() == [False, False, True]
    assert (int(m.pred_volume[0]), int(m.target_volume[0]), int(m.intersection[0])) == (5, 5, 1)


# --- oracles ---------------------------------------------------------------------------------------------


def _oracle(p: np.ndarray, t: np.ndarray, conn: int, edges: tuple[int, ...]) -> dict:
    """Brute force: scipy labelling and a Python loop over instances."""
    structure = ndimage.generate_binary_structure(p.ndim, conn)
    pl, n_p = ndimage.label(p, structure=structure)
    tl, n_t = ndimage.label(t, structure=structure)
    t_hit = [bool(p[tl == k].any()) for k in range(1, n_t + 1)]
    p_false = [not t[pl == k].any() for k in range(1, n_p + 1)]
    t_size = [int((tl == k).sum()) for k in range(1, n_t + 1)]
    p_size = [int((pl == k).sum()) for k in range(1, n_p + 1)]
    tp, fn, fp = sum(t_hit), n_t - sum(t_hit), sum(p_false)
    inter, sp, st = int((p & t).sum()), int(p.sum()), int(t.sum())
    out = {
        "dice": 1.0 if sp + st == 0 else 2 * inter / (sp + st),
        "volume_difference": abs(sp - st),
        "simple_lesion_count": abs(n_p - n_t),
        "lesionwise_f1": 1.0 if tp + fp + fn == 0 else tp / (tp + (fp + fn) / 2),
        "missed": fn,
        "false": fp,
    }
    lows, highs = (1, *edges), (*edges, 10**9)
    for name, lo, hi in zip(bin_names(edges), lows, highs):
        out[f"missed_{name}"] = sum(1 for h, s in zip(t_hit, t_size) if not h and lo <= s < hi)
        out[f"false_{name}"] = sum(1 for f, s in zip(p_false, p_size) if f and lo <= s < hi)
    return out


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_random_masks_against_brute_force_oracle(spatial_dims):
    rng = np.random.default_rng(7)
    shape = (4, 12, 13) if spatial_dims == 2 else (3, 7, 8, 9)
    edges = (2, 5, 20)
    for density in (0.15, 0.35, 0.6):
        P = rng.random(shape) < density
        T = rng.random(shape) < density
        for conn in range(1, spatial_dims + 1):
            rows = subject_metrics(P, T, connectivity=conn, size_bins=edges, batched=True)
            for b in range(shape[0]):
                want = _oracle(P[b], T[b], conn, edges)
                for k, v in want.items():
                    assert rows[b][k] == pytest.approx(v), (density, conn, b, k)


def test_dice_equals_monai_dicemetric():
    rng = np.random.default_rng(3)
    for shape in [(6, 1, 17, 19), (4, 1, 9, 10, 11)]:
        for density in (0.05, 0.3, 0.7):
            P = rng.random(shape) < density
            T = rng.random(shape) < density
            T[0] = False  # one empty target (and below one empty pair): MONAI ignore_empty=False gives 0 / 1
            P[1] = False
            T[1] = False
            ours = [r["dice"] for r in atlas_metrics(P[:, 0], T[:, 0], batched=True)]
            monai = DiceMetric(include_background=True, reduction="none", ignore_empty=False)(
                torch.from_numpy(P).float(), torch.from_numpy(T).float()
            )
            np.testing.assert_allclose(ours, monai[:, 0].numpy(), rtol=1e-6, atol=1e-7)


# --- study aggregates --------------------------------------------------------------------------------------


def test_study_aggregates_hand_worked():
    df = pd.DataFrame(
        {
            "n_target": [3, 2, 0, 0, 1, 4],
            "missed": [1, 2, 0, 0, 0, 4],
            "false": [0, 1, 0, 2, 0, 0],
        }
    )
    agg = study_aggregates(df)
    assert list(agg) == list(STUDY_AGGREGATES)
    assert agg == {
        "n_subjects": 6,
        "total_mi": 7,  # 1 + 2 + 4
        "subjects_with_mi": 3,
        "subjects_all_mi": 2,  # rows 2 and 6; row 3 has no target instance and is not counted
        "total_fi": 3,
        "subjects_with_fi": 2,
        "subjects_without_mi_fi": 2,  # rows 3 and 5
    }


def test_study_aggregates_from_detection_rows():
    p, t = spurious_2d()
    z = np.zeros_like(p)
    rows = detection_metrics(np.stack([p, z, z]), np.stack([t, t, z]), connectivity=1, batched=True)
    agg = study_aggregates(rows)  # a list of dicts is accepted too
    # subject 0: MI 1, FI 2; subject 1: all 2 missed; subject 2: empty/empty (no MI, no FI)
    assert (agg["total_mi"], agg["subjects_with_mi"], agg["subjects_all_mi"]) == (3, 2, 1)
    assert (agg["total_fi"], agg["subjects_with_fi"], agg["subjects_without_mi_fi"]) == (2, 1, 1)


@pytest.mark.parametrize(
    "df, match",
    [
        (pd.DataFrame({"missed": [1], "false": [0]}), "columns"),
        (pd.DataFrame({"missed": [], "false": [], "n_target": []}), "at least one subject"),
        (pd.DataFrame({"missed": [np.nan], "false": [0], "n_target": [1]}), "integer counts"),
        (pd.DataFrame({"missed": [0.5], "false": [0], "n_target": [1]}), "integer counts"),
        (pd.DataFrame({"missed": [2], "false": [0], "n_target": [1]}), "missed <= n_target"),
    ],
)
def test_study_aggregates_bad_input(df, match):
    with pytest.raises(DataError, match=match):
        study_aggregates(df)


# --- metadata ------------------------------------------------------------------------------------------------


def test_every_output_key_has_metadata():
    p, t = spurious_2d()
    row = subject_metrics(p, t, spacing=(1.0, 1.0))
    for k in row:
        if k == "connectivity":
            continue
        info = metric_info(k)
        assert info.empty_policy and info.description
        assert info.higher_is_better in (True, False, None)
    for k in study_aggregates([row]):
        assert metric_info(k).level == "study"


def test_directions_from_metadata():
    assert metric_directions(["dice", "lesionwise_f1", "recall_10_100", "subjects_without_mi_fi"]) == {
        "dice": "max",
        "lesionwise_f1": "max",
        "recall_10_100": "max",
        "subjects_without_mi_fi": "max",
    }
    assert set(
        metric_directions(["volume_difference", "simple_lesion_count", "missed_1000_inf", "total_fi"]).values()
    ) == {"min"}
    assert "[1000, inf)" in metric_info("missed_1000_inf").description
    with pytest.raises(RegistryError, match="descriptive"):
        metric_directions(["n_target"])
    with pytest.raises(RegistryError, match="Did you mean 'dice'"):
        metric_info("dise")
    with pytest.raises(RegistryError):
        metric_info("recall_10")


def test_list_metrics():
    names = [m.name for m in list_metrics()]
    assert names == list(METRICS)
    assert {m.name for m in list_metrics("study")} == set(STUDY_AGGREGATES)
    assert all(m.level == "subject" for m in list_metrics("subject"))
    with pytest.raises(ConfigError):
        list_metrics("patient")


# --- bad input --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        ({"pred": np.zeros((4, 4)), "target": np.zeros((4, 5))}, ShapeError, "same shape"),
        ({"pred": np.zeros(4), "target": np.zeros(4)}, ShapeError, "spatial dims"),
        ({"pred": np.zeros((2, 3, 4, 5)), "target": np.zeros((2, 3, 4, 5))}, ShapeError, "batched=True"),
        ({"pred": np.full((4, 4), 0.5), "target": np.zeros((4, 4))}, DataError, "binary"),
        ({"pred": np.zeros((4, 4)), "target": np.full((4, 4), np.nan)}, DataError, "`target` must be"),
        ({"pred": np.full((4, 4), 2), "target": np.zeros((4, 4))}, DataError, "prob >= 0.5"),
        ({"pred": [[0, 1]], "target": np.zeros((1, 2))}, DataError, "ndarray or torch.Tensor"),
        ({"pred": np.zeros((4, 4)), "target": np.zeros((4, 4)), "connectivity": 3}, ConfigError, "connectivity"),
        ({"pred": np.zeros((4, 4)), "target": np.zeros((4, 4)), "spacing": (1.0,)}, ConfigError, "spacing"),
        ({"pred": np.zeros((4, 4)), "target": np.zeros((4, 4)), "spacing": (1.0, -1)}, ConfigError, "spacing"),
        ({"pred": np.zeros((4, 4)), "target": np.zeros((4, 4)), "size_bins": (10, 5)}, ConfigError, "size_bins"),
        ({"pred": np.zeros((4, 4)), "target": np.zeros((4, 4)), "size_bins": (1, 5)}, ConfigError, "size_bins"),
        ({"pred": np.zeros((4, 4)), "target": np.zeros((4, 4)), "size_bins": (2.5,)}, ConfigError, "size_bins"),
        ({"pred": np.zeros((4, 4)), "target": np.zeros((4, 4)), "size_bins": 10}, ConfigError, "size_bins"),
        ({"pred": np.zeros((4, 4)), "target": np.zeros((4, 4)), "batched": 1}, ConfigError, "batched"),
        (
            {"pred": np.zeros((2, 4, 4)), "target": np.zeros((2, 4, 4)), "batched": True, "spacing": (1, 1, 1)},
            ConfigError,
            "spacing",
        ),
    ],
)
def test_bad_input(kwargs, err, match):
    with pytest.raises(err, match=match) as info:
        subject_metrics(**kwargs)
    assert isinstance(info.value, LossbenchError) and isinstance(info.value, ValueError)


def test_atlas_and_detection_validate_their_own_options():
    z = np.zeros((4, 4))
    with pytest.raises(ConfigError, match="spacing"):
        atlas_metrics(z, z, spacing=(1.0, 2.0, 3.0))
    with pytest.raises(ConfigError, match="size_bins"):
        detection_metrics(z, z, size_bins=(0,))
    with pytest.raises(ConfigError, match="connectivity"):
        detection_metrics(z, z, connectivity=0)


def test_bin_names():
    assert bin_names((10, 100, 1000)) == ["1_10", "10_100", "100_1000", "1000_inf"]
    assert bin_names(()) == ["1_inf"]
    d = detection_metrics(*corner_pair_2d(), size_bins=())
    assert d["n_target_1_inf"] == d["n_target"]


def test_big_endian_read_only_and_bad_dtypes():
    p, t = spurious_2d()
    ref = atlas_metrics(p, t)
    pb = p.astype(">f4")
    pb.flags.writeable = False  # e.g. a memory-mapped NIfTI image
    assert atlas_metrics(pb, t) == ref
    with pytest.raises(DataError, match="dtype object"):
        atlas_metrics(p.astype(object), t)
    with pytest.raises(DataError, match="complex"):
        atlas_metrics(torch.zeros(4, 4, dtype=torch.complex64), torch.zeros(4, 4))
