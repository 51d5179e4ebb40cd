"""Building blocks of the loss cases: inputs, one forward + backward step, priming, the labelling floor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = ["LossConfig", "loss_inputs", "forward_backward", "prime", "floor_labelling", "floor_name"]


#: A loss case: (case label, registry name, parameters).
LossConfig = tuple[str, str, dict[str, Any]]


def loss_inputs(
    target_mask: np.ndarray, pred_mask: np.ndarray, device: torch.device, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (B, 1, *spatial) with ``sigmoid(logits) >= 0.5`` exactly on ``pred_mask``, and the float target."""
    gen = torch.Generator().manual_seed(seed)
    pm = torch.from_numpy(pred_mask)
    noise = 0.3 * torch.randn(pm.shape, generator=gen)
    logits = torch.where(pm, 2.0 + noise.abs(), -2.0 - noise.abs())
    x = logits.unsqueeze(1).to(device).clone().requires_grad_(True)
    y = torch.from_numpy(target_mask).unsqueeze(1).to(device=device, dtype=torch.float32)
    return x, y


def forward_backward(loss: Any, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """A zero-argument step: clear the input's gradient, then ``loss(x, y).backward()``."""

    def step() -> None:
        x.grad = None
        loss(x, y).backward()

    return step


def prime(loss: Any, x: torch.Tensor, y: torch.Tensor, side: int = 16) -> None:
    """One forward+backward on a corner of the inputs (at most ``side`` voxels per axis), before any measurement.

    It loads what a loss loads on first use (compiled kernels from numba's cache, lazy imports), which would
    otherwise land in the first measured call's time and peak memory.
    """
    corner = (..., *(slice(0, side) for _ in x.shape[2:]))
    xs = x.detach()[corner].clone().requires_grad_(True)
    try:
        loss(xs, y[corner]).backward()
    except Exception:  # the case raises again when it is measured, and is recorded as an error there
        pass


def floor_labelling(target_mask: np.ndarray, pred_mask: np.ndarray, device: torch.device) -> Callable[[], None]:
    """Label target and prediction: the floor of any instance loss.

    On CPU: every image with ``cc3d.connected_components`` directly. On CUDA: :func:`label_components` on the device
    tensors (the exact torch backend), which is what a loss running there has to do.
    """
    if device.type != "cpu":
        from lossbench.cc import label_components

        tensors = [torch.from_numpy(m).to(device) for m in (target_mask, pred_mask)]

        def on_device() -> None:
            for t in tensors:
                label_components(t)

        return on_device

    import cc3d

    conn = 26 if target_mask.ndim == 4 else 8

    def step() -> None:
        for m in (target_mask, pred_mask):
            for img in m:
                cc3d.connected_components(img, connectivity=conn)

    return step


def floor_name(device: torch.device) -> str:
    """Name of the floor case: labelling of label and prediction with the device's default backend."""
    return "2 cc3d labellings" if device.type == "cpu" else "2 torch labellings"
