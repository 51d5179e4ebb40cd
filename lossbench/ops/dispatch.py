"""The one decision between numpy and torch code for detached bookkeeping on a tensor."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch

__all__ = ["use_numpy", "torch_only"]

_TORCH_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("lossbench_torch_only", default=False)


def use_numpy(t: torch.Tensor) -> bool:
    """Whether detached bookkeeping on ``t`` takes the numpy path: a CPU tensor of a dtype numpy has.

    numpy has no bfloat16; :func:`torch_only` turns the numpy path off.
    """
    return t.device.type == "cpu" and t.dtype != torch.bfloat16 and not _TORCH_ONLY.get()


@contextlib.contextmanager
def torch_only() -> Iterator[None]:
    """Run the torch code of every primitive inside the block, on CPU tensors too (what other devices run).

    Example:
        >>> with torch_only():
        ...     use_numpy(torch.zeros(2))
        False
    """
    token = _TORCH_ONLY.set(True)
    try:
        yield
    finally:
        _TORCH_ONLY.reset(token)
