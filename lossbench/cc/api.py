"""Public entry point ``label_components`` and input validation shared by all backends."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lossbench.errors import BackendError, ConfigError, DataError, ShapeError
from lossbench.registry import suggest

__all__ = ["CCResult", "label_components", "label_batch", "BACKENDS", "structure_offsets", "resolve_connectivity"]

BACKENDS = ("auto", "cc3d", "scipy", "torch", "maxpool")


@dataclass(frozen=True)
class CCResult:
    """Result of :func:`label_components`.

    Attributes:
        labels: int64 labels, same shape and type family as the mask (tensor in -> tensor out on the
            same device; ndarray in -> ndarray out). 0 = background, 1..N per image in raster order.
        counts: int64, shape ``(B,)``: number of components per image.
        converged: ``None`` for the exact backends; for ``"maxpool"`` a bool per image saying whether
            the propagation had converged after ``num_iterations`` (if not, components may be split).
        batch_numbered: ``False`` for :func:`label_components`. Only :func:`label_batch` may return ``True``:
            the components are then numbered 1..sum(counts) over the whole batch (image b's after those of the
            earlier images), i.e. the labels already are batch-global ids.
    """

    labels: Any
    counts: Any
    converged: Any = None
    batch_numbered: bool = False

    def __iter__(self):
        # Allows ``labels, counts = label_components(...)``.
        yield self.labels
        yield self.counts


def resolve_connectivity(connectivity: int | None, spatial_dims: int) -> int:
    """Validate ``connectivity`` (orthogonal hops) for ``spatial_dims`` and return it (None -> full)."""
    if connectivity is None:
        return spatial_dims
    if isinstance(connectivity, bool) or not isinstance(connectivity, (int, np.integer)):
        raise ConfigError(f"`connectivity` must be an int in 1..{spatial_dims} or None, got {connectivity!r}")
    if not 1 <= int(connectivity) <= spatial_dims:
        raise ConfigError(
            f"`connectivity` must be in 1..{spatial_dims} for {spatial_dims}D images (or None for full), "
            f"got {connectivity}"
        )
    return int(connectivity)


def structure_offsets(spatial_dims: int, connectivity: int) -> list[tuple[int, ...]]:
    """Half of the neighbourhood: offsets that are lexicographically positive, with <= ``connectivity`` nonzeros.

    Each undirected neighbour pair is visited once through these offsets.
    """
    out = []
    for off in itertools.product((-1, 0, 1), repeat=spatial_dims):
        nz = sum(o != 0 for o in off)
        if nz == 0 or nz > connectivity:
            continue
        first = next(o for o in off if o != 0)
        if first > 0:
            out.append(off)
    return out


def _validate_mask(mask: Any) -> tuple[Any, bool]:
    """Check type, shape and binarity; return the mask and whether it is a torch tensor."""
    if isinstance(mask, torch.Tensor):
        is_torch = True
    elif isinstance(mask, np.ndarray):
        is_torch = False
    else:
        raise DataError(f"`mask` must be a torch.Tensor or numpy.ndarray, got {type(mask).__name__}")
    if mask.ndim not in (3, 4):
        raise ShapeError(
            f"`mask` must have shape (B, H, W) or (B, D, H, W) (2 or 3 spatial dims), got shape "
            f"{tuple(mask.shape)} ({mask.ndim - 1} spatial dims); add a batch axis with mask[None] for one image"
        )
    if mask.dtype not in (torch.bool, np.bool_) and mask.dtype != np.dtype(bool):
        if is_torch:
            if mask.is_complex():
                raise DataError(f"`mask` must be binary (0/1), got complex dtype {mask.dtype}")
            ok = bool(((mask == 0) | (mask == 1)).all()) if mask.numel() else True
        else:
            if mask.dtype.kind not in "biuf":
                raise DataError(f"`mask` must be binary (0/1), got dtype {mask.dtype}")
            ok = bool(((mask == 0) | (mask == 1)).all()) if mask.size else True
        if not ok:
            vals = torch.unique(mask.flatten())[:5].tolist() if is_torch else np.unique(mask)[:5].tolist()
            raise DataError(f"`mask` must be binary (values 0/1 or bool), got values including {vals}")
    return mask, is_torch


def label_batch(
    mask: Any,
    *,
    connectivity: int | None = None,
    backend: str = "auto",
    num_iterations: int | None = None,
) -> CCResult:
    """:func:`label_components` for callers that read the labels only at some voxels (the losses, the metrics).

    Same arguments, validation and components, but the labels may keep the backend's own integer dtype (cc3d:
    the smallest unsigned type that holds the count) and the cc3d backend numbers them over the whole batch
    (``batch_numbered=True``): no int64 volume and no per-image renumbering pass. Read batch-global ids with
    :func:`lossbench.instances.foreground_ids`, which handles both numberings.
    """
    return _label(mask, connectivity, backend, num_iterations, native=True)


def label_components(
    mask: Any,
    *,
    connectivity: int | None = None,
    backend: str = "auto",
    num_iterations: int | None = None,
) -> CCResult:
    """Label the connected components of a batch of binary masks.

    Args:
        mask: bool or 0/1 tensor or ndarray of shape ``(B, *spatial)`` with 2 or 3 spatial dims.
        connectivity: neighbourhood in orthogonal hops (1..ndim), ``None`` for full (8 in 2D, 26 in 3D).
        backend: ``"auto"`` (cc3d on CPU, torch on CUDA), ``"cc3d"``, ``"scipy"``, ``"torch"`` or ``"maxpool"``.
        num_iterations: only for ``"maxpool"``: number of propagation steps (reference default 350).

    Returns:
        :class:`CCResult` with int64 ``labels`` (same shape, same type family and device) and ``counts`` ``(B,)``.

    Raises:
        ShapeError: if the mask does not have 2 or 3 spatial dims.
        DataError: if the mask is not binary.
        ConfigError: if connectivity is out of range, the backend is unknown, or maxpool gets partial connectivity.

    Example:
        >>> import numpy as np
        >>> m = np.array([[[1, 0, 1], [0, 0, 1], [1, 0, 0]]])
        >>> label_components(m, connectivity=1).labels[0]
        array([[1, 0, 2],
               [0, 0, 2],
               [3, 0, 0]])
    """
    return _label(mask, connectivity, backend, num_iterations, native=False)


def _label(mask: Any, connectivity: int | None, backend: str, num_iterations: int | None, native: bool) -> CCResult:
    if backend not in BACKENDS:
        raise BackendError(
            f"`backend` must be one of {list(BACKENDS)}, got {backend!r}." + suggest(str(backend), BACKENDS)
        )
    mask, is_torch = _validate_mask(mask)
    spatial_dims = mask.ndim - 1
    conn = resolve_connectivity(connectivity, spatial_dims)
    if num_iterations is not None and backend != "maxpool":
        raise ConfigError(f"`num_iterations` only applies to backend='maxpool', got backend={backend!r}")
    if backend == "auto":
        backend = "torch" if (is_torch and mask.device.type != "cpu") else "cc3d"
    if backend == "maxpool":
        if conn != spatial_dims:
            raise BackendError(
                f"`connectivity` must be None or {spatial_dims} (full) for backend='maxpool' (the reference "
                f"propagation uses a full 3x3(x3) window), got {connectivity}"
            )
        return _label_maxpool(mask, is_torch, num_iterations)
    if backend == "torch":
        return _label_torch(mask, is_torch, conn)
    return _label_cpu(mask, is_torch, conn, backend, native)


def _as_tensor(mask: Any, is_torch: bool) -> torch.Tensor:
    return mask if is_torch else torch.from_numpy(np.ascontiguousarray(mask))


def _label_maxpool(mask: Any, is_torch: bool, num_iterations: int | None) -> CCResult:
    """The public code's fixed-iteration max-pool propagation (full connectivity)."""
    from lossbench.cc.maxpool import label_maxpool

    iters = 350 if num_iterations is None else num_iterations
    if isinstance(iters, bool) or not isinstance(iters, (int, np.integer)) or iters < 0:
        raise ConfigError(f"`num_iterations` must be a non-negative int, got {num_iterations!r}")
    labels, counts, converged = label_maxpool(_as_tensor(mask, is_torch), int(iters))
    if is_torch:
        return CCResult(labels, counts, converged)
    return CCResult(labels.numpy(), counts.numpy(), converged.numpy())


def _label_torch(mask: Any, is_torch: bool, conn: int) -> CCResult:
    """The exact torch labelling (any device)."""
    from lossbench.cc.torch_cc import label_torch

    labels, counts = label_torch(_as_tensor(mask, is_torch), conn)
    if is_torch:
        return CCResult(labels, counts)
    return CCResult(labels.numpy(), counts.numpy())


def _label_cpu(mask: Any, is_torch: bool, conn: int, backend: str, native: bool) -> CCResult:
    """The CPU reference backends (cc3d, scipy), which work on numpy; tensors come back on their device."""
    from lossbench.cc.cpu import label_cc3d, label_scipy

    arr = mask.detach().cpu().numpy() if is_torch else mask
    if backend == "cc3d":
        labels_np, counts_np = label_cc3d(arr, conn, native=native)
    else:
        labels_np, counts_np = label_scipy(arr, conn)
    batch_numbered = native and backend == "cc3d"
    if not is_torch:
        return CCResult(labels_np, counts_np, None, batch_numbered)
    if labels_np.dtype.kind == "u" and (mask.device.type != "cpu" or not hasattr(torch, "uint32")):
        labels_np = labels_np.astype(np.int64)  # torch < 2.3 has no uint16/32; CUDA kernels lack most of them
    labels, counts = torch.from_numpy(labels_np).to(mask.device), torch.from_numpy(counts_np).to(mask.device)
    return CCResult(labels, counts, None, batch_numbered)
