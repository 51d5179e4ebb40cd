"""The ``nn.Module`` shape shared by every registered loss."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

__all__ = ["TermLoss", "full_precision"]


def full_precision(device_type: str) -> contextlib.AbstractContextManager:
    """A context without autocast on ``device_type``: inside, every op runs in its inputs' dtype.

    The losses upcast half-precision inputs to float32 themselves; without this, autocast would run some of their
    reductions in float16/bfloat16 again (and refuses ``binary_cross_entropy`` on CUDA).
    """
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument
        enabled = torch.is_autocast_enabled() if device_type == "cuda" else torch.is_autocast_cpu_enabled()
    return torch.autocast(device_type, enabled=False) if enabled else contextlib.nullcontext()


class TermLoss(nn.Module):
    """A loss with named terms: ``forward(input, target)`` is exactly ``terms(input, target)["total"]``.

    Subclasses implement :meth:`_terms` by calling their single functional implementation; options are validated
    once in ``__init__`` and ``forward`` never changes ``self``. Both entry points run without autocast (see
    :func:`full_precision`), so a loss called inside ``torch.autocast`` computes in float32.
    """

    def _terms(self, input: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def terms(self, input: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every named term (unweighted) plus ``"total"`` (the weighted sum); terms with weight 0 may be left out."""
        with full_precision(input.device.type if isinstance(input, torch.Tensor) else "cpu"):
            return self._terms(input, target)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar loss, differentiable w.r.t. ``input`` (``terms(input, target)["total"]``)."""
        return self.terms(input, target)["total"]
