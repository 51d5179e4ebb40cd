"""nnU-Net v2 integration: loss conventions, deep supervision, ignore label, install, and a real nnU-Net run.

The pure adapter tests need only torch; the trainer tests need the extra ``nnunet`` and are skipped without it.
The end-to-end test runs nnU-Net's own planner, preprocessor and ``nnUNetv2_train`` on a tiny synthetic dataset
and checks that the validation loss nnU-Net logged is lossbench's loss on that batch.
"""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lossbench.errors import ConfigError, RegistryError
from lossbench.integrations.nnunet_loss import (
    NnUNetLoss,
    build_nnunet_loss,
    deep_supervision_weights,
    loss_config_from_env,
    schedule_from_env,
)
from lossbench.losses import LOSSES, build_loss

HAVE_NNUNET = importlib.util.find_spec("nnunetv2") is not None
needs_nnunet = pytest.mark.skipif(not HAVE_NNUNET, reason="extra 'nnunet' (nnunetv2) not installed")
pytestmark = pytest.mark.nnunet

INSTANCE_LOSSES = ("blob", "inverse_weighting", "ici", "dici")
SOFTMAX = {"softmax": True, "to_onehot_y": True, "include_background": False}


def _blobs(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """A binary (1, *shape) mask of three small cubes at random places (usually several instances)."""
    g = torch.Generator().manual_seed(seed)
    m = torch.zeros(shape, dtype=torch.bool)
    for _ in range(3):
        lo = [int(torch.randint(0, max(s - 2, 1), (1,), generator=g)) for s in shape]
        m[tuple(slice(a, a + 1 + int(torch.randint(0, 3, (1,), generator=g))) for a in lo)] = True
    return m[None]


def _logits(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------------------
# deep supervision weights


def test_deep_supervision_weights_halve_per_scale_and_drop_the_coarsest():
    assert deep_supervision_weights(2) == pytest.approx([1.0, 0.0])
    assert deep_supervision_weights(3) == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert deep_supervision_weights(4) == pytest.approx([4 / 7, 2 / 7, 1 / 7, 0.0])
    total = 1.75 + 1e-6  # 1 + 1/2 + 1/4 + 1e-6: under DDP the coarsest output keeps a tiny weight
    assert deep_supervision_weights(4, ddp=True) == pytest.approx([1 / total, 0.5 / total, 0.25 / total, 1e-6 / total])
    for bad in (1, 0, 2.0, True):
        with pytest.raises(ConfigError, match="n_outputs"):
            deep_supervision_weights(bad)


# ---------------------------------------------------------------------------------------------------------------
# conventions


@pytest.mark.parametrize("name", INSTANCE_LOSSES + ("dice",))
def test_label_map_softmax_over_two_classes_is_the_sigmoid_of_the_logit_gap(name):
    """With classes (background, lesion) the lesion probability is sigmoid(l1 - l0): the same loss as a binary
    sigmoid loss on the gap, so the adapter drops the background and one-hots the class indices."""
    out = _logits((2, 2, 10, 10, 10), 0)
    target = torch.cat([_blobs((10, 10, 10), 1), _blobs((10, 10, 10), 2)])[:, None].to(torch.int16)
    got = build_nnunet_loss(name, regions=False)(out, target)
    want = build_loss(name, sigmoid=True)(out[:, 1:] - out[:, :1], target.bool())
    assert float(got) == pytest.approx(float(want), rel=1e-5)


def test_label_map_with_three_classes_averages_the_foreground_channels():
    out = _logits((2, 3, 8, 8, 8), 3)
    target = torch.zeros(2, 1, 8, 8, 8, dtype=torch.int16)
    target[:, :, :3] = 1
    target[:, :, 5:] = 2
    prob = torch.softmax(out, 1)
    per = []
    for c in (1, 2):  # MONAI Dice per (image, channel), smooth 1e-5, then the mean
        y = (target[:, 0] == c).float()
        p = prob[:, c]
        inter, denom = (p * y).sum((1, 2, 3)), (p + y).sum((1, 2, 3))
        per.append(1 - (2 * inter + 1e-5) / (denom + 1e-5))
    want = torch.stack(per).mean()
    assert float(build_nnunet_loss("dice", regions=False)(out, target)) == pytest.approx(float(want), rel=1e-6)


def test_regions_use_a_sigmoid_per_region_and_keep_every_channel():
    out = torch.zeros(1, 2, 4, 4, 4)  # sigmoid(0) = 1/2 everywhere
    target = torch.zeros(1, 2, 4, 4, 4, dtype=torch.bool)
    target[0, 0, :2] = True  # 32 voxels
    target[0, 1, :1] = True  # 16 voxels
    # Dice per region: 1 - (2 * k/2 + s) / (64/2 + k + s), k = 32 and 16
    s = 1e-5
    want = (1 - (32 + s) / (32 + 32 + s) + 1 - (16 + s) / (32 + 16 + s)) / 2
    assert float(build_nnunet_loss("dice", regions=True)(out, target)) == pytest.approx(want, rel=1e-6)


def test_activation_options_are_the_trainers():
    with pytest.raises(ConfigError, match="softmax"):
        build_nnunet_loss({"name": "ici", "softmax": False}, regions=False)
    with pytest.raises(RegistryError, match="ici"):
        build_nnunet_loss("icii", regions=False)
    with pytest.raises(ConfigError, match="loss"):
        build_nnunet_loss({"a": 1}, regions=False)


# ---------------------------------------------------------------------------------------------------------------
# ignore label


def _away_from_the_seam(seed_a: int, seed_b: int) -> torch.Tensor:
    """Two images of blobs in the first half of the last axis, so that ICI's center cubes (half-width 3) end
    before x = 8, where the ignored slab is appended."""
    m = torch.cat([_blobs((8, 8, 8), seed_a), _blobs((8, 8, 8), seed_b)])[:, None]
    m[..., 4:] = False
    return m


@pytest.mark.parametrize("name", ["dice", "blob", "ici", "dici"])
def test_ignored_voxels_count_as_removed_for_dice_type_losses(name):
    """A slab of ignored voxels appended to a volume leaves every Dice-type sum unchanged: the loss equals the
    loss of the volume without the slab, and the slab gets no gradient. (8 -> 11 voxels keeps ICI's center cube
    half-widths, which follow the image shape: ceil(8 / 11 * 3) = ceil(8 / 8 * 3) = 3.)"""
    out = _logits((2, 2, 8, 8, 8), 4)
    target = _away_from_the_seam(5, 6).to(torch.int16)
    slab_out = _logits((2, 2, 8, 8, 3), 7) * 5
    slab_target = torch.full((2, 1, 8, 8, 3), 2, dtype=torch.int16)  # classes 0, 1; ignore label 2
    big_out = torch.cat([out, slab_out], -1).requires_grad_(True)
    big_target = torch.cat([target, slab_target], -1)
    got = build_nnunet_loss(name, regions=False, ignore_label=2)(big_out, big_target)
    want = build_nnunet_loss(name, regions=False)(out, target)
    assert float(got.detach()) == pytest.approx(float(want), rel=1e-5, abs=1e-7)
    got.backward()
    assert torch.all(big_out.grad[..., 8:] == 0)
    assert bool(big_out.grad[..., :8].abs().sum() > 0)


def test_ignored_region_voxels_from_the_last_target_channel():
    out = _logits((2, 1, 8, 8, 8), 8)
    target = _away_from_the_seam(9, 10)
    slab_out = _logits((2, 1, 8, 8, 3), 11) * 5
    slab_target = _logits((2, 1, 8, 8, 3), 12) > 0  # labelled voxels under the ignore mask
    big_out = torch.cat([out, slab_out], -1).requires_grad_(True)
    labels = torch.cat([target, slab_target], -1)
    ignore = torch.zeros_like(labels)
    ignore[..., 8:] = True
    got = build_nnunet_loss("ici", regions=True, ignore_label=3)(big_out, torch.cat([labels, ignore], 1))
    want = build_nnunet_loss("ici", regions=True)(out, target)
    assert float(got.detach()) == pytest.approx(float(want), rel=1e-5)
    got.backward()
    assert torch.all(big_out.grad[..., 8:] == 0)


def test_ignored_voxels_in_voxel_means_count_as_zero_loss_voxels():
    """BCE is a mean over voxels: the ignored half adds zero loss but still counts in the mean."""
    out = _logits((1, 2, 4, 4, 8), 13)
    target = torch.zeros(1, 1, 4, 4, 8, dtype=torch.int16)
    target[..., :2] = 1
    target[..., 4:] = 2  # ignore the second half
    got = build_nnunet_loss("bce", regions=False, ignore_label=2)(out, target)
    half = build_nnunet_loss("bce", regions=False)(out[..., :4], target[..., :4])
    assert float(got) == pytest.approx(float(half) / 2, rel=1e-5)


def test_ignore_label_must_be_an_int():
    with pytest.raises(ConfigError, match="ignore_label"):
        NnUNetLoss(build_loss("dice", **SOFTMAX), regions=False, ignore_label=2.5)


# ---------------------------------------------------------------------------------------------------------------
# mixed precision


def test_half_precision_logits_are_upcast_and_autocast_is_off_inside_the_loss():
    out = _logits((2, 2, 8, 8, 8), 14).half()
    target = torch.cat([_blobs((8, 8, 8), 15), _blobs((8, 8, 8), 16)])[:, None].to(torch.int16)
    loss = build_nnunet_loss("ici", regions=False)
    want = build_loss("ici", **SOFTMAX)(out.float(), target)
    got = loss(out, target)
    assert got.dtype == torch.float32
    assert float(got) == float(want)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = loss(out.bfloat16().float().bfloat16(), target)
    assert under.dtype == torch.float32
    assert float(under) == float(build_loss("ici", **SOFTMAX)(out.bfloat16().float(), target))


# ---------------------------------------------------------------------------------------------------------------
# configuration from the environment


def test_loss_config_from_env():
    var = "LOSSBENCH_NNUNET_LOSS"
    assert loss_config_from_env({var: " ici "}) == "ici"
    assert loss_config_from_env({var: '{"name": "ici", "a": 0.25}'}) == {"name": "ici", "a": 0.25}
    for bad, match in [
        ({}, "LOSSBENCH_NNUNET_LOSS"),
        ({var: ""}, "LOSSBENCH_NNUNET_LOSS"),
        ({var: '{"name": "ici",'}, "valid JSON"),
        ({var: '{"a": 1}'}, "registry name"),
        ({var: '{"name": "ici", "sigmoid": true}'}, "sigmoid"),
    ]:
        with pytest.raises(ConfigError, match=match):
            loss_config_from_env(bad)


def test_schedule_from_env():
    env = {"LOSSBENCH_NNUNET_EPOCHS": "1", "LOSSBENCH_NNUNET_TRAIN_ITERATIONS": " 3 ", "OTHER": "x"}
    assert schedule_from_env(env) == {"num_epochs": 1, "num_iterations_per_epoch": 3}
    assert schedule_from_env({}) == {}
    for bad in ("0", "-1", "1.5", "many"):
        with pytest.raises(ConfigError, match="LOSSBENCH_NNUNET_VAL_ITERATIONS"):
            schedule_from_env({"LOSSBENCH_NNUNET_VAL_ITERATIONS": bad})


# ---------------------------------------------------------------------------------------------------------------
# importing lossbench never needs nnunetv2


def _run_python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_lossbench_imports_without_nnunetv2_and_the_trainers_name_the_extra():
    code = (
        "import sys\n"
        "sys.modules['nnunetv2'] = None  # as if the extra were not installed\n"
        "import lossbench, lossbench.cli, lossbench.losses, lossbench.integrations, "
        "lossbench.integrations.nnunet_loss, lossbench.integrations.nnunet_install\n"
        "from lossbench.errors import MissingExtraError\n"
        "try:\n"
        "    import lossbench.integrations.nnunet\n"
        "except MissingExtraError as exc:\n"
        "    print('MISSING', exc)\n"
        "print('CLI', lossbench.cli.main(['nnunet', 'install']), lossbench.cli.main(['nnunet', 'uninstall']))\n"
    )
    res = _run_python(code)
    assert res.returncode == 0, res.stderr
    assert "MISSING `nnunetv2` must be installed" in res.stdout
    assert "pip install 'lossbench[nnunet]'" in res.stdout
    assert "CLI 2 2" in res.stdout
    errors = res.stderr.splitlines()
    assert len(errors) == 2 and all(line.startswith("lossbench nnunet: error: `nnunetv2` must be") for line in errors)
    assert all("pip install 'lossbench[nnunet]'" in line for line in errors)


# ---------------------------------------------------------------------------------------------------------------
# the trainers, built directly (needs nnunetv2)


def _plans(n_stages: int = 5) -> dict:
    """Minimal nnU-Net plans with one 3D configuration of ``n_stages`` resolution stages (n_stages - 1 outputs)."""
    arch = {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": n_stages,
            "features_per_stage": [4] * n_stages,
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[3, 3, 3]] * n_stages,
            "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1),
            "n_conv_per_stage": [1] * n_stages,
            "n_conv_per_stage_decoder": [1] * (n_stages - 1),
            "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
    config = {
        "data_identifier": "nnUNetPlans_3d_fullres",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": [16, 16, 16],
        "median_image_size_in_voxels": [16.0, 16.0, 16.0],
        "spacing": [1.0, 1.0, 1.0],
        "normalization_schemes": ["ZScoreNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": arch,
        "batch_dice": False,
    }
    return {
        "dataset_name": "Dataset999_Tiny",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
        "original_median_shape_after_transp": [16, 16, 16],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": config},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {},
        "continue_training": False,
    }


LABELS = {"channel_names": {"0": "noCT"}, "labels": {"background": 0, "lesion": 1}, "numTraining": 2}
REGIONS_WITH_IGNORE = {  # two overlapping regions (lesion = labels 1 and 2, core = label 2), ignore label 3
    "channel_names": {"0": "noCT"},
    "labels": {"background": 0, "lesion": [1, 2], "core": [2], "ignore": 3},
    "regions_class_order": [1, 2],
    "numTraining": 2,
}


@pytest.fixture
def make_trainer(tmp_path, monkeypatch):
    """Build a lossbench trainer directly, with nnU-Net's folders in ``tmp_path`` (as nnUNetv2_train does)."""
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "res"))
    monkeypatch.delenv("LOSSBENCH_NNUNET_LOSS", raising=False)
    for var in ("LOSSBENCH_NNUNET_EPOCHS", "LOSSBENCH_NNUNET_TRAIN_ITERATIONS", "LOSSBENCH_NNUNET_VAL_ITERATIONS"):
        monkeypatch.delenv(var, raising=False)

    def make(name: str, dataset_json: dict = LABELS, n_stages: int = 5):
        from lossbench.integrations.nnunet import TRAINERS

        return TRAINERS[name](_plans(n_stages), "3d_fullres", 0, dict(dataset_json), torch.device("cpu"))

    return make


def _scales(n: int, classes: int, regions: bool = False, ignore: bool = False, seed: int = 0):
    """Outputs and targets at n scales 16, 8, 4, ... as nnU-Net hands them to the loss."""
    outs, tgts = [], []
    for i in range(n):
        s = 16 >> i
        outs.append(_logits((2, classes, s, s, s), seed + i))
        lab = torch.stack([_blobs((s, s, s), seed + 10 + i), _blobs((s, s, s), seed + 20 + i)])
        if regions:
            tgt = torch.cat([lab, lab & (_logits(lab.shape, seed + 30 + i) > 0)], 1)[:, :classes]
            if ignore:
                ign = torch.zeros_like(lab)
                ign[..., : max(s // 4, 1)] = True
                tgt = torch.cat([tgt, ign], 1)
        else:
            tgt = lab.to(torch.int16)
        tgts.append(tgt)
    return outs, tgts


@needs_nnunet
def test_named_trainers_build_their_registry_loss_with_nnunet_deep_supervision(make_trainer):
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper

    for trainer_name, loss_name in [
        ("nnUNetTrainer_Blob", "blob"),
        ("nnUNetTrainer_InverseWeighting", "inverse_weighting"),
        ("nnUNetTrainer_ICI", "ici"),
        ("nnUNetTrainer_DICI", "dici"),
    ]:
        trainer = make_trainer(trainer_name)
        loss = trainer._build_loss()
        assert isinstance(loss, DeepSupervisionWrapper)
        assert loss.weight_factors == pytest.approx((4 / 7, 2 / 7, 1 / 7, 0.0))
        outs, tgts = _scales(4, 2)
        ref = build_loss(loss_name, **SOFTMAX)
        want = sum(w * ref(o, t) for w, o, t in zip((4 / 7, 2 / 7, 1 / 7), outs, tgts))
        assert float(loss(outs, tgts)) == pytest.approx(float(want), rel=1e-5), trainer_name


@needs_nnunet
def test_deep_supervision_weights_are_nnunets_own(make_trainer):
    """nnU-Net's default loss hook, run on the same trainer, weights its outputs exactly as ours."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    for n_stages in (3, 4, 6):
        trainer = make_trainer("nnUNetTrainer_ICI", n_stages=n_stages)
        theirs = nnUNetTrainer._build_loss(trainer).weight_factors
        assert trainer._build_loss().weight_factors == pytest.approx(theirs, abs=0), n_stages
        assert len(theirs) == n_stages - 1


@needs_nnunet
def test_generic_trainer_reads_the_loss_from_the_environment(make_trainer, monkeypatch):
    trainer = make_trainer("nnUNetTrainer_Lossbench")
    with pytest.raises(ConfigError, match="LOSSBENCH_NNUNET_LOSS"):
        trainer._build_loss()
    monkeypatch.setenv("LOSSBENCH_NNUNET_LOSS", '{"name": "blob", "alpha": 1, "beta": 3}')
    loss = trainer._build_loss()
    outs, tgts = _scales(4, 2, seed=5)
    ref = build_loss("blob", alpha=1, beta=3, **SOFTMAX)
    want = sum(w * ref(o, t) for w, o, t in zip((4 / 7, 2 / 7, 1 / 7), outs, tgts))
    assert float(loss(outs, tgts)) == pytest.approx(float(want), rel=1e-5)
    log = Path(trainer.log_file).read_text()
    assert 'lossbench loss: {"name": "blob", "alpha": 1, "beta": 3}' in log
    monkeypatch.setenv("LOSSBENCH_NNUNET_LOSS", '{"name": "blob", "alpha": 1, "gamma": 3}')
    with pytest.raises(ConfigError, match="gamma"):
        trainer._build_loss()


@needs_nnunet
def test_region_training_with_ignore_label_through_nnunets_label_manager(make_trainer):
    trainer = make_trainer("nnUNetTrainer_ICI", REGIONS_WITH_IGNORE)
    assert trainer.label_manager.has_regions and trainer.label_manager.ignore_label == 3
    assert trainer.label_manager.num_segmentation_heads == 2
    loss = trainer._build_loss()
    inner = loss.loss
    assert isinstance(inner, NnUNetLoss) and inner.regions and inner.ignore_label == 3
    outs, tgts = _scales(4, 2, regions=True, ignore=True, seed=7)
    assert tgts[0].shape == (2, 3, 16, 16, 16)  # two regions and the ignore mask, as nnU-Net's transforms make it
    ref = build_nnunet_loss("ici", regions=True, ignore_label=3)
    want = sum(w * ref(o, t) for w, o, t in zip((4 / 7, 2 / 7, 1 / 7), outs, tgts))
    assert float(loss(outs, tgts)) == pytest.approx(float(want), rel=1e-6)
    # the masked loss differs from the loss that treats the ignore channel's voxels as labelled ones
    plain = build_loss("ici", sigmoid=True)
    unmasked = sum(w * plain(o, t[:, :2]) for w, o, t in zip((4 / 7, 2 / 7, 1 / 7), outs, tgts))
    assert abs(float(want) - float(unmasked)) > 1e-3


@needs_nnunet
def test_training_length_from_the_environment(make_trainer, monkeypatch):
    default = make_trainer("nnUNetTrainer_ICI")
    assert (default.num_epochs, default.num_iterations_per_epoch, default.num_val_iterations_per_epoch) == (
        1000,
        250,
        50,
    )
    monkeypatch.setenv("LOSSBENCH_NNUNET_EPOCHS", "2")
    monkeypatch.setenv("LOSSBENCH_NNUNET_VAL_ITERATIONS", "1")
    short = make_trainer("nnUNetTrainer_ICI")
    assert (short.num_epochs, short.num_iterations_per_epoch, short.num_val_iterations_per_epoch) == (2, 250, 1)
    monkeypatch.setenv("LOSSBENCH_NNUNET_EPOCHS", "zero")
    with pytest.raises(ConfigError, match="LOSSBENCH_NNUNET_EPOCHS"):
        make_trainer("nnUNetTrainer_ICI")


@needs_nnunet
def test_every_instance_aware_registry_loss_has_a_trainer():
    """cc_dicece joins the list as soon as it is registered: its trainer is one class in the nnunet module."""
    from lossbench.integrations.nnunet import TRAINERS

    names = {cls.lossbench_loss for cls in TRAINERS.values()}
    assert TRAINERS["nnUNetTrainer_Lossbench"].lossbench_loss is None
    for loss_name in (*INSTANCE_LOSSES, "cc_dicece"):
        if loss_name in LOSSES:
            assert loss_name in names, f"no nnU-Net trainer for the registry loss {loss_name!r}"
    for cls in TRAINERS.values():
        if cls.lossbench_loss is not None:
            build_nnunet_loss(cls.lossbench_loss, regions=False)


# ---------------------------------------------------------------------------------------------------------------
# lossbench nnunet install / uninstall (in a fake nnU-Net trainer folder)


@needs_nnunet
def test_install_and_uninstall_are_idempotent_and_leave_foreign_files_alone(tmp_path, capsys):
    from lossbench.cli import main
    from lossbench.integrations.nnunet_install import MARKER, SHIM_NAME, install, shim_source, uninstall

    folder = tmp_path / "nnUNetTrainer"
    folder.mkdir()
    shim = folder / SHIM_NAME
    assert install(folder).action == "written"
    assert shim.read_text() == shim_source() and shim.read_text().splitlines()[0] == MARKER
    assert install(folder).action == "unchanged"
    shim.write_text(MARKER + "\n# an older lossbench's module\n")
    assert install(folder).action == "updated"
    assert shim.read_text() == shim_source()
    assert [p.name for p in folder.iterdir()] == [SHIM_NAME]  # no temporary file left

    (folder / "__pycache__").mkdir()
    pyc = folder / "__pycache__" / "nnUNetTrainer_lossbench.cpython-311.pyc"
    other_pyc = folder / "__pycache__" / "nnUNetTrainer.cpython-311.pyc"
    pyc.write_bytes(b"")
    other_pyc.write_bytes(b"")
    assert uninstall(folder).action == "removed"
    assert not shim.exists() and not pyc.exists() and other_pyc.exists()
    assert uninstall(folder).action == "absent"

    shim.write_text("# someone's own trainers\n")
    with pytest.raises(ConfigError, match="written by `lossbench nnunet install`"):
        install(folder)
    with pytest.raises(ConfigError, match="will not delete"):
        uninstall(folder)
    assert shim.read_text() == "# someone's own trainers\n"
    with pytest.raises(ConfigError, match="existing folder"):
        install(tmp_path / "missing")

    capsys.readouterr()
    assert main(["nnunet", "install", "--folder", str(folder)]) == 2
    assert "will not overwrite" in capsys.readouterr().err
    shim.unlink()
    assert main(["nnunet", "install", "--folder", str(folder)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {shim}" in out and "nnUNetTrainer_ICI" in out
    assert main(["nnunet", "install", "--folder", str(folder)]) == 0
    assert f"already installed: {shim}" in capsys.readouterr().out
    assert main(["nnunet", "uninstall", "--folder", str(folder)]) == 0
    assert f"removed {shim}" in capsys.readouterr().out


@needs_nnunet
def test_installed_module_exposes_the_trainers_and_survives_a_removed_lossbench(tmp_path):
    from lossbench.integrations.nnunet import TRAINERS
    from lossbench.integrations.nnunet_install import install

    path = install(tmp_path).path
    code = path.read_text()
    found: dict = {}
    exec(compile(code, str(path), "exec"), found)
    assert all(found[name] is cls for name, cls in TRAINERS.items())
    # lossbench gone: one line on stderr, no exception (nnU-Net's lookup of other trainers keeps working)
    res = _run_python(
        "import sys\n"
        "sys.modules['lossbench'] = None\n"
        f"exec(compile(open({str(path)!r}).read(), {str(path)!r}, 'exec'), {{'__file__': {str(path)!r}}})\n"
        "print('still alive')\n"
    )
    assert res.returncode == 0, res.stderr
    assert "still alive" in res.stdout
    assert f"lossbench is not installed: its nnU-Net trainers are unavailable (delete {path})" in res.stderr


# ---------------------------------------------------------------------------------------------------------------
# a real nnU-Net run: nnU-Net's planner, preprocessor and nnUNetv2_train with nnUNetTrainer_ICI

DATASET_ID, DATASET = 501, "Dataset501_LossbenchTiny"
SIZE = 32  # the planner takes the whole 32^3 image as the patch (asserted below)
VAL_CASE = "case_000"
N_CASES = 4  # 3 training cases and the validation case


def _write_raw_dataset(raw: Path, n_cases: int = N_CASES) -> None:
    """nnU-Net's raw format: imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz, dataset.json.

    Labels hold balls of radius 1-4 (several instances of different sizes per case); the image is label + noise
    + 10, nonzero everywhere so that nnU-Net's crop to the nonzero region keeps the whole image. The validation
    case keeps every lesion voxel at coordinates <= 16 on every axis: nnU-Net's validation loader then crops the
    whole image for both samples of the batch (a foreground-centered 32^3 crop starts at max(0, voxel - 16) = 0),
    so the validation batch is known to the test.
    """
    import nibabel as nib

    folder = raw / DATASET
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    grid = np.stack(np.mgrid[:SIZE, :SIZE, :SIZE])
    for i in range(n_cases):
        label = np.zeros((SIZE,) * 3, np.uint8)
        hi = 13 if i == 0 else SIZE - 5
        for radius in (1, 2, 3, 4):
            center = rng.integers(4, hi, size=3)[:, None, None, None]
            label[((grid - center) ** 2).sum(0) <= radius * radius] = 1
        image = (label * 2.0 + rng.normal(0.0, 1.0, label.shape) + 10.0).astype(np.float32)
        nib.save(nib.Nifti1Image(image, np.eye(4)), folder / "imagesTr" / f"case_{i:03d}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), folder / "labelsTr" / f"case_{i:03d}.nii.gz")
    meta = {"channel_names": {"0": "noCT"}, "labels": {"background": 0, "lesion": 1}, "numTraining": n_cases}
    (folder / "dataset.json").write_text(json.dumps({**meta, "file_ending": ".nii.gz"}))


def _nnunet(command: str, *args: str, env: dict[str, str]) -> None:
    """Run one of nnU-Net's console scripts (installed next to this Python) and fail with its output."""
    exe = Path(sys.executable).parent / command
    exe = str(exe) if exe.exists() else shutil.which(command)
    assert exe is not None, f"nnU-Net's console script {command} is not installed next to {sys.executable}"
    res = subprocess.run([exe, *args], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"{command} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"


def _recomputed_val_loss(pre: Path, checkpoint: dict) -> float:
    """lossbench's ICI loss, weighted over nnU-Net's output scales, on the validation batch nnU-Net saw."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    cm = PlansManager(json.loads((pre / "nnUNetPlans.json").read_text())).get_configuration("3d_fullres")
    net = get_network_from_plans(
        cm.network_arch_class_name, cm.network_arch_init_kwargs, cm.network_arch_init_kwargs_req_import,
        1, 2, allow_init=True, deep_supervision=True,
    )  # fmt: skip
    net.load_state_dict(checkpoint["network_weights"])
    net.eval()
    folder = pre / "nnUNetPlans_3d_fullres"
    data, seg, _, _ = infer_dataset_class(str(folder))(str(folder)).load_case(VAL_CASE)
    scales = [[1.0] * 3, [0.5] * 3, [0.25] * 3]  # 1 / cumulative strides, the coarsest stage dropped
    sample = nnUNetTrainer.get_validation_transforms(scales, foreground_labels=[1])(
        image=torch.from_numpy(np.asarray(data[:])).float(), segmentation=torch.from_numpy(np.asarray(seg[:]))
    )
    image = torch.stack([sample["image"]] * 2)  # batch size 2, both samples the whole validation case
    targets = [torch.stack([t] * 2) for t in sample["segmentation"]]
    # nnUNetv2_train on CPU uses one torch thread per core: the same count gives the same float32 sums, so no voxel
    # near probability 1/2 can change side (the ICI loss thresholds the prediction into components)
    threads = torch.get_num_threads()
    torch.set_num_threads(multiprocessing.cpu_count())
    try:
        with torch.no_grad():
            outputs = net(image)
    finally:
        torch.set_num_threads(threads)
    assert [o.shape[2:] for o in outputs] == [(32, 32, 32), (16, 16, 16), (8, 8, 8)]
    ici = build_loss("ici", **SOFTMAX)
    return float(sum(w * ici(o, t) for w, o, t in zip((2 / 3, 1 / 3, 0.0), outputs, targets) if w))


@needs_nnunet
def test_nnunet_trains_with_a_lossbench_trainer_and_logs_lossbench_loss(tmp_path):
    from lossbench.integrations.nnunet_install import SHIM_NAME, install, trainer_folder, uninstall

    raw, pre, res = tmp_path / "raw", tmp_path / "preprocessed", tmp_path / "results"
    _write_raw_dataset(raw)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOSSBENCH_NNUNET_")}
    env.update(
        nnUNet_raw=str(raw), nnUNet_preprocessed=str(pre), nnUNet_results=str(res), nnUNet_def_n_proc="1",
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
    )  # fmt: skip
    had_shim = (trainer_folder() / SHIM_NAME).exists()
    try:
        # the README's commands: install the trainers into nnU-Net (`lossbench nnunet install`), plan, train
        install()
        _nnunet("nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "3d_fullres", "-np", "1", "-npfp", "1",
                env=env)  # fmt: skip
        plans = json.loads((pre / DATASET / "nnUNetPlans.json").read_text())["configurations"]["3d_fullres"]
        assert plans["patch_size"] == [SIZE] * 3 and plans["batch_size"] == 2
        assert plans["architecture"]["arch_kwargs"]["strides"] == [[1, 1, 1]] + [[2, 2, 2]] * 3
        cases = [f"case_{i:03d}" for i in range(N_CASES)]
        split = [{"train": [c for c in cases if c != VAL_CASE], "val": [VAL_CASE]}]
        (pre / DATASET / "splits_final.json").write_text(json.dumps(split))
        # nnUNet_n_proc_DA=0 loads batches in the main process; the planner cannot take it (torch threads = 0)
        train_env = {**env, "nnUNet_n_proc_DA": "0", "LOSSBENCH_NNUNET_EPOCHS": "1"}
        train_env.update(LOSSBENCH_NNUNET_TRAIN_ITERATIONS="2", LOSSBENCH_NNUNET_VAL_ITERATIONS="1")
        _nnunet("nnUNetv2_train", str(DATASET_ID), "3d_fullres", "0", "-tr", "nnUNetTrainer_ICI", "-device", "cpu",
                env=train_env)  # fmt: skip
    finally:
        if not had_shim:
            uninstall()
    fold = res / DATASET / "nnUNetTrainer_ICI__nnUNetPlans__3d_fullres" / "fold_0"
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["trainer_name"] == "nnUNetTrainer_ICI" and checkpoint["current_epoch"] == 1
    logged = checkpoint["logging"]
    assert len(logged["train_losses"]) == 1 and np.isfinite(logged["train_losses"][0])
    assert (fold / "validation" / "summary.json").exists()  # nnU-Net's final validation ran
    log = next(fold.glob("training_log_*.txt")).read_text()
    assert 'lossbench loss: "ici"' in log and "deep supervision weights [0.666667, 0.333333, 0.0]" in log
    recomputed = _recomputed_val_loss(pre / DATASET, checkpoint)
    assert float(logged["val_losses"][0]) == pytest.approx(recomputed, rel=1e-5)
