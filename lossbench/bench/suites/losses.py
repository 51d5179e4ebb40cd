"""The ``losses`` suite: forward + backward of every registered loss, as ratios to Dice and to the labelling floor.

Cases per (size, batch): every registered loss with its defaults, the variants of :data:`LOSS_VARIANTS`, the
floor "Dice + labelling target and prediction" (cc3d on CPU, the torch backend on CUDA), and MONAI's own
``DiceLoss`` as an external reference (lossbench's ``dice`` adds input validation). Per size, a CC-Dice group
(batch 1, :mod:`lossbench.bench.suites.cc_dice`) times the exact Voronoi labelling and the CC-Dice losses with and
without it. The helpers that build loss cases are shared with the ``scaling`` suite.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lossbench.bench.masks import blob_masks, prediction_mask
from lossbench.bench.record import Recorder
from lossbench.bench.settings import BATCHES, TARGET_GPU_ICI_VS_DICE, TARGET_ICI_VS_FLOOR, common_fields
from lossbench.bench.suites.cc_dice import CC_DICE_LOSSES, run_cc_dice_group
from lossbench.bench.suites.common import entry_name, entry_params, import_or_error
from lossbench.bench.suites.steps import LossConfig, floor_labelling, floor_name, forward_backward, loss_inputs, prime
from lossbench.bench.timing import Case
from lossbench.errors import LossbenchError

__all__ = [
    "LOSS_VARIANTS",
    "MONAI_DICE",
    "run_losses_suite",
    "loss_configs",
    "loss_cases",
]

#: The external reference case of the losses suite (timed when MONAI is installed).
MONAI_DICE = "monai DiceLoss"

#: Extra configurations of the instance losses timed next to their defaults (kept when the registry accepts them).
#: ``ici``/``dici`` default to the published loss (``reference=True``: the public code's behaviour, caps included);
#: ``reference=False`` selects lossbench's own design (set difference, trainable center, no caps), ``tp_mode="keep"``
#: the paper's Eq. 3 without -TP.
LOSS_VARIANTS: tuple[LossConfig, ...] = (
    ("ici reference=False", "ici", {"reference": False}),
    ("ici tp_mode=keep", "ici", {"tp_mode": "keep"}),
    ("dici reference=False", "dici", {"reference": False}),
    ("blob base=dicece", "blob", {"base": "dicece"}),
)


def loss_configs(api: dict[str, Any], run: Recorder, suite: str) -> list[LossConfig]:
    """(label, registry name, params) for every registered loss plus the known variants the registry accepts."""
    entries = list(api["list_losses"]())
    configs: list[LossConfig] = []
    names = [entry_name(e) for e in entries]
    params = {entry_name(e): entry_params(e) for e in entries}
    for name in names:
        configs.append((name, name, {}))
    for label, name, kw in LOSS_VARIANTS:
        if name in names:
            configs.append((label, name, dict(kw)))
    if run.losses is not None:
        # a selection keeps a case whose registry name or case label it names; Dice stays (the ratios' denominator)
        configs = [c for c in configs if c[0] == "dice" or c[0] in run.losses or c[1] in run.losses]
    out = []
    for label, name, kw in configs:
        if "sigmoid" in params.get(name, {"sigmoid": True}):
            kw = {"sigmoid": True, **kw}
        try:
            api["build_loss"](name, **kw)
        except LossbenchError as exc:
            run.skip(suite, label, f"not buildable with {kw}: {exc}")
            continue
        out.append((label, name, kw))
    return out


def loss_cases(
    api: dict[str, Any],
    configs: list[LossConfig],
    target: np.ndarray,
    pred: np.ndarray,
    device: torch.device,
    floor_name: str,
) -> dict[str, Case]:
    """One forward+backward case per loss configuration on (target, pred), plus the labelling floor."""
    x, y = loss_inputs(target, pred, device)
    cases: dict[str, Case] = {}
    for label, name, kw in configs:
        loss = api["build_loss"](name, **kw)
        if isinstance(loss, torch.nn.Module):
            loss = loss.to(device)
        prime(loss, x, y)
        cases[label] = (forward_backward(loss, x, y), device)
    cases[floor_name] = (floor_labelling(target, pred, device), device)
    return cases


def monai_dice_case(target: np.ndarray, pred: np.ndarray, device: torch.device) -> Case | None:
    """MONAI's own ``DiceLoss(sigmoid=True)`` on the losses' inputs: what lossbench's ``dice`` costs on top of it.

    ``None`` when MONAI is not installed.
    """
    try:
        from monai.losses import DiceLoss
    except ImportError:
        return None
    x, y = loss_inputs(target, pred, device)
    return forward_backward(DiceLoss(sigmoid=True), x, y), device


def run_losses_suite(run: Recorder, sizes: list[tuple[int, ...]]) -> None:
    """Time every loss configuration on every size, batch 1 and 4, and record its ratios."""
    api = import_or_error(run, "losses", "lossbench.losses", ("build_loss", "list_losses"))
    if api is None:
        return
    configs = loss_configs(api, run, "losses")
    if "dice" not in [c[0] for c in configs]:
        run.error("losses", "(suite)", "the registry has no 'dice' loss: the ratios to Dice cannot be computed")
    registered = {c[1] for c in configs}
    with_cc_dice = any(k in registered for k in CC_DICE_LOSSES)
    for size in sizes:
        for batch in BATCHES:
            _losses_group(run, api, configs, size, batch)
        if with_cc_dice:
            run_cc_dice_group(run, api, size)


def _losses_group(
    run: Recorder, api: dict[str, Any], configs: list[LossConfig], size: tuple[int, ...], batch: int
) -> None:
    common = common_fields(size, batch)
    target = blob_masks(size, batch)
    pred = prediction_mask(target, 10, seed=batch)
    floor = floor_name(run.device)
    cases = loss_cases(api, configs, target, pred, run.device, floor)
    meta: dict[str, dict[str, Any]] = {label: {"params": kw} for label, _, kw in configs}
    monai_case = monai_dice_case(target, pred, run.device)
    if monai_case is not None:
        cases[MONAI_DICE] = monai_case
        meta[MONAI_DICE] = {"note": "external reference: monai.losses.DiceLoss(sigmoid=True), no input checks"}
    grp = f"{common['size']} B={batch}"
    med = run.group("losses", grp, cases, meta, common)
    del cases  # the closures hold the full-size inputs; free them before the next size
    if monai_case is not None:
        run.ratio(
            "losses", f"dice / {MONAI_DICE}", med.get("dice"), med.get(MONAI_DICE), common=common,
            numerator="dice", denominator=MONAI_DICE, group=grp, case="dice", short="/monai",
        )  # fmt: skip
    _loss_ratios(run, configs, med, size, batch, grp, common, floor)


def _loss_ratios(
    run: Recorder,
    configs: list[LossConfig],
    med: dict[str, float | None],
    size: tuple[int, ...],
    batch: int,
    grp: str,
    common: dict[str, Any],
    floor: str,
) -> None:
    """Each loss against Dice (GPU goal for ICI at 4x1x192^3) and against Dice + 2 labellings (target for ICI)."""
    dice = med.get("dice")
    floor_s = None if dice is None or med.get(floor) is None else dice + med[floor]
    on_gpu = run.device.type != "cpu"
    for label, name, _ in configs:
        if label == "dice":
            continue
        gpu_goal = on_gpu and label == "ici" and size == (192, 192, 192) and batch == 4
        run.ratio(
            "losses", f"{label} / dice", med.get(label), dice, common=common,
            numerator=label, denominator="dice", group=grp, case=label, short="/dice",
            target=TARGET_GPU_ICI_VS_DICE if gpu_goal else None, op="<=" if gpu_goal else None,
        )  # fmt: skip
        checked = name == "ici" and len(size) == 3 and size[0] in (96, 192) and len(set(size)) == 1
        run.ratio(
            "losses", f"{label} / (dice + 2 labellings)", med.get(label), floor_s, common=common,
            numerator=label, denominator=f"dice + {floor}", group=grp, case=label,
            short="/(dice+2cc)",
            target=TARGET_ICI_VS_FLOOR if checked else None, op="<=" if checked else None,
        )  # fmt: skip
