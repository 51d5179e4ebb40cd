"""Pixel-wise baselines: equal to MONAI's classes, hand-worked 2x2 values, function == module, gradcheck."""

from __future__ import annotations

import monai.losses as ml
import pytest
import torch

from lossbench.losses import (
    DiceCELoss,
    DiceFocalLoss,
    DiceLoss,
    FocalLoss,
    GeneralizedDiceFocalLoss,
    build_loss,
    pixel_terms,
)


def _data(seed, shape=(3, 2, 9, 10), logits=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64) * 2
    y = (torch.rand(*shape, generator=g) > 0.6).to(torch.float64)
    return (x if logits else torch.sigmoid(x)), y


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"sigmoid": True},
        {"softmax": True},
        {"sigmoid": True, "include_background": False},
        {"sigmoid": True, "squared_pred": True},
        {"sigmoid": True, "jaccard": True},
        {"sigmoid": True, "batch": True},
        {"sigmoid": True, "smooth_nr": 0.0, "smooth_dr": 1e-3},
    ],
)
def test_dice_equals_monai(seed, kw):
    x, y = _data(seed, logits=bool(kw.get("sigmoid") or kw.get("softmax")))
    ours = build_loss("dice", **kw)(x, y)
    theirs = ml.DiceLoss(**kw)(x, y)
    assert torch.allclose(ours, theirs, atol=1e-12)


def test_dice_equals_monai_3d_to_onehot():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 5, 6, 7, generator=g)
    y = torch.randint(0, 3, (2, 1, 5, 6, 7), generator=g).float()
    kw = {"softmax": True, "to_onehot_y": True, "include_background": False}
    assert torch.allclose(build_loss("dice", **kw)(x, y), ml.DiceLoss(**kw)(x, y), atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_dicece_equals_monai_single_channel(seed):
    x, y = _data(seed, shape=(2, 1, 8, 9))
    ours = DiceCELoss(sigmoid=True, lambda_dice=0.7, lambda_ce=1.3)(x, y)
    theirs = ml.DiceCELoss(sigmoid=True, lambda_dice=0.7, lambda_ce=1.3)(x, y)
    assert torch.allclose(ours, theirs, atol=1e-12)


@pytest.mark.parametrize("alpha", [None, 0.25])
@pytest.mark.parametrize("include_background", [True, False])
def test_focal_and_dicefocal_equal_monai(alpha, include_background):
    x, y = (t.float() for t in _data(4))  # MONAI's focal computes in float32
    ours = FocalLoss(sigmoid=True, gamma=1.5, alpha=alpha, include_background=include_background)(x, y)
    theirs = ml.FocalLoss(gamma=1.5, alpha=alpha, include_background=include_background)(x, y)
    assert torch.allclose(ours, theirs, atol=1e-6)
    ours = DiceFocalLoss(sigmoid=True, gamma=2.0, alpha=alpha, include_background=include_background)(x, y)
    theirs = ml.DiceFocalLoss(sigmoid=True, gamma=2.0, alpha=alpha, include_background=include_background)(x, y)
    assert torch.allclose(ours, theirs, atol=1e-6)


@pytest.mark.parametrize("w_type", ["square", "simple", "uniform"])
@pytest.mark.parametrize("batch", [False, True])
def test_gdicefocal_equals_monai(w_type, batch):
    x, y = (t.float() for t in _data(5))
    y[0, 1] = 0  # an empty channel exercises the infinite-weight rule
    ours = GeneralizedDiceFocalLoss(sigmoid=True, w_type=w_type, batch=batch, lambda_gdl=0.5)(x, y)
    theirs = ml.GeneralizedDiceFocalLoss(sigmoid=True, w_type=w_type, batch=batch, lambda_gdl=0.5)(x, y)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_bce_equals_torch():
    x, y = _data(6)
    ours = build_loss("bce", sigmoid=True)(x, y)
    assert torch.allclose(ours, torch.nn.functional.binary_cross_entropy_with_logits(x, y), atol=1e-12)
    p = torch.sigmoid(x)
    assert torch.allclose(build_loss("bce")(p, y), torch.nn.functional.binary_cross_entropy(p, y), atol=1e-12)


def test_hand_worked_2x2():
    # p = [[1, 0], [0.5, 0.5]], y = [[1, 0], [1, 0]]: I = 1.5, P = 2, G = 2
    p = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]]], dtype=torch.float64)
    y = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]], dtype=torch.float64)
    s = 1e-5
    assert float(build_loss("dice")(p, y)) == pytest.approx(1 - (3 + s) / (4 + s), abs=1e-12)
    # BCE: voxels 1->1 and 0->0 cost 0; the two 0.5 voxels cost ln 2 each -> mean ln2 / 2
    assert float(build_loss("bce")(p, y)) == pytest.approx(0.6931471805599453 / 2, abs=1e-12)
    # focal (gamma 2): 0.5 voxels: (1 - 0.5)^2 ln 2 -> mean 0.25 ln2 / 2
    assert float(build_loss("focal")(p, y)) == pytest.approx(0.25 * 0.6931471805599453 / 2, abs=1e-12)
    t = build_loss("dicece").terms(p, y)
    assert set(t) == {"dice", "ce", "total"}
    assert torch.allclose(t["total"], t["dice"] + t["ce"])


@pytest.mark.parametrize("name", ["dice", "bce", "focal", "dicece", "dicefocal", "gdicefocal"])
def test_function_equals_module_and_forward_equals_terms(name):
    x, y = _data(7)
    loss = build_loss(name, sigmoid=True)
    terms = loss.terms(x, y)
    assert torch.equal(loss(x, y), terms["total"])
    assert torch.equal(pixel_terms(x, y, name, sigmoid=True)["total"], terms["total"])


@pytest.mark.parametrize("name", ["dice", "bce", "focal", "dicece", "dicefocal", "gdicefocal"])
def test_gradcheck(name):
    x, y = _data(8, shape=(1, 2, 3, 4))
    x.requires_grad_(True)
    loss = build_loss(name, sigmoid=True)
    assert torch.autograd.gradcheck(lambda z: loss(z, y), (x,), eps=1e-6, atol=1e-6)


def test_dice_module_is_registered_class():
    assert isinstance(build_loss("dice"), DiceLoss)
