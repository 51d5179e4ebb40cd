"""The ``nn.Module`` shape shared by every registered loss."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TermLoss"]


class TermLoss(nn.Module):
    """A loss with named terms: ``forward(input, target)`` is exactly ``terms(input, target)["total"]``.

    Subclasses implement :meth:`terms` by calling their single functional implementation; options are
    validated once in ``__init__`` and ``forward`` never changes ``self``.
    """

    def terms(self, input: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:  # pragma: no cover
        """Every named term (unweighted) plus ``"total"`` (the weighted sum)."""
        raise NotImplementedError

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar loss, differentiable w.r.t. ``input`` (``terms(input, target)["total"]``)."""
        return self.terms(input, target)["total"]
