"""Losses on the inputs a real training loop produces: half-precision outputs (autocast) and zero-weight terms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lossbench.losses import LOSSES, build_loss

# relative value tolerance per dtype: the bound for the loss computed on the same rounded input
TOLERANCE = {torch.bfloat16: 2e-2, torch.float16: 5e-3}


def _lesions(seed: int = 0, shape=(2, 1, 24, 24, 24), n: int = 10) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    y = np.zeros(shape, dtype=np.float32)
    for b in range(shape[0]):
        for _ in range(n):
            c = rng.integers(2, np.array(shape[2:]) - 2)
            r = int(rng.integers(1, 4))
            y[(b, 0) + tuple(slice(max(ci - r, 0), ci + r) for ci in c)] = 1
    return torch.from_numpy(y)


@pytest.fixture(scope="module")
def scene() -> tuple[torch.Tensor, torch.Tensor]:
    y = _lesions()
    g = torch.Generator().manual_seed(1)
    x = 3 * y - 1.5 + torch.randn(y.shape, generator=g)  # logits: found lesions, misses, spurious blobs
    return x, y


@pytest.mark.parametrize("logits", [True, False], ids=["logits", "probabilities"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("name", LOSSES.names())
def test_half_precision_input_gives_the_float32_loss_of_the_same_rounded_input(name, dtype, logits, scene):
    x, y = scene
    half = (x if logits else torch.sigmoid(x)).to(dtype)
    loss = build_loss(name, sigmoid=logits)
    ref_in = half.float().requires_grad_(True)
    ref = loss(ref_in, y)
    ref.backward()
    got_in = half.clone().requires_grad_(True)
    got = loss(got_in, y.to(dtype))
    got.backward()
    assert got.dtype == torch.float32
    assert torch.isfinite(got) and torch.isfinite(got_in.grad).all()
    assert float(got) == pytest.approx(float(ref), rel=TOLERANCE[dtype], abs=1e-6)
    assert got_in.grad.dtype == dtype
    g_ref, g_got = ref_in.grad.flatten(), got_in.grad.float().flatten()
    if float(g_ref.norm()) > 0:
        assert float(F.cosine_similarity(g_ref, g_got, dim=0)) >= 0.99


@pytest.mark.parametrize("name", ["blob", "inverse_weighting", "ici", "dici"])
def test_instance_losses_train_a_conv_net_under_cpu_autocast(name):
    """A small conv net under torch.autocast(bfloat16): the loss of its bfloat16 logits is the float32 loss of those
    logits, and the step updates every parameter with finite gradients."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 1, 3, padding=1))
    y = _lesions(3, shape=(2, 1, 16, 16, 16), n=6)
    image = y + 0.5 * torch.randn(y.shape)
    loss = build_loss(name, sigmoid=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = net(image)
        value = loss(logits, y)
    assert logits.dtype == torch.bfloat16 and value.dtype == torch.float32
    assert float(value) == pytest.approx(float(loss(logits.detach().float(), y)), rel=1e-6)
    value.backward()
    for p in net.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and float(p.grad.abs().sum()) > 0


# ---------------------------------------------------------------------------------------------------------------
# a term with weight 0 costs nothing


def _forbid(monkeypatch, target: str) -> None:
    def boom(*args, **kwargs):
        raise AssertionError(f"{target} was called for a term with weight 0")

    monkeypatch.setattr(target, boom)


def test_ici_with_only_the_global_term_labels_nothing(scene, monkeypatch):
    x, y = scene
    full = build_loss("ici", sigmoid=True).terms(x, y)
    _forbid(monkeypatch, "lossbench.losses.ici.structure.label_batch")
    terms = build_loss("ici", b=0, c=0, sigmoid=True).terms(x, y)
    assert sorted(terms) == ["global", "total"]
    assert torch.allclose(terms["total"], full["global"], rtol=1e-6)


@pytest.mark.parametrize("name", ["ici", "dici"])
def test_zero_center_weight_computes_no_cube_geometry(name, scene, monkeypatch):
    x, y = scene
    weights = {"c": 0} if name == "ici" else {"d": 0}
    full = build_loss(name, sigmoid=True, reference=False).terms(x, y)
    _forbid(monkeypatch, "lossbench.losses.ici.structure.center_geometry")
    terms = build_loss(name, sigmoid=True, reference=False, **weights).terms(x, y)
    assert "center" not in terms
    for key in terms:
        if key != "total":
            assert torch.allclose(terms[key], full[key], rtol=1e-6), key


def test_dici_center_alone_builds_no_pair_table(scene, monkeypatch):
    x, y = scene
    full = build_loss("dici", sigmoid=True, reference=False).terms(x, y)
    _forbid(monkeypatch, "lossbench.losses.ici.structure.pair_table")
    terms = build_loss("dici", a=0, b=0, c=0, d=1, sigmoid=True, reference=False).terms(x, y)
    assert sorted(terms) == ["center", "total"]
    assert torch.allclose(terms["total"], full["center"], rtol=1e-6)


@pytest.mark.parametrize("center_mode", ["reference", "trainable"])
def test_ici_center_alone_equals_the_center_of_the_full_loss(center_mode, scene):
    x, y = scene
    leaf = x.clone().requires_grad_(True)
    full = build_loss("ici", sigmoid=True, center_mode=center_mode, max_pred_instances=0).terms(x, y)
    terms = build_loss("ici", a=0, b=0, sigmoid=True, center_mode=center_mode, max_pred_instances=0).terms(leaf, y)
    assert sorted(terms) == ["center", "total"]
    assert torch.allclose(terms["total"], full["center"], rtol=1e-6)
    terms["total"].backward()  # the reference center has no gradient, but backward works
    assert torch.isfinite(leaf.grad).all() and (float(leaf.grad.abs().sum()) > 0) == (center_mode == "trainable")


def test_blob_without_blob_weight_labels_nothing(scene, monkeypatch):
    x, y = scene
    _forbid(monkeypatch, "lossbench.losses.blob.label_batch")
    terms = build_loss("blob", beta=0, sigmoid=True).terms(x, y)
    assert sorted(terms) == ["main", "total"]
    assert torch.allclose(terms["total"], 2 * build_loss("dice", sigmoid=True)(x, y), rtol=1e-6)


@pytest.mark.parametrize(
    ("name", "zero"), [("ici", {"a": 0, "b": 0, "c": 0}), ("dicece", {"lambda_dice": 0, "lambda_ce": 0})]
)
def test_all_weights_zero_gives_a_zero_on_the_graph(name, zero, scene):
    x, y = scene
    leaf = x.clone().requires_grad_(True)
    terms = build_loss(name, sigmoid=True, **zero).terms(leaf, y)
    assert list(terms) == ["total"] and float(terms["total"]) == 0.0
    terms["total"].backward()
    assert float(leaf.grad.abs().sum()) == 0.0
