"""The ``cc`` suite: :func:`lossbench.cc.label_components` per backend against cc3d called directly.

Cases per (size, batch): ``cc3d direct`` (``cc3d.connected_components`` per image, the floor any wrapper is
compared with), the ``cc3d``, ``scipy``, ``auto`` and ``torch`` backends, scikit-image's ``measure.label`` and, on
2D masks, kornia's torch labellings (:mod:`lossbench.bench.suites.cc_refs`), and the reference ``maxpool``
propagation with the paper's iteration counts (:func:`maxpool_iterations`). Before timing, every exact backend's
labels are compared with scipy's (scikit-image's and kornia's as partitions: the same components, any ids), so that
a fast but wrong backend cannot pass a target; each row records ``exact``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from lossbench.bench.masks import blob_masks
from lossbench.bench.record import Recorder
from lossbench.bench.settings import (
    BATCHES,
    TARGET_AUTO_VS_CC3D,
    TARGET_GPU_TORCH_CC_S,
    TARGET_MAXPOOL_SPEEDUP,
    common_fields,
)
from lossbench.bench.suites.cc_refs import kornia_cases, skimage_case
from lossbench.bench.timing import Case
from lossbench.cc import label_components

__all__ = ["run_cc_suite", "maxpool_iterations"]

_CPU = torch.device("cpu")


def maxpool_iterations(size: Sequence[int]) -> int:
    """The reference labelling's iteration count for an image shape (paper: 250 at 96^3, 400 at 192^3, else 350)."""
    if tuple(size) == (96, 96, 96):
        return 250
    if tuple(size) == (192, 192, 192):
        return 400
    return 350


def run_cc_suite(run: Recorder, sizes: list[tuple[int, ...]]) -> None:
    """Time every labelling backend on every size, batch 1 and 4, and record the ratios to cc3d direct."""
    for size in sizes:
        for batch in BATCHES:
            _cc_group(run, size, batch)


def _cc_group(run: Recorder, size: tuple[int, ...], batch: int) -> None:
    common = common_fields(size, batch)
    masks = blob_masks(size, batch)
    tmask = torch.from_numpy(masks).to(run.device)
    grp = f"{common['size']} B={batch}"
    reference, exact = _check_exact_backends(run, masks, tmask, grp)
    n_comp = reference.counts.tolist()
    cases = _backend_cases(masks, tmask, run.device)
    meta: dict[str, dict[str, Any]] = {k: {"components": n_comp, **exact.get(k, {})} for k in cases}
    _add_references(run, cases, meta, masks, reference.labels, common)
    iters = maxpool_iterations(size)
    if run.device.type == "cpu" and size == (192, 192, 192) and batch > 1:
        reason = (
            f"maxpool ({iters} iterations) at 192^3 with batch {batch} takes minutes on CPU; "
            "the batch-1 row times it once"
        )
        run.skip("cc", "maxpool", reason, **common)
    else:
        cases["maxpool"] = (
            lambda t=tmask, n=iters: label_components(t, backend="maxpool", num_iterations=n),
            run.device,
        )
        meta["maxpool"] = {"components": n_comp, "note": f"reference, {iters} iterations"}
    med = run.group("cc", grp, cases, meta, common)
    _cc_ratios(run, med, size, batch, grp, common, timed_maxpool="maxpool" in cases)
    _reference_ratios(run, med, cases, grp, common)


def _check_exact_backends(
    run: Recorder, masks: np.ndarray, tmask: torch.Tensor, group: str
) -> tuple[Any, dict[str, dict[str, bool]]]:
    """Record an error for every exact backend whose labels differ from scipy's.

    Returns:
        scipy's labelling, and backend -> ``{"exact": labels equal to scipy's}``.
    """
    reference = label_components(masks, backend="scipy")
    exact = {}
    for backend, arg in (("cc3d", masks), ("auto", masks if run.device.type == "cpu" else tmask), ("torch", tmask)):
        got = label_components(arg, backend=backend).labels
        got = got.cpu().numpy() if isinstance(got, torch.Tensor) else got
        exact[backend] = {"exact": bool(np.array_equal(got, reference.labels))}
        if not exact[backend]["exact"]:
            run.error("cc", f"{group} / {backend}", "labels differ from scipy.ndimage.label")
    return reference, exact


def _add_references(
    run: Recorder,
    cases: dict[str, Case],
    meta: dict[str, dict[str, Any]],
    masks: np.ndarray,
    reference: np.ndarray,
    common: dict[str, Any],
) -> None:
    """scikit-image (an error if it is not scipy's partition) and, on 2D masks, kornia's labellings."""
    n_comp = meta["scipy"]["components"]
    group = f"{common['size']} B={common['batch']}"
    found = skimage_case(masks, reference)
    if found is None:
        run.skip("cc", "skimage", "scikit-image is not installed", **common)
    else:
        cases["skimage"], fields = found
        meta["skimage"] = {"components": n_comp, **fields}
        if not fields["exact"]:
            run.error("cc", f"{group} / skimage", "labels are not the partition of scipy.ndimage.label")
    if masks.ndim != 3:  # kornia labels 2D images only
        return
    k_cases, k_meta = kornia_cases(masks, reference, run.device)
    if not k_cases:
        run.skip("cc", "kornia", "kornia is not installed", **common)
    cases.update(k_cases)
    meta.update({k: {"components": n_comp, **v} for k, v in k_meta.items()})


def _backend_cases(masks: np.ndarray, tmask: torch.Tensor, device: torch.device) -> dict[str, Case]:
    """cc3d direct and the exact backends; ``auto`` gets the ndarray on CPU (as cc3d direct), the tensor on CUDA."""
    import cc3d

    direct_conn = 26 if masks.ndim == 4 else 8

    def direct(masks: np.ndarray = masks, conn: int = direct_conn) -> Any:
        return [cc3d.connected_components(m, connectivity=conn) for m in masks]

    return {
        "cc3d direct": (direct, _CPU),
        "cc3d": (lambda m=masks: label_components(m, backend="cc3d"), _CPU),
        "scipy": (lambda m=masks: label_components(m, backend="scipy"), _CPU),
        "auto": (_auto(masks) if device.type == "cpu" else _auto(tmask), device),
        "torch": (lambda t=tmask: label_components(t, backend="torch"), device),
    }


def _auto(mask: np.ndarray | torch.Tensor) -> Callable[[], Any]:
    return lambda: label_components(mask)


def _cc_ratios(
    run: Recorder,
    med: dict[str, float | None],
    size: tuple[int, ...],
    batch: int,
    grp: str,
    common: dict[str, Any],
    *,
    timed_maxpool: bool,
) -> None:
    """Ratios of ``auto`` and ``torch`` to cc3d direct (target at 96^3, 192^3), GPU goal, speed-up over maxpool."""
    cube = len(size) == 3 and size[0] in (96, 192) and len(set(size)) == 1
    run.ratio(
        "cc", "auto / cc3d direct", med.get("auto"), med.get("cc3d direct"), common=common,
        numerator="auto", denominator="cc3d direct", target=TARGET_AUTO_VS_CC3D if cube else None,
        op="<=" if cube else None, group=grp, case="auto", short="/direct",
    )  # fmt: skip
    run.ratio(
        "cc", "torch / cc3d direct", med.get("torch"), med.get("cc3d direct"), common=common,
        numerator="torch", denominator="cc3d direct", group=grp, case="torch", short="/direct",
    )  # fmt: skip
    if run.device.type == "cuda" and size == (192, 192, 192) and batch == 1:
        run.ratio(
            "cc", "torch labelling, s per 192^3 volume (GPU goal)", med.get("torch"), 1.0, common=common,
            numerator="torch", denominator="1 s", group=grp, case="torch", short="s",
            target=TARGET_GPU_TORCH_CC_S, op="<=",
        )  # fmt: skip
    if timed_maxpool:
        is96 = size == (96, 96, 96)
        run.ratio(
            "cc", "speed-up auto vs maxpool", med.get("maxpool"), med.get("auto"), common=common,
            numerator="maxpool", denominator="auto", group=grp, case="maxpool", short="/auto",
            target=TARGET_MAXPOOL_SPEEDUP if is96 else None, op=">=" if is96 else None,
        )  # fmt: skip


def _reference_ratios(
    run: Recorder, med: dict[str, float | None], cases: dict[str, Case], grp: str, common: dict[str, Any]
) -> None:
    """scikit-image against cc3d direct, kornia's labellings against lossbench's exact torch labelling (shown)."""
    if "skimage" in cases:
        run.ratio(
            "cc", "skimage / cc3d direct", med.get("skimage"), med.get("cc3d direct"), common=common,
            numerator="skimage", denominator="cc3d direct", group=grp, case="skimage", short="/direct",
        )  # fmt: skip
    for name in cases:
        if name.startswith("kornia"):
            run.ratio(
                "cc", f"{name} / torch", med.get(name), med.get("torch"), common=common,
                numerator=name, denominator="torch", group=grp, case=name, short="/torch",
            )  # fmt: skip
