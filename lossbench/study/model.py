"""Segmentation networks a study can train, by name (a closed registry; no import strings).

Two entries:

* ``unet``: MONAI's :class:`monai.networks.nets.UNet` with every architectural option exposed
  (``channels``, ``strides``, ``num_res_units``, ``norm``, ``act``, ``dropout``, ``kernel_size``,
  ``up_kernel_size``, ``bias``).
* ``unet_ici_paper``: the 3D Residual U-Net of the ICI paper's Appendix D, i.e. ``unet`` with
  ``channels=(16, 32, 64, 128, 256)``, ``strides=(2, 2, 2, 2)``, ``num_res_units=2`` and
  ``norm="batch"`` as defaults (each may still be overridden).

``spatial_dims``, ``in_channels`` and ``out_channels`` come from the dataset, never from the study
file. The input's spatial size must be divisible by the product of the strides
(:func:`check_model_input`), otherwise the U-Net's skip connections do not line up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import nn

from lossbench.errors import ConfigError, expect
from lossbench.registry import Registry

__all__ = ["MODELS", "build_model", "check_model_input", "ICI_PAPER_UNET"]

MODELS: Registry[nn.Module] = Registry("model")

#: Appendix D of the ICI paper (MONAI UNet arguments other than dims/channels in/out).
ICI_PAPER_UNET: dict[str, Any] = {
    "channels": (16, 32, 64, 128, 256),
    "strides": (2, 2, 2, 2),
    "num_res_units": 2,
    "norm": "batch",
}

_NORMS = ("batch", "instance", "group", "layer", "none")


def _unet(
    *,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    channels: Sequence[int],
    strides: Sequence[int],
    num_res_units: int,
    norm: str,
    act: str,
    dropout: float,
    kernel_size: int,
    up_kernel_size: int,
    bias: bool,
) -> nn.Module:
    from monai.networks.nets import UNet

    channels = list(channels)
    strides = list(strides)
    if len(channels) < 2 or any(not isinstance(c, int) or c < 1 for c in channels):
        raise expect("channels", "a list of at least 2 positive integers", channels)
    if len(strides) != len(channels) - 1 or any(not isinstance(s, int) or s < 1 for s in strides):
        raise expect("strides", f"a list of {len(channels) - 1} positive integers (len(channels) - 1)", strides)
    if not isinstance(num_res_units, int) or num_res_units < 0:
        raise expect("num_res_units", "a non-negative integer", num_res_units)
    if str(norm).lower() not in _NORMS:
        raise expect("norm", f"one of {list(_NORMS)}", repr(norm))
    if not 0.0 <= float(dropout) < 1.0:
        raise expect("dropout", "a number in [0, 1)", dropout)
    for name, k in (("kernel_size", kernel_size), ("up_kernel_size", up_kernel_size)):
        if not isinstance(k, int) or k < 1 or k % 2 == 0:
            raise expect(name, "a positive odd integer", k)
    norm_arg: Any = None if str(norm).lower() == "none" else str(norm).upper()
    if norm_arg == "GROUP":
        norm_arg = ("GROUP", {"num_groups": min(8, channels[0])})
    return UNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(channels),
        strides=tuple(strides),
        kernel_size=kernel_size,
        up_kernel_size=up_kernel_size,
        num_res_units=num_res_units,
        act=str(act).upper(),
        norm=norm_arg,
        dropout=float(dropout),
        bias=bool(bias),
    )


@MODELS.register("unet", summary="MONAI UNet (residual units optional)")
def unet(
    *,
    spatial_dims: int = 3,
    in_channels: int = 1,
    out_channels: int = 1,
    channels: Sequence[int] = (8, 16, 32, 64),
    strides: Sequence[int] = (2, 2, 2),
    num_res_units: int = 1,
    norm: str = "batch",
    act: str = "prelu",
    dropout: float = 0.0,
    kernel_size: int = 3,
    up_kernel_size: int = 3,
    bias: bool = True,
) -> nn.Module:
    """MONAI ``UNet`` with the given architecture (see the module docstring for the options)."""
    return _unet(**locals())


@MODELS.register("unet_ici_paper", summary="the ICI paper's 3D Residual U-Net (Appendix D)")
def unet_ici_paper(
    *,
    spatial_dims: int = 3,
    in_channels: int = 1,
    out_channels: int = 1,
    channels: Sequence[int] = ICI_PAPER_UNET["channels"],
    strides: Sequence[int] = ICI_PAPER_UNET["strides"],
    num_res_units: int = ICI_PAPER_UNET["num_res_units"],
    norm: str = ICI_PAPER_UNET["norm"],
    act: str = "prelu",
    dropout: float = 0.0,
    kernel_size: int = 3,
    up_kernel_size: int = 3,
    bias: bool = True,
) -> nn.Module:
    """The paper's network: ``unet`` with Appendix D's channels, strides, residual units and batch norm."""
    return _unet(**locals())


#: Keys that come from the dataset and must not appear in a study's ``model`` section.
DATA_DERIVED = ("spatial_dims", "in_channels", "out_channels")


def build_model(name: str, params: dict[str, Any], *, spatial_dims: int, in_channels: int = 1, out_channels: int = 1):
    """Build the registered network ``name`` with the study's ``params`` and the dataset's dims.

    Args:
        name: registry name (``unet`` or ``unet_ici_paper``).
        params: architecture options from the study file (without the data-derived keys).
        spatial_dims: 2 or 3, from the dataset.
        in_channels: image channels, from the dataset.
        out_channels: output channels (1 for binary segmentation: one logit map).

    Returns:
        The ``nn.Module`` (on CPU, float32).

    Raises:
        ConfigError: unknown name or parameter, a data-derived key given in the study, or an invalid value.
    """
    for key in DATA_DERIVED:
        if key in params:
            raise ConfigError(f"`{key}` is taken from the dataset and must not be set in `model`")
    return MODELS.build(
        name, spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **dict(params)
    )


def model_strides(name: str, params: dict[str, Any]) -> list[int]:
    """The strides the built model will use (explicit or the registry default)."""
    strides = params.get("strides", MODELS.get(name).params.get("strides"))
    return [int(s) for s in strides]


def check_model_input(name: str, params: dict[str, Any], spatial_shape: Sequence[int], what: str = "image") -> None:
    """Raise if ``spatial_shape`` is not divisible by the model's total downsampling factor.

    Args:
        name: model registry name.
        params: the study's model parameters.
        spatial_shape: spatial size of the network input (whole image or patch).
        what: what the shape is, for the message ("image" or "patch").

    Raises:
        ConfigError: a spatial size is not a multiple of ``prod(strides)``.
    """
    factor = math.prod(model_strides(name, params))
    bad = [int(s) for s in spatial_shape if int(s) % factor != 0]
    if bad:
        raise expect(
            "strides",
            f"a total downsampling factor dividing the {what} size {tuple(int(s) for s in spatial_shape)}",
            f"factor {factor}",
            hint="change the strides or the size",
        )


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters of ``model``."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))
