"""Pair a prediction with a target: label both once, then match their instances.

Every per-subject metric of :mod:`lossbench.metrics` is computed from one :class:`InstanceMatch`, the
result of labelling the prediction and the target *once* with a given connectivity and matching their
components. ``atlas_metrics`` and ``detection_metrics`` each build one; :func:`subject_metrics` builds
one and derives both from it, which halves the labelling cost when both use the same connectivity.

Matching rule: a target instance is *detected* (a true positive) when at least one of its voxels is
predicted, i.e. it overlaps a prediction component by >= 1 voxel; a prediction instance is *false*
when it overlaps no target voxel. The matching is many-to-many (one large prediction can detect
several target instances), exactly as in the ATLAS R2.0 lesion-wise F1 and in the ICI paper's missed
/ false instance counts.

Input rule (shared by every metric function):

* ``batched=False`` (default): ``pred`` and ``target`` are one subject, shape ``(*spatial)`` with 2 or
  3 spatial dims; metric functions return one ``dict``.
* ``batched=True``: shape ``(B, *spatial)``; metric functions return a ``list`` of ``B`` dicts
  (``pandas.DataFrame(result)`` makes a per-subject table).

Masks are numpy arrays or torch tensors (any device, the two may be of different families), bool or
0/1 numbers; probabilities must be thresholded first (the paper and lossbench use ``prob >= 0.5``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lossbench.cc import label_batch
from lossbench.cc.api import resolve_connectivity
from lossbench.cc.voronoi import check_spacing
from lossbench.errors import DataError, ShapeError, expect
from lossbench.instances import component_sizes, foreground_ids, overlap_pairs
from lossbench.ops import flat_nonzero

__all__ = ["InstanceMatch", "match_instances", "match_validated", "validate_pair", "check_spacing"]


@dataclass(frozen=True)
class InstanceMatch:
    """Instances of a batch of (prediction, target) pairs and their overlaps, labelled once.

    Instances of the whole batch are numbered by *global ids* (see :func:`lossbench.instances.global_ids`, read at
    the foreground voxels with :func:`lossbench.instances.foreground_ids`); the per-instance arrays below are
    indexed by ``global id - 1`` and ``*_image`` says which subject each
    instance belongs to. All arrays are numpy on the CPU.

    Attributes:
        connectivity: connectivity actually used, in orthogonal hops (``None`` resolved to full).
        spatial_dims: 2 or 3.
        batched: whether the input had a batch axis (decides dict vs list of dicts in the metric functions).
        pred_volume: ``(B,)`` int64, ``|P|`` foreground voxels of each prediction.
        target_volume: ``(B,)`` int64, ``|T|``.
        intersection: ``(B,)`` int64, ``|P ∩ T|``.
        n_pred: ``(B,)`` int64, number of prediction instances.
        n_target: ``(B,)`` int64, number of target instances.
        pred_sizes: ``(sum n_pred,)`` int64 voxel count of every prediction instance.
        pred_image: ``(sum n_pred,)`` int64 subject index of every prediction instance.
        pred_hit: ``(sum n_pred,)`` bool, the prediction instance overlaps >= 1 target voxel.
        target_sizes: ``(sum n_target,)`` int64 voxel count of every target instance.
        target_image: ``(sum n_target,)`` int64 subject index of every target instance.
        target_hit: ``(sum n_target,)`` bool, the target instance overlaps >= 1 predicted voxel (detected).
        pair_pred: ``(n_pairs,)`` int64, every (prediction, target) instance pair sharing >= 1 voxel: the
            prediction's index into the ``pred_*`` arrays (sorted by prediction, then target).
        pair_target: ``(n_pairs,)`` int64, the pair's target index into the ``target_*`` arrays.
        pair_overlap: ``(n_pairs,)`` int64, the pair's number of shared voxels.
        spatial_shape: the spatial shape of one subject.
        fg_pos: ``(F,)`` int64 flat positions in the ``(B, *spatial)`` batch of every voxel predicted or in the
            target (ascending).
        fg_pred: ``(F,)`` int64 global prediction id at each of them (index + 1; 0 = not predicted).
        fg_target: ``(F,)`` int64 global target id at each of them (index + 1; 0 = not in the target).
    """

    connectivity: int
    spatial_dims: int
    batched: bool
    pred_volume: np.ndarray
    target_volume: np.ndarray
    intersection: np.ndarray
    n_pred: np.ndarray
    n_target: np.ndarray
    pred_sizes: np.ndarray
    pred_image: np.ndarray
    pred_hit: np.ndarray
    target_sizes: np.ndarray
    target_image: np.ndarray
    target_hit: np.ndarray
    pair_pred: np.ndarray
    pair_target: np.ndarray
    pair_overlap: np.ndarray
    spatial_shape: tuple[int, ...]
    fg_pos: np.ndarray
    fg_pred: np.ndarray
    fg_target: np.ndarray

    @property
    def batch_size(self) -> int:
        """Number of subjects ``B`` (1 for unbatched input)."""
        return int(self.n_pred.shape[0])

    def per_subject(self, values: np.ndarray, image: np.ndarray) -> np.ndarray:
        """Sum a per-instance quantity per subject: ``out[b] = sum(values[i] for i with image[i] == b)``.

        Args:
            values: per-instance values (bool counts as 0/1), e.g. ``~target_hit`` to count missed instances.
            image: per-instance subject index (``pred_image`` or ``target_image``) of the same length.

        Returns:
            ``(B,)`` int64 for integer/bool values, float64 otherwise.
        """
        values = np.asarray(values)
        out = np.bincount(image, weights=values.astype(np.float64), minlength=self.batch_size)
        if values.dtype.kind in "biu":
            return np.rint(out).astype(np.int64)
        return out


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            raise expect(name, "a binary mask (bool or 0/1 numbers)", f"dtype {x.dtype}", cls=DataError)
        if not x.dtype.isnative:  # e.g. big-endian NIfTI data from nibabel
            x = x.astype(x.dtype.newbyteorder("="))
        with warnings.catch_warnings():
            # Read-only arrays (memory-mapped images) are fine: the metrics never write to their input.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return torch.from_numpy(np.ascontiguousarray(x))
    raise expect(name, "a numpy.ndarray or torch.Tensor", type(x).__name__, cls=DataError)


def _check_binary(t: torch.Tensor, name: str) -> torch.Tensor:
    """Return ``t`` as bool, raising a DataError naming ``name`` if it is not 0/1."""
    if t.dtype == torch.bool:
        return t
    if t.is_complex():
        raise expect(name, "a binary mask (bool or 0/1 values)", f"complex dtype {t.dtype}", cls=DataError)
    if t.device.type == "cpu" and t.dtype not in (torch.bfloat16,):
        # numpy's elementwise ops are several times faster than single-threaded torch on the CPU.
        a = t.numpy()
        b_np = a != 0
        ok = np.count_nonzero(a == 1) == np.count_nonzero(b_np)
        b = torch.from_numpy(b_np)
    else:
        b = t != 0
        ok = bool(((t == 1) == b).all())
    if not ok:
        vals = torch.unique(t.flatten())[:5].tolist()
        raise expect(
            name,
            "a binary mask (bool or 0/1 values)",
            f"values including {vals}",
            hint="threshold probabilities first, e.g. prob >= 0.5",
            cls=DataError,
        )
    return b


def validate_pair(pred: Any, target: Any, *, batched: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Check types, shapes and binarity of a (prediction, target) pair; return bool tensors ``(B, *spatial)``.

    Raises:
        DataError: not an array/tensor, not binary, or on different devices.
        ShapeError: shapes differ or the number of spatial dims is not 2 or 3.
        ConfigError: ``batched`` is not a bool.
    """
    if not isinstance(batched, bool):
        raise expect("batched", "a bool", repr(batched))
    p = _as_tensor(pred, "pred")
    t = _as_tensor(target, "target")
    if tuple(p.shape) != tuple(t.shape):
        raise expect("target", f"the same shape as `pred` {tuple(p.shape)}", f"shape {tuple(t.shape)}", cls=ShapeError)
    lead = 1 if batched else 0
    if p.ndim - lead not in (2, 3):
        want = "(B, H, W) or (B, D, H, W)" if batched else "(H, W) or (D, H, W)"
        hint = (
            "pass batched=True for a batch of subjects"
            if not batched and p.ndim == 4
            else "remove the channel axis, e.g. pred[:, 0]"
            if batched and p.ndim == 5
            else ""
        )
        raise expect("pred", f"of shape {want} (2 or 3 spatial dims)", f"shape {tuple(p.shape)}", hint, ShapeError)
    if p.device != t.device:
        raise expect("target", f"on the same device as `pred` ({p.device})", str(t.device), cls=DataError)
    p = _check_binary(p, "pred")
    t = _check_binary(t, "target")
    if not batched:
        p, t = p[None], t[None]
    return p, t


def match_instances(pred: Any, target: Any, *, connectivity: int | None = None, batched: bool = False) -> InstanceMatch:
    """Label prediction and target once and match their instances (overlap >= 1 voxel).

    Cost: two labellings plus O(foreground voxels); no Python loop over instances or subjects.

    Args:
        pred: binary prediction, ``(*spatial)`` or ``(B, *spatial)`` with ``batched=True``; numpy or torch.
        target: binary target of the same shape.
        connectivity: orthogonal hops (2D: 1 -> 4, 2 -> 8; 3D: 1 -> 6, 2 -> 18, 3 -> 26); ``None`` = full.
        batched: whether the first axis is a batch axis (see the module docstring).

    Returns:
        :class:`InstanceMatch`.

    Raises:
        DataError, ShapeError, ConfigError: see :func:`validate_pair`; bad ``connectivity``.
    """
    p, t = validate_pair(pred, target, batched=batched)
    conn = resolve_connectivity(connectivity, p.ndim - 1)
    return match_validated(p, t, connectivity=conn, batched=batched)


def match_validated(p: torch.Tensor, t: torch.Tensor, *, connectivity: int, batched: bool) -> InstanceMatch:
    """:func:`match_instances` on the output of :func:`validate_pair` with a resolved ``connectivity``.

    Lets a caller validate every argument (e.g. ``spacing``) before any computation starts.

    Args:
        p: bool prediction ``(B, *spatial)`` from :func:`validate_pair`.
        t: bool target of the same shape and device.
        connectivity: resolved connectivity in orthogonal hops (1..spatial dims).
        batched: recorded in the result (whether the caller's input had a batch axis).

    Returns:
        :class:`InstanceMatch`.
    """
    conn = connectivity
    spatial_dims = p.ndim - 1
    p_cc = label_batch(p, connectivity=conn)
    t_cc = label_batch(t, connectivity=conn)
    p_cnt, t_cnt = p_cc.counts, t_cc.counts
    n_p, n_t = int(p_cnt.sum()), int(t_cnt.sum())

    # Work on the foreground voxels only (lesions are ~1% of a brain volume): one pass finds them, and every size /
    # overlap computation below runs on these short vectors with batch-global ids read there (foreground_ids).
    fg = flat_nonzero(p | t)
    _, p_fg = foreground_ids(p_cc, fg)
    _, t_fg = foreground_ids(t_cc, fg)
    # component_sizes' background entry (index 0) is meaningless here (background was skipped): drop it.
    p_sizes = component_sizes(p_fg, n_p)[1:]
    t_sizes = component_sizes(t_fg, n_t)[1:]
    pair_p, pair_t, shared = overlap_pairs(p_fg, t_fg, n_t)

    p_hit = torch.zeros(n_p, dtype=torch.bool, device=p.device)
    t_hit = torch.zeros(n_t, dtype=torch.bool, device=p.device)
    p_hit[pair_p - 1] = True
    t_hit[pair_t - 1] = True

    b = p.shape[0]
    p_cnt_np = p_cnt.cpu().numpy().astype(np.int64)
    t_cnt_np = t_cnt.cpu().numpy().astype(np.int64)
    p_image = np.repeat(np.arange(b, dtype=np.int64), p_cnt_np)
    t_image = np.repeat(np.arange(b, dtype=np.int64), t_cnt_np)
    p_sizes_np = p_sizes.cpu().numpy()
    t_sizes_np = t_sizes.cpu().numpy()
    # |P ∩ T| per subject: the overlaps of all (pred, target) pairs of that subject add up to it, because
    # every voxel belongs to exactly one pred and one target component.
    pair_image = p_image[pair_p.cpu().numpy() - 1] if len(pair_p) else np.zeros(0, dtype=np.int64)
    inter = np.bincount(pair_image, weights=shared.cpu().numpy().astype(np.float64), minlength=b)
    return InstanceMatch(
        connectivity=conn,
        spatial_dims=spatial_dims,
        batched=batched,
        pred_volume=np.bincount(p_image, weights=p_sizes_np.astype(np.float64), minlength=b).astype(np.int64),
        target_volume=np.bincount(t_image, weights=t_sizes_np.astype(np.float64), minlength=b).astype(np.int64),
        intersection=np.rint(inter).astype(np.int64),
        n_pred=p_cnt_np,
        n_target=t_cnt_np,
        pred_sizes=p_sizes_np,
        pred_image=p_image,
        pred_hit=p_hit.cpu().numpy(),
        target_sizes=t_sizes_np,
        target_image=t_image,
        target_hit=t_hit.cpu().numpy(),
        pair_pred=pair_p.cpu().numpy() - 1,
        pair_target=pair_t.cpu().numpy() - 1,
        pair_overlap=shared.cpu().numpy().astype(np.int64),
        spatial_shape=tuple(p.shape[1:]),
        fg_pos=fg.cpu().numpy(),
        fg_pred=p_fg.cpu().numpy(),
        fg_target=t_fg.cpu().numpy(),
    )
