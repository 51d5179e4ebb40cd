"""The scaling suite's "noisy" scene: an untrained network's prediction, tens of thousands of components per image.

A batch of :data:`NOISY_BATCH` ATLAS-sized images (:data:`NOISY_SHAPE`), :data:`NOISY_LESIONS` lesions each
(:func:`~lossbench.bench.masks.lesions_mask`), logits ``4 * label - 2 + N(0, 1)``
(:func:`~lossbench.bench.masks.noisy_logits`): thresholded at probability 0.5 about 2.3 % of the background is
foreground, about 80,000 prediction components per image. Forward + backward (``sigmoid=True``) of the cases of
:data:`NOISY_CASES`, against the floor "Dice forward + backward, then labelling of label and prediction" (cc3d on
CPU, the torch backend on CUDA) timed as one case, so that its peak memory is measured like the losses'. Two
ratios per case: time and peak memory growth, each with the target :data:`~lossbench.bench.settings.TARGET_NOISY`
for the ICI/DICI cases (except :data:`NOISY_UNCHECKED`). The sizes are module constants (tests shrink them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from lossbench.bench.masks import lesions_mask, noisy_logits
from lossbench.bench.record import Recorder
from lossbench.bench.settings import TARGET_NOISY, common_fields, size_name
from lossbench.bench.suites.steps import LossConfig, floor_labelling, prime
from lossbench.bench.timing import Case
from lossbench.errors import LossbenchError

__all__ = [
    "NOISY_SHAPE",
    "NOISY_BATCH",
    "NOISY_LESIONS",
    "NOISY_REPEATS",
    "NOISY_CASES",
    "NOISY_UNCHECKED",
    "run_noisy_scene",
    "noisy_floor_name",
]

#: The scene: batch x 1 x shape (an ATLAS R2.0 volume cropped to 160 x 192 x 160), lesions per image.
NOISY_SHAPE = (160, 192, 160)
NOISY_BATCH = 2
NOISY_LESIONS = 40
#: Samples per case at most (each call takes 0.1-2 s on one CPU thread).
NOISY_REPEATS = 3
#: (case label, registry name, parameters); every case also gets ``sigmoid=True``.
NOISY_CASES: tuple[LossConfig, ...] = (
    ("dice", "dice", {}),
    ("ici", "ici", {}),
    ("ici reference=False", "ici", {"reference": False}),
    ("ici b=0 c=0", "ici", {"b": 0.0, "c": 0.0}),
    ("dici", "dici", {}),
    ("dici reference=False", "dici", {"reference": False}),
    ("ici reference=False base=dicece", "ici", {"reference": False, "base": "dicece"}),
    ("blob", "blob", {}),
    ("inverse_weighting", "inverse_weighting", {}),
    ("cc_dicece", "cc_dicece", {}),
)
#: ICI/DICI cases shown without a target, and why.
NOISY_UNCHECKED = {
    "ici reference=False base=dicece": "no target: a cross-entropy base with the trainable center is known to cost "
    "several times the floor",
}
_TARGETED = ("ici", "dici")


def noisy_floor_name(device: torch.device) -> str:
    """Name of the noisy scene's floor case: Dice and both labellings in one call."""
    return f"dice + 2 {'cc3d' if device.type == 'cpu' else 'torch'} labellings"


def run_noisy_scene(run: Recorder, api: dict[str, Any]) -> None:
    """Build the scene, time its cases and the floor in one group, and record both ratios of every case."""
    configs = _configs(run, api)
    if not configs:
        return
    target = np.stack([lesions_mask(NOISY_SHAPE, NOISY_LESIONS, seed=b) for b in range(NOISY_BATCH)])
    logits = noisy_logits(target, seed=0)
    pred = logits > 0
    common = common_fields(NOISY_SHAPE, NOISY_BATCH)
    extra = {"scene": "noisy", "lesions": NOISY_LESIONS, **_components(target, pred)}
    floor = noisy_floor_name(run.device)
    cases, meta = _cases(api, configs, target, pred, logits, run.device, floor)
    for name in meta:
        meta[name].update(extra)
    group = f"{size_name(NOISY_SHAPE)} B={NOISY_BATCH} (noisy)"
    med = run.group("scaling", group, cases, meta, common, repeats=NOISY_REPEATS)
    del cases  # the closures hold the inputs (about 0.2 GB)
    peak = run.column("scaling", group, "peak_mem_mb")
    _ratios(run, configs, med, peak, group, {**common, "scene": "noisy"}, floor)


def _configs(run: Recorder, api: dict[str, Any]) -> list[LossConfig]:
    """The cases of :data:`NOISY_CASES` the run's loss selection keeps (Dice always) and the registry builds."""
    out = []
    for label, name, kw in NOISY_CASES:
        if run.losses is not None and label != "dice" and label not in run.losses and name not in run.losses:
            continue
        kw = {"sigmoid": True, **kw}
        try:
            api["build_loss"](name, **kw)
        except LossbenchError as exc:
            run.skip("scaling", f"{label} (noisy)", f"not buildable with {kw}: {exc}")
            continue
        out.append((label, name, kw))
    if "dice" not in [c[0] for c in out]:
        run.error("scaling", "noisy scene", "the registry has no 'dice' loss: the floor cannot be timed")
        return []
    return out


def _components(target: np.ndarray, pred: np.ndarray) -> dict[str, list[int]]:
    """Components per image of the label and of the thresholded prediction (full connectivity, as the losses)."""
    from lossbench.cc import label_components

    return {
        "label_components": label_components(target).counts.tolist(),
        "prediction_components": label_components(pred).counts.tolist(),
    }


def _cases(
    api: dict[str, Any],
    configs: list[LossConfig],
    target: np.ndarray,
    pred: np.ndarray,
    logits: np.ndarray,
    device: torch.device,
    floor: str,
) -> tuple[dict[str, Case], dict[str, dict[str, Any]]]:
    """One forward+backward case per configuration on the noisy logits, and the floor (Dice + 2 labellings)."""
    x = torch.from_numpy(logits).unsqueeze(1).to(device).requires_grad_(True)
    y = torch.from_numpy(target).unsqueeze(1).to(device=device, dtype=torch.float32)
    cases: dict[str, Case] = {}
    meta: dict[str, dict[str, Any]] = {}
    for label, name, kw in configs:
        loss = api["build_loss"](name, **kw)
        if isinstance(loss, torch.nn.Module):
            loss = loss.to(device)
        prime(loss, x, y)
        cases[label] = (_forward_backward(loss, x, y), device)
        meta[label] = {"params": kw, "note": NOISY_UNCHECKED.get(label, "")}
    dice = cases["dice"][0]
    cases[floor] = (_then(dice, floor_labelling(target, pred, device)), device)
    meta[floor] = {"note": "floor: Dice forward+backward, then labelling of label and prediction, in one call"}
    return cases, meta


def _forward_backward(loss: Any, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """Forward + backward that frees the input's gradient at the end, so that the next call's peak includes it."""

    def step() -> None:
        loss(x, y).backward()
        x.grad = None

    return step


def _then(first: Callable[[], Any], second: Callable[[], Any]) -> Callable[[], None]:
    def both() -> None:
        first()
        second()

    return both


def _ratios(
    run: Recorder,
    configs: list[LossConfig],
    med: dict[str, float | None],
    peak: dict[str, Any],
    group: str,
    common: dict[str, Any],
    floor: str,
) -> None:
    """Time and peak memory growth of every case over the floor's; targets for the ICI/DICI cases."""
    for label, name, _ in configs:
        if label == "dice":
            continue
        checked = name in _TARGETED and label not in NOISY_UNCHECKED
        for what, values, short in (("time", med, "/floor"), ("peak memory", peak, "mem/floor")):
            run.ratio(
                "scaling", f"{label} / floor, {what} (noisy)", values.get(label), values.get(floor), common=common,
                numerator=label, denominator=floor, group=group, case=label, short=short,
                target=TARGET_NOISY if checked else None, op="<=" if checked else None,
            )  # fmt: skip
