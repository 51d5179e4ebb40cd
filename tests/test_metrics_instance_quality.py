"""Panoptic quality (panoptica's semantics) and CC-Dice (CC-Metrics' semantics).

panoptica cannot be installed next to lossbench's dependencies, so the expected values come from the definitions:
hand-worked cases (merged, split, shifted, missed, spurious components; empty cases) with their arithmetic, and
brute-force oracles on random masks that label with scipy and loop over instances (pairs sorted once, then the
sequential greedy matching; per-component scipy distance transforms for the Voronoi regions).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from lossbench.cc.nearest import regions_at
from lossbench.errors import ConfigError
from lossbench.metrics import (
    METRICS,
    atlas_metrics,
    cc_metrics,
    detection_metrics,
    greedy_matching,
    metric_info,
    panoptic_metrics,
    subject_metrics,
)

PQ_KEYS = ["pq", "sq", "rq", "pq_dsc", "sq_dsc", "tp", "fp", "fn", "n_pred", "n_target", "connectivity"]


def blocks(shape, *boxes):
    m = np.zeros(shape, dtype=bool)
    for box in boxes:
        m[tuple(slice(a, b) for a, b in box)] = True
    return m


# --- panoptic quality: hand-worked cases ---------------------------------------------------------------------


def test_keys_and_order():
    t = blocks((4, 4), ((0, 2), (0, 2)))
    assert list(panoptic_metrics(t, t)) == PQ_KEYS
    assert panoptic_metrics(t, t)["pq"] == 1.0


def test_merged_prediction():
    # target: two 2x2 blocks (cols 0-1 and 3-4); prediction: one 2x5 bar over both (10 voxels)
    t = blocks((2, 5), ((0, 2), (0, 2)), ((0, 2), (3, 5)))
    p = blocks((2, 5), ((0, 2), (0, 5)))
    m = panoptic_metrics(p, t)
    # IoU(bar, each block) = 4 / 10 = 0.4 < 0.5: no match
    assert (m["tp"], m["fp"], m["fn"]) == (0, 1, 2)
    assert (m["rq"], m["sq"], m["pq"], m["sq_dsc"], m["pq_dsc"]) == (0.0, 0.0, 0.0, 0.0, 0.0)
    # threshold 0.3: both pairs are candidates with IoU 0.4 (a tie): the smaller target index wins
    m = panoptic_metrics(p, t, iou_threshold=0.3)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 0, 1)
    assert m["rq"] == pytest.approx(1 / (1 + 0.5))  # 2/3
    assert m["sq"] == pytest.approx(0.4)
    assert m["pq"] == pytest.approx(0.4 * 2 / 3)
    assert m["sq_dsc"] == pytest.approx(2 * 4 / (10 + 4))  # 4/7
    assert m["pq_dsc"] == pytest.approx(4 / 7 * 2 / 3)


def test_split_prediction():
    # target: a 2x6 bar (12 voxels); prediction: cols 0-2 (6 voxels) and cols 4-5 (4 voxels)
    t = blocks((2, 6), ((0, 2), (0, 6)))
    p = blocks((2, 6), ((0, 2), (0, 3)), ((0, 2), (4, 6)))
    m = panoptic_metrics(p, t)
    # IoU = 6/12 = 0.5 (>= 0.5: matched) and 4/12: tp 1, fp 1 (the second piece), fn 0
    assert (m["tp"], m["fp"], m["fn"], m["n_pred"], m["n_target"]) == (1, 1, 0, 2, 1)
    assert m["rq"] == pytest.approx(2 / 3)  # 1 / (1 + 0.5)
    assert m["sq"] == pytest.approx(0.5)
    assert m["pq"] == pytest.approx(1 / 3)
    assert m["sq_dsc"] == pytest.approx(2 * 6 / (6 + 12))  # 2/3
    assert m["pq_dsc"] == pytest.approx(4 / 9)


@pytest.mark.parametrize(
    "shift, tp, sq",
    [
        (1, 1, 6 / 12),  # 3x3 block moved by one column: overlap 6, union 12 -> IoU 0.5, matched
        (2, 0, 0.0),  # moved by two: overlap 3, union 15 -> 0.2, unmatched
    ],
)
def test_shifted_prediction(shift, tp, sq):
    t = blocks((3, 8), ((0, 3), (0, 3)))
    p = blocks((3, 8), ((0, 3), (shift, shift + 3)))
    m = panoptic_metrics(p, t)
    assert (m["tp"], m["fp"], m["fn"]) == (tp, 1 - tp, 1 - tp)
    assert m["rq"] == tp and m["sq"] == pytest.approx(sq) and m["pq"] == pytest.approx(sq * tp)
    if tp:
        assert m["sq_dsc"] == pytest.approx(2 * 6 / 18)


def test_missed_and_spurious():
    # two target blocks; the prediction finds the first exactly, misses the second and adds a blob elsewhere
    t = blocks((6, 6), ((0, 2), (0, 2)), ((4, 6), (4, 6)))
    p = blocks((6, 6), ((0, 2), (0, 2)), ((0, 1), (4, 6)))
    m = panoptic_metrics(p, t)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 1, 1)
    assert (m["rq"], m["sq"], m["pq"], m["sq_dsc"], m["pq_dsc"]) == (0.5, 1.0, 0.5, 1.0, 0.5)


def test_connectivity_decides_the_instances():
    # blocks touching at a corner: two instances with connectivity 1, one with full connectivity
    t = blocks((4, 4), ((0, 2), (0, 2)), ((2, 4), (2, 4)))
    p = blocks((4, 4), ((0, 2), (0, 2)))
    face = panoptic_metrics(p, t, connectivity=1)
    assert (face["tp"], face["fn"], face["rq"]) == (1, 1, pytest.approx(2 / 3))
    full = panoptic_metrics(p, t)
    # one 8-voxel target instance, IoU 4/8 = 0.5: matched
    assert (full["tp"], full["fn"], full["n_target"], full["sq"]) == (1, 0, 1, 0.5)
    assert full["connectivity"] == 2 and face["connectivity"] == 1


def test_empty_cases_follow_panoptica():
    z = np.zeros((5, 5), bool)
    one = blocks((5, 5), ((1, 3), (1, 3)))
    both = panoptic_metrics(z, z)
    assert all(math.isnan(both[k]) for k in ("pq", "sq", "rq", "pq_dsc", "sq_dsc"))
    assert (both["tp"], both["fp"], both["fn"], both["n_pred"], both["n_target"]) == (0, 0, 0, 0, 0)
    no_target = panoptic_metrics(one, z)
    assert [no_target[k] for k in ("pq", "sq", "rq", "pq_dsc", "sq_dsc", "fp", "fn")] == [0.0] * 5 + [1, 0]
    no_pred = panoptic_metrics(z, one)
    assert [no_pred[k] for k in ("pq", "sq", "rq", "pq_dsc", "sq_dsc", "fp", "fn")] == [0.0] * 5 + [0, 1]


def test_3d_hand_case():
    # two 2x2x2 cubes; the prediction covers the first with one extra voxel (IoU 8/9) and half of the second
    t = blocks((4, 4, 8), ((0, 2), (0, 2), (0, 2)), ((0, 2), (0, 2), (5, 7)))
    p = t.copy()
    p[2, 0, 0] = True
    p[:, :, 6] = False  # second cube: 4 of 8 voxels left, IoU 4/8 = 0.5 -> matched
    m = panoptic_metrics(p, t, connectivity=1)
    assert (m["tp"], m["fp"], m["fn"]) == (2, 0, 0)
    assert m["sq"] == pytest.approx((8 / 9 + 0.5) / 2)
    assert m["sq_dsc"] == pytest.approx((16 / 17 + 8 / 12) / 2)
    assert m["rq"] == 1.0 and m["pq"] == pytest.approx(m["sq"])


# --- the greedy step -----------------------------------------------------------------------------------------


def greedy_loop(a, b, score):
    order = sorted(range(len(a)), key=lambda i: (-score[i], b[i], a[i]))
    used_a, used_b, out = set(), set(), np.zeros(len(a), bool)
    for i in order:
        if a[i] not in used_a and b[i] not in used_b:
            out[i] = True
            used_a.add(a[i])
            used_b.add(b[i])
    return out


def test_greedy_matching_equals_the_sequential_loop():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(0, 30))
        a = rng.integers(0, 8, n)
        b = rng.integers(0, 8, n)
        key = np.unique(a * 8 + b, return_index=True)[1]  # one entry per (a, b) pair
        a, b = a[key], b[key]
        score = rng.choice([0.1, 0.2, 0.25, 0.3, 0.5], len(a))  # many ties
        np.testing.assert_array_equal(greedy_matching(a, b, score), greedy_loop(a, b, score))


def test_greedy_chain_needs_several_rounds():
    # a chain a0-b0 (0.9), a1-b0 (0.8)... : each round settles one link
    a = np.array([0, 1, 1, 2, 2, 3])
    b = np.array([0, 0, 1, 1, 2, 2])
    s = np.array([0.4, 0.9, 0.8, 0.7, 0.6, 0.5])
    np.testing.assert_array_equal(greedy_matching(a, b, s), [False, True, False, True, False, True])


# --- panoptic quality: brute-force oracle ---------------------------------------------------------------------


def scipy_labels(mask, conn):
    return ndimage.label(mask, structure=ndimage.generate_binary_structure(mask.ndim, conn))


def panoptic_oracle(p, t, conn, thr):
    pl, n_p = scipy_labels(p, conn)
    tl, n_t = scipy_labels(t, conn)
    pairs = []
    for i in range(1, n_p + 1):
        for j in range(1, n_t + 1):
            inter = np.sum((pl == i) & (tl == j))
            if inter == 0:
                continue
            union = np.sum((pl == i) | (tl == j))
            iou = inter / union
            if iou >= thr:
                pairs.append((-iou, j, i, iou, 2 * inter / (np.sum(pl == i) + np.sum(tl == j))))
    pairs.sort()
    used_p, used_t, ious, dices = set(), set(), [], []
    for _, j, i, iou, dsc in pairs:
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
            ious.append(iou)
            dices.append(dsc)
    tp = len(ious)
    fp, fn = n_p - tp, n_t - tp
    if n_p + n_t == 0:
        return dict(tp=0, fp=0, fn=0, rq=math.nan, sq=math.nan, pq=math.nan, sq_dsc=math.nan, pq_dsc=math.nan)
    rq = tp / (tp + (fp + fn) / 2)
    sq = float(np.mean(ious)) if tp else 0.0
    sq_dsc = float(np.mean(dices)) if tp else 0.0
    return dict(tp=tp, fp=fp, fn=fn, rq=rq, sq=sq, pq=sq * rq, sq_dsc=sq_dsc, pq_dsc=sq_dsc * rq)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_panoptic_random_masks_against_oracle(spatial_dims):
    rng = np.random.default_rng(3)
    shape = (5, 14, 15) if spatial_dims == 2 else (3, 7, 8, 9)
    for density in (0.1, 0.3, 0.5):
        base = rng.random(shape) < density
        P = base ^ (rng.random(shape) < 0.15)  # a noisy copy: many partial overlaps
        T = base
        T[0] = False
        P[1] = False
        for conn in range(1, spatial_dims + 1):
            for thr in (0.5, 0.3, 0.1, 1.0):
                rows = panoptic_metrics(P, T, connectivity=conn, iou_threshold=thr, batched=True)
                for b in range(shape[0]):
                    want = panoptic_oracle(P[b], T[b], conn, thr)
                    for k, v in want.items():
                        assert rows[b][k] == pytest.approx(v, nan_ok=True), (density, conn, thr, b, k)


# --- CC-Dice: hand-worked cases --------------------------------------------------------------------------------


def test_cc_docstring_case_and_keys():
    t = np.zeros((2, 7), bool)
    t[:, 0] = True
    t[0, 5] = True
    p = np.zeros((2, 7), bool)
    p[:, 0] = True
    p[1, 6] = True
    m = cc_metrics(p, t)
    assert list(m) == ["cc_dice", "cc_dice_components", "cc_missed", "n_target", "connectivity"]
    # regions: columns 0-2 -> component 1, 3-6 -> component 2; the spurious (1, 6) is in region 2
    assert m["cc_dice_components"] == [1.0, 0.0]  # 2*2/(2+2); 2*0/(1+1)
    assert (m["cc_dice"], m["cc_missed"], m["n_target"]) == (0.5, 0, 2)
    assert detection_metrics(p, t)["missed"] == 1  # missed there (nothing on it), not in CC-Metrics' sense


def test_cc_small_lesion_counts_as_much_as_a_large_one():
    # a 3x3 lesion predicted exactly and a 1-voxel lesion missed
    t = blocks((8, 8), ((0, 3), (0, 3)), ((7, 8), (7, 8)))
    p = blocks((8, 8), ((0, 3), (0, 3)))
    m = cc_metrics(p, t)
    assert m["cc_dice_components"] == [1.0, 0.0]
    assert (m["cc_dice"], m["cc_missed"]) == (0.5, 1)
    assert atlas_metrics(p, t)["dice"] == pytest.approx(18 / 19)  # the global Dice barely notices


def test_cc_spurious_blob_lowers_the_dice_of_its_region():
    # lesions at the left and right ends; a 2-voxel blob at column 3 is nearest to the left lesion
    t = blocks((2, 12), ((0, 2), (0, 2)), ((0, 2), (10, 12)))
    p = t.copy()
    p[:, 3] = True
    m = cc_metrics(p, t)
    # region 1 holds 4 + 2 predicted voxels: dice_1 = 2*4 / (6 + 4) = 0.8; dice_2 = 1
    assert m["cc_dice_components"] == [pytest.approx(0.8), 1.0]
    assert m["cc_dice"] == pytest.approx(0.9)


def test_cc_spacing_moves_a_voxel_to_another_region():
    # components at (0, 0) and (4, 4); the predicted voxel (1, 3): squared distances 1+9=10 and 9+1=10 (a tie,
    # to component 1); with spacing (2, 1): 4+9 = 13 and 36+1 = 37 -> component 1; with (1, 2): 1+36 and 9+4 -> 2
    t = np.zeros((5, 5), bool)
    t[0, 0] = t[4, 4] = True
    p = t.copy()
    p[1, 3] = True
    assert cc_metrics(p, t)["cc_dice_components"] == [pytest.approx(2 / 3), 1.0]
    assert cc_metrics(p, t, spacing=(2.0, 1.0))["cc_dice_components"] == [pytest.approx(2 / 3), 1.0]
    assert cc_metrics(p, t, spacing=(1.0, 2.0))["cc_dice_components"] == [1.0, pytest.approx(2 / 3)]


def test_cc_empty_target_policy():
    z = np.zeros((4, 4), bool)
    one = blocks((4, 4), ((1, 2), (1, 2)))
    assert cc_metrics(z, z) == {
        "cc_dice": 1.0,
        "cc_dice_components": [],
        "cc_missed": 0,
        "n_target": 0,
        "connectivity": 2,
    }
    assert cc_metrics(one, z)["cc_dice"] == 0.0
    assert cc_metrics(z, one) == {
        "cc_dice": 0.0,
        "cc_dice_components": [0.0],
        "cc_missed": 1,
        "n_target": 1,
        "connectivity": 2,
    }


# --- CC-Dice: brute-force oracle --------------------------------------------------------------------------------


def cc_oracle(p, t, conn, spacing):
    tl, n = scipy_labels(t, conn)
    if n == 0:
        return {"cc_dice": 1.0 if not p.any() else 0.0, "cc_dice_components": [], "cc_missed": 0}
    dist = np.stack([ndimage.distance_transform_edt(tl != k, sampling=spacing) for k in range(1, n + 1)])
    regions = np.argmin(dist, axis=0) + 1  # first of equal minima: the smallest id
    dices, missed = [], 0
    for k in range(1, n + 1):
        r = regions == k
        pk, tk = p & r, t & r
        dices.append(2 * np.sum(pk & tk) / (np.sum(pk) + np.sum(tk)))
        missed += int(pk.sum() == 0)
    return {"cc_dice": float(np.mean(dices)), "cc_dice_components": dices, "cc_missed": missed}


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_cc_random_masks_against_oracle(spatial_dims):
    rng = np.random.default_rng(9)
    shape = (4, 16, 15) if spatial_dims == 2 else (3, 9, 8, 7)
    for density in (0.02, 0.08, 0.3):
        T = rng.random(shape) < density
        P = (T ^ (rng.random(shape) < 0.1)) | (rng.random(shape) < density / 2)
        T[0] = False
        for conn in range(1, spatial_dims + 1):
            for spacing in (None, (2.0, 0.5, 1.0)[:spatial_dims]):
                rows = cc_metrics(P, T, connectivity=conn, spacing=spacing, batched=True)
                for b in range(shape[0]):
                    want = cc_oracle(P[b], T[b], conn, spacing)
                    assert rows[b]["cc_dice"] == pytest.approx(want["cc_dice"]), (density, conn, b)
                    np.testing.assert_allclose(rows[b]["cc_dice_components"], want["cc_dice_components"])
                    assert rows[b]["cc_missed"] == want["cc_missed"]


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_regions_at_tree_and_box_agree_with_the_dense_transform(spatial_dims):
    from lossbench.cc import voronoi_regions

    rng = np.random.default_rng(21)
    shape = (30, 27) if spatial_dims == 2 else (12, 11, 13)
    for density in (0.01, 0.05, 0.2):
        for spacing in (None, (2.0, 1.0, 0.5)[:spatial_dims]):
            labels, n = scipy_labels(rng.random(shape) < density, 1)
            if n < 2:
                continue
            dense = voronoi_regions(labels[None], spacing=spacing).regions[0]
            sites = np.argwhere(labels > 0)
            query = np.argwhere(rng.random(shape) < 0.3)
            for method in ("tree", "box", None):
                got = regions_at(sites, labels[tuple(sites.T)], query, spacing, method=method)
                np.testing.assert_array_equal(got, dense[tuple(query.T)], err_msg=method)


@pytest.mark.parametrize("k", [None, 1])
def test_regions_at_tree_finds_every_tie_beyond_the_nearest_few(monkeypatch, k):
    import lossbench.cc.nearest as nearest

    if k is not None:  # fetch one site per query: every tie then needs the ball query
        monkeypatch.setattr(nearest, "_K", k)
    # the 12 lattice points with x^2 + y^2 = 25 around the center (5, 5): one of component 1, eleven of component 2
    pts = [(x, y) for x in range(-5, 6) for y in range(-5, 6) if x * x + y * y == 25]
    sites = np.array([(x + 5, y + 5) for x, y in pts])
    ids = np.full(len(sites), 2)
    ids[5] = 1
    got = regions_at(sites, ids, np.array([[5, 5], [5, 4]]), method="tree")
    # (5, 4) is strictly nearer to the site (5, 0) = pts[...] below the center than to any other
    assert got[0] == 1
    assert got[1] == ids[np.argmin(((sites - [5, 4]) ** 2).sum(1))]


# --- subject_metrics, metadata, torch input, errors ---------------------------------------------------------------


def test_subject_metrics_is_the_union_of_the_four_families():
    rng = np.random.default_rng(4)
    P = rng.random((3, 12, 13)) < 0.2
    T = rng.random((3, 12, 13)) < 0.2
    rows = subject_metrics(P, T, connectivity=2, spacing=(1.0, 2.0), batched=True)
    for b in range(3):
        want = {
            **atlas_metrics(P[b], T[b], connectivity=2, spacing=(1.0, 2.0)),
            **detection_metrics(P[b], T[b], connectivity=2),
            **panoptic_metrics(P[b], T[b], connectivity=2),
            **cc_metrics(P[b], T[b], connectivity=2, spacing=(1.0, 2.0)),
        }
        del want["cc_dice_components"]
        assert rows[b].keys() == want.keys()
        for k, v in want.items():
            assert rows[b][k] == pytest.approx(v, nan_ok=True), k


def test_every_new_key_has_metadata_and_direction():
    t = blocks((6, 6), ((0, 2), (0, 2)))
    for k in [*panoptic_metrics(t, t), *cc_metrics(t, t)]:
        if k != "connectivity":
            info = metric_info(k)
            assert info.empty_policy and info.description
    assert {k: METRICS[k].direction for k in ("pq", "sq", "rq", "pq_dsc", "sq_dsc", "cc_dice", "cc_missed")} == {
        "pq": "max",
        "sq": "max",
        "rq": "max",
        "pq_dsc": "max",
        "sq_dsc": "max",
        "cc_dice": "max",
        "cc_missed": "min",
    }
    assert METRICS["tp"].direction is None and METRICS["cc_dice_components"].direction is None


def test_torch_input_and_batches_agree_with_numpy():
    rng = np.random.default_rng(8)
    P = rng.random((2, 6, 7, 8)) < 0.3
    T = rng.random((2, 6, 7, 8)) < 0.3
    for fn in (panoptic_metrics, cc_metrics):
        a = fn(P, T, batched=True)
        b = fn(torch.from_numpy(P).float(), torch.from_numpy(T), batched=True)
        assert a == b
        assert fn(P[1], T[1]) == a[1]


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda z: panoptic_metrics(z, z, iou_threshold=0), "iou_threshold"),
        (lambda z: panoptic_metrics(z, z, iou_threshold=1.5), "iou_threshold"),
        (lambda z: panoptic_metrics(z, z, iou_threshold=True), "iou_threshold"),
        (lambda z: panoptic_metrics(z, z, iou_threshold=float("nan")), "iou_threshold"),
        (lambda z: panoptic_metrics(z, z, spacing=(1.0,)), "spacing"),
        (lambda z: panoptic_metrics(z, z, connectivity=0), "connectivity"),
        (lambda z: cc_metrics(z, z, spacing=(1.0, -2.0)), "spacing"),
        (lambda z: cc_metrics(z, z, connectivity=3), "connectivity"),
        (lambda z: subject_metrics(z, z, iou_threshold=0), "iou_threshold"),
    ],
)
def test_bad_options(call, fragment):
    with pytest.raises(ConfigError, match=fragment):
        call(np.zeros((4, 4), bool))


def test_docstring_examples():
    import doctest

    import lossbench.metrics.panoptic as panoptic
    import lossbench.metrics.per_component as per_component

    for module in (panoptic, per_component):
        assert doctest.testmod(module).failed == 0
