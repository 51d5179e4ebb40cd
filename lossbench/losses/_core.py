"""Shared core of every loss: input validation, activation, and pixel losses written as sufficient sums.

Every pixel loss lossbench offers (Dice, generalised Dice, BCE, focal and their MONAI compounds) is
evaluated, for one binary problem ``(q, y)`` over ``V`` voxels, from four sums only::

    I = sum(q * y)        P = sum(q)  (sum(q^2) with squared_pred)        G = sum(y)
    E = sum(f(q, y))      (f = per-voxel BCE or focal term; f(0, 0) = 0)

    loss = lambda_dice * dice(I, P, G) + lambda_elem * E / V

This is what lets the instance-wise losses (ICI, DICI, blob) evaluate the base loss of every instance
from per-component and per-pair sums with ``index_add`` instead of a Python loop over instances, and
it is the same code the plain baselines use, so ``ici`` with ``b = c = 0`` is exactly its ``base``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lossbench.errors import ConfigError, DataError, ShapeError, expect
from lossbench.ops import use_numpy
from lossbench.registry import suggest

__all__ = [
    "BaseSpec",
    "BASE_NAMES",
    "make_base_spec",
    "Prepared",
    "prepare",
    "check_flag",
    "check_nonneg",
    "check_choice",
    "dice_from_sums",
    "elementwise",
    "elementwise_logits",
    "entry_loss",
    "image_sums",
    "baseline_terms",
    "sum_and_gather",
]

#: Input dtypes that :func:`prepare` upcasts to float32 before any computation.
HALF_DTYPES = (torch.float16, torch.bfloat16)

#: Names usable as the ``base`` of ici / dici / blob (the registered pixel-wise baselines).
BASE_NAMES = ("dice", "bce", "focal", "dicece", "dicefocal", "gdicefocal")

# Parameters of each baseline beyond the activation flags (which the compound loss owns).
_BASE_PARAMS: dict[str, dict[str, Any]] = {
    "dice": {"squared_pred": False, "jaccard": False, "smooth_nr": 1e-5, "smooth_dr": 1e-5, "batch": False},
    "bce": {},
    "focal": {"gamma": 2.0, "alpha": None},
    "dicece": {
        "squared_pred": False,
        "jaccard": False,
        "smooth_nr": 1e-5,
        "smooth_dr": 1e-5,
        "batch": False,
        "lambda_dice": 1.0,
        "lambda_ce": 1.0,
    },
    "dicefocal": {
        "squared_pred": False,
        "jaccard": False,
        "smooth_nr": 1e-5,
        "smooth_dr": 1e-5,
        "batch": False,
        "gamma": 2.0,
        "alpha": None,
        "lambda_dice": 1.0,
        "lambda_focal": 1.0,
    },
    "gdicefocal": {
        "w_type": "square",
        "smooth_nr": 1e-5,
        "smooth_dr": 1e-5,
        "batch": False,
        "gamma": 2.0,
        "alpha": None,
        "lambda_gdl": 1.0,
        "lambda_focal": 1.0,
    },
}


@dataclass(frozen=True)
class BaseSpec:
    """A pixel loss in sufficient-sum form (see the module docstring).

    Attributes:
        name: baseline name (one of :data:`BASE_NAMES`).
        dice: ``None``, ``"dice"`` or ``"gdice"``: the overlap part.
        elem: ``None``, ``"bce"`` or ``"focal"``: the per-voxel part (mean over voxels).
        lambda_dice: weight of the overlap part.
        lambda_elem: weight of the per-voxel part.
        dice_name: term name of the overlap part in ``terms()`` ("dice" or "gdice").
        elem_name: term name of the per-voxel part ("bce", "ce" or "focal").
        squared_pred: ``P = sum(q^2)`` and ``G = sum(y^2)`` (MONAI ``squared_pred``).
        jaccard: Jaccard form of the overlap part (MONAI ``jaccard``).
        smooth_nr: numerator smoothing.
        smooth_dr: denominator smoothing.
        batch: reduce the overlap sums over the batch too (MONAI ``batch``; global term only).
        w_type: generalised Dice weight ("square", "simple", "uniform").
        gamma: focal exponent.
        alpha: focal class balance (weight of positives) or ``None``.
    """

    name: str
    dice: str | None = None
    elem: str | None = None
    lambda_dice: float = 1.0
    lambda_elem: float = 1.0
    dice_name: str = "dice"
    elem_name: str = "bce"
    squared_pred: bool = False
    jaccard: bool = False
    smooth_nr: float = 1e-5
    smooth_dr: float = 1e-5
    batch: bool = False
    w_type: str = "square"
    gamma: float = 2.0
    alpha: float | None = None


def check_flag(name: str, value: Any) -> bool:
    """Return ``value`` if it is a bool, else raise a :class:`ConfigError`."""
    if not isinstance(value, bool):
        raise expect(name, "a bool", repr(value))
    return value


def check_nonneg(name: str, value: Any) -> float:
    """Return ``float(value)`` if it is a finite real >= 0, else raise a :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise expect(name, "a finite number >= 0", repr(value))
    return float(value)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a :class:`ConfigError` with a suggestion."""
    if value not in choices:
        raise expect(name, f"one of {list(choices)}", repr(value), suggest(str(value), choices).strip())
    return value


def make_base_spec(base: str | dict[str, Any], *, owner: str = "base") -> BaseSpec:
    """Validate a ``base`` argument (a baseline name, or a dict ``{"name": ..., **params}``) into a spec.

    Activation options (``sigmoid``, ``softmax``, ``include_background``, ``to_onehot_y``) belong to the loss
    that uses the base and are rejected here.

    Raises:
        ConfigError: unknown name or parameter, or an invalid parameter value.
    """
    if isinstance(base, dict):
        params = dict(base)
        name = params.pop("name", None)
    else:
        name, params = base, {}
    if name not in BASE_NAMES:
        raise expect(
            owner,
            f"one of {list(BASE_NAMES)} or a dict with such a 'name'",
            repr(name),
            suggest(str(name), BASE_NAMES).strip(),
        )
    allowed = _BASE_PARAMS[name]
    for key in params:
        if key not in allowed:
            raise ConfigError(
                f"`{key}` is not a parameter of base {name!r} in `{owner}`; valid parameters: {list(allowed)} "
                "(activation options belong to the outer loss)." + suggest(key, list(allowed))
            )
    p = {**allowed, **params}
    _check_base_values(p)
    return _spec(name, p)


def _check_base_values(p: dict[str, Any]) -> None:
    """Check the values of a base's parameters (flags, non-negative numbers, alpha, w_type)."""
    for key in ("squared_pred", "jaccard", "batch"):
        if key in p:
            check_flag(key, p[key])
    for key in ("smooth_nr", "smooth_dr", "gamma", "lambda_dice", "lambda_ce", "lambda_focal", "lambda_gdl"):
        if key in p:
            check_nonneg(key, p[key])
    if p.get("alpha") is not None:
        a = p["alpha"]
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 <= a <= 1:
            raise expect("alpha", "None or a number in [0, 1]", repr(a))
    if "w_type" in p:
        check_choice("w_type", p["w_type"], ("square", "simple", "uniform"))


def _spec(name: str, p: dict[str, Any]) -> BaseSpec:
    """The :class:`BaseSpec` of baseline ``name`` with validated parameters ``p``."""
    common = {k: p[k] for k in ("smooth_nr", "smooth_dr", "batch") if k in p}
    if name == "dice":
        return BaseSpec(name, dice="dice", squared_pred=p["squared_pred"], jaccard=p["jaccard"], **common)
    if name == "bce":
        return BaseSpec(name, elem="bce", elem_name="bce")
    if name == "focal":
        return BaseSpec(name, elem="focal", elem_name="focal", gamma=float(p["gamma"]), alpha=p["alpha"])
    if name == "dicece":
        return BaseSpec(
            name, dice="dice", elem="bce", elem_name="ce", lambda_dice=float(p["lambda_dice"]),
            lambda_elem=float(p["lambda_ce"]), squared_pred=p["squared_pred"], jaccard=p["jaccard"], **common,
        )  # fmt: skip
    if name == "dicefocal":
        return BaseSpec(
            name, dice="dice", elem="focal", elem_name="focal", lambda_dice=float(p["lambda_dice"]),
            lambda_elem=float(p["lambda_focal"]), squared_pred=p["squared_pred"], jaccard=p["jaccard"],
            gamma=float(p["gamma"]), alpha=p["alpha"], **common,
        )  # fmt: skip
    return BaseSpec(
        name, dice="gdice", dice_name="gdice", elem="focal", elem_name="focal", lambda_dice=float(p["lambda_gdl"]),
        lambda_elem=float(p["lambda_focal"]), w_type=p["w_type"], gamma=float(p["gamma"]), alpha=p["alpha"], **common,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# input validation and activation


@dataclass
class Prepared:
    """Validated tensors of one call, channels already selected.

    Attributes:
        prob: probabilities ``(B, C', *spatial)`` (differentiable).
        logits: the raw input for the kept channels when ``sigmoid=True`` (for numerically exact BCE/focal),
            else ``None``.
        target: float 0/1 target ``(B, C', *spatial)``.
        target_mask: ``target == 1`` as a bool tensor of the same shape (a by-product of validating the target;
            computed on first use when validation did not produce it), for the instance losses' labelling.
    """

    prob: torch.Tensor
    logits: torch.Tensor | None
    target: torch.Tensor
    _mask: torch.Tensor | None = None

    @property
    def target_mask(self) -> torch.Tensor:
        if self._mask is None:
            self._mask = self.target.detach() > 0.5
        return self._mask


def check_activation(sigmoid: Any, softmax: Any, include_background: Any, to_onehot_y: Any) -> None:
    """Validate the MONAI activation flags once (constructor time)."""
    check_flag("sigmoid", sigmoid)
    check_flag("softmax", softmax)
    check_flag("include_background", include_background)
    check_flag("to_onehot_y", to_onehot_y)
    if sigmoid and softmax:
        raise ConfigError("`sigmoid` and `softmax` must not both be True, got sigmoid=True, softmax=True")


def _binary_mask(t: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``(t == 1, every entry is 0 or 1)`` for a floating tensor; CPU tensors through numpy (cheaper there)."""
    if use_numpy(t):
        a = t.numpy()
        ones = a == 1
        return torch.from_numpy(ones), np.count_nonzero(ones) + np.count_nonzero(a == 0) == a.size
    ones = t == 1
    return ones, bool((ones | (t == 0)).all())


def prepare(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    sigmoid: bool,
    softmax: bool,
    include_background: bool,
    to_onehot_y: bool,
) -> Prepared:
    """Validate ``input``/``target`` (before any computation) and return probabilities and a float target.

    float16/bfloat16 inputs are computed in float32 (see :data:`HALF_DTYPES`): the returned probabilities, and so
    every loss value, are float32, and the gradient reaches the half-precision input through the cast.

    Raises:
        ShapeError: not tensors of shape ``(B, C, *spatial)`` with 2 or 3 spatial dims, mismatched shapes,
            ``softmax`` / ``include_background=False`` / ``to_onehot_y`` with one channel.
        DataError: non-finite input, probabilities outside [0, 1] without activation, non-binary target
            (or class indices out of range with ``to_onehot_y``).
    """
    if not isinstance(input, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise DataError(
            f"`input` and `target` must be torch.Tensor, got {type(input).__name__} and {type(target).__name__}"
        )
    if input.ndim not in (4, 5):
        raise ShapeError(
            f"`input` must have shape (B, C, H, W) or (B, C, D, H, W) (2 or 3 spatial dims), got shape "
            f"{tuple(input.shape)} ({input.ndim - 2} spatial dims)"
        )
    if not input.is_floating_point():
        raise DataError(f"`input` must be a floating tensor, got dtype {input.dtype}")
    if input.dtype in HALF_DTYPES:
        # Half-precision inputs (a network under autocast) are upcast once, here: every sum, weight and instance
        # statistic after this point is accumulated in float32 (bfloat16 keeps 8 significant bits, so sums over
        # thousands of voxels drift by several percent, and inverse-weighting weights up to 2e5 overflow float16).
        # The gradient flows back through the cast in the input's dtype.
        input = input.float()
    _check_shapes(input, target, softmax=softmax, include_background=include_background, to_onehot_y=to_onehot_y)
    _check_input_values(input, probabilities=not sigmoid and not softmax)
    y, mask = _target(input, target, to_onehot_y)
    logits = input if sigmoid else None
    prob = torch.sigmoid(input) if sigmoid else torch.softmax(input, dim=1) if softmax else input
    if not include_background:
        prob, y = prob[:, 1:], y[:, 1:]
        logits = logits[:, 1:] if logits is not None else None
        mask = mask[:, 1:] if mask is not None else None
    return Prepared(prob, logits, y, mask)


def _check_shapes(
    input: torch.Tensor, target: torch.Tensor, *, softmax: bool, include_background: bool, to_onehot_y: bool
) -> None:
    """Target shape against the input's; options that need more than one channel."""
    n_ch = input.shape[1]
    if to_onehot_y:
        if n_ch == 1:
            raise ShapeError("`to_onehot_y` needs an input with more than one channel, got 1 channel")
        if target.shape != (input.shape[0], 1, *input.shape[2:]):
            raise ShapeError(
                f"`target` must have shape {(input.shape[0], 1, *input.shape[2:])} (class indices) with "
                f"to_onehot_y=True, got {tuple(target.shape)}"
            )
    elif target.shape != input.shape:
        raise ShapeError(f"`target` must have the shape of `input` {tuple(input.shape)}, got {tuple(target.shape)}")
    if softmax and n_ch == 1:
        raise ShapeError("`softmax=True` needs more than one channel, got 1 channel (use sigmoid=True)")
    if not include_background and n_ch == 1:
        raise ShapeError("`include_background=False` needs more than one channel, got 1 channel")


def _check_input_values(input: torch.Tensor, *, probabilities: bool) -> None:
    """Finite values; values in [0, 1] when the input holds probabilities."""
    x = input.detach()
    # one cheap reduction first: a finite sum proves every value finite (the full test only runs otherwise)
    if not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
        raise DataError("`input` must be finite, got NaN or inf values")
    if probabilities and input.numel():
        lo, hi = (float(v) for v in torch.aminmax(x))
        if lo < 0 or hi > 1:
            raise DataError(
                f"`input` must hold probabilities in [0, 1] when sigmoid=False and softmax=False, got values in "
                f"[{lo:.4g}, {hi:.4g}]",
            )


def _target(input: torch.Tensor, target: torch.Tensor, to_onehot_y: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The validated target in the input's dtype (one-hot with ``to_onehot_y``) and the ``target == 1`` mask.

    The mask (the instance losses' labelling input) comes for free from the binary check of a floating target;
    otherwise it is ``None`` and computed on first use.
    """
    if target.is_complex():
        raise DataError(f"`target` must be real, got dtype {target.dtype}")
    n_ch = input.shape[1]
    if to_onehot_y:
        t = target.long()
        if not bool((t == target).all()) or (t.numel() and (int(t.min()) < 0 or int(t.max()) >= n_ch)):
            raise DataError(f"`target` must hold class indices in 0..{n_ch - 1} with to_onehot_y=True")
        return F.one_hot(t[:, 0], n_ch).movedim(-1, 1).to(input.dtype), None
    mask = None
    if target.dtype == torch.bool:
        binary = True
    elif not target.is_floating_point():
        binary = not target.numel() or bool((torch.aminmax(target)[0] >= 0) & (torch.aminmax(target)[1] <= 1))
    else:
        mask, binary = _binary_mask(target.detach())
    if not binary:
        vals = torch.unique(target.flatten())[:5].tolist()
        raise DataError(f"`target` must be binary (0/1 or bool), got values including {vals}")
    return target.to(input.dtype), mask


# ----------------------------------------------------------------------------------------------------------------
# sufficient-sum evaluation


def pred_stat(spec: BaseSpec, q: torch.Tensor) -> torch.Tensor:
    """What ``P`` sums per voxel: ``q`` or ``q^2`` (``squared_pred``)."""
    return q * q if spec.squared_pred else q


def gdice_weights(spec: BaseSpec, ground: torch.Tensor) -> torch.Tensor:
    """Generalised Dice class weights from the label sums ``G``: ``1/G^2`` (square), ``1/G`` (simple) or 1."""
    if spec.w_type == "square":
        return 1.0 / (ground * ground)
    if spec.w_type == "simple":
        return 1.0 / ground
    return torch.ones_like(ground)


def dice_from_sums(spec: BaseSpec, inter: torch.Tensor, pred: torch.Tensor, ground: torch.Tensor) -> torch.Tensor:
    """The overlap part from sums (elementwise over entries); MONAI ``DiceLoss`` / single-class GDL formulas.

    ``dice``: ``1 - (2 I + s_nr) / (P + G + s_dr)`` (Jaccard: denominator ``2 (P + G - I) + s_dr``).
    ``gdice`` (one class): weight ``w = 1/G^2`` (square), ``1/G`` (simple) or 1, and ``w = 0`` when ``G = 0``
    (MONAI replaces infinite weights by the largest finite one, which is 0 for a single class):
    ``1 - (2 w I + s_nr) / (w (P + G) + s_dr)``.
    """
    if spec.dice == "gdice":
        g = ground.to(inter.dtype)
        w = gdice_weights(spec, torch.where(g > 0, g, torch.ones_like(g)))
        w = torch.where(g > 0, w, torch.zeros_like(w))
        return 1.0 - (2.0 * w * inter + spec.smooth_nr) / (w * (pred + g) + spec.smooth_dr)
    den = pred + ground
    if spec.jaccard:
        den = 2.0 * (den - inter)
    return 1.0 - (2.0 * inter + spec.smooth_nr) / (den + spec.smooth_dr)


def elementwise(spec: BaseSpec, q: torch.Tensor, y: torch.Tensor | float) -> torch.Tensor:
    """Per-voxel BCE / focal term on probabilities ``q`` in [0, 1] (``log`` clamped at -100 like PyTorch).

    ``f(0, 0) = 0`` for both, which the instance losses rely on (voxels outside a masked output cost nothing).
    """
    y = torch.as_tensor(y, dtype=q.dtype, device=q.device).expand_as(q)
    bce = F.binary_cross_entropy(q, y, reduction="none")
    if spec.elem == "bce":
        return bce
    one_minus_pt = y * (1 - q) + (1 - y) * q
    loss = one_minus_pt.pow(spec.gamma) * bce if spec.gamma != 0 else bce
    if spec.alpha is not None:
        loss = loss * (y * spec.alpha + (1 - y) * (1 - spec.alpha))
    return loss


def elementwise_logits(spec: BaseSpec, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-voxel BCE / focal term from logits, written as MONAI's (numerically stable) sigmoid focal loss."""
    bce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    if spec.elem == "bce":
        return bce
    loss = (F.logsigmoid(-x * (y * 2 - 1)) * spec.gamma).exp() * bce
    if spec.alpha is not None:
        loss = loss * (y * spec.alpha + (1 - y) * (1 - spec.alpha))
    return loss


def entry_loss(
    spec: BaseSpec,
    inter: torch.Tensor,
    pred: torch.Tensor,
    ground: torch.Tensor,
    elem_sum: torch.Tensor | None,
    n_voxels: int,
) -> torch.Tensor:
    """Base loss of many binary problems at once from their sums (``elem_sum`` is ignored without ``elem``)."""
    out = None
    if spec.dice is not None:
        out = dice_from_sums(spec, inter, pred, ground)
        out = out if spec.lambda_dice == 1.0 else spec.lambda_dice * out
    if spec.elem is not None:
        part = spec.lambda_elem * elem_sum / n_voxels
        out = part if out is None else out + part
    return torch.zeros_like(pred) if out is None else out


def image_sums(
    spec: BaseSpec, q: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(I, P, G, E)`` per row of ``q, y`` of shape ``(K, V)`` (one binary image per row)."""
    inter = (q * y).sum(1)
    pred = pred_stat(spec, q).sum(1)
    ground = (y * y if spec.squared_pred else y).sum(1)
    elem = elementwise(spec, q, y).sum(1) if spec.elem is not None else None
    return inter, pred, ground, elem


class _SumAndGather(torch.autograd.Function):
    """Per-image ``sum(p)`` (or ``sum(p^2)``) and a gather of ``p`` at flat positions, one backward volume pass.

    Separately, autograd would build the sum's gradient (an expanded volume) and, for the gather, a zero volume
    with the gathered gradients scattered into it, then add the two volumes. Here the backward writes the sum's
    gradient once and scatters the gathered gradients into it in place (duplicate positions accumulate).

    With ``sigmoid`` the differentiable input ``x2`` is the logits and ``p2`` the (detached) probabilities
    ``sigmoid(x2)``: the sigmoid's backward, ``grad * (1 - p) * p``, is linear in ``grad``, so the volume is written
    once as the per-image sum's gradient times ``(1 - p) * p`` and the gathered gradients, times the same factor at
    their positions, are added to it (no separate full-volume gradient of the probabilities). Without it ``x2`` is
    ``p2`` itself.
    """

    @staticmethod
    def forward(
        ctx: Any, x2: torch.Tensor, p2: torch.Tensor, index: torch.Tensor, sigmoid: bool, square: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        read = p2.reshape(-1).index_select(0, index)
        ctx.save_for_backward(index, p2 if sigmoid or square else None, read if sigmoid else None)
        ctx.shape, ctx.dtype, ctx.sigmoid, ctx.square = p2.shape, p2.dtype, sigmoid, square
        sums = torch.linalg.vecdot(p2, p2) if square else p2.sum(1)
        return sums, read

    @staticmethod
    def backward(ctx: Any, g_sum: torch.Tensor | None, g_read: torch.Tensor | None) -> tuple[Any, ...]:
        index, p2, read = ctx.saved_tensors
        if g_sum is None:
            grad = torch.zeros(ctx.shape, dtype=ctx.dtype, device=index.device)
        elif ctx.square:  # d sum(p^2) = 2 p g
            grad = p2 * (2.0 * g_sum)[:, None]
            if ctx.sigmoid:
                grad = torch.ops.aten.sigmoid_backward(grad, p2)
        elif ctx.sigmoid:  # g * (1 - p) * p in one pass over the volume, from the unmaterialised per-image g
            grad = torch.ops.aten.sigmoid_backward(g_sum[:, None].expand(ctx.shape), p2)
        else:
            grad = torch.empty(ctx.shape, dtype=ctx.dtype, device=index.device)
            grad.copy_(g_sum[:, None].expand(ctx.shape))
        if g_read is not None:
            g_read = g_read.to(grad.dtype)
            if ctx.sigmoid:
                g_read = g_read * (read - read * read)
            grad.view(-1).index_add_(0, index, g_read)
        return grad, None, None, None, None


def sum_and_gather(prep: Prepared, index: torch.Tensor, *, square: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (image, channel) ``sum(p)`` (``sum(p^2)`` with ``square``) and ``p`` at flat positions ``index``.

    ``index`` points into the flattened ``(B * C', *spatial)`` probabilities. Both outputs are differentiable and
    share one backward pass over the volume (:class:`_SumAndGather`); with ``sigmoid=True`` inputs the gradient
    goes straight to the logits. Returns ``(sums (B * C',), values (len(index),))``.
    """
    p = prep.prob
    shape = (p.shape[0] * p.shape[1], math.prod(p.shape[2:]))
    pf = p.reshape(-1)
    if prep.logits is not None and prep.logits.requires_grad:  # sigmoid: its backward joins the gather's
        return _SumAndGather.apply(prep.logits.reshape(shape), pf.detach().view(shape), index, True, square)
    return _SumAndGather.apply(pf.view(shape), pf.view(shape), index, False, square)


def baseline_terms(spec: BaseSpec, prep: Prepared) -> dict[str, torch.Tensor]:
    """The pixel-wise baseline ``spec`` on a whole prepared batch, MONAI semantics; terms plus ``"total"``.

    A part whose weight (``lambda_*``) is 0 is neither computed nor returned.

    Overlap part per (image, channel) (or per channel with ``batch``; generalised Dice sums its weighted
    channels per image), mean over the rest; per-voxel part: mean over every voxel of every channel.
    """
    p, y = prep.prob, prep.target
    b, c = p.shape[:2]
    pf = p.reshape(b, c, -1)
    yf = y.reshape(b, c, -1)
    terms: dict[str, torch.Tensor] = {}
    total = None
    if spec.dice is not None and spec.lambda_dice > 0:
        axes = (0, 2) if spec.batch else (2,)
        inter = (pf * yf).sum(axes)
        pred = pred_stat(spec, pf).sum(axes)
        ground = (yf * yf if spec.squared_pred else yf).sum(axes)
        if spec.dice == "gdice":
            w = gdice_weights(spec, ground)
            inf = torch.isinf(w)
            w = torch.where(inf, torch.zeros_like(w), w)
            w = w + inf * (w.max() if spec.batch else w.max(dim=-1, keepdim=True)[0])
            numer = 2.0 * (inter * w).sum(-1) + spec.smooth_nr
            denom = ((pred + ground) * w).sum(-1) + spec.smooth_dr
            d = (1.0 - numer / denom).mean()
        else:
            d = dice_from_sums(spec, inter, pred, ground).mean()
        terms[spec.dice_name] = d
        total = spec.lambda_dice * d
    if spec.elem is not None and spec.lambda_elem > 0:
        if prep.logits is not None:
            e = elementwise_logits(spec, prep.logits, y).mean()
        else:
            e = elementwise(spec, p, y).mean()
        terms[spec.elem_name] = e
        total = spec.lambda_elem * e if total is None else total + spec.lambda_elem * e
    terms["total"] = p.sum() * 0.0 if total is None else total  # every weight 0: a zero still on the graph
    return terms
