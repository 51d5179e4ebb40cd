r"""Per-region sums over a whole volume and their gradient, each in one pass (the CC-Dice losses' workhorse).

Every voxel ``v`` of image ``i`` belongs to region ``k(v) = base[i] + regions[i, v]`` (batch-numbered Voronoi ids,
:func:`lossbench.cc.voronoi.batch_regions`). :func:`region_sums` returns, per region,

.. math::

    S_k = \sum_{v \in R_k} p_v, \qquad E_k = \sum_{v \in R_k} \mathrm{BCE}(p_v, 0), \qquad |R_k|

and the input at some flat positions (the label voxels), all differentiable. ``BCE(p, 0)`` is ``softplus(x)`` from
logits (``sigmoid=True``), else ``-max(log(1 - p), -100)`` as PyTorch. The backward writes the input's gradient in
one pass over the volume, ``dS/dx = p (1 - p)`` and ``dE/dx = p`` from logits, ``dS/dp = 1`` and PyTorch's
``dBCE/dp = p / max(p (1 - p), 1e-12)`` from probabilities, then adds the gathered positions' gradients in place.

On the CPU the two passes are numba loops reading the int32 region ids as they are, one run of equal ids at a time
(regions are long runs along the contiguous axis: a plain vectorised sum per run, one read of the region's gradient
per run); elsewhere they are ``index_add`` and a gather over int64 ids (:func:`lossbench.ops.torch_only` runs that
path on the CPU).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lossbench.ops import use_numpy

__all__ = ["region_sums"]


def _bce0(src: torch.Tensor, logits: bool) -> torch.Tensor:
    return F.softplus(src) if logits else -torch.log1p(-src).clamp(min=-100.0)


class _RegionSums(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, src: torch.Tensor, p: torch.Tensor, regions: torch.Tensor, base: torch.Tensor, n_reg: int,
        with_e: bool, logits: bool, index: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        e = _bce0(src, logits) if with_e else None
        if use_numpy(p):
            from lossbench.losses._region_kernels import region_sums_cpu

            dummy = e.numpy() if e is not None else p.numpy()[:, :1]
            s, es, n = region_sums_cpu(regions.numpy(), base.numpy(), p.numpy(), dummy, n_reg, with_e)
            s, es, n = (torch.from_numpy(a) for a in (s, es, n))
        else:
            ids = (regions.long() + base[:, None]).reshape(-1)
            s = torch.zeros(n_reg, dtype=torch.float64, device=p.device).index_add_(0, ids, p.reshape(-1).double())
            es = torch.zeros_like(s)
            n = torch.zeros(n_reg, dtype=torch.int64, device=p.device)
            if with_e:
                es.index_add_(0, ids, e.reshape(-1).double())
                n = torch.bincount(ids, minlength=n_reg)
        ctx.save_for_backward(p, regions, base, index)
        ctx.logits, ctx.shape, ctx.n_reg = logits, src.shape, n_reg
        ctx.mark_non_differentiable(n)
        return s.to(src.dtype), es.to(src.dtype), n, src.reshape(-1).index_select(0, index)

    @staticmethod
    def backward(ctx: Any, g_s: torch.Tensor, g_e: torch.Tensor, _g_n: Any, g_read: torch.Tensor) -> tuple[Any, ...]:
        p, regions, base, index = ctx.saved_tensors
        zeros = torch.zeros(ctx.n_reg, dtype=p.dtype, device=p.device)
        g_s = zeros if g_s is None else g_s
        g_e = zeros if g_e is None else g_e
        if use_numpy(p):
            from lossbench.losses._region_kernels import region_grad_cpu

            out = np.empty(tuple(p.shape), dtype=p.numpy().dtype)
            region_grad_cpu(
                regions.numpy(), base.numpy(), p.numpy(), g_s.detach().numpy(), g_e.detach().numpy(), ctx.logits, out
            )
            grad = torch.from_numpy(out)
        else:
            ids = regions.long() + base[:, None]
            gs, ge = g_s[ids], g_e[ids]
            if ctx.logits:
                grad = p * ((1 - p) * gs + ge)
            else:
                grad = gs + ge * p / ((1 - p) * p).clamp(min=1e-12)
        grad = grad.reshape(-1)
        if g_read is not None:
            grad.index_add_(0, index, g_read.to(grad.dtype))
        return grad.view(ctx.shape), None, None, None, None, None, None, None


def region_sums(
    src: torch.Tensor, p: torch.Tensor, regions: torch.Tensor, base: torch.Tensor, n_reg: int, *,
    with_bce: bool, logits: bool, index: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Per-region sums of ``p`` and of ``BCE(p, 0)``, region sizes, and ``src`` at flat positions (see the module).

    Args:
        src: the differentiable input ``(n_img, V)``: logits with ``logits=True``, else the probabilities.
        p: the probabilities ``(n_img, V)``, detached (``sigmoid(src)`` with logits, else ``src``'s values).
        regions: integer region ids ``(n_img, V)`` (int32 on the CPU path), region of voxel ``v`` of image ``i``
            ``base[i] + regions[i, v]``.
        base: int64 ``(n_img,)``.
        n_reg: number of regions (every id lies in ``0..n_reg - 1``).
        with_bce: also compute ``E`` and the sizes (else they are zeros).
        logits: ``src`` holds logits.
        index: int64 flat positions into ``src`` to read.

    Returns:
        ``(S, E, sizes, src_at_index)``: ``S`` and ``E`` ``(n_reg,)`` in ``src``'s dtype (summed in float64),
        ``sizes`` int64 ``(n_reg,)`` (no gradient), and the gathered values.
    """
    return _RegionSums.apply(src, p, regions, base, n_reg, with_bce, logits, index)
