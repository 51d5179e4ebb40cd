r"""nnU-Net's loss conventions around a lossbench loss (pure torch: nnunetv2 is not needed here).

nnU-Net calls its loss as ``loss(output, target)`` on raw network logits, at every deep-supervision
scale, with targets in one of two forms:

- label-map training: ``output`` is ``(B, C, *spatial)`` logits over C >= 2 classes (background included)
  and ``target`` is ``(B, 1, *spatial)`` class indices (int16). The lossbench loss is built with
  ``softmax=True, to_onehot_y=True, include_background=False``: every foreground class is its own binary
  problem, and instances are the connected components of each class.
- region-based training (``regions_class_order`` in dataset.json): ``output`` is ``(B, R, *spatial)``
  logits of R possibly overlapping regions and ``target`` is ``(B, R, *spatial)`` binary; the loss is built
  with ``sigmoid=True`` (every region is foreground, so none is dropped).

Ignore label: nnU-Net marks voxels whose class is unknown with ``ignore_label`` (label maps) or, in region
training, with one extra last target channel. The adapter treats those voxels as known, correctly predicted
background: the target becomes 0 there and the logits are replaced by constants whose softmax (sigmoid) is
exactly background, so every foreground probability is exactly 0. Such a voxel then adds nothing to any Dice
sum (intersection, prediction or label sum, per image or per instance) and nothing to a BCE or focal sum, it
belongs to no label or predicted component, and it gets no gradient. Two things remain: means over voxels
(BCE, focal, the inverse weights' voxel count N) still count it as a zero-loss voxel, and an instance cut
by ignored voxels is labelled as the pieces that remain.

Mixed precision: nnU-Net runs the network and the loss under ``torch.autocast`` on CUDA. The adapter hands
the loss float32 logits and switches autocast off around it, so the loss runs in float32 whatever the
network's output dtype.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from lossbench.errors import ConfigError, expect
from lossbench.losses import build_loss

__all__ = [
    "ACTIVATION_KEYS",
    "LOSS_ENV",
    "SCHEDULE_ENV",
    "NnUNetLoss",
    "build_nnunet_loss",
    "deep_supervision_weights",
    "loss_config_from_env",
    "nnunet_activation",
    "schedule_from_env",
    "split_loss_config",
]

#: Environment variable read by the generic trainer: a registry name or a JSON object ``{"name": ..., ...}``.
LOSS_ENV = "LOSSBENCH_NNUNET_LOSS"

#: Environment variables that shorten training (smoke tests of a setup), mapped to nnUNetTrainer attributes.
SCHEDULE_ENV = {
    "LOSSBENCH_NNUNET_EPOCHS": "num_epochs",
    "LOSSBENCH_NNUNET_TRAIN_ITERATIONS": "num_iterations_per_epoch",
    "LOSSBENCH_NNUNET_VAL_ITERATIONS": "num_val_iterations_per_epoch",
}

#: Loss options the trainer sets from nnU-Net's label conventions; a user may not set them.
ACTIVATION_KEYS = ("sigmoid", "softmax", "include_background", "to_onehot_y")

# A logit gap this large saturates float32 softmax and sigmoid exactly: exp(-1e4) is 0 in float32.
_SATURATED = 1.0e4


def _autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    """Autocast switched off on the devices where nnU-Net or a user may switch it on (CUDA, CPU)."""
    if device_type in ("cuda", "cpu"):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def nnunet_activation(regions: bool) -> dict[str, bool]:
    """The lossbench activation options for nnU-Net's outputs (see the module docstring).

    Args:
        regions: region-based training (sigmoid per region) instead of a label map (softmax over classes).

    Returns:
        ``{"sigmoid": True}`` or ``{"softmax": True, "to_onehot_y": True, "include_background": False}``.
    """
    if regions:
        return {"sigmoid": True}
    return {"softmax": True, "to_onehot_y": True, "include_background": False}


def split_loss_config(config: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(name, params)`` of a loss given as a registry name or ``{"name": ..., **params}`` (not modified).

    Raises:
        ConfigError: not a name or a mapping with a string "name", or an activation option among the parameters.
    """
    if isinstance(config, str):
        name, params = config, {}
    elif isinstance(config, Mapping) and isinstance(config.get("name"), str):
        params = dict(config)
        name = params.pop("name")
    else:
        raise expect("loss", 'a registry name or an object {"name": ..., **parameters}', repr(config))
    clash = [k for k in ACTIVATION_KEYS if k in params]
    if clash:
        raise expect(
            f"loss parameter {clash[0]!r}",
            "left unset",
            repr(params[clash[0]]),
            "the trainer sets sigmoid/softmax/include_background/to_onehot_y from nnU-Net's label conventions",
        )
    return name, params


def loss_config_from_env(environ: Mapping[str, str] | None = None) -> str | dict[str, Any]:
    """The generic trainer's loss from ``LOSSBENCH_NNUNET_LOSS``: a registry name or a JSON object.

    Examples of the variable: ``ici`` or ``{"name": "ici", "a": 0.25, "b": 0.5, "c": 0.25}``.

    Args:
        environ: the environment to read (default ``os.environ``).

    Returns:
        The name, or the decoded object (checked by :func:`split_loss_config`).

    Raises:
        ConfigError: the variable is unset or empty, is not valid JSON where it starts with ``{``, or fails
            :func:`split_loss_config`.
    """
    env = os.environ if environ is None else environ
    text = env.get(LOSS_ENV, "").strip()
    if not text:
        raise expect(
            LOSS_ENV,
            "set to a registry name or a JSON object",
            "nothing",
            'e.g. LOSSBENCH_NNUNET_LOSS=\'{"name": "ici", "a": 0.25, "b": 0.5, "c": 0.25}\'; see `lossbench losses`',
        )
    if not text.startswith("{"):
        split_loss_config(text)
        return text
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise expect(LOSS_ENV, "valid JSON", repr(text), str(exc)) from exc
    split_loss_config(config)
    return config


def schedule_from_env(environ: Mapping[str, str] | None = None) -> dict[str, int]:
    """Training-length overrides from the ``SCHEDULE_ENV`` variables that are set: ``{attribute: value}``.

    Raises:
        ConfigError: a set variable is not a positive integer.
    """
    env = os.environ if environ is None else environ
    out = {}
    for var, attr in SCHEDULE_ENV.items():
        text = env.get(var, "").strip()
        if not text:
            continue
        if not text.isdigit() or int(text) < 1:
            raise expect(var, "a positive integer", repr(text))
        out[attr] = int(text)
    return out


def deep_supervision_weights(n_outputs: int, *, ddp: bool = False) -> list[float]:
    r"""nnU-Net's deep-supervision weights: halving per scale, the coarsest output off, normalised to sum 1.

    .. math::  w_i \propto 2^{-i}\ (i < n - 1),\qquad w_{n-1} = 0\ (10^{-6}\ \text{under DDP}),\qquad \sum_i w_i = 1

    For example 3 outputs give ``[2/3, 1/3, 0]`` and 4 give ``[4/7, 2/7, 1/7, 0]``. Under DDP without
    ``torch.compile`` nnU-Net keeps the coarsest output at a tiny weight so that every parameter gets a gradient.

    Args:
        n_outputs: number of network outputs (scales), at least 2.
        ddp: nnU-Net's DDP case (``is_ddp and not compiled``).

    Returns:
        One weight per output, finest first.

    Raises:
        ConfigError: fewer than 2 outputs.
    """
    if isinstance(n_outputs, bool) or not isinstance(n_outputs, int) or n_outputs < 2:
        raise expect("n_outputs", "an int >= 2 (deep supervision has several outputs)", repr(n_outputs))
    raw = [1.0 / 2**i for i in range(n_outputs)]
    raw[-1] = 1e-6 if ddp else 0.0
    total = sum(raw)
    return [w / total for w in raw]


class NnUNetLoss(nn.Module):
    """A lossbench loss called with nnU-Net's ``(output, target)`` at one scale (conventions above).

    Args:
        loss: a lossbench loss built with :func:`nnunet_activation`'s options.
        regions: region-based training (binary multi-channel targets) instead of class-index label maps.
        ignore_label: nnU-Net's ignore label, or None. In region training the ignore mask is the last target
            channel (the value itself is not used).
    """

    def __init__(self, loss: nn.Module, *, regions: bool, ignore_label: int | None = None) -> None:
        super().__init__()
        if ignore_label is not None and (isinstance(ignore_label, bool) or not isinstance(ignore_label, int)):
            raise expect("ignore_label", "None or an int", repr(ignore_label))
        self.loss = loss
        self.regions = bool(regions)
        self.ignore_label = ignore_label

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar loss of logits ``(B, C, *spatial)`` against nnU-Net's target at the same scale."""
        if output.dtype in (torch.float16, torch.bfloat16):
            output = output.float()
        output, target = self._mask_ignored(output, target)
        with _autocast_off(output.device.type):
            return self.loss(output, target)

    def _mask_ignored(self, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Ignored voxels as exact, gradient-free background: target 0, every foreground probability 0."""
        if self.ignore_label is None:
            return output, target
        background = output.new_full((1, output.shape[1]) + (1,) * (output.ndim - 2), -_SATURATED)
        if self.regions:
            ignored = target[:, -1:].bool()
            target = target[:, :-1]
        else:
            ignored = target == self.ignore_label
            background[:, 0] = 0.0  # softmax of (0, -1e4, ...) is exactly (1, 0, ...)
        target = torch.where(ignored, torch.zeros_like(target), target)
        return torch.where(ignored, background, output), target


def build_nnunet_loss(config: str | Mapping[str, Any], *, regions: bool, ignore_label: int | None = None) -> NnUNetLoss:
    """Build the lossbench loss ``config`` for nnU-Net's outputs at one scale.

    Args:
        config: registry name or ``{"name": ..., **params}`` (activation options are the trainer's).
        regions: region-based training (sigmoid) instead of a label map (softmax, background dropped).
        ignore_label: nnU-Net's ignore label, or None.

    Returns:
        The adapter around ``lossbench.losses.build_loss(name, **params, **nnunet_activation(regions))``.

    Raises:
        RegistryError, ConfigError: unknown name or parameter, invalid value, or an activation option given.
    """
    name, params = split_loss_config(config)
    if not isinstance(regions, bool):
        raise ConfigError(f"`regions` must be a bool, got {regions!r}")
    loss = build_loss(name, **params, **nnunet_activation(regions))
    return NnUNetLoss(loss, regions=regions, ignore_label=ignore_label)
