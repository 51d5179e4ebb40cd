r"""The term algebra of ``ici`` (Eq. 1) and ``dici`` (Eq. 6), vectorised over instances.

.. math::

    \mathcal{L}_{ICI} = a\,\mathcal{L}_{global} + b\,\mathcal{L}_{instance} + c\,\mathcal{L}_{center}
    \qquad
    \mathcal{L}_{DICI} = a\,\mathcal{L}_{global} + b\,\mathcal{L}_{instance} + c\,\mathcal{L}_{predicted}
        + d\,\mathcal{L}_{center}

The instance term (Eq. 3) of label instance n is ``base(out_n, [n])`` where ``out_n`` keeps the probabilities of
the prediction components touching n (``tp_mode`` says what happens to other label instances inside them). That
masked output is never built: its base-loss sums ``I_n = sum(out_n * [n])`` and ``P_n = sum(out_n)`` are added
from per-pair sums (voxels shared by n and a touching component m) and per-component sums (all of m's voxels, or
only its background voxels) over the pair table. The predicted-instance term of DICI swaps the roles of n and m.
The center term (Eq. 4) compares the union of the label cubes with the union of the prediction cubes.

A term whose weight is 0 is neither computed nor returned, and nothing is labelled for it. With a base whose sums
are linear in the probabilities (Dice type, the default) every sum comes from two ``index_add`` calls
(:func:`linear_terms`); other bases sum per-voxel statistics term by term (:func:`general_terms`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lossbench.losses._core import (
    Prepared,
    baseline_terms,
    dice_from_sums,
    elementwise,
    entry_loss,
    image_sums,
    pred_stat,
    sum_and_gather,
)
from lossbench.losses.ici.geometry import CenterGeometry
from lossbench.losses.ici.options import ICIConfig
from lossbench.losses.ici.structure import InstanceStructure, build_structure, linear_base
from lossbench.ops import flat_nonzero, segment_sum

__all__ = ["instance_terms", "linear_terms", "general_terms", "REFERENCE_CUBE_VALUE"]

#: The constant the public code writes into both cube maps (so the reference center term has no gradient).
REFERENCE_CUBE_VALUE = 1.0 + 1e-7


@dataclass
class _Values:
    """Per-entry values of the terms before their reductions (``None``: not computed)."""

    global_: torch.Tensor | None = None  # scalar
    instance: torch.Tensor | None = None  # per label instance
    predicted: torch.Tensor | None = None  # per used prediction component
    center: torch.Tensor | None = None  # scalar


def instance_terms(cfg: ICIConfig, prep: Prepared) -> dict[str, torch.Tensor]:
    """The single implementation behind ``ici``/``dici``: every term with a non-zero weight and the weighted total.

    Args:
        cfg: validated options.
        prep: validated, activated tensors (probabilities ``(B, C', *spatial)``, binary target).

    Returns:
        scalar tensors: some of "global", "instance", "center" (DICI also "predicted"), and "total".
    """
    want = {term for term, weight in cfg.weights.items() if weight > 0}
    if want <= {"global"}:  # nothing to label for
        terms = {"global": baseline_terms(cfg.base, prep)["total"]} if want else {}
        return _weighted(cfg, terms, prep)
    st = build_structure(cfg, prep, pairs=bool(want & {"instance", "predicted"}), center="center" in want)
    compute = linear_terms if linear_base(cfg) else general_terms
    values = compute(cfg, prep, st, want)
    n_ch = prep.prob.shape[1]
    terms: dict[str, torch.Tensor] = {}
    if values.global_ is not None:
        terms["global"] = values.global_
    if values.instance is not None:
        # Eq. 3's 1/Z; an image without label instance contributes one entry: its whole-image base(prob, 0)
        vals, imgs = _with_empty_images(cfg, prep, st, values.instance, st.label_image, st.label_counts, label=False)
        terms["instance"] = _reduce(vals, imgs, st.n_img, n_ch, cfg.reduction)
    if values.predicted is not None:
        # an image without used prediction component contributes one entry: its whole-image base(prob, label)
        vals, imgs = _with_empty_images(cfg, prep, st, values.predicted, st.pred_image, st.pred_counts, label=True)
        terms["predicted"] = _reduce(vals, imgs, st.n_img, n_ch, cfg.reduction)
    if values.center is not None:
        terms["center"] = values.center
    return _weighted(cfg, terms, prep)


def _weighted(cfg: ICIConfig, terms: dict[str, torch.Tensor], prep: Prepared) -> dict[str, torch.Tensor]:
    """Add ``"total"``: the weighted sum of the terms, in the order of the equation."""
    total = None
    for name, weight in cfg.weights.items():
        if name in terms:
            part = weight * terms[name]
            total = part if total is None else total + part
    if total is None:  # every weight is 0: a zero that is still attached to the graph
        total = prep.prob.sum() * 0.0
    return {**terms, "total": total}


def _with_empty_images(
    cfg: ICIConfig,
    prep: Prepared,
    st: InstanceStructure,
    values: torch.Tensor,
    image: torch.Tensor,
    counts: torch.Tensor,
    *,
    label: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Append one entry per image without entries (``counts == 0``).

    The entry is the whole-image base against the label (``label=True``) or against an empty mask.
    """
    empty = torch.nonzero(counts == 0, as_tuple=True)[0]
    if not empty.numel():
        return values, image
    p = prep.prob.reshape(st.n_img, st.n_vox)[empty]
    y = prep.target.reshape(st.n_img, st.n_vox)[empty] if label else torch.zeros_like(p)
    extra = entry_loss(cfg.base, *image_sums(cfg.base, p, y), st.n_vox)
    return torch.cat([values, extra]), torch.cat([image, empty])


def _reduce(vals: torch.Tensor, imgs: torch.Tensor, n_images: int, n_channels: int, mode: str) -> torch.Tensor:
    """Mean of per-entry values: over all entries of a channel ("instance") or per image first ("image").

    Channels are the fastest axis of the flattened ``(B * C')`` images; the result is the mean over channels.
    """
    if mode == "image":
        per_img = vals.new_zeros(n_images).index_add(0, imgs, vals)
        cnt = torch.bincount(imgs, minlength=n_images).clamp(min=1)
        return (per_img / cnt).mean()
    ch = imgs % n_channels
    per_ch = vals.new_zeros(n_channels).index_add(0, ch, vals)
    cnt = torch.bincount(ch, minlength=n_channels).clamp(min=1)
    return (per_ch / cnt).mean()


# ------------------------------------------------------------------------------------------------------------
# linear bases: every sum from one gather and two index_adds


class _Slots:
    """Named ranges of one accumulator, filled by a list of (positions to read, slot of each) in a fixed order."""

    def __init__(self) -> None:
        self.start: dict[str, int] = {}
        self.size = 0
        self.reads: list[torch.Tensor] = []
        self.slots: list[torch.Tensor] = []

    def add(self, name: str, n: int) -> int:
        """Reserve ``n`` slots named ``name``; returns the first."""
        self.start[name] = self.size
        self.size += n
        return self.start[name]

    def feed(self, positions: torch.Tensor, slots: torch.Tensor) -> None:
        """Entries to sum: the probability at each flat position goes to the given slot."""
        self.reads.append(positions)
        self.slots.append(slots)

    def view(self, sums: torch.Tensor, name: str, n: int) -> torch.Tensor:
        """The ``n`` sums of range ``name``."""
        return sums[self.start[name] : self.start[name] + n]


def linear_terms(cfg: ICIConfig, prep: Prepared, st: InstanceStructure, want: set[str]) -> _Values:
    """Per-entry term values for a base linear in the probabilities (Dice type without ``squared_pred``).

    Stage 1 (:func:`_slot_sums`) gathers the probabilities once and sums them into slots; stage 2
    (:func:`_instance_sums`) sums slots into each instance's ``I`` and ``P`` over the pair table, each image's
    prediction-cube mass outside the label cubes and DICI's per-component ``I``. The base loss then runs on these.
    """
    spec = cfg.base
    geom = st.geometry
    trainable = geom is not None and cfg.center_mode == "trainable"
    fused = "global" in want and spec.dice == "dice" and not spec.batch  # global sums from the same gather
    slots, sums, p_read, psum = _slot_sums(cfg, prep, st, want, trainable=trainable, fused=fused)
    acc = _instance_sums(cfg, st, slots, sums, want, trainable)
    out = _Values()
    if fused:
        ground = torch.bincount(slots.slots[-1] - slots.start["global"], minlength=st.n_img).to(sums.dtype)
        out.global_ = dice_from_sums(spec, slots.view(sums, "global", st.n_img), psum, ground).mean()
    elif "global" in want:
        out.global_ = baseline_terms(spec, prep)["total"]
    if "instance" in want:
        out.instance = entry_loss(spec, acc["inter_n"], acc["pred_n"], st.label_size[1:], None, st.n_vox)
    if trainable:
        inter = geom.both.to(sums.dtype) + slots.view(sums, "label_only", st.n_img)
        pred = inter + acc["mass"]
        out.center = entry_loss(spec, inter, pred, geom.label.to(sums.dtype), None, st.n_vox).mean()
    elif geom is not None:
        out.center = _reference_center(cfg, geom, p_read, st.n_vox)
    if "predicted" in want:
        pairs = st.pairs
        ground_m = sums.new_zeros(st.n_pred + 1).index_add(0, pairs.pred, st.label_size[pairs.label])[1:]
        pred_m = slots.view(sums, "component", st.n_pred)
        out.predicted = entry_loss(spec, acc["inter_m"], pred_m, ground_m, None, st.n_vox)
    return out


def _slot_sums(
    cfg: ICIConfig, prep: Prepared, st: InstanceStructure, want: set[str], *, trainable: bool, fused: bool
) -> tuple[_Slots, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Stage 1: one gather of the probabilities, summed into named slots with one ``index_add``.

    Slots: per pair (shared voxels), per prediction component (all its voxels), per component background (its
    voxels outside every label instance, as ``p * stopgrad(p)`` for "remove_detached"), per image (its label voxels
    for the global Dice; its label-cube voxels outside every prediction cube). Returns the slots, their sums, the
    gathered probabilities and, when the global term is fused in, the per-image ``sum(p)``.
    """
    pairs, geom = st.pairs, st.geometry
    set_difference = "instance" in want and cfg.tp_mode != "keep"
    slots = _Slots()
    pair0 = slots.add("pair", pairs.label.numel() if pairs is not None else 0)
    comp0 = slots.add("component", st.n_pred)
    bg0 = slots.add("background", st.n_pred if set_difference else 0)
    glob0 = slots.add("global", st.n_img if fused else 0)
    lonly0 = slots.add("label_only", st.n_img if trainable else 0)
    if pairs is not None or trainable:
        slots.feed(st.pred_pos, comp0 - 1 + st.pred_ids)
    if set_difference:  # shared voxels per pair, the others per component background
        second = bg0 - 1 + st.pred_ids
        second.masked_scatter_(pairs.shared, pair0 + pairs.shared_pair)
        slots.feed(st.pred_pos, second)
    elif pairs is not None:  # only the shared voxels, per pair
        slots.feed(st.pred_pos[pairs.shared], pair0 + pairs.shared_pair)
    if trainable:
        slots.feed(geom.label_only_pos, lonly0 + geom.label_only_image)
    if fused:
        slots.feed(st.label_pos, glob0 + torch.div(st.label_pos, st.n_vox, rounding_mode="floor"))
    if not slots.reads:  # only the reference center: nothing to gather, the gather keeps the graph
        slots.feed(st.label_pos[:0], st.label_pos[:0])
    read = torch.cat(slots.reads)
    psum, p_read = sum_and_gather(prep, read) if fused else (None, prep.prob.reshape(-1).index_select(0, read))
    if set_difference and cfg.tp_mode == "remove_detached" and st.n_pred:  # background enters as p * stopgrad(p)
        factor = torch.ones_like(p_read)
        bg = st.pred_pos.numel() + flat_nonzero(~pairs.shared)
        factor[bg] = p_read.detach()[bg]
        p_read = p_read * factor
    sums = p_read.new_zeros(slots.size).index_add(0, torch.cat(slots.slots), p_read)
    return slots, sums, p_read, psum


def _instance_sums(
    cfg: ICIConfig, st: InstanceStructure, slots: _Slots, sums: torch.Tensor, want: set[str], trainable: bool
) -> dict[str, torch.Tensor]:
    """Stage 2 of :func:`linear_terms`: ``inter_n``, ``pred_n``, ``mass`` (per image) and ``inter_m``.

    ``I_n`` sums the pair slots of n; ``P_n`` sums, over the components m touching n, m's whole slot ("keep") or
    the pair slot and m's background slot (set difference); the mass is ``sum_b mean_b * w_b`` per image; ``I_m``
    (DICI) sums the pair slots of m. Ranges a term does not need stay empty.
    """
    pairs = st.pairs
    n_l = st.n_label if "instance" in want else 0
    n_m = st.n_pred if "predicted" in want else 0
    src: list[torch.Tensor] = []
    dst: list[torch.Tensor] = []
    if n_l:
        pair_idx = torch.arange(pairs.label.numel(), device=sums.device)
        into_n, into_p = pairs.label - 1, n_l - 1 + pairs.label
        src.append(slots.start["pair"] + pair_idx)
        dst.append(into_n)
        if cfg.tp_mode == "keep":  # P_n: the whole touching components
            src.append(slots.start["component"] - 1 + pairs.pred)
            dst.append(into_p)
        else:  # P_n: the shared voxels and the touching components' background
            src += [slots.start["pair"] + pair_idx, slots.start["background"] - 1 + pairs.pred]
            dst += [into_p, into_p]
    weight = None
    if trainable:  # prediction-cube mass outside the label cubes: sum_b mean_b * w_b
        size_p = torch.bincount(st.pred_ids, minlength=st.n_pred + 1)[1:].clamp(min=1)
        w_c = st.geometry.pred_cube_weight.to(sums.dtype) / size_p.to(sums.dtype)
        weight = torch.cat([torch.ones(sum(s.numel() for s in src), dtype=sums.dtype, device=sums.device), w_c])
        src.append(slots.start["component"] + torch.arange(st.n_pred, device=sums.device))
        dst.append(2 * n_l + st.pred_image)
    if n_m:  # DICI: I_m over the pairs
        src.append(slots.start["pair"] + torch.arange(pairs.label.numel(), device=sums.device))
        dst.append(2 * n_l + st.n_img - 1 + pairs.pred)
        if weight is not None:
            weight = torch.cat([weight, torch.ones(pairs.label.numel(), dtype=sums.dtype, device=sums.device)])
    acc = sums.new_zeros(2 * n_l + st.n_img + n_m)
    if src:
        terms = sums.index_select(0, torch.cat(src))
        acc = acc.index_add(0, torch.cat(dst), terms if weight is None else terms * weight)
    return {"inter_n": acc[:n_l], "pred_n": acc[n_l : 2 * n_l], "mass": acc[2 * n_l : 2 * n_l + st.n_img],
            "inter_m": acc[2 * n_l + st.n_img :]}  # fmt: skip


def _reference_center(cfg: ICIConfig, geom: CenterGeometry, p_read: torch.Tensor, n_vox: int) -> torch.Tensor:
    """The public code's center term: constant cube maps, so identically zero gradient (kept on the graph)."""
    center = center_value(cfg, geom, p_read[:0], None, None, geom.both.numel(), n_vox)
    return center + 0.0 * p_read.sum() if p_read.requires_grad else center


# ------------------------------------------------------------------------------------------------------------
# the center term's value from the geometry


def center_value(
    cfg: ICIConfig,
    geom: CenterGeometry,
    p_label_only: torch.Tensor,
    mean_p: torch.Tensor | None,
    pred_image: torch.Tensor | None,
    n_img: int,
    n_vox: int,
) -> torch.Tensor:
    """Center term from the geometry: per-image base loss of the two cube maps, mean over images.

    Reference maps hold the constant ``1 + 1e-7`` (counts suffice). Trainable prediction map (lossbench's design):
    1 on voxels in a label cube and a prediction cube, the mean of the covering cubes' component means on
    prediction-only voxels, the raw probability ``p_label_only`` on label-only voxels. The per-voxel part of the base
    sees values clipped to [0, 1].
    """
    spec = cfg.base
    dt = p_label_only.dtype
    both, label, pred = geom.both.to(dt), geom.label.to(dt), geom.pred.to(dt)
    if cfg.center_mode == "reference":
        v = REFERENCE_CUBE_VALUE
        sv = v * v if spec.squared_pred else v
        elem = None
        if spec.elem is not None:
            f = elementwise(spec, p_label_only.new_tensor([1.0, 0.0, 1.0]), p_label_only.new_tensor([0.0, 1.0, 1.0]))
            elem = f[0] * (pred - both) + f[1] * (label - both) + f[2] * both
        return entry_loss(spec, both * v * v, pred * sv, label * sv, elem, n_vox).mean()

    def per_image(img: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return p_label_only.new_zeros(n_img).index_add(0, img, values)

    inter = both + per_image(geom.label_only_image, p_label_only)
    pred_sum = both + per_image(geom.label_only_image, pred_stat(spec, p_label_only))
    elem = None
    if geom.pred_cube_weight is not None:  # linear base: the prediction-only voxels' mass through the cube weights
        pred_sum = pred_sum + per_image(pred_image, mean_p * geom.pred_cube_weight.to(dt))
    else:
        avg = geom.pred_only_average(mean_p)
        pred_sum = pred_sum + per_image(geom.pred_only_image, pred_stat(spec, avg))
        if spec.elem is not None:
            f11 = elementwise(spec, p_label_only.new_ones(1), 1.0)[0]
            elem = f11 * both + per_image(geom.pred_only_image, elementwise(spec, avg, 0.0))
            elem = elem + per_image(geom.label_only_image, elementwise(spec, p_label_only, 1.0))
    return entry_loss(spec, inter, pred_sum, label, elem, n_vox).mean()


# ------------------------------------------------------------------------------------------------------------
# any base: per-voxel statistics summed per component and per pair


def general_terms(cfg: ICIConfig, prep: Prepared, st: InstanceStructure, want: set[str]) -> _Values:
    """Per-entry term values for any base (``squared_pred``, cross-entropy and focal parts).

    Per-voxel statistics are summed per component and per pair, then per instance over the pair table. Linear
    bases take :func:`linear_terms` (the same values, fewer calls); the tests check the two against each other.
    """
    spec = cfg.base
    pf = prep.prob.reshape(-1)
    geom = st.geometry
    label_only_pos = geom.label_only_pos if geom is not None else st.pred_pos[:0]
    p_read = pf.index_select(0, torch.cat([st.pred_pos, label_only_pos]))  # backward: one index_add
    n_sel = st.pred_pos.numel()
    comp = _ComponentStats(cfg, p_read[:n_sel], st)
    out = _Values()
    if "global" in want:
        out.global_ = baseline_terms(spec, prep)["total"]
    if "instance" in want:
        out.instance = _general_instance(cfg, comp, st)
    if geom is not None:
        if cfg.center_mode == "trainable":
            sum_p = comp.stat if not spec.squared_pred else segment_sum(comp.p, st.pred_ids, st.n_pred)
            mean_p = sum_p[1:] / torch.bincount(st.pred_ids, minlength=st.n_pred + 1)[1:].clamp(min=1)
            out.center = center_value(cfg, geom, p_read[n_sel:], mean_p, st.pred_image, st.n_img, st.n_vox)
        else:
            out.center = _reference_center(cfg, geom, p_read, st.n_vox)
    if "predicted" in want:
        out.predicted = _general_predicted(cfg, comp, st)
    return out


class _ComponentStats:
    """Sums of per-voxel statistics of the prediction-component voxels, per component and per pair (any base)."""

    def __init__(self, cfg: ICIConfig, p: torch.Tensor, st: InstanceStructure) -> None:
        spec = cfg.base
        self.p = p
        self.background = (st.pred_label == 0).to(p.dtype)  # 1 on component voxels outside every label instance
        self.stat = segment_sum(pred_stat(spec, p), st.pred_ids, st.n_pred)  # whole component
        pairs = st.pairs
        if pairs is None:
            return
        self.n_pairs = pairs.label.numel()
        self.shared_p = p.index_select(0, flat_nonzero(pairs.shared))

        def per_pair(values: torch.Tensor) -> torch.Tensor:
            return p.new_zeros(self.n_pairs).index_add(0, pairs.shared_pair, values)

        self.per_pair = per_pair
        self.pair_p = per_pair(self.shared_p)
        self.pair_stat = self.pair_p if not spec.squared_pred else per_pair(self.shared_p * self.shared_p)
        if spec.elem is not None:
            self.f01 = elementwise(spec, p.new_zeros(1), 1.0)[0].detach()  # f(0, 1): a label voxel outside out_n
            self.f_shared_1 = per_pair(elementwise(spec, self.shared_p, 1.0))


def _general_instance(cfg: ICIConfig, comp: _ComponentStats, st: InstanceStructure) -> torch.Tensor:
    """The instance term's per-instance values for any base (``I_n``, ``P_n``, ``G_n`` and the per-voxel part)."""
    spec = cfg.base
    p, bg, pairs = comp.p, comp.background, st.pairs
    n_l, n_p = st.n_label, st.n_pred
    if cfg.tp_mode == "keep":
        pred_pair = comp.stat[pairs.pred]
    elif cfg.tp_mode == "remove":
        pred_pair = comp.pair_stat + segment_sum(pred_stat(spec, p) * bg, st.pred_ids, n_p)[pairs.pred]
    else:  # remove_detached
        detached_bg = segment_sum(pred_stat(spec, p * p.detach()) * bg, st.pred_ids, n_p)
        pred_pair = comp.pair_stat + detached_bg[pairs.pred]
    inter_n = p.new_zeros(n_l + 1).index_add(0, pairs.label, comp.pair_p)[1:]
    pred_n = p.new_zeros(n_l + 1).index_add(0, pairs.label, pred_pair)[1:]
    ground_n = st.label_size[1:]
    elem_n = None
    if spec.elem is not None:
        covered_n = p.new_zeros(n_l + 1).index_add(0, pairs.label, pairs.overlap.to(p.dtype))[1:]
        q_bg = p * p.detach() if cfg.tp_mode == "remove_detached" else p
        extra = segment_sum(elementwise(spec, q_bg, 0.0) * bg, st.pred_ids, n_p)[pairs.pred]
        if cfg.tp_mode == "keep":  # other label instances inside the component count as predicted background
            in_label_0 = segment_sum(elementwise(spec, p, 0.0) * (1 - bg), st.pred_ids, n_p)
            shared_0 = comp.per_pair(elementwise(spec, comp.shared_p, 0.0))
            extra = extra + in_label_0[pairs.pred] - shared_0
        summed = p.new_zeros(n_l + 1).index_add(0, pairs.label, comp.f_shared_1 + extra)[1:]
        elem_n = comp.f01 * (ground_n - covered_n) + summed
    return entry_loss(spec, inter_n, pred_n, ground_n, elem_n, st.n_vox)


def _general_predicted(cfg: ICIConfig, comp: _ComponentStats, st: InstanceStructure) -> torch.Tensor:
    """DICI's predicted-instance values for any base: component m against the label instances it touches."""
    spec = cfg.base
    p, pairs, n_p = comp.p, st.pairs, st.n_pred
    inter_m = p.new_zeros(n_p + 1).index_add(0, pairs.pred, comp.pair_p)[1:]
    ground_m = p.new_zeros(n_p + 1).index_add(0, pairs.pred, st.label_size[pairs.label])[1:]
    elem_m = None
    if spec.elem is not None:
        covered_m = p.new_zeros(n_p + 1).index_add(0, pairs.pred, pairs.overlap.to(p.dtype))[1:]
        background_0 = segment_sum(elementwise(spec, p, 0.0) * comp.background, st.pred_ids, n_p)
        shared_1 = p.new_zeros(n_p + 1).index_add(0, pairs.pred, comp.f_shared_1)
        elem_m = comp.f01 * (ground_m - covered_m) + (background_0 + shared_1)[1:]
    return entry_loss(spec, inter_m, comp.stat[1:], ground_m, elem_m, st.n_vox)
