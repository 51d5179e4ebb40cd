"""ici / dici / blob / inverse_weighting against brute-force per-instance loops written here (scipy labelling).

The oracles below loop over instances with ``scipy.ndimage.label`` and build every masked output explicitly,
as the losses' docstrings describe the published code; the vectorised losses must match them in value and gradient.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from lossbench.losses import build_loss
from lossbench.ops import torch_only


@pytest.fixture(autouse=True, params=["cpu-fast-paths", "device-agnostic"])
def code_path(request, monkeypatch):
    """Every test of this module twice: with the numpy CPU fast paths and cc3d, and with what CUDA runs.

    "device-agnostic": the torch code of every primitive (:func:`lossbench.ops.torch_only`) and the exact torch
    labelling wherever the backend is "auto" (per-image numbering, so batch offsets are added), on CPU tensors.
    """
    if request.param != "device-agnostic":
        yield request.param
        return
    import lossbench.cc.api as cc_api

    label = cc_api._label

    def torch_when_auto(mask, connectivity, backend, num_iterations, native):
        return label(mask, connectivity, "torch" if backend == "auto" else backend, num_iterations, native)

    monkeypatch.setattr(cc_api, "_label", torch_when_auto)
    with torch_only():
        yield request.param


# ------------------------------------------------------------------------------------------------------------
# oracle: base losses of one binary image, written from the MONAI formulas


def o_dice(q, y, snr=1e-5, sdr=1e-5):
    return 1 - (2 * (q * y).sum() + snr) / (q.sum() + y.sum() + sdr)


def o_gdice(q, y, snr=1e-5, sdr=1e-5):
    g = y.sum()
    w = 1 / g**2 if g > 0 else torch.zeros((), dtype=q.dtype)
    return 1 - (2 * w * (q * y).sum() + snr) / (w * (q.sum() + g) + sdr)


def o_bce(q, y):
    # torch's BCE clamps log at -100 and has a finite gradient at q in {0, 1} (masked voxels: gradient x 0 = 0)
    return F.binary_cross_entropy(q, y.expand_as(q).to(q.dtype), reduction="none")


def o_focal(q, y, gamma=2.0):
    pt = torch.where(y > 0, q, 1 - q)
    return (1 - pt) ** gamma * o_bce(q, y)


def o_base(name, q, y):
    if name == "dice":
        return o_dice(q, y)
    if name == "bce":
        return o_bce(q, y).mean()
    if name == "focal":
        return o_focal(q, y).mean()
    if name == "dicece":
        return o_dice(q, y) + o_bce(q, y).mean()
    if name == "dicefocal":
        return o_dice(q, y) + o_focal(q, y).mean()
    if name == "gdicefocal":
        return o_gdice(q, y) + o_focal(q, y).mean()
    raise AssertionError(name)


def full_structure(ndim):
    return np.ones((3,) * ndim, dtype=bool)


def o_label(mask):
    lab, n = ndimage.label(np.asarray(mask), structure=full_structure(mask.ndim))
    return lab, n


def o_cube_slices(coords, shape, cube_size):
    """Reference cube of one component (coords: (k, ndim) indices)."""
    offset = (cube_size - 1) // 2
    big = max(shape)
    sl = []
    for d, s in enumerate(shape):
        c = -(-int(coords[:, d].sum()) // len(coords))  # ceil(mean index), exact
        h = math.ceil(s / big * offset)
        lo, hi = max(c - h - 1, 0), min(c + h - 1, s - 1)
        sl.append(slice(lo, hi + 1))
    return tuple(sl)


def o_used_components(plab, npred, nlab, max_pred, factor):
    ids = list(range(1, npred + 1))
    if factor and nlab > 0 and npred > factor * nlab:  # the public code's rule: images with a label instance only
        return []
    if max_pred:
        flat = plab.reshape(-1)
        last = {i: int(np.nonzero(flat == i)[0].max()) for i in ids}
        ids = sorted(ids, key=lambda i: last[i])[:max_pred]
    return ids


def o_ici(p, y, *, base="dice", tp_mode="remove_detached", center_mode="reference", reduction="instance",
          cube_size=7, max_pred=50, factor=50, dual=False):  # fmt: skip
    """Oracle ICI/DICI terms for probabilities p (B, C, *S) (requires_grad) and binary y (defaults: published)."""
    bsz, nch = p.shape[:2]
    inst_entries = [[] for _ in range(nch)]
    inst_img = []
    pred_entries = [[] for _ in range(nch)]
    pred_img = []
    centers = []
    for c in range(nch):
        for b in range(bsz):
            pi, yi = p[b, c], y[b, c]
            lab, nl = o_label(yi.numpy() > 0.5)
            plab, npred = o_label(pi.detach().numpy() >= 0.5)
            used = o_used_components(plab, npred, nl, max_pred, factor)
            vals = []
            for n in range(1, nl + 1):
                inst = lab == n
                touch = [m for m in np.unique(plab[inst]) if m > 0 and m in used]
                m_mask = torch.from_numpy(np.isin(plab, touch))
                lbl_n = torch.from_numpy(inst).to(p.dtype)
                if tp_mode == "keep":
                    out = pi * m_mask
                elif tp_mode == "remove":
                    out = pi * m_mask * torch.from_numpy((lab == 0) | inst)
                else:
                    w = torch.where(torch.from_numpy(lab == 0), pi.detach(), torch.zeros_like(pi)) + lbl_n
                    out = pi * m_mask * w
                vals.append(o_base(base, out, lbl_n))
            if nl == 0:
                vals.append(o_base(base, pi, torch.zeros_like(pi)))
            inst_entries[c].extend(vals)
            inst_img.append(torch.stack(vals).mean())
            # predicted-instance term
            pv = []
            for m in used:
                comp = plab == m
                touch = [n for n in np.unique(lab[comp]) if n > 0]
                tgt = torch.from_numpy(np.isin(lab, touch)).to(p.dtype)
                pv.append(o_base(base, pi * torch.from_numpy(comp), tgt))
            if not used:
                pv.append(o_base(base, pi, yi))
            pred_entries[c].extend(pv)
            pred_img.append(torch.stack(pv).mean())
            # center term
            lc = torch.zeros_like(pi)
            cnt = np.zeros(pi.shape, dtype=np.int64)
            vsum = torch.zeros_like(pi)
            for n in range(1, nl + 1):
                lc[o_cube_slices(np.argwhere(lab == n), pi.shape, cube_size)] = 1
            for m in used:
                sl = o_cube_slices(np.argwhere(plab == m), pi.shape, cube_size)
                cnt[sl] += 1
                vsum = vsum.clone()
                vsum[sl] = vsum[sl] + pi[torch.from_numpy(plab == m)].mean()
            in_p = torch.from_numpy(cnt > 0)
            in_l = lc > 0
            if center_mode == "reference":
                eps = 1 + 1e-7
                xp, yl = in_p.to(p.dtype) * eps, in_l.to(p.dtype) * eps
                if base == "dice":
                    centers.append(o_dice(xp, yl))
                elif base == "dicece":  # Dice part on the 1 + 1e-7 cubes, BCE part on values clipped to 1
                    centers.append(o_dice(xp, yl) + o_bce(xp.clamp(0, 1), yl.clamp(0, 1)).mean())
                else:
                    raise AssertionError(base)
            else:
                avg = vsum / torch.from_numpy(np.maximum(cnt, 1))
                xp = torch.where(
                    in_p & in_l, torch.ones_like(pi), torch.where(in_p, avg, torch.where(in_l, pi, 0 * pi))
                )
                centers.append(o_base(base, xp, in_l.to(p.dtype)))
    if reduction == "instance":
        instance = torch.stack([torch.stack(e).mean() for e in inst_entries]).mean()
        predicted = torch.stack([torch.stack(e).mean() for e in pred_entries]).mean()
    else:
        instance = torch.stack(inst_img).mean()
        predicted = torch.stack(pred_img).mean()
    out = {"instance": instance, "center": torch.stack(centers).mean()}
    if dual:
        out["predicted"] = predicted
    return out


def o_global(base, p, y):
    if base == "gdicefocal":
        raise AssertionError("not needed")
    vals = [o_base(base, p[b, c], y[b, c]) for b in range(p.shape[0]) for c in range(p.shape[1])]
    return torch.stack(vals).mean()


def o_blob(p, y, base="dice"):
    per_img = []
    for c in range(p.shape[1]):
        for b in range(p.shape[0]):
            pi = p[b, c]
            lab, nl = o_label(y[b, c].numpy() > 0.5)
            if nl == 0:
                continue
            vals = []
            for n in range(1, nl + 1):
                mask = torch.from_numpy((lab == 0) | (lab == n))
                vals.append(o_base(base, pi * mask, torch.from_numpy(lab == n).to(p.dtype)))
            per_img.append(torch.stack(vals).mean())
    return torch.stack(per_img).mean() if per_img else torch.zeros((), dtype=p.dtype)


def o_inverse_weighting(p, y, base="dice_squared"):
    vals = []
    for b in range(p.shape[0]):
        for c in range(p.shape[1]):
            yi = y[b, c].numpy() > 0.5
            lab, k = o_label(yi)
            n_vox = yi.size
            w = np.zeros(yi.shape)
            for i in range(0, k + 1):
                comp = lab == i
                w[comp] = n_vox / ((k + 1) * comp.sum())
            w = torch.from_numpy(np.clip(w, 1, 2e5)).to(p.dtype)
            pi, ti = p[b, c], y[b, c]
            if base == "dice_squared":
                den = (w * (pi**2 + ti**2)).sum()
                vals.append(1 - 2 * (w * pi * ti).sum() / den if den > 0 else 0 * den)
            elif base == "bce":
                vals.append((w * o_bce(pi, ti)).mean())
            else:
                pt = torch.where(ti > 0, pi, 1 - pi)
                a = torch.where(ti > 0, 0.75, 0.25)
                vals.append((w * a * (1 - pt) ** 2 * o_bce(pi, ti)).mean())
    return torch.stack(vals).mean()


# ------------------------------------------------------------------------------------------------------------
# random scenes


def random_scene(seed, shape, batch=2, channels=1, n_blobs=5, soft=True):
    """Label with several blobs (some touching); a soft prediction that bridges, misses and adds spurious blobs."""
    rng = np.random.default_rng(seed)
    ndim = len(shape)
    y = np.zeros((batch, channels, *shape), dtype=bool)
    pm = np.zeros((batch, channels, *shape))
    for b in range(batch):
        for c in range(channels):
            for _ in range(rng.integers(0 if b == batch - 1 and batch > 2 else 1, n_blobs + 1)):
                lo = [rng.integers(0, s - 2) for s in shape]
                ext = [rng.integers(1, max(2, s // 4)) for s in shape]
                y[(b, c, *[slice(lo[d], lo[d] + ext[d]) for d in range(ndim)])] = True
            # prediction: shifted/dilated label plus spurious blobs plus noise
            shift = tuple(rng.integers(-1, 2, size=ndim))
            base = np.roll(y[b, c], shift, axis=tuple(range(ndim)))
            if rng.random() < 0.5:
                base = ndimage.binary_dilation(base)
            for _ in range(rng.integers(0, 3)):
                lo = [rng.integers(0, s - 1) for s in shape]
                base[tuple(slice(lo[d], lo[d] + 2) for d in range(ndim))] = True
            pm[b, c] = base
    if soft:
        p = np.clip(0.15 + 0.7 * pm + rng.normal(0, 0.2, pm.shape), 0.01, 0.99)
    else:
        p = pm.astype(float)
    return torch.tensor(p, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)


SCENES = [("2d", (20, 22), 0), ("2d", (16, 16), 1), ("3d", (9, 10, 11), 2)]


def _grad(v, p):
    if not v.requires_grad:
        return torch.zeros_like(p)
    g = torch.autograd.grad(v, p, retain_graph=True, allow_unused=True)[0]
    return torch.zeros_like(p) if g is None else g


def _compare(ours: dict, oracle: dict, p: torch.Tensor, keys, atol=1e-9):
    for k in keys:
        assert torch.allclose(ours[k], oracle[k], atol=atol, rtol=1e-7), (k, float(ours[k]), float(oracle[k]))
        g1 = _grad(ours[k], p)
        g2 = _grad(oracle[k], p)
        assert torch.allclose(g1, g2, atol=1e-8, rtol=1e-6), (k, float((g1 - g2).abs().max()))


# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(params=["sparse", "dense"])
def center_path(request, monkeypatch):
    """Run a test with the center term forced onto its sparse or its dense implementation."""
    import lossbench.losses.ici.geometry as geometry

    frac = 1e18 if request.param == "sparse" else 0.0
    monkeypatch.setattr(geometry, "DENSE_CENTER_FRACTION", {"bitmap": frac, "listing": frac})
    return request.param


@pytest.mark.parametrize("tp_mode", ["keep", "remove", "remove_detached"])
@pytest.mark.parametrize("scene", SCENES, ids=lambda s: f"{s[0]}-{s[2]}")
def test_ici_matches_oracle_dice(tp_mode, scene, center_path):
    _, shape, seed = scene
    p, y = random_scene(seed, shape, batch=3)
    p.requires_grad_(True)
    for center_mode in ("reference", "trainable"):
        loss = build_loss("ici", tp_mode=tp_mode, center_mode=center_mode)
        ours = loss.terms(p, y)
        ref = o_ici(p, y, tp_mode=tp_mode, center_mode=center_mode)
        ref["global"] = o_global("dice", p, y)
        _compare(ours, ref, p, ["instance", "center", "global"])
        total = ref["global"] + ref["instance"] + ref["center"]
        assert torch.allclose(ours["total"], total)
        assert torch.allclose(loss(p, y), ours["total"])


@pytest.mark.parametrize("base", ["bce", "focal", "dicece", "dicefocal", "gdicefocal"])
@pytest.mark.parametrize("tp_mode", ["keep", "remove", "remove_detached"])
def test_ici_matches_oracle_other_bases(base, tp_mode, center_path):
    p, y = random_scene(7, (14, 15), batch=2)
    p.requires_grad_(True)
    ours = build_loss("ici", base=base, tp_mode=tp_mode, center_mode="trainable").terms(p, y)
    ref = o_ici(p, y, base=base, tp_mode=tp_mode, center_mode="trainable")
    _compare(ours, ref, p, ["instance", "center"])


def test_ici_reference_center_with_bce_base_matches_oracle(center_path):
    p, y = random_scene(8, (14, 15), batch=2)
    p.requires_grad_(True)
    ours = build_loss("ici", base="dicece", center_mode="reference").terms(p, y)
    ref = o_ici(p, y, base="dicece", center_mode="reference")
    _compare(ours, ref, p, ["center"])


@pytest.mark.parametrize("reduction", ["instance", "image"])
def test_ici_reduction_and_channels_match_oracle(reduction):
    p, y = random_scene(11, (16, 17), batch=3, channels=2)
    p.requires_grad_(True)
    ours = build_loss("ici", reduction=reduction, reference=False).terms(p, y)
    ref = o_ici(p, y, reduction=reduction, tp_mode="remove", center_mode="trainable", max_pred=0, factor=0)
    _compare(ours, ref, p, ["instance", "center"])


def test_ici_caps_match_oracle(center_path):
    # many small spurious components so that both caps bite
    rng = np.random.default_rng(3)
    y = torch.zeros(2, 1, 24, 24, dtype=torch.float64)
    y[0, 0, 2:6, 2:6] = 1
    y[1, 0, 10:14, 10:14] = 1
    y[1, 0, 18:21, 3:6] = 1
    p = torch.full((2, 1, 24, 24), 0.1, dtype=torch.float64)
    p[0, 0, 2:6, 3:7] = 0.8
    for i in range(0, 24, 3):
        for j in range(12, 24, 3):
            p[:, 0, i, j] = 0.6 + 0.3 * rng.random()
    p[1, 0, 10:14, 9:13] = 0.7
    p.requires_grad_(True)
    for max_pred, factor in [(4, 0), (0, 10), (5, 30), (50, 50)]:
        loss = build_loss("dici", max_pred_instances=max_pred, too_many_factor=factor, tp_mode="remove_detached",
                          center_mode="reference")  # fmt: skip
        ours = loss.terms(p, y)
        ref = o_ici(p, y, tp_mode="remove_detached", center_mode="reference", max_pred=max_pred, factor=factor,
                    dual=True)  # fmt: skip
        _compare(ours, ref, p, ["instance", "center", "predicted"])


def test_defaults_are_the_published_loss_and_reference_false_is_lossbenchs_design():
    for cfg in (build_loss("ici").config, build_loss("ici", reference=True).config, build_loss("dici").config):
        assert (cfg.tp_mode, cfg.center_mode, cfg.max_pred_instances, cfg.too_many_factor) == (
            "remove_detached", "reference", 50, 50.0,
        )  # fmt: skip
    cfg = build_loss("ici", tp_mode="keep", max_pred_instances=0).config
    assert (cfg.tp_mode, cfg.center_mode, cfg.max_pred_instances) == ("keep", "reference", 0)
    cfg = build_loss("ici", reference=False).config
    assert (cfg.tp_mode, cfg.center_mode, cfg.max_pred_instances, cfg.too_many_factor) == (
        "remove", "trainable", 0, 0.0,
    )  # fmt: skip
    cfg = build_loss("dici", reference=False, center_mode="reference").config
    assert (cfg.tp_mode, cfg.center_mode) == ("remove", "reference")


def test_too_many_rule_spares_images_without_label_instances(center_path):
    """The public code drops every prediction component of an image only when it has a label instance: an image
    without label instance keeps its components (their cubes enter the center term, they are DICI's predicted
    instances). A batch mixing such an image with predicted blobs and a normal image, against the oracle."""
    y = torch.zeros(2, 1, 24, 24, dtype=torch.float64)
    y[1, 0, 4:9, 4:9] = 1
    p = torch.full((2, 1, 24, 24), 0.1, dtype=torch.float64)
    p[0, 0, 2:5, 2:5] = 0.8  # image 0: no label instance, three predicted blobs
    p[0, 0, 12:14, 15:18] = 0.7
    p[0, 0, 19:22, 5:7] = 0.9
    p[1, 0, 4:9, 5:10] = 0.85  # image 1: one found instance and many small spurious components
    for i in range(12, 24, 3):
        for j in range(0, 24, 3):
            p[1, 0, i, j] = 0.6
    p.requires_grad_(True)
    loss = build_loss("dici", too_many_factor=5)  # image 1 has 17 components > 5 x 1: none used
    ours = loss.terms(p, y)
    ref = o_ici(p, y, factor=5, dual=True)
    _compare(ours, ref, p, ["instance", "center", "predicted"])
    # image 0's blobs count: its center value is about 1 (no label cube), not 0 as when they were dropped
    only0 = loss.terms(p[:1], y[:1])
    assert float(only0["center"].detach()) > 0.99 and float(only0["predicted"].detach()) > 0.99


@pytest.mark.parametrize("scene", SCENES, ids=lambda s: f"{s[0]}-{s[2]}")
@pytest.mark.parametrize("reduction", ["instance", "image"])
def test_dici_matches_oracle(scene, reduction, center_path):
    _, shape, seed = scene
    p, y = random_scene(seed + 20, shape, batch=3)
    p.requires_grad_(True)
    loss = build_loss("dici", reduction=reduction, center_mode="trainable")
    ours = loss.terms(p, y)
    ref = o_ici(p, y, reduction=reduction, center_mode="trainable", dual=True)
    ref["global"] = o_global("dice", p, y)
    _compare(ours, ref, p, ["instance", "predicted", "center", "global"])
    total = 0.25 * (ref["global"] + ref["instance"] + ref["predicted"] + ref["center"])
    assert torch.allclose(ours["total"], total)


@pytest.mark.parametrize("base", ["dicefocal", "bce"])
def test_dici_other_base_matches_oracle(base, center_path):
    p, y = random_scene(31, (15, 14), batch=2)
    p.requires_grad_(True)
    ours = build_loss("dici", base=base, reference=False).terms(p, y)
    ref = o_ici(p, y, base=base, tp_mode="remove", center_mode="trainable", max_pred=0, factor=0, dual=True)
    _compare(ours, ref, p, ["instance", "predicted", "center"])


@pytest.mark.parametrize("base", ["dice", "dicece", "focal"])
@pytest.mark.parametrize("scene", SCENES, ids=lambda s: f"{s[0]}-{s[2]}")
def test_blob_matches_oracle(base, scene):
    _, shape, seed = scene
    p, y = random_scene(seed + 40, shape, batch=3, channels=2)
    p.requires_grad_(True)
    ours = build_loss("blob", base=base).terms(p, y)
    ref = {"blob": o_blob(p, y, base)}
    _compare(ours, ref, p, ["blob"])
    assert torch.allclose(ours["total"], 2 * ours["main"] + ours["blob"])


def test_blob_empty_is_zero_with_finite_gradient():
    p = torch.rand(2, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    t = build_loss("blob").terms(p, torch.zeros(2, 1, 8, 8))
    assert float(t["blob"].detach()) == 0.0
    t["total"].backward()
    assert torch.isfinite(p.grad).all()


@pytest.mark.parametrize("base", ["dice_squared", "bce", "focal"])
@pytest.mark.parametrize("scene", SCENES, ids=lambda s: f"{s[0]}-{s[2]}")
def test_inverse_weighting_matches_oracle(base, scene):
    _, shape, seed = scene
    p, y = random_scene(seed + 60, shape, batch=3)
    p.requires_grad_(True)
    ours = build_loss("inverse_weighting", base=base).terms(p, y)
    _compare(ours, {"weighted": o_inverse_weighting(p, y, base)}, p, ["weighted"])


def test_inverse_weighting_bce_logits_equals_probabilities():
    p, y = random_scene(5, (12, 12), batch=2)
    x = torch.logit(p)
    a = build_loss("inverse_weighting", base="bce", sigmoid=True)(x, y)
    b = build_loss("inverse_weighting", base="bce")(p, y)
    assert torch.allclose(a, b)


def test_inverse_weights_by_hand():
    from lossbench.losses import inverse_weights

    y = torch.zeros(1, 4, 4)
    y[0, 0, 0] = 1  # 1 voxel
    y[0, 2:4, 2:4] = 1  # 4 voxels; background 11 voxels; K = 2
    w = inverse_weights(y)
    assert torch.allclose(w[0, 0, 0], torch.tensor(16 / (3 * 1)))
    assert torch.allclose(w[0, 3, 3], torch.tensor(16 / (3 * 4)))
    assert torch.allclose(w[0, 0, 3], torch.tensor(1.0))  # 16 / 33 clipped up to 1


# ------------------------------------------------------------------------------------------------------------
# behaviour of the paper's figures and the reference's gradient facts


def _figure1_scene():
    y = torch.zeros(1, 1, 32, 32, dtype=torch.float64)
    y[0, 0, 4:12, 4:12] = 1
    y[0, 0, 20:23, 20:23] = 1
    p = torch.full_like(y, 0.05)
    p[0, 0, 4:12, 4:12] = 0.9
    p[0, 0, 20:23, 20:23] = 0.8
    far = p.clone()
    far[0, 0, 26:30, 2:6] = 0.9  # spurious blobs far from every label instance
    far[0, 0, 2:4, 26:30] = 0.7
    return p, far, y


def test_figure1_spurious_blobs_raise_blob_but_not_ici_instance():
    p, far, y = _figure1_scene()
    blob = build_loss("blob")
    assert float(blob.terms(far, y)["blob"]) > float(blob.terms(p, y)["blob"]) + 0.01
    for tp_mode in ("keep", "remove", "remove_detached"):
        ici = build_loss("ici", tp_mode=tp_mode)
        assert torch.allclose(ici.terms(far, y)["instance"], ici.terms(p, y)["instance"], atol=1e-12)
    # ... while the center term sees them
    assert float(build_loss("ici").terms(far, y)["center"]) > float(build_loss("ici").terms(p, y)["center"])


def _bridge_scene(soft):
    y = torch.zeros(1, 1, 16, 24, dtype=torch.float64)
    y[0, 0, 5:11, 3:9] = 1
    y[0, 0, 5:11, 15:21] = 1
    p = torch.full_like(y, 0.02)
    p[0, 0, 5:11, 3:21] = 0.9 if soft else 1.0  # one component bridging both instances
    if soft:
        p[0, 0, 7:9, 9:15] = 0.6
    return p, y


@pytest.mark.parametrize("soft", [False, True])
def test_figure4_bridge_remove_below_keep(soft):
    p, y = _bridge_scene(soft)
    vals = {
        m: float(build_loss("ici", tp_mode=m).terms(p, y)["instance"]) for m in ("keep", "remove", "remove_detached")
    }
    assert vals["remove"] < vals["keep"] - 0.1
    assert vals["remove_detached"] < vals["keep"] - 0.1
    if not soft:  # binary predictions: both -TP rules agree
        assert vals["remove"] == pytest.approx(vals["remove_detached"], abs=1e-12)
    else:  # soft: p * stopgrad(p) < p on the background, so the code's rule is lower still
        assert vals["remove_detached"] < vals["remove"]


@pytest.mark.parametrize(
    "name,params",
    [
        ("dice", {}),
        ("dicece", {}),
        ("dicefocal", {}),
        ("gdicefocal", {}),
        ("bce", {}),
        ("focal", {}),
        ("blob", {}),
        ("inverse_weighting", {}),
        ("inverse_weighting", {"base": "bce"}),
        ("ici", {}),
        ("ici", {"reference": False}),
        ("ici", {"tp_mode": "keep", "base": "dicece"}),
        ("dici", {}),
        ("dici", {"reference": False}),
    ],
)
def test_perfect_prediction_is_near_zero(name, params):
    p, y = random_scene(2, (12, 13, 10), batch=2, soft=False)
    y = p.clone()  # perfect binary prediction
    val = build_loss(name, **params)(p, y)
    assert abs(float(val)) < 1e-4, float(val)


def test_reference_center_has_zero_gradient_and_trainable_moves_spurious(center_path):
    p, far, y = _figure1_scene()
    far.requires_grad_(True)
    ref = build_loss("ici", center_mode="reference").terms(far, y)["center"]
    g = torch.autograd.grad(ref, far)[0]
    assert float(g.abs().max()) == 0.0
    tr = build_loss("ici", center_mode="trainable").terms(far, y)["center"]
    g = torch.autograd.grad(tr, far)[0]
    spurious = torch.zeros_like(y, dtype=torch.bool)
    spurious[0, 0, 26:30, 2:6] = True
    assert float(g[spurious].min()) > 0  # pushes the spurious component down
    assert float(g[y > 0].abs().max()) == 0.0  # matched components are left alone here


def test_trainable_center_zero_gradient_when_prediction_equals_label(center_path):
    p, y = random_scene(4, (14, 15), batch=2, soft=False)
    y = p.detach().clone()
    p.requires_grad_(True)
    c = build_loss("ici", center_mode="trainable").terms(p, y)["center"]
    g = torch.autograd.grad(c, p)[0]
    assert float(g.abs().max()) == 0.0


def test_trainable_center_pushes_missed_instance_center_up(center_path):
    y = torch.zeros(1, 1, 20, 20, dtype=torch.float64)
    y[0, 0, 8:13, 8:13] = 1
    p = torch.full_like(y, 0.2, requires_grad=True)
    c = build_loss("ici", center_mode="trainable").terms(p, y)["center"]
    g = torch.autograd.grad(c, p)[0]
    assert float(g[0, 0, 10, 10]) < 0


def test_missed_instance_zero_instance_gradient_in_reference():
    y = torch.zeros(1, 1, 20, 20, dtype=torch.float64)
    y[0, 0, 2:6, 2:6] = 1
    y[0, 0, 12:16, 12:16] = 1
    p = torch.full_like(y, 0.3)
    p[0, 0, 2:6, 2:7] = 0.9  # first instance found, second missed (0.3 < 0.5)
    p.requires_grad_(True)
    t = build_loss("ici").terms(p, y)
    g = torch.autograd.grad(t["instance"], p)[0]
    assert float(g[0, 0, 12:16, 12:16].abs().max()) == 0.0  # missed instance: no gradient
    assert float(g[0, 0, 2:6, 2:7].abs().max()) > 0  # found one: gradient on its component
    assert float(g[0, 0, 10:, :10].abs().max()) == 0.0  # sub-threshold background: none
    # value: (Dice_found + Dice(0, lbl) ~ 1) / 2
    assert float(t["instance"].detach()) > 0.5


# ------------------------------------------------------------------------------------------------------------
# empty cases, CUDA, gradcheck


@pytest.mark.parametrize("name", ["ici", "dici", "blob", "inverse_weighting", "dice", "dicefocal", "gdicefocal"])
@pytest.mark.parametrize("case", ["empty_label", "empty_pred", "all_background"])
def test_empty_cases_finite(name, case):
    y = torch.zeros(2, 1, 10, 10, dtype=torch.float64)
    p = torch.full_like(y, 0.3)
    if case == "empty_pred":
        y[0, 0, 2:5, 2:5] = 1
    elif case == "empty_label":
        p[1, 0, 4:7, 4:7] = 0.9
    else:
        p.zero_()
    p.requires_grad_(True)
    loss = build_loss(name)
    terms = loss.terms(p, y)
    for k, v in terms.items():
        assert torch.isfinite(v), (k, v)
    terms["total"].backward()
    assert torch.isfinite(p.grad).all()


# tp_mode="remove_detached" (the published default) is left out on purpose: its background voxels enter as
# p * stopgrad(p), whose gradient p is by design not the derivative 2p of the value (the public code's rule)
@pytest.mark.parametrize("name,params", [("ici", {"tp_mode": "remove"}), ("ici", {"reference": False}),
                                         ("ici", {"tp_mode": "keep", "base": "dicece"}),
                                         ("dici", {"base": "dicefocal", "reference": False}), ("blob", {}),
                                         ("inverse_weighting", {})])  # fmt: skip
def test_gradcheck_float64(name, params):
    y = torch.zeros(1, 1, 7, 7, dtype=torch.float64)
    y[0, 0, 1:3, 1:3] = 1
    y[0, 0, 4:6, 3:6] = 1
    torch.manual_seed(0)
    p = (0.3 + 0.4 * torch.rand_like(y)).clamp(0.05, 0.95)
    p[0, 0, 1:3, 1:4] = 0.8  # components away from the threshold so labelling is stable under eps
    p[0, 0, 5, 0] = 0.75
    p = (p + 0.02 * (p > 0.5) - 0.02 * (p < 0.5)).clamp(0.05, 0.95)
    p = torch.where((p - 0.5).abs() < 0.05, torch.full_like(p, 0.35), p).requires_grad_(True)
    loss = build_loss(name, **params)
    assert torch.autograd.gradcheck(lambda q: loss(q, y), (p,), eps=1e-6, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(
    "name,params",
    [
        ("ici", {}), ("ici", {"reference": False}), ("ici", {"base": "dicece"}), ("ici", {"sigmoid": True}),
        ("dici", {}), ("dici", {"reference": False}), ("blob", {}), ("blob", {"sigmoid": True}),
        ("inverse_weighting", {}),
        ("inverse_weighting", {"sigmoid": True}),
    ],
)  # fmt: skip
def test_cuda_equals_cpu(name, params, center_path):
    """What CUDA runs (torch labelling, the torch helpers, the fused gathers) against the CPU paths."""
    p, y = random_scene(9, (10, 11, 12), batch=2)
    if params.get("sigmoid"):
        p = torch.logit(p)
    p.requires_grad_(True)
    pc = p.detach().cuda().requires_grad_(True)
    loss = build_loss(name, **params)
    a, b = loss.terms(p, y), loss.terms(pc, y.cuda())
    for k in a:
        assert torch.allclose(a[k], b[k].cpu(), atol=1e-9), k
    ga = torch.autograd.grad(a["total"], p)[0]
    gb = torch.autograd.grad(b["total"], pc)[0]
    assert torch.allclose(ga, gb.cpu(), atol=1e-9)


@pytest.mark.parametrize("shape", [(13, 13), (7, 8, 9)])
def test_sigmoid_equals_probabilities(shape):
    # values and gradients w.r.t. the logits: ICI/DICI fold the sigmoid's backward into their own (one volume pass)
    p, y = random_scene(12, shape, batch=2)
    x = torch.logit(p).detach().requires_grad_(True)
    configs = (
        ("ici", {}), ("ici", {"reference": False}), ("ici", {"base": "dicece"}), ("dici", {}), ("blob", {}),
        ("blob", {"base": "dicece"}), ("inverse_weighting", {}), ("inverse_weighting", {"base": "bce"}),
    )  # fmt: skip
    for name, kw in configs:
        a = build_loss(name, sigmoid=True, **kw).terms(x, y)
        xs = x.detach().clone().requires_grad_(True)
        b = build_loss(name, **kw).terms(torch.sigmoid(xs), y)
        for k in a:
            assert torch.allclose(a[k], b[k], atol=1e-9), (name, kw, k)
        ga = torch.autograd.grad(a["total"], x)[0]
        gb = torch.autograd.grad(b["total"], xs)[0]
        assert torch.allclose(ga, gb, atol=1e-9), (name, kw)
        assert ga.abs().sum() > 0


def test_maxpool_backend_reproduces_split_components():
    # a long snake: with few iterations the reference labelling splits it into several instances
    y = torch.zeros(1, 1, 9, 9, dtype=torch.float64)
    y[0, 0, 1, 1:8] = 1
    y[0, 0, 1:8, 7] = 1
    y[0, 0, 7, 1:8] = 1
    p = y * 0.9 + 0.05
    y[0, 0, 4, 4] = 1  # a second, missed instance: the mean over entries depends on how many pieces the snake has
    exact = build_loss("ici", cc_backend="maxpool", num_iterations=50).terms(p, y)
    exact2 = build_loss("ici").terms(p, y)
    assert torch.allclose(exact["instance"], exact2["instance"])
    split = build_loss("ici", cc_backend="maxpool", num_iterations=2, tp_mode="keep").terms(p, y)
    assert not torch.allclose(split["instance"], exact2["instance"])


def test_no_python_loop_over_instances_cost_flat():
    """Timing-free check of vectorisation: 400 instances take one call, values match a tiny oracle subset."""
    y = torch.zeros(1, 1, 80, 80, dtype=torch.float64)
    y[0, 0, ::4, ::4] = 1  # 400 single-voxel instances
    p = (y * 0.8 + 0.1).requires_grad_(True)
    t = build_loss("ici", max_pred_instances=0).terms(p, y)  # no cap on the 400 prediction components
    # every instance is perfectly found (component == instance): Dice_n = 1 - (1.6 + s) / (0.8*... ) identical
    d = 1 - (2 * 0.9 + 1e-5) / (0.9 + 1 + 1e-5)
    assert float(t["instance"].detach()) == pytest.approx(d, abs=1e-12)


@settings(max_examples=25)
@given(seed=st.integers(0, 10_000), flip=st.sampled_from([(2,), (3,), (2, 3)]))
def test_instance_terms_invariant_to_flips_and_batch_order(seed, flip):
    """Instance-wise terms depend on components only: flipping the image or reordering the batch changes nothing."""
    p, y = random_scene(seed, (12, 13), batch=3)
    perm = torch.tensor([2, 0, 1])
    for name, keys in (("ici", ("instance", "global")), ("dici", ("instance", "predicted")), ("blob", ("blob",))):
        loss = build_loss(name)
        a = loss.terms(p, y)
        b = loss.terms(p.flip(flip), y.flip(flip))
        c = loss.terms(p[perm], y[perm])
        for k in keys:
            assert torch.allclose(a[k], b[k], atol=1e-12), (name, k)
            assert torch.allclose(a[k], c[k], atol=1e-12), (name, k)


def test_weights_combine_unweighted_terms():
    p, y = random_scene(13, (12, 12), batch=2)
    t = build_loss("ici", a=0.25, b=0.5, c=0.125).terms(p, y)
    assert torch.allclose(t["total"], 0.25 * t["global"] + 0.5 * t["instance"] + 0.125 * t["center"])
    t = build_loss("dici", a=1, b=2, c=3, d=4).terms(p, y)
    assert torch.allclose(t["total"], t["global"] + 2 * t["instance"] + 3 * t["predicted"] + 4 * t["center"])
    t = build_loss("blob", alpha=0.5, beta=3).terms(p, y)
    assert torch.allclose(t["total"], 0.5 * t["main"] + 3 * t["blob"])


@pytest.mark.parametrize("backend", ["torch", "scipy"])
def test_cc_backends_give_identical_losses(backend):
    p, y = random_scene(14, (9, 10, 11), batch=2)
    for name in ("ici", "dici", "blob", "inverse_weighting"):
        a = build_loss(name).terms(p, y)
        b = build_loss(name, cc_backend=backend).terms(p, y)
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)


@pytest.mark.parametrize("seed", range(4))
def test_sparse_center_geometry_row_bitmaps_equal_voxel_listing(seed):
    """CPU row-bitmap geometry against the device-agnostic listing: the same tensors ("counts", "voxels") and the
    same cube weights up to float64 summation order ("weights"), on lines of one, two and three 64-bit words."""
    from lossbench.losses.ici import geometry

    rng = np.random.default_rng(100 + seed)
    for trial in range(25):
        nd = int(rng.choice([2, 3]))
        spatial = tuple(int(s) for s in rng.integers(1, 60 if nd == 2 else 25, size=nd))
        if trial % 3 == 0:
            spatial = spatial[:-1] + (int(rng.integers(60, 200)),)
        n_img, cube = int(rng.integers(1, 4)), int(rng.choice([1, 3, 7, 11, 31]))
        n_lc, n_pc = int(rng.integers(0, 10)), int(rng.integers(0, 20))
        centers = torch.from_numpy(np.stack([rng.integers(0, s, size=n_lc + n_pc) for s in spatial], 1))
        img = torch.from_numpy(rng.integers(0, n_img, size=n_lc + n_pc))
        k = min(n_lc, n_pc) // 2  # some prediction cubes equal to label cubes
        centers[n_lc : n_lc + k], img[n_lc : n_lc + k] = centers[:k], img[:k]
        lo, hi = geometry.cube_bounds(centers.reshape(-1, nd), spatial, cube)
        n_lv = int((hi - lo).clamp(min=0).prod(1)[:n_lc].sum())
        for detail in ("counts", "voxels", "weights"):
            np_args = (lo.numpy(), hi.numpy(), img.numpy(), n_lc, n_img, spatial, detail)
            fast = geometry._bitmap_geometry(*np_args)
            with torch_only():
                listed = geometry._listing_geometry(lo, hi, img, n_lc, n_lv, n_img, spatial, detail)
            names = ["both", "label", "pred"] + (["label_only_pos", "label_only_image"] if detail != "counts" else [])
            names += ["pred_only_image", "pred_only_count", "pred_only_cube", "pred_only_voxel"] * (detail == "voxels")
            for name in names:
                a, b = getattr(fast, name), getattr(listed, name)
                assert a.dtype == b.dtype and torch.equal(a, b), (trial, detail, name)
            if detail == "counts":
                assert fast.pred_only_cube is None and fast.pred_cube_weight is None
            if detail == "voxels":  # the cube weights by hand from the listed prediction-only voxels
                w = torch.zeros(n_pc, dtype=torch.float64)
                w.index_add_(
                    0, listed.pred_only_cube, listed.pred_only_count[listed.pred_only_voxel].double().reciprocal()
                )
            if detail == "weights":
                assert fast.pred_only_cube is None and listed.pred_only_cube is None
                assert torch.allclose(fast.pred_cube_weight, w, rtol=1e-12, atol=0), (trial, fast.pred_cube_weight, w)
                assert torch.allclose(listed.pred_cube_weight, w, rtol=1e-12, atol=0), trial


@pytest.mark.parametrize("name", ["ici", "dici"])
@pytest.mark.parametrize(
    "base",
    ["dice", {"name": "dice", "jaccard": True}, {"name": "dice", "batch": True}, {"name": "dice", "smooth_nr": 0.5}],
)
def test_linear_terms_equal_general_terms(name, base):
    """The two-stage slot sums of a linear base against the per-voxel general implementation: values and gradients,
    every tp_mode, both center modes, both reductions, probabilities and logits."""
    import lossbench.losses.ici.terms as terms_mod

    # label blobs; the prediction shifts some, misses one (label-only center voxels) and adds spurious ones
    # (prediction-only center voxels, overlapping cubes), with low noise so that no noise voxel crosses 0.5
    rng = np.random.default_rng(51)
    y = np.zeros((2, 1, 18, 20, 16), dtype=bool)
    pm = np.zeros(y.shape)
    for b in range(2):
        for k in range(6):
            lo = rng.integers(0, 14, size=3)
            y[b, 0, lo[0] : lo[0] + 3, lo[1] : lo[1] + 4, lo[2] : lo[2] + 2] = True
            if k > 0:  # blob 0 is missed
                pm[b, 0, lo[0] : lo[0] + 3, lo[1] + 1 : lo[1] + 5, lo[2] : lo[2] + 2] = 1
        for lo in rng.integers(0, 15, size=(3, 3)):
            pm[b, 0, lo[0] : lo[0] + 2, lo[1] : lo[1] + 2, lo[2] : lo[2] + 2] = 1
    p = torch.from_numpy(np.clip(0.1 + 0.75 * pm + rng.normal(0, 0.05, pm.shape), 0.01, 0.99))
    y = torch.from_numpy(y).to(p.dtype)
    x = torch.logit(p)
    for tp_mode in ("keep", "remove", "remove_detached"):
        for center_mode, reduction in (("trainable", "instance"), ("reference", "image")):
            for sig, inp in ((False, p), (True, x)):
                results = []
                for general in (False, True):
                    with pytest.MonkeyPatch.context() as mp:  # (the code_path fixture keeps its own patches)
                        if general:
                            mp.setattr(terms_mod, "linear_base", lambda cfg: False)
                        leaf = inp.clone().requires_grad_(True)
                        kw = {"tp_mode": tp_mode, "center_mode": center_mode, "reduction": reduction, "sigmoid": sig}
                        terms = build_loss(name, base=base, **kw).terms(leaf, y)
                        terms["total"].backward()
                        results.append(({k: v.detach() for k, v in terms.items()}, leaf.grad))
                (t_lin, g_lin), (t_gen, g_gen) = results
                for k in t_gen:
                    assert torch.allclose(t_lin[k], t_gen[k], rtol=1e-5, atol=1e-6), (tp_mode, center_mode, sig, k)
                assert torch.allclose(g_lin, g_gen, rtol=1e-4, atol=1e-7), (tp_mode, center_mode, sig)


@pytest.mark.parametrize("square", [False, True])
@pytest.mark.parametrize("sigmoid", [False, True])
def test_sum_and_gather_equals_autograd(square, sigmoid):
    """Per-image sum(p) / sum(p^2) and a gather with repeated positions, against plain autograd (values, gradients)."""
    from lossbench.losses._core import Prepared, sum_and_gather

    torch.manual_seed(3)
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([0, 7, 7, 59, 60, 119, 3, 60])  # flat positions in the (6, 20) images, some repeated
    prob = torch.sigmoid(x) if sigmoid else x.sigmoid().detach().requires_grad_(True)
    leaf = x if sigmoid else prob
    prep = Prepared(prob, x if sigmoid else None, torch.zeros_like(prob))
    sums, vals = sum_and_gather(prep, index, square=square)
    flat = prob.reshape(6, 20)
    ref_sums = (flat * flat).sum(1) if square else flat.sum(1)
    ref_vals = flat.reshape(-1)[index]
    assert torch.allclose(sums, ref_sums) and torch.allclose(vals, ref_vals)
    wa, wb = torch.randn(6, dtype=torch.float64), torch.randn(index.numel(), dtype=torch.float64)
    g = torch.autograd.grad((sums * wa).sum() + (vals * wb).sum(), leaf)[0]
    g_ref = torch.autograd.grad((ref_sums * wa).sum() + (ref_vals * wb).sum(), leaf, retain_graph=True)[0]
    assert torch.allclose(g, g_ref, atol=1e-12)
    g_sum_only = torch.autograd.grad(sum_and_gather(prep, index, square=square)[0].sum(), leaf)[0]
    assert torch.allclose(g_sum_only, torch.autograd.grad(ref_sums.sum(), leaf)[0], atol=1e-12)
