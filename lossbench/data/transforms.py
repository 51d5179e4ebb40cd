"""MONAI dictionary transforms matching the ICI paper's training recipe.

The paper (Sec. 3, "Training") normalises every subject to zero mean and unit variance and augments with
left/right flips, rotation, zoom, and intensity scaling and shifting; it trains on whole images or on patches
sampled with a 1:1 ratio of positive (lesion-centered) and negative patches. :func:`make_transforms` builds
that pipeline for subject dicts of :mod:`lossbench.data.base` (keys ``image``, ``label``, ``id``; arrays of
shape ``(1, *spatial)``).

Order of the training pipeline::

    copy -> EnsureTyped -> NormalizeIntensityd (z-score, per subject)
      [patch mode: SpatialPadd to the patch size -> RandCropByPosNegLabeld(pos=1, neg=1, num_samples)]
      -> RandFlipd (axis 0 = left/right for RAS-oriented volumes) -> RandRotated -> RandZoomd
      -> RandScaleIntensityd -> RandShiftIntensityd

Labels are interpolated with ``nearest`` so they stay binary. The evaluation pipeline only converts and
normalises (patch-mode evaluation runs on whole images with sliding-window inference).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from lossbench.data.base import check_bool, check_choice, check_float, check_int, check_shape, check_spatial_dims
from lossbench.errors import expect

__all__ = ["make_transforms", "TransformPair", "MODES"]

MODES = ("whole", "patch")
KEYS = ("image", "label")


class TransformPair(NamedTuple):
    """The training and the evaluation ``monai.transforms.Compose`` (unpacks as ``train, eval``)."""

    train: object
    eval: object


def _copy_array(x):
    """Copy an ndarray/tensor (module-level so that transforms pickle for DataLoader workers)."""
    return x.clone() if isinstance(x, torch.Tensor) else np.array(x, copy=True)


def make_transforms(
    mode: str = "whole",
    spatial_dims: int = 3,
    patch_size: int | list[int] | None = None,
    augment: bool = True,
    *,
    num_samples: int = 4,
    pos: float = 1.0,
    neg: float = 1.0,
    flip_prob: float = 0.5,
    rotate_range: float = 0.26,
    rotate_prob: float = 0.2,
    zoom_range: tuple[float, float] = (0.9, 1.1),
    zoom_prob: float = 0.2,
    intensity_scale: float = 0.1,
    intensity_shift: float = 0.1,
    intensity_prob: float = 0.5,
    nonzero: bool = False,
) -> TransformPair:
    """Build the training and evaluation transforms.

    Args:
        mode: ``"whole"`` (whole images) or ``"patch"`` (``num_samples`` patches per subject, pos:neg = 1:1).
        spatial_dims: 2 or 3.
        patch_size: patch side (int) or shape; required in patch mode, must be ``None`` in whole mode.
        augment: apply the random augmentations (False: normalisation, and cropping in patch mode, only).
        num_samples: patches per subject per epoch (patch mode; the paper uses 8).
        pos: relative weight of lesion-centered patches (paper: 1).
        neg: relative weight of background-centered patches (paper: 1).
        flip_prob: probability of a left/right flip (spatial axis 0).
        rotate_range: maximal rotation angle in radians (about every axis in 3D).
        rotate_prob: probability of a rotation.
        zoom_range: ``(min_zoom, max_zoom)``, image size kept.
        zoom_prob: probability of a zoom.
        intensity_scale: ``v -> v * (1 + f)``, ``f ~ U(-intensity_scale, intensity_scale)``.
        intensity_shift: ``v -> v + o``, ``o ~ U(-intensity_shift, intensity_shift)`` (after z-scoring).
        intensity_prob: probability of each of the two intensity augmentations.
        nonzero: compute the z-score statistics over non-zero voxels only (e.g. skull-stripped MRI).

    Returns:
        :class:`TransformPair` ``(train, eval)`` of ``monai.transforms.Compose``. In patch mode ``train``
        returns a list of ``num_samples`` dicts per subject (flattened by MONAI's ``list_data_collate``).

    Raises:
        ConfigError: naming the first invalid argument.

    Example:
        >>> train, evaluate = make_transforms("patch", spatial_dims=2, patch_size=32)
    """
    from monai import transforms as mt

    o = _Options.check(
        mode=mode, spatial_dims=spatial_dims, patch_size=patch_size, augment=augment, num_samples=num_samples,
        pos=pos, neg=neg, flip_prob=flip_prob, rotate_range=rotate_range, rotate_prob=rotate_prob,
        zoom_range=zoom_range, zoom_prob=zoom_prob, intensity_scale=intensity_scale,
        intensity_shift=intensity_shift, intensity_prob=intensity_prob, nonzero=nonzero,
    )  # fmt: skip
    keys = list(KEYS)
    base = [
        mt.Lambdad(keys=keys, func=_copy_array),  # the dataset's arrays are never modified in place
        mt.EnsureTyped(keys=keys, data_type="tensor", dtype=torch.float32, track_meta=False),
        mt.NormalizeIntensityd(keys="image", nonzero=o.nonzero, channel_wise=True),
    ]
    train = list(base)
    if o.mode == "patch":
        train += [
            mt.SpatialPadd(keys=keys, spatial_size=o.patch, mode="constant"),
            mt.RandCropByPosNegLabeld(
                keys=keys, label_key="label", spatial_size=o.patch, pos=o.pos, neg=o.neg, num_samples=o.num_samples
            ),
        ]
    if o.augment:
        train += _augmentations(o)
    final = mt.EnsureTyped(keys=keys, data_type="tensor", dtype=torch.float32, track_meta=False)
    train.append(final)
    return TransformPair(mt.Compose(train), mt.Compose([*base, final]))


@dataclass(frozen=True)
class _Options:
    """The checked arguments of :func:`make_transforms`."""

    mode: str
    d: int
    patch: tuple[int, ...] | None
    augment: bool
    num_samples: int
    pos: float
    neg: float
    probs: dict[str, float]
    rotate_range: float
    zmin: float
    zmax: float
    intensity_scale: float
    intensity_shift: float
    nonzero: bool

    @classmethod
    def check(cls, **kw: Any) -> _Options:
        """Check every argument in signature order (the first invalid one is named)."""
        mode = check_choice("mode", kw["mode"], MODES)
        d = check_spatial_dims(kw["spatial_dims"])
        augment = check_bool("augment", kw["augment"])
        patch_size = kw["patch_size"]
        patch = None
        if mode == "patch":
            if patch_size is None:
                raise expect("patch_size", "an int or a list of ints in patch mode", None)
            patch = check_shape("patch_size", patch_size, d, lo=4)
        elif patch_size is not None:
            raise expect("patch_size", "None in whole mode", repr(patch_size), "set mode='patch' to train on patches")
        num_samples = check_int("num_samples", kw["num_samples"], lo=1)
        pos = check_float("pos", kw["pos"], lo=0.0)
        neg = check_float("neg", kw["neg"], lo=0.0)
        if pos + neg == 0:
            raise expect("pos", "positive when neg is 0", pos)
        probs = {
            name: check_float(name, kw[name], lo=0.0, hi=1.0)
            for name in ("flip_prob", "rotate_prob", "zoom_prob", "intensity_prob")
        }
        rotate_range = check_float("rotate_range", kw["rotate_range"], lo=0.0, hi=3.1416)
        zoom_range = kw["zoom_range"]
        if not isinstance(zoom_range, (list, tuple)) or len(zoom_range) != 2:
            raise expect("zoom_range", "a pair (min_zoom, max_zoom)", repr(zoom_range))
        zmin = check_float("zoom_range[0]", zoom_range[0], lo=0.0, hi=10.0, lo_open=True)
        zmax = check_float("zoom_range[1]", zoom_range[1], lo=zmin, hi=10.0)
        return cls(
            mode=mode, d=d, patch=patch, augment=augment, num_samples=num_samples, pos=pos, neg=neg, probs=probs,
            rotate_range=rotate_range, zmin=zmin, zmax=zmax,
            intensity_scale=check_float("intensity_scale", kw["intensity_scale"], lo=0.0, hi=1.0),
            intensity_shift=check_float("intensity_shift", kw["intensity_shift"], lo=0.0),
            nonzero=check_bool("nonzero", kw["nonzero"]),
        )  # fmt: skip


def _augmentations(o: _Options) -> list[Any]:
    """The paper's random augmentations: flip, rotation, zoom, intensity scale and shift."""
    from monai import transforms as mt

    keys = list(KEYS)
    interp = "bilinear" if o.d == 2 else "trilinear"
    rot = {"range_x": o.rotate_range} if o.d == 2 else dict.fromkeys(("range_x", "range_y", "range_z"), o.rotate_range)
    return [
        mt.RandFlipd(keys=keys, prob=o.probs["flip_prob"], spatial_axis=0),
        mt.RandRotated(
            keys=keys, prob=o.probs["rotate_prob"], mode=("bilinear", "nearest"), padding_mode="zeros", **rot
        ),
        mt.RandZoomd(
            keys=keys,
            prob=o.probs["zoom_prob"],
            min_zoom=o.zmin,
            max_zoom=o.zmax,
            mode=(interp, "nearest"),
            padding_mode="constant",
            keep_size=True,
        ),
        mt.RandScaleIntensityd(keys="image", factors=o.intensity_scale, prob=o.probs["intensity_prob"]),
        mt.RandShiftIntensityd(keys="image", offsets=o.intensity_shift, prob=o.probs["intensity_prob"]),
    ]
