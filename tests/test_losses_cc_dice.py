"""cc_dice / cc_dicece against a brute-force per-region loop (scipy labelling and distance transforms), hand cases.

The oracle labels every (image, channel) label with ``scipy.ndimage.label``, builds the Voronoi regions with one
scipy distance transform per component (first of equal minima: the smallest id), and loops over regions with the
formulas of the module docstring; values and gradients must match, on both code paths (numba on the CPU, and the
device-agnostic torch path CUDA runs).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from lossbench.errors import ConfigError, ShapeError
from lossbench.losses import build_loss, cc_dice_loss, cc_dice_terms, cc_dicece_loss
from lossbench.ops import torch_only


@pytest.fixture(autouse=True, params=["cpu-fast-paths", "device-agnostic"])
def code_path(request):
    if request.param != "device-agnostic":
        yield request.param
        return
    with torch_only():
        yield request.param


def oracle_regions(label: np.ndarray, conn: int | None) -> tuple[np.ndarray, int]:
    lab, n = ndimage.label(label, structure=ndimage.generate_binary_structure(label.ndim, conn or label.ndim))
    if n == 0:
        return lab, 0
    dist = np.stack([ndimage.distance_transform_edt(lab != k) for k in range(1, n + 1)])
    return np.argmin(dist, axis=0) + 1, n


def oracle(x, y, *, sigmoid=False, softmax=False, include_background=True, ce=False, connectivity=None,
           lambda_dice=1.0, lambda_ce=1.0, smooth_nr=1e-5, smooth_dr=1e-5):  # fmt: skip
    p = torch.sigmoid(x) if sigmoid else torch.softmax(x, 1) if softmax else x
    first = 0 if include_background else 1
    values = []
    for b in range(x.shape[0]):
        for c in range(first, x.shape[1]):
            q, t = p[b, c], y[b, c]
            regions, n = oracle_regions(t.numpy() > 0.5, connectivity)
            if sigmoid:
                bce = F.binary_cross_entropy_with_logits(x[b, c], t, reduction="none")
            else:
                bce = F.binary_cross_entropy(q, t, reduction="none")
            if n == 0:
                d = q.sum() * 0 + 1.0
                e = bce.mean()
            else:
                ds, es = [], []
                for k in range(1, n + 1):
                    r = torch.from_numpy(regions == k)
                    ds.append(1 - (2 * (q[r] * t[r]).sum() + smooth_nr) / ((q[r] + t[r]).sum() + smooth_dr))
                    es.append(bce[r].mean())
                d, e = torch.stack(ds).mean(), torch.stack(es).mean()
            values.append(lambda_dice * d + (lambda_ce * e if ce else 0))
    return torch.stack(values).mean()


def random_case(seed, shape, density=0.08, empty_image=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64) * 2
    y = (torch.rand(*shape, generator=g) < density).to(torch.float64)
    if empty_image:
        y[-1] = 0  # an image without label components
    return x, y


CASES = [
    ((3, 1, 12, 13), {}),
    ((2, 1, 6, 7, 8), {}),
    ((3, 1, 12, 13), {"connectivity": 1}),
    ((2, 1, 6, 7, 8), {"connectivity": 2}),
    ((2, 2, 10, 11), {}),  # two channels, each its own binary problem
    ((2, 3, 9, 10), {"softmax": True, "include_background": False}),
]


@pytest.mark.parametrize("ce", [False, True])
@pytest.mark.parametrize(
    "shape, kw, sigmoid", [(s, k, sg) for s, k in CASES for sg in (True, False) if not (sg and k.get("softmax"))]
)
def test_values_and_gradients_equal_the_loop_oracle(shape, kw, sigmoid, ce):
    x, y = random_case(hash((shape, sigmoid, ce)) % 1000, shape)
    if not sigmoid and not kw.get("softmax"):
        x = torch.sigmoid(x)  # probabilities in (0, 1)
    kw = {**kw, "sigmoid": sigmoid} if sigmoid else kw
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    ours = build_loss("cc_dicece" if ce else "cc_dice", **kw)(x1, y)
    want = oracle(x2, y, ce=ce, **kw)
    torch.testing.assert_close(ours, want, rtol=1e-10, atol=1e-12)
    ours.backward()
    want.backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-8, atol=1e-12)


def test_lambdas_and_smoothing():
    x, y = random_case(3, (2, 1, 9, 9))
    kw = {"sigmoid": True, "lambda_dice": 0.3, "lambda_ce": 2.0, "smooth_nr": 0.5, "smooth_dr": 1.0}
    torch.testing.assert_close(build_loss("cc_dicece", **kw)(x, y), oracle(x, y, ce=True, **kw))
    t = build_loss("cc_dicece", **kw).terms(x, y)
    torch.testing.assert_close(t["total"], 0.3 * t["dice"] + 2.0 * t["ce"])


def test_gradcheck_tiny_cases():
    x, y = random_case(5, (2, 1, 5, 6))
    y[0, 0, 0, 0] = y[0, 0, 4, 5] = 1  # at least two components
    for name, kw, inp in [
        ("cc_dicece", {"sigmoid": True}, x),
        ("cc_dicece", {}, torch.sigmoid(x) * 0.9 + 0.05),
        ("cc_dice", {}, torch.sigmoid(x) * 0.9 + 0.05),
    ]:
        loss = build_loss(name, **kw)
        inp = inp.clone().requires_grad_(True)
        assert torch.autograd.gradcheck(lambda z, loss=loss: loss(z, y), (inp,))


def test_hand_worked_regions_and_values():
    # one row: lesions at columns 0 and 5; columns 0-2 are region 1 (column 2: 2 from lesion 1, 3 from lesion 2)
    y = torch.tensor([[[[1.0, 0, 0, 0, 0, 1]]]], dtype=torch.float64)
    p = torch.tensor([[[[1.0, 0, 0.5, 0, 0, 0]]]], dtype=torch.float64)
    s = 1e-5
    d1 = 1 - (2 * 1 + s) / (1.5 + 1 + s)  # region 1: sum(p y) = 1, sum(p + y) = 1.5 + 1
    d2 = 1 - (0 + s) / (0 + 1 + s)  # region 2: the lesion is missed
    t = cc_dice_terms(p, y, ce=True)
    assert float(t["dice"]) == pytest.approx((d1 + d2) / 2)
    bce = lambda q, lab: -np.log(q if lab else 1 - q)  # noqa: E731
    e1 = (0 + 0 + bce(0.5, 0)) / 3  # log clamps at -100: p = 1 on the lesion costs 0, p = 0 off it costs 0
    e2 = (0 + 0 + min(-np.log(1e-300), 100)) / 3  # p = 0 on lesion 2: log clamped at -100
    assert float(t["ce"]) == pytest.approx((e1 + e2) / 2)


def test_a_missed_small_lesion_costs_as_much_as_a_missed_large_one():
    y = torch.zeros(1, 1, 12, 12, dtype=torch.float64)
    y[0, 0, 1:4, 1:4] = 1  # 9 voxels
    y[0, 0, 10, 10] = 1  # 1 voxel
    big_only = y.clone()
    big_only[0, 0, 10, 10] = 0
    small_only = y - big_only
    a = float(cc_dice_loss(big_only, y))
    b = float(cc_dice_loss(small_only, y))
    assert a == pytest.approx(0.5, abs=1e-5) and b == pytest.approx(0.5, abs=1e-5)
    assert float(build_loss("dice")(big_only, y)) < 0.06  # plain Dice barely sees the small miss


def test_far_spurious_blob_is_penalised_in_its_region():
    y = torch.zeros(1, 1, 4, 20, dtype=torch.float64)
    y[0, 0, 0:2, 0:2] = 1
    y[0, 0, 0:2, 18:20] = 1
    p = y.clone()
    clean = float(cc_dice_loss(p, y))
    p[0, 0, 3, 12] = 1.0  # far from both lesions, nearer the right one
    x = p.clone().requires_grad_(True)
    loss = cc_dice_loss(x, y)
    # right region: dice = 1 - (2*4 + s) / (5 + 4 + s) = 1/9 (a blob of 1 voxel vs a lesion of 4); mean with 0
    assert loss.item() == pytest.approx(clean + (1 / 9) / 2, abs=1e-5)
    loss.backward()
    assert x.grad[0, 0, 3, 12] > 0  # pushed down inside the right lesion's region


def test_empty_label_batch_is_differentiable():
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    y = torch.zeros(2, 1, 6, 6, dtype=torch.float64)
    t = build_loss("cc_dicece", sigmoid=True).terms(x, y)
    assert t["dice"].item() == 1.0 and t["dice"].requires_grad and t["total"].requires_grad
    t["total"].backward()
    torch.testing.assert_close(x.grad, torch.sigmoid(x.detach()) / 72)  # d mean BCE(x, 0) / dx, dice adds nothing
    x.grad = None
    build_loss("cc_dice", sigmoid=True)(x, y).backward()
    assert torch.count_nonzero(x.grad) == 0


def test_terms_functional_and_registry():
    x, y = random_case(1, (2, 1, 8, 8))
    assert set(build_loss("cc_dice").terms(torch.sigmoid(x), y)) == {"dice", "total"}
    assert set(build_loss("cc_dicece", sigmoid=True).terms(x, y)) == {"dice", "ce", "total"}
    assert torch.equal(cc_dicece_loss(x, y, sigmoid=True), build_loss("cc_dicece", sigmoid=True)(x, y))
    assert torch.equal(cc_dice_loss(x, y, sigmoid=True), build_loss("cc_dice", sigmoid=True)(x, y))


def test_to_onehot_y_equals_onehot_target():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 9, 9, generator=g, dtype=torch.float64)
    cls = torch.randint(0, 3, (2, 1, 9, 9), generator=g)
    onehot = F.one_hot(cls[:, 0], 3).movedim(-1, 1).to(torch.float64)
    a = build_loss("cc_dicece", softmax=True).terms(x, onehot)
    b = build_loss("cc_dicece", softmax=True, to_onehot_y=True).terms(x, cls.to(torch.float64))
    for k in a:
        torch.testing.assert_close(a[k], b[k])


@pytest.mark.parametrize(
    "params, match",
    [
        ({"connectivity": 4}, "connectivity"),
        ({"connectivity": 0}, "connectivity"),
        ({"connectivity": True}, "connectivity"),
        ({"smooth_nr": -1}, "smooth_nr"),
        ({"smooth_dr": float("nan")}, "smooth_dr"),
        ({"sigmoid": True, "softmax": True}, "sigmoid"),
        ({"sigmoid": 1}, "sigmoid"),
    ],
)
def test_bad_options(params, match):
    with pytest.raises(ConfigError, match=match):
        build_loss("cc_dice", **params)
    with pytest.raises(ConfigError, match=match):
        build_loss("cc_dicece", **params)


def test_bad_options_specific_to_dicece_and_inputs():
    with pytest.raises(ConfigError, match="lambda_ce"):
        build_loss("cc_dicece", lambda_ce=-1)
    with pytest.raises(ConfigError, match="lambda_dice"):
        build_loss("cc_dicece", lambda_dice="1")
    with pytest.raises(ConfigError):
        build_loss("cc_dice", lambda_ce=1.0)
    x, y = random_case(0, (1, 1, 6, 6))
    with pytest.raises(ConfigError, match="connectivity"):
        build_loss("cc_dice", connectivity=3, sigmoid=True)(x, y)  # 3 hops in a 2D image
    with pytest.raises(ShapeError):
        build_loss("cc_dice", sigmoid=True)(x, y[..., :5])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(
    "name, kw", [("cc_dice", {"sigmoid": True}), ("cc_dicece", {"sigmoid": True}), ("cc_dicece", {})]
)
def test_cuda_equals_cpu(name, kw):
    x, y = random_case(7, (3, 2, 10, 11, 12), density=0.03)
    if not kw:
        x = torch.sigmoid(x)
    loss = build_loss(name, **kw)
    a = x.clone().requires_grad_(True)
    b = x.cuda().requires_grad_(True)
    va, vb = loss(a, y), loss(b, y.cuda())
    va.backward()
    vb.backward()
    torch.testing.assert_close(vb.cpu(), va, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(b.grad.cpu(), a.grad, rtol=1e-8, atol=1e-12)
