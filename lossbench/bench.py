"""Performance benchmark: labelling backends, loss forward+backward, scaling with instances, metrics.

``lossbench bench`` (or :func:`run_bench`) times four suites and computes every ratio inside one run, so the
ratios compare numbers measured under the same load, on the same machine, minutes apart at most:

* ``cc``: :func:`lossbench.cc.label_components` with the ``scipy``, ``cc3d``, ``torch`` and ``auto`` backends,
  calling ``cc3d.connected_components`` directly ("cc3d direct", the floor any wrapper is compared with), and
  the reference ``maxpool`` propagation with the paper's iteration counts (250 at 96^3, 400 at 192^3, 350
  otherwise), on masks with about 50 components, batch 1 and 4.
* ``losses``: forward + backward of every registered loss (and the reference / trainable / -TP variants of the
  instance losses) on the same sizes, as ratios to Dice and to the floor "Dice + labelling target and
  prediction with cc3d"; MONAI's own ``DiceLoss`` is timed next to them as an external reference (lossbench's
  ``dice`` adds input validation).
* ``scaling``: the instance losses at 96^3 with 10, 100 and 1000 instances (cost must not follow the count), in
  two series: "fixed foreground" (the balls shrink as their number grows, so about 81,000 foreground voxels
  throughout: only the count changes; the target is checked here) and "fixed size" (balls of radius 2.5, so
  the foreground grows 100x with the count, and so does every per-voxel cost, cc3d's labelling included).
* ``metrics``: :func:`~lossbench.metrics.atlas_metrics` + :func:`~lossbench.metrics.detection_metrics` on a
  197x233x189 subject with about 20 lesions.

Targets (shown PASS/FAIL next to the ratio): ``auto`` labelling <= 1.5x cc3d direct at 96^3 and 192^3;
``auto`` >= 100x faster than ``maxpool`` at 96^3; ICI <= 2.0x (Dice + 2 labellings) at 96^3 and 192^3;
t(1000 instances) <= 1.5x t(10) for ICI, DICI and blob (fixed foreground); metrics <= 0.1 s per subject. On
CUDA also the GPU goals: exact torch labelling <= 2 ms per 192^3 volume and ICI <= 1.5x Dice for 4x1x192^3. On
CUDA the floor labels with the torch backend on the device instead of cc3d.

Method: each case gets one warm-up call (which also measures peak memory), then ``repeats`` timed samples; a sample
is the mean over enough back-to-back calls to last 10 ms (one call for anything slower), as ``timeit`` does. The
cases of one group (same suite, size and batch) are timed round-robin, so a burst of load on a shared machine hits
all of them alike; each sample follows one untimed call of the same case, so that no case inherits the memory state
of the previous one (on CPU, large freed blocks go back to the OS and the next case's first large allocations
page-fault, which made a case's time depend on its neighbour in the list). A call longer than 1 s is its own
warm-up: its first call counts as a sample, and further samples are taken only while the case has used less than 10
s. Reported: median, interquartile range, min/max, number of samples, peak memory (CUDA:
``torch.cuda.max_memory_allocated`` above the memory in use before the call; CPU on Linux: the peak resident set
size above the resident size before the call, with the high-water mark reset through ``/proc/self/clear_refs``, i.e.
newly touched pages: memory reused from the allocator's free lists is not counted, so small CPU values are lower
bounds; elsewhere ``tracemalloc``, which sees numpy and Python allocations only). On CUDA every timed call is
bracketed by ``torch.cuda.synchronize()``.

Threads: torch's intra-op thread count is recorded, not changed. On a shared machine whose cores are busy,
multi-threaded torch ops can stall for whole scheduler slices; run ``OMP_NUM_THREADS=1 lossbench bench`` there
(cc3d and scipy are single-threaded, so the labelling comparison is then like for like). Large CPU tensors
(4x1x192^3 is 113 MB per float tensor) are fresh ``mmap`` allocations whose page faults can dominate a loss's
forward+backward; ``THP_MEM_ALLOC_ENABLE=1`` (torch's allocator then uses transparent huge pages, read when
torch is imported) made Dice and ICI 2-3x faster at 4x1x192^3 on the development machine. Both variables are
recorded under ``environment.env``.

Results are a dict (also written as ``bench.json`` and ``bench.md`` with ``out``)::

    {"schema_version": 1, "environment": {...}, "settings": {...},
     "results": [{"suite", "group", "case", "size", "batch", "device", "median_s", "q1_s", "q3_s", "min_s",
                  "max_s", "samples", "calls_per_sample", "peak_mem_mb", "note", ...}],
     "ratios": [{"suite", "name", "size", "batch", "value", "target", "op", "status", "numerator",
                 "denominator"}],
     "skipped": [{"suite", "case", "size", "batch", "reason"}],
     "errors": [{"suite", "case", "message"}]}

``status`` is ``"PASS"``/``"FAIL"`` for ratios with a target and ``None`` otherwise.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib
import json
import math
import os
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lossbench.errors import BackendError, ConfigError, LossbenchError, expect
from lossbench.registry import suggest

__all__ = [
    "run_bench",
    "SUITES",
    "DEFAULT_SIZES",
    "BATCHES",
    "maxpool_iterations",
    "parse_size",
    "instances_mask",
    "scaling_radius",
    "measure_group",
    "Timing",
    "to_markdown",
]

SCHEMA_VERSION = 1
SUITES = ("cc", "losses", "scaling", "metrics")
DEFAULT_SIZES = ("512x512", "64", "96", "192")
BATCHES = (1, 4)
#: Number of components in the labelling / loss masks.
N_COMPONENTS = 50
#: Instance counts of the scaling suite (at 96^3).
SCALING_COUNTS = (10, 100, 1000)
SCALING_SIZE = (96, 96, 96)
#: Ball radius of the fixed-size series (and of the largest count in the fixed-foreground series).
SCALING_RADIUS = 2.5
#: "fixed foreground": n balls holding about as many voxels as 1000 balls of radius 2.5 (radius 12.4 for 10), so
#: only the number of instances changes; "fixed size": balls of radius 2.5, so the foreground grows with the count
#: (100x from 10 to 1000) and every per-voxel cost, the labelling's included, grows with it.
SCALING_SERIES = ("fixed foreground", "fixed size")
#: The scaling target (cost must not follow the number of instances) is checked on this series.
SCALING_TARGET_SERIES = "fixed foreground"
#: The metrics suite's subject (an ATLAS R2.0 volume) and its number of lesions.
METRICS_SHAPE = (197, 233, 189)
METRICS_LESIONS = 20
#: A call longer than this is its own warm-up; samples stop once a case has used CASE_BUDGET_S.
SLOW_CALL_S = 1.0
CASE_BUDGET_S = 10.0
#: Fast calls are repeated back to back so that one sample lasts at least this long.
MIN_SAMPLE_S = 0.01
#: Targets of issue 8 / issue 2 (ratios from one run).
TARGET_AUTO_VS_CC3D = 1.5
TARGET_MAXPOOL_SPEEDUP = 100.0
TARGET_ICI_VS_FLOOR = 2.0
TARGET_SCALING = 1.5
TARGET_METRICS_S = 0.1
#: GPU goals (H100/H200 class): exact torch labelling of one 192^3 volume, ICI / Dice for 4x1x192^3.
TARGET_GPU_TORCH_CC_S = 0.002
TARGET_GPU_ICI_VS_DICE = 1.5
#: The external reference case of the losses suite (timed when MONAI is installed).
MONAI_DICE = "monai DiceLoss"
#: Losses of the scaling suite; ICI's ratio to its floor is checked for these registry names.
SCALING_LOSSES = ("ici", "dici", "blob")


def maxpool_iterations(size: Sequence[int]) -> int:
    """The reference labelling's iteration count for an image shape (paper: 250 at 96^3, 400 at 192^3, else 350)."""
    if tuple(size) == (96, 96, 96):
        return 250
    if tuple(size) == (192, 192, 192):
        return 400
    return 350


def parse_size(text: str | int | Sequence[int]) -> tuple[int, ...]:
    """Parse a size: ``"64"`` -> (64, 64, 64), ``"512x512"`` -> (512, 512), ``"96x96x48"`` -> (96, 96, 48).

    Raises:
        ConfigError: if the text is not 1, 2 or 3 integers >= 8 (room for the benchmark's balls) joined by ``x``.
    """
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        parts = [int(text)] * 3
    elif isinstance(text, str):
        try:
            parts = [int(p) for p in text.lower().split("x")]
        except ValueError:
            raise expect("sizes", "entries like 64, 96x96x48 or 512x512", repr(text)) from None
        if len(parts) == 1:
            parts = parts * 3
    elif isinstance(text, Sequence):
        parts = [int(p) for p in text]
    else:
        raise expect("sizes", "entries like 64, 96x96x48 or 512x512", repr(text))
    if len(parts) not in (2, 3) or any(p < 8 for p in parts):
        raise expect("sizes", "2 or 3 sides >= 8 (e.g. 64, 96x96x48, 512x512)", repr(text))
    return tuple(parts)


def _size_name(size: Sequence[int]) -> str:
    return "x".join(str(s) for s in size) if len(set(size)) > 1 or len(size) == 2 else f"{size[0]}^{len(size)}"


def instances_mask(shape: Sequence[int], n: int, *, radius: float = 2.5, seed: int = 0) -> np.ndarray:
    """Exactly ``n`` separate balls in distinct cells of a regular grid (for the scaling suite).

    Cells have side ``2 * ceil(radius) + 2`` so balls never touch, even with full connectivity; centres are
    jittered inside their cells.

    Raises:
        ConfigError: if ``n`` balls do not fit.
    """
    rng = np.random.default_rng(seed)
    r = int(math.ceil(radius))
    cell = 2 * r + 2
    grid = [s // cell for s in shape]
    n_cells = int(np.prod(grid))
    if n > n_cells:
        raise expect("n", f"at most {n_cells} balls of radius {radius} in {tuple(shape)}", n)
    chosen = rng.choice(n_cells, size=n, replace=False)
    d2 = sum(o**2 for o in np.ogrid[tuple(slice(-r, r + 1) for _ in shape)])
    ball = d2 <= radius**2
    m = np.zeros(tuple(shape), dtype=bool)
    for flat in chosen:
        idx = np.unravel_index(int(flat), grid)
        c = [i * cell + r + int(rng.integers(0, cell - 2 * r)) for i in idx]
        m[tuple(slice(ci - r, ci + r + 1) for ci in c)] |= ball
    return m


# --------------------------------------------------------------------------------------------------- timing


@dataclass
class Timing:
    """Samples (seconds per call) and peak memory of one benchmark case."""

    samples: list[float] = field(default_factory=list)
    peak_mem_bytes: int | None = None
    calls_per_sample: int = 1
    error: str | None = None

    def summary(self) -> dict[str, Any]:
        """Median, quartiles, min/max (seconds per call), sample count, calls per sample and peak memory (MB)."""
        mem = None if self.peak_mem_bytes is None else self.peak_mem_bytes / 2**20
        if not self.samples:
            return {
                "median_s": None, "q1_s": None, "q3_s": None, "min_s": None, "max_s": None,
                "samples": 0, "calls_per_sample": self.calls_per_sample, "peak_mem_mb": mem,
            }  # fmt: skip
        s = np.asarray(self.samples)
        q1, med, q3 = np.percentile(s, [25, 50, 75])
        return {
            "median_s": float(med),
            "q1_s": float(q1),
            "q3_s": float(q3),
            "min_s": float(s.min()),
            "max_s": float(s.max()),
            "samples": int(s.size),
            "calls_per_sample": self.calls_per_sample,
            "peak_mem_mb": mem,
        }


def _read_status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _can_reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return _read_status_kb("VmHWM") is not None


def _cpu_memory_method() -> str:
    return "rss-peak (VmHWM reset via /proc/self/clear_refs)" if _can_reset_hwm() else "tracemalloc"


@contextlib.contextmanager
def _peak_memory(device: torch.device, method: str) -> Iterator[list[int | None]]:
    """Yield a one-item list that holds the peak memory (bytes) above the starting level after the block."""
    box: list[int | None] = [None]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield box
        torch.cuda.synchronize(device)
        box[0] = max(0, torch.cuda.max_memory_allocated(device) - base)
    elif method.startswith("rss"):
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        base = _read_status_kb("VmRSS") or 0
        yield box
        peak = _read_status_kb("VmHWM")
        box[0] = None if peak is None else max(0, peak - base) * 1024
    else:
        started = not tracemalloc.is_tracing()
        if started:
            tracemalloc.start()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        try:
            yield box
        finally:
            box[0] = max(0, tracemalloc.get_traced_memory()[1] - base)
            if started:
                tracemalloc.stop()


def _timed(fn: Callable[[], Any], device: torch.device, calls: int = 1) -> float:
    """Seconds per call of ``calls`` back-to-back calls (synchronised before and after on CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / calls


def measure_group(
    cases: dict[str, tuple[Callable[[], Any], torch.device]],
    *,
    repeats: int,
    memory_method: str = "tracemalloc",
    slow_call_s: float = SLOW_CALL_S,
    case_budget_s: float = CASE_BUDGET_S,
    min_sample_s: float = MIN_SAMPLE_S,
) -> dict[str, Timing]:
    """Time several cases round-robin: warm-up (with peak memory), calibration, then up to ``repeats`` samples.

    A sample is the mean over enough back-to-back calls to last about ``min_sample_s`` (as ``timeit`` does), so
    sub-millisecond cases are not dominated by timer resolution. Each sample of a case that is not slow follows one
    untimed call of the same case: round-robin order would otherwise time every case's first call after a different
    case, whose freed memory and cache state (CPU allocators hand large blocks back to the OS, so the next large
    allocation page-faults again) it inherits; a case's time then depended on its neighbour in the list.

    Args:
        cases: name -> (zero-argument callable, device it runs on: CUDA calls are synchronised).
        repeats: samples per case (fewer for a case whose calls exceed ``slow_call_s``, see the module docstring).
        memory_method: CPU peak-memory method (``"rss..."`` or ``"tracemalloc"``).
        slow_call_s: a warm-up longer than this counts as the first sample.
        case_budget_s: no further samples once a case's samples add up to this.
        min_sample_s: target duration of one sample.

    Returns:
        name -> :class:`Timing`; a case whose call raises gets ``error`` set and no samples.
    """
    out = {name: Timing() for name in cases}
    for name, (fn, device) in cases.items():
        tm = out[name]
        try:
            with _peak_memory(device, memory_method) as peak:
                t = _timed(fn, device)
            tm.peak_mem_bytes = peak[0]
            if t > slow_call_s:
                tm.samples.append(t)
            elif t < min_sample_s:
                t = _timed(fn, device)  # calibration: the first call may include one-time costs
                tm.calls_per_sample = max(1, min(10_000, math.ceil(min_sample_s / max(t, 1e-9))))
        except Exception as exc:  # a broken case must not hide the others' numbers; it is reported as an error
            tm.error = f"{type(exc).__name__}: {exc}"
    for _ in range(repeats):
        for name, (fn, device) in cases.items():
            tm = out[name]
            if tm.error is not None or len(tm.samples) >= repeats or sum(tm.samples) >= case_budget_s:
                continue
            try:
                if not tm.samples or tm.samples[0] <= slow_call_s:
                    fn()  # re-warm after the previous case (untimed)
                tm.samples.append(_timed(fn, device, tm.calls_per_sample))
            except Exception as exc:  # same as above: recorded, shown, and makes the run fail at the end
                tm.error = f"{type(exc).__name__}: {exc}"
    return out


# ------------------------------------------------------------------------------------------------ the run


class _Run:
    """Accumulates results, ratios, skips and errors of one benchmark run."""

    def __init__(
        self,
        device: torch.device,
        repeats: int,
        memory_method: str,
        console: Any | None,
        losses: Sequence[str] | None = None,
    ):
        self.device = device
        self.losses = None if losses is None else set(losses)
        self.repeats = repeats
        self.memory_method = memory_method
        self.console = console
        self.results: list[dict[str, Any]] = []
        self.ratios: list[dict[str, Any]] = []
        self.skipped: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []

    def log(self, text: str) -> None:
        if self.console is not None:
            self.console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {text}", highlight=False)

    def group(
        self,
        suite: str,
        group: str,
        cases: dict[str, tuple[Callable[[], Any], torch.device]],
        meta: dict[str, dict[str, Any]],
        common: dict[str, Any],
    ) -> dict[str, float | None]:
        """Measure one group, record a row per case, and return name -> median seconds (None on error)."""
        self.log(f"[{suite}] {group}: {', '.join(cases)}")
        timings = measure_group(cases, repeats=self.repeats, memory_method=self.memory_method)
        medians: dict[str, float | None] = {}
        for name, tm in timings.items():
            row = {"suite": suite, "group": group, "case": name, **common, "device": cases[name][1].type}
            row.update(meta.get(name, {}))
            row.update(tm.summary())
            row.setdefault("note", "")
            if tm.samples and tm.samples[0] > SLOW_CALL_S and len(tm.samples) < self.repeats:
                extra = f"{len(tm.samples)} sample(s): calls > {SLOW_CALL_S:g} s are their own warm-up"
                row["note"] = f"{row['note']}; {extra}" if row["note"] else extra
            if tm.error is not None:
                row["error"] = tm.error
                self.errors.append({"suite": suite, "case": f"{group} / {name}", "message": tm.error})
            self.results.append(row)
            medians[name] = row["median_s"]
        return medians

    def ratio(
        self,
        suite: str,
        name: str,
        num: float | None,
        den: float | None,
        *,
        common: dict[str, Any],
        numerator: str,
        denominator: str,
        group: str,
        case: str,
        short: str,
        target: float | None = None,
        op: str | None = None,
    ) -> None:
        """Record ``num / den`` with its target (``op`` is ``"<="`` or ``">="``).

        ``group``/``case`` name the result row the ratio is shown next to, as ``short=value``.
        """
        value = None if (num is None or den is None or den <= 0) else num / den
        status = None
        if target is not None and value is not None:
            status = "PASS" if (value <= target if op == "<=" else value >= target) else "FAIL"
        self.ratios.append(
            {
                "suite": suite,
                "name": name,
                **common,
                "value": value,
                "target": target,
                "op": op,
                "status": status,
                "numerator": numerator,
                "denominator": denominator,
                "group": group,
                "case": case,
                "short": short,
            }
        )

    def skip(self, suite: str, case: str, reason: str, **common: Any) -> None:
        self.skipped.append({"suite": suite, "case": case, **common, "reason": reason})
        self.log(f"[{suite}] skipped {case}: {reason}")

    def error(self, suite: str, case: str, message: str) -> None:
        self.errors.append({"suite": suite, "case": case, "message": message})
        self.log(f"[{suite}] error in {case}: {message}")


def _common(size: Sequence[int], batch: int) -> dict[str, Any]:
    return {"size": _size_name(size), "batch": batch}


# --------------------------------------------------------------------------------------------------- suites


def _cc_masks(size: tuple[int, ...], batch: int) -> np.ndarray:
    from lossbench.cc.shapes import blobs_mask

    return np.stack([blobs_mask(size, N_COMPONENTS, seed=b) for b in range(batch)])


def _suite_cc(run: _Run, sizes: list[tuple[int, ...]]) -> None:
    import cc3d

    from lossbench.cc import label_components

    dev = run.device
    cpu = torch.device("cpu")
    for size in sizes:
        nd = len(size)
        direct_conn = 26 if nd == 3 else 8
        iters = maxpool_iterations(size)
        for batch in BATCHES:
            common = _common(size, batch)
            masks = _cc_masks(size, batch)
            tmask = torch.from_numpy(masks).to(dev)
            reference = label_components(masks, backend="scipy")
            n_comp = reference.counts.tolist()
            # a fast but wrong backend must not get a PASS: every exact backend must return scipy's label array
            for backend, arg in (("cc3d", masks), ("auto", masks if dev.type == "cpu" else tmask), ("torch", tmask)):
                got = label_components(arg, backend=backend).labels
                got = got.cpu().numpy() if isinstance(got, torch.Tensor) else got
                if not np.array_equal(got, reference.labels):
                    run.error("cc", f"{common['size']} B={batch} / {backend}", "labels differ from scipy.ndimage.label")

            def direct(masks=masks, conn=direct_conn):
                return [cc3d.connected_components(m, connectivity=conn) for m in masks]

            cases: dict[str, tuple[Callable[[], Any], torch.device]] = {
                "cc3d direct": (direct, cpu),
                "cc3d": (lambda m=masks: label_components(m, backend="cc3d"), cpu),
                "scipy": (lambda m=masks: label_components(m, backend="scipy"), cpu),
                # auto on the ndarray on CPU (what cc3d direct does too); on a CUDA tensor on CUDA
                "auto": (
                    (lambda m=masks: label_components(m))
                    if dev.type == "cpu"
                    else (lambda t=tmask: label_components(t)),
                    dev,
                ),
                "torch": (lambda t=tmask: label_components(t, backend="torch"), dev),
            }
            meta = {k: {"components": n_comp} for k in cases}
            maxpool_reason = None
            if dev.type == "cpu" and size == (192, 192, 192) and batch > 1:
                maxpool_reason = (
                    f"maxpool ({iters} iterations) at 192^3 with batch {batch} takes minutes on CPU; "
                    "the batch-1 row times it once"
                )
            if maxpool_reason is None:
                cases["maxpool"] = (
                    lambda t=tmask, n=iters: label_components(t, backend="maxpool", num_iterations=n),
                    dev,
                )
                meta["maxpool"] = {"components": n_comp, "note": f"reference, {iters} iterations"}
            else:
                run.skip("cc", "maxpool", maxpool_reason, **common)
            grp = f"{common['size']} B={batch}"
            med = run.group("cc", grp, cases, meta, common)
            if nd == 3 and size[0] in (96, 192) and len(set(size)) == 1:
                tgt, op = TARGET_AUTO_VS_CC3D, "<="
            else:
                tgt, op = None, None
            run.ratio(
                "cc", "auto / cc3d direct", med.get("auto"), med.get("cc3d direct"), common=common,
                numerator="auto", denominator="cc3d direct", target=tgt, op=op,
                group=grp, case="auto", short="/direct",
            )  # fmt: skip
            run.ratio(
                "cc", "torch / cc3d direct", med.get("torch"), med.get("cc3d direct"), common=common,
                numerator="torch", denominator="cc3d direct", group=grp, case="torch", short="/direct",
            )  # fmt: skip
            if dev.type == "cuda" and size == (192, 192, 192) and batch == 1:
                run.ratio(
                    "cc", "torch labelling, s per 192^3 volume (GPU goal)", med.get("torch"), 1.0, common=common,
                    numerator="torch", denominator="1 s", group=grp, case="torch", short="s",
                    target=TARGET_GPU_TORCH_CC_S, op="<=",
                )  # fmt: skip
            if "maxpool" in cases:
                is96 = size == (96, 96, 96)
                run.ratio(
                    "cc", "speed-up auto vs maxpool", med.get("maxpool"), med.get("auto"), common=common,
                    numerator="maxpool", denominator="auto", group=grp, case="maxpool", short="/auto",
                    target=TARGET_MAXPOOL_SPEEDUP if is96 else None, op=">=" if is96 else None,
                )  # fmt: skip


def _import_or_error(run: _Run, suite: str, module: str, names: Sequence[str]) -> dict[str, Any] | None:
    """Import ``names`` from ``module``; on failure record a clear error for the suite and return None."""
    try:
        mod = importlib.import_module(module)
        return {n: getattr(mod, n) for n in names}
    except (ImportError, AttributeError) as exc:
        run.error(
            suite,
            "(suite)",
            f"suite {suite!r} needs {module} ({', '.join(names)}), which is not available: {type(exc).__name__}: {exc}",
        )
        return None


def _entry_name(entry: Any) -> str:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict):
        return str(entry["name"])
    return str(entry.name)


def _entry_params(entry: Any) -> dict[str, Any]:
    if isinstance(entry, dict):
        return dict(entry.get("params", {}) or {})
    return dict(getattr(entry, "params", {}) or {})


#: Extra configurations of the instance losses timed next to their defaults (kept when the registry accepts them).
#: ``ici``/``dici`` default to lossbench's trainable options (tp_mode="remove", i.e. -TP, trainable centres);
#: ``reference=True`` selects the public code's behaviour, ``tp_mode="keep"`` the paper's Eq. 3 without -TP.
LOSS_VARIANTS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("ici reference", "ici", {"reference": True}),
    ("ici tp_mode=keep", "ici", {"tp_mode": "keep"}),
    ("dici reference", "dici", {"reference": True}),
    ("blob base=dicece", "blob", {"base": "dicece"}),
)


def _loss_configs(api: dict[str, Any], run: _Run, suite: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, registry name, params) for every registered loss plus the known variants the registry accepts."""
    entries = list(api["list_losses"]())
    configs: list[tuple[str, str, dict[str, Any]]] = []
    names = [_entry_name(e) for e in entries]
    params = {_entry_name(e): _entry_params(e) for e in entries}
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


def _loss_inputs(
    target_mask: np.ndarray, pred_mask: np.ndarray, device: torch.device, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (B, 1, *spatial) with ``sigmoid(logits) >= 0.5`` exactly on ``pred_mask``, and the float target."""
    gen = torch.Generator().manual_seed(seed)
    pm = torch.from_numpy(pred_mask)
    noise = 0.3 * torch.randn(pm.shape, generator=gen)
    logits = torch.where(pm, 2.0 + noise.abs(), -2.0 - noise.abs())
    x = logits.unsqueeze(1).to(device).clone().requires_grad_(True)
    y = torch.from_numpy(target_mask).unsqueeze(1).to(device=device, dtype=torch.float32)
    return x, y


def _fwd_bwd(loss: Any, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        x.grad = None
        loss(x, y).backward()

    return step


def _floor_labelling(target_mask: np.ndarray, pred_mask: np.ndarray, device: torch.device) -> Callable[[], None]:
    """Label target and prediction: the floor of any instance loss.

    On CPU: every image with ``cc3d.connected_components`` directly. On CUDA: :func:`label_components` on the device
    tensors (the exact torch backend), which is what a loss running there has to do.
    """
    if device.type != "cpu":
        from lossbench.cc import label_components

        tensors = [torch.from_numpy(m).to(device) for m in (target_mask, pred_mask)]

        def on_device() -> None:
            for t in tensors:
                label_components(t)

        return on_device

    import cc3d

    conn = 26 if target_mask.ndim == 4 else 8

    def step() -> None:
        for m in (target_mask, pred_mask):
            for img in m:
                cc3d.connected_components(img, connectivity=conn)

    return step


def _floor_name(device: torch.device) -> str:
    """Name of the floor case: labelling of label and prediction with the device's default backend."""
    return "2 cc3d labellings" if device.type == "cpu" else "2 torch labellings"


def _loss_cases(
    api: dict[str, Any],
    configs: list[tuple[str, str, dict[str, Any]]],
    target: np.ndarray,
    pred: np.ndarray,
    device: torch.device,
    floor_name: str,
) -> dict[str, tuple[Callable[[], Any], torch.device]]:
    """One forward+backward case per loss configuration on (target, pred), plus the labelling floor."""
    x, y = _loss_inputs(target, pred, device)
    cases: dict[str, tuple[Callable[[], Any], torch.device]] = {}
    for label, name, kw in configs:
        loss = api["build_loss"](name, **kw)
        if isinstance(loss, torch.nn.Module):
            loss = loss.to(device)
        cases[label] = (_fwd_bwd(loss, x, y), device)
    cases[floor_name] = (_floor_labelling(target, pred, device), device)
    return cases


def _monai_dice_case(
    target: np.ndarray, pred: np.ndarray, device: torch.device
) -> tuple[Callable[[], Any], torch.device] | None:
    """MONAI's own ``DiceLoss(sigmoid=True)`` on the losses' inputs: what lossbench's ``dice`` costs on top of it.

    ``None`` when MONAI is not installed.
    """
    try:
        from monai.losses import DiceLoss
    except ImportError:
        return None
    x, y = _loss_inputs(target, pred, device)
    return _fwd_bwd(DiceLoss(sigmoid=True), x, y), device


def _pred_mask(target: np.ndarray, n_false: int, seed: int) -> np.ndarray:
    """Prediction: the target shifted by one voxel along the last axis plus ``n_false`` false blobs per image."""
    from lossbench.cc.shapes import blobs_mask

    pred = np.roll(target, 1, axis=-1)
    if n_false:
        pred |= np.stack([blobs_mask(target.shape[1:], n_false, seed=seed + 1000 + b) for b in range(len(target))])
    return pred


def _suite_losses(run: _Run, sizes: list[tuple[int, ...]]) -> None:
    api = _import_or_error(run, "losses", "lossbench.losses", ("build_loss", "list_losses"))
    if api is None:
        return
    configs = _loss_configs(api, run, "losses")
    names = [c[0] for c in configs]
    if "dice" not in names:
        run.error("losses", "(suite)", "the registry has no 'dice' loss: the ratios to Dice cannot be computed")
    on_gpu = run.device.type != "cpu"
    floor_name = _floor_name(run.device)
    for size in sizes:
        for batch in BATCHES:
            common = _common(size, batch)
            target = _cc_masks(size, batch)
            pred = _pred_mask(target, 10, seed=batch)
            cases = _loss_cases(api, configs, target, pred, run.device, floor_name)
            meta = {label: {"params": kw} for label, _, kw in configs}
            monai_case = _monai_dice_case(target, pred, run.device)
            if monai_case is not None:
                cases[MONAI_DICE] = monai_case
                meta[MONAI_DICE] = {"note": "external reference: monai.losses.DiceLoss(sigmoid=True), no input checks"}
            grp = f"{common['size']} B={batch}"
            med = run.group("losses", grp, cases, meta, common)
            dice = med.get("dice")
            if monai_case is not None:
                run.ratio(
                    "losses", f"dice / {MONAI_DICE}", dice, med.get(MONAI_DICE), common=common,
                    numerator="dice", denominator=MONAI_DICE, group=grp, case="dice", short="/monai",
                )  # fmt: skip
            floor = None if dice is None or med.get(floor_name) is None else dice + med[floor_name]
            for label, name, _ in configs:
                if label == "dice":
                    continue
                # GPU goal: ICI forward+backward for 4x1x192^3 within 1.5x Dice's
                gpu_goal = on_gpu and label == "ici" and size == (192, 192, 192) and batch == 4
                run.ratio(
                    "losses", f"{label} / dice", med.get(label), dice, common=common,
                    numerator=label, denominator="dice", group=grp, case=label, short="/dice",
                    target=TARGET_GPU_ICI_VS_DICE if gpu_goal else None, op="<=" if gpu_goal else None,
                )  # fmt: skip
                checked = name == "ici" and len(size) == 3 and size[0] in (96, 192) and len(set(size)) == 1
                run.ratio(
                    "losses", f"{label} / (dice + 2 labellings)", med.get(label), floor, common=common,
                    numerator=label, denominator=f"dice + {floor_name}", group=grp, case=label,
                    short="/(dice+2cc)",
                    target=TARGET_ICI_VS_FLOOR if checked else None, op="<=" if checked else None,
                )  # fmt: skip
            del cases  # the closures hold the full-size inputs; free them before the next size


def _ball_voxels(radius: float, ndim: int = 3) -> int:
    """Voxels of the ball :func:`instances_mask` draws for ``radius``."""
    r = int(math.ceil(radius))
    d2 = sum(o**2 for o in np.ogrid[tuple(slice(-r, r + 1) for _ in range(ndim))])
    return int(np.count_nonzero(d2 <= radius**2))


def scaling_radius(n: int, series: str) -> float:
    """Ball radius of the scaling suite's ``n`` instances in ``series`` (see :data:`SCALING_SERIES`).

    "fixed size": :data:`SCALING_RADIUS` whatever ``n``. "fixed foreground": the radius (in steps of 0.05) whose
    ``n`` balls hold the number of voxels closest to that of the largest count's balls of :data:`SCALING_RADIUS`.
    """
    if series == "fixed size":
        return SCALING_RADIUS
    total = max(SCALING_COUNTS) * _ball_voxels(SCALING_RADIUS)
    radii = SCALING_RADIUS + 0.05 * np.arange(400)
    return float(min(radii, key=lambda r: abs(n * _ball_voxels(float(r)) - total)))


def _suite_scaling(run: _Run) -> None:
    api = _import_or_error(run, "scaling", "lossbench.losses", ("build_loss", "list_losses"))
    if api is None:
        return
    all_configs = _loss_configs(api, run, "scaling")
    configs = [c for c in all_configs if c[1] in SCALING_LOSSES]
    missing = [n for n in SCALING_LOSSES if n not in {c[1] for c in configs}]
    if missing:
        run.error("scaling", "(suite)", f"the loss registry has no {missing}: scaling cannot be measured for them")
    # Dice and the labelling floor are timed alongside: they show how much of the growth is foreground volume
    # (in the fixed-size series more instances = more foreground voxels) rather than the number of instances.
    configs = [c for c in all_configs if c[0] == "dice"] + configs
    floor_name = _floor_name(run.device)
    batch = 1
    size_name = _size_name(SCALING_SIZE)
    lo, hi = SCALING_COUNTS[0], SCALING_COUNTS[-1]
    for series in SCALING_SERIES:
        med_by_n: dict[int, dict[str, float | None]] = {}
        for n in SCALING_COUNTS:
            radius = scaling_radius(n, series)
            target = instances_mask(SCALING_SIZE, n, radius=radius, seed=n)[None]
            # prediction: every instance shifted by one voxel (all overlapping) plus 10% false instances elsewhere
            pred = np.roll(target, 1, axis=-1) | _sparse_false(target, max(1, n // 10), seed=n)
            extra = {"instances": n, "series": series, "radius": radius, "foreground": int(target.sum())}
            common = {**_common(SCALING_SIZE, batch), **extra}
            cases = _loss_cases(api, configs, target, pred, run.device, floor_name)
            meta = {label: {"params": kw, **extra} for label, _, kw in configs}
            meta[floor_name] = dict(extra)
            med_by_n[n] = run.group("scaling", f"{size_name} n={n} ({series})", cases, meta, common)
            del cases
        for label, name, _ in [*configs, (floor_name, floor_name, {})]:
            checked = name in SCALING_LOSSES and label == name and series == SCALING_TARGET_SERIES
            run.ratio(
                "scaling", f"{label}: t({hi}) / t({lo}) ({series})", med_by_n[hi].get(label),
                med_by_n[lo].get(label),
                common={**_common(SCALING_SIZE, batch), "instances": f"{hi} vs {lo}", "series": series},
                numerator=f"{hi} instances", denominator=f"{lo} instances",
                group=f"{size_name} n={hi} ({series})", case=label, short=f"/n={lo}",
                target=TARGET_SCALING if checked else None, op="<=" if checked else None,
            )  # fmt: skip


def _sparse_false(target: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` single-ball false positives per image placed where they do not touch the (dilated) target."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    out = np.zeros_like(target)
    for b in range(len(target)):
        free = ~ndimage.binary_dilation(target[b], iterations=4)
        cand = np.flatnonzero(free)
        for flat in rng.choice(cand, size=min(n, cand.size), replace=False):
            c = np.unravel_index(int(flat), target.shape[1:])
            out[(b, *tuple(slice(max(0, ci - 1), ci + 2) for ci in c))] = True
    return out & ~target


def _metrics_subject(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 197x233x189 subject: ~20 lesions of radius 1.5..8 voxels; prediction shifted, 3 missed, 3 false."""
    rng = np.random.default_rng(seed)
    shape = METRICS_SHAPE
    target = np.zeros(shape, dtype=bool)
    centres = []
    radii = np.geomspace(1.5, 8.0, METRICS_LESIONS)
    for r in radii:
        rr = int(math.ceil(r))
        c = [int(rng.integers(rr + 10, s - rr - 10)) for s in shape]
        d2 = sum(o**2 for o in np.ogrid[tuple(slice(-rr, rr + 1) for _ in shape)])
        target[tuple(slice(ci - rr, ci + rr + 1) for ci in c)] |= d2 <= r**2
        centres.append((c, rr))
    pred = np.roll(target, 1, axis=0)
    for c, rr in centres[:3]:  # missed lesions
        pred[tuple(slice(ci - rr - 1, ci + rr + 2) for ci in c)] = False
    for _ in range(3):  # false lesions
        c = [int(rng.integers(5, s - 5)) for s in shape]
        pred[tuple(slice(ci - 2, ci + 3) for ci in c)] = True
    return pred, target


def _suite_metrics(run: _Run) -> None:
    api = _import_or_error(run, "metrics", "lossbench.metrics", ("atlas_metrics", "detection_metrics"))
    if api is None:
        return
    pred, target = _metrics_subject()
    cpu = torch.device("cpu")
    common = {"size": "x".join(map(str, METRICS_SHAPE)), "batch": 1}
    tp, tt = torch.from_numpy(pred).to(run.device), torch.from_numpy(target).to(run.device)

    def both(p: Any, t: Any) -> None:
        api["atlas_metrics"](p, t, connectivity=1)
        api["detection_metrics"](p, t, connectivity=None)

    cases: dict[str, tuple[Callable[[], Any], torch.device]] = {
        "atlas_metrics": (lambda: api["atlas_metrics"](pred, target, connectivity=1), cpu),
        "detection_metrics": (lambda: api["detection_metrics"](pred, target, connectivity=None), cpu),
        "atlas + detection": (lambda: both(pred, target), cpu),
    }
    if run.device.type != "cpu":
        cases[f"atlas + detection ({run.device.type} tensors)"] = (lambda: both(tp, tt), run.device)
    from lossbench.cc import label_components

    n_lesions = int(label_components(target[None], connectivity=1).counts[0])
    meta = {k: {"lesions": n_lesions} for k in cases}
    med = run.group("metrics", common["size"], cases, meta, common)
    for name in cases:
        if name.startswith("atlas + detection"):
            run.ratio(
                "metrics", f"{name} (s per subject)", med.get(name), 1.0, common=common,
                numerator=name, denominator="1 s", target=TARGET_METRICS_S, op="<=",
                group=common["size"], case=name, short="s",
            )  # fmt: skip


# --------------------------------------------------------------------------------------------------- output


def _load_average() -> list[float] | None:
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


_ENV_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "THP_MEM_ALLOC_ENABLE",
    "CUDA_VISIBLE_DEVICES",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
)


#: glibc ``mallopt`` parameters and the values ``malloc="pinned"`` sets (64 MiB mmap threshold, 256 MiB trim threshold).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
PINNED_MALLOC = {"mmap_threshold": 64 << 20, "trim_threshold": 256 << 20}
MALLOC_MODES = ("pinned", "default")


def _pin_malloc() -> dict[str, Any]:
    """Fix glibc's malloc thresholds for this process (Linux/glibc only); return what was done.

    By default glibc moves its mmap threshold as blocks are freed and hands free memory at the top of the heap back
    to the OS, so whether a tensor of a few MB is served from already mapped memory or page-faults afresh depends on
    what the process allocated and freed before: the same Dice call measured 2.3 ms in one process and 4.8-5.5 ms in
    another on the development machine. Fixed thresholds keep every allocation below 64 MiB on the heap and the heap
    mapped, i.e. the steady state of a long training loop, for every case alike.
    """
    import ctypes
    import ctypes.util

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return {"mode": "default", "reason": "not glibc"}
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, PINNED_MALLOC["mmap_threshold"]) == 1
        ok = libc.mallopt(_M_TRIM_THRESHOLD, PINNED_MALLOC["trim_threshold"]) == 1 and ok
    except (OSError, AttributeError) as exc:
        return {"mode": "default", "reason": f"mallopt unavailable: {exc}"}
    return {"mode": "pinned", **PINNED_MALLOC} if ok else {"mode": "default", "reason": "mallopt refused"}


def _environment(device: torch.device, memory_method: str) -> dict[str, Any]:
    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for mod in ("lossbench", "cc3d", "scipy", "monai"):
        try:
            m = importlib.import_module(mod)
            versions[mod] = getattr(m, "__version__", None) or _dist_version(mod)
        except ImportError:
            versions[mod] = None
    env: dict[str, Any] = {
        "load_average": _load_average(),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine(),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "memory_method": "torch.cuda.max_memory_allocated" if device.type == "cuda" else memory_method,
        # settings that change CPU timings a lot (thread count; transparent huge pages for torch's allocator)
        "env": {k: os.environ.get(k) for k in _ENV_VARS},
        "versions": versions,
    }
    return env


def _dist_version(module: str) -> str | None:
    from importlib import metadata

    dist = {"cc3d": "connected-components-3d"}.get(module, module)
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


_UNITS = ((1.0, "s"), (1e-3, "ms"), (1e-6, "us"))


def _unit(v: float) -> tuple[float, str]:
    for scale, name in _UNITS:
        if v >= scale:
            return scale, name
    return 1e-6, "us"


def _num(v: float) -> str:
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def _fmt_s(v: float | None) -> str:
    """Seconds with a readable unit: 3 significant digits."""
    if v is None:
        return "-"
    scale, name = _unit(v)
    return f"{_num(v / scale)} {name}"


def _fmt_range(lo: float | None, hi: float | None) -> str:
    """A range in the unit of its upper end, e.g. ``1.2-1.5 ms``."""
    if lo is None or hi is None:
        return "-"
    scale, name = _unit(hi)
    return f"{_num(lo / scale)}-{_num(hi / scale)} {name}"


def _fmt_ratio(r: dict[str, Any]) -> str:
    return "-" if r["value"] is None else f"{r['value']:.3g}"


def _ratio_note(result: dict[str, Any], r: dict[str, Any]) -> str:
    """The ratios computed for one result row, e.g. ``/dice=3.1 /(dice+2cc)=1.6 [<= 2: PASS]``."""
    parts = []
    for q in result["ratios"]:
        if q["suite"] != r["suite"] or q.get("group") != r["group"] or q.get("case") != r["case"]:
            continue
        text = f"{q['short']}={_fmt_ratio(q)}"
        if q["target"] is not None:
            text += f" [{q['op']} {q['target']:g}: {q['status'] or 'n/a'}]"
        parts.append(text)
    return " ".join(parts)


def _result_rows(result: dict[str, Any], suite: str) -> tuple[list[str], list[list[str]]]:
    head = ["group", "case", "device", "median", "IQR", "min-max", "n x calls", "peak MB", "ratios", "note"]
    rows = []
    for r in result["results"]:
        if r["suite"] != suite:
            continue
        mem = r.get("peak_mem_mb")
        note = r.get("note", "")
        if r.get("error"):
            note = f"ERROR {r['error']}"
        rows.append(
            [
                r["group"],
                r["case"],
                r["device"],
                _fmt_s(r["median_s"]),
                _fmt_range(r["q1_s"], r["q3_s"]),
                _fmt_range(r["min_s"], r["max_s"]),
                f"{r['samples']} x {r.get('calls_per_sample', 1)}",
                "-" if mem is None else f"{mem:.1f}",
                _ratio_note(result, r),
                note,
            ]
        )
    return head, rows


def _ratio_rows(result: dict[str, Any], only_targets: bool = False) -> tuple[list[str], list[list[str]]]:
    head = ["suite", "ratio", "size", "batch", "value", "target", "status"]
    rows = []
    for r in result["ratios"]:
        if only_targets and r["target"] is None:
            continue
        tgt = "-" if r["target"] is None else f"{r['op']} {r['target']:g}"
        status = r["status"] or ("n/a" if r["target"] is not None else "")
        size = str(r.get("size", ""))
        if "instances" in r:
            size = f"{size} ({r['instances']})"
        rows.append([r["suite"], r["name"], size, str(r.get("batch", "")), _fmt_ratio(r), tgt, status])
    return head, rows


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt_malloc(state: dict[str, Any] | None) -> str:
    if not state:
        return "not recorded"
    if state.get("mode") == "pinned":
        return (
            f"pinned glibc thresholds (mmap {state['mmap_threshold'] >> 20} MiB, trim {state['trim_threshold'] >> 20} "
            "MiB): timings do not depend on the process's allocation history"
        )
    return f"glibc defaults ({state.get('reason', '')})"


def to_markdown(result: dict[str, Any]) -> str:
    """Render a benchmark result dict as markdown (environment, one table per suite, ratios, skips, errors)."""
    env = result["environment"]
    v = env["versions"]
    parts = [
        "# lossbench bench",
        "",
        f"- device: {env['device']} ({env['device_name']}), torch threads: {env['torch_threads']}, "
        f"CPUs: {env['cpu_count']}, load average {env.get('load_average')} at the start, "
        f"{env.get('load_average_end')} at the end, {env['platform']}",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        "- environment variables: "
        + ", ".join(f"{k}={val}" for k, val in env.get("env", {}).items() if val is not None)
        if any(val is not None for val in env.get("env", {}).values())
        else "- environment variables: none of " + ", ".join(_ENV_VARS) + " set",
        f"- method: {result['settings']['method']}",
        f"- peak memory: {env['memory_method']}",
        f"- malloc: {_fmt_malloc(env.get('malloc'))}",
        f"- run at {env['timestamp']}",
    ]
    for suite in result["settings"]["suites"]:
        head, rows = _result_rows(result, suite)
        if rows:
            parts += ["", f"## {suite}", "", _md_table(head, rows)]
    if any(r["target"] is not None for r in result["ratios"]):
        parts += ["", "## targets (ratios from this run)", "", _md_table(*_ratio_rows(result, only_targets=True))]
    if result["skipped"]:
        parts += ["", "## skipped", ""]
        parts += [f"- {s['suite']} / {s['case']} {s.get('size', '')}: {s['reason']}" for s in result["skipped"]]
    if result["errors"]:
        parts += ["", "## errors", ""]
        parts += [f"- {e['suite']} / {e['case']}: {e['message']}" for e in result["errors"]]
    return "\n".join(parts) + "\n"


def _print_tables(result: dict[str, Any], console: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    for suite in result["settings"]["suites"]:
        head, rows = _result_rows(result, suite)
        if not rows:
            continue
        table = Table(title=f"lossbench bench: {suite} ({result['environment']['device']})")
        for h in head:
            table.add_column(h, justify="right" if h in ("median", "n x calls", "peak MB") else "left")
        for row in rows:
            table.add_row(*map(escape, row), style="red" if row[-1].startswith("ERROR") else None)
        console.print(table)
    if any(r["target"] is not None for r in result["ratios"]):
        table = Table(title="targets (ratios computed inside this run)")
        head, rows = _ratio_rows(result, only_targets=True)
        for h in head:
            table.add_column(h)
        for row in rows:
            style = {"PASS": "green", "FAIL": "bold red"}.get(row[-1])
            table.add_row(*map(escape, row), style=style)
        console.print(table)
        status = [r["status"] for r in result["ratios"] if r["target"] is not None]
        console.print(
            f"targets: {status.count('PASS')} PASS, {status.count('FAIL')} FAIL"
            + (f", {status.count(None)} not measured" if None in status else "")
        )
    for s in result["skipped"]:
        text = f"{s['suite']} / {s['case']} {s.get('size', '')}: {s['reason']}"
        console.print(f"[yellow]skipped[/] {escape(text)}")
    for e in result["errors"]:
        text = f"{e['suite']} / {e['case']}: {e['message']}"
        console.print(f"[bold red]error[/] {escape(text)}")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return repr(obj)


# ------------------------------------------------------------------------------------------------------- API


def _resolve_device(device: str | torch.device) -> torch.device:
    text = str(device)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except (RuntimeError, TypeError):
        raise expect("device", "'cpu', 'cuda', 'cuda:N' or 'auto'", repr(device)) from None
    if dev.type not in ("cpu", "cuda"):
        raise expect("device", "'cpu', 'cuda', 'cuda:N' or 'auto'", repr(device))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise expect("device", "'cpu' or 'auto' on this machine", repr(device), "no CUDA device", cls=BackendError)
    return dev


def run_bench(
    suites: Sequence[str] = SUITES,
    sizes: Sequence[str | int] | None = None,
    device: str | torch.device = "cpu",
    repeats: int = 5,
    out: str | os.PathLike[str] | None = None,
    show: bool = True,
    losses: Sequence[str] | str | None = None,
    malloc: str = "pinned",
) -> dict[str, Any]:
    """Run the benchmark suites and return (and optionally write and print) the results.

    Args:
        suites: any of ``"cc"``, ``"losses"``, ``"scaling"``, ``"metrics"`` (see the module docstring).
        sizes: image sizes of the ``cc`` and ``losses`` suites: ``"512x512"`` (2D), ``"64"`` (64^3),
            ``"96x96x48"``; default ``DEFAULT_SIZES`` (512^2, 64^3, 96^3, 192^3).
        device: ``"cpu"``, ``"cuda"`` (``"cuda:N"``) or ``"auto"``. On CUDA the torch paths run on the device
            (cc3d and scipy stay CPU references) and every timing is synchronised.
        repeats: timed samples per case after the warm-up (>= 1).
        out: folder to write ``bench.json`` and ``bench.md`` into (created if needed).
        show: print rich tables and progress to the terminal.
        losses: only these losses in the ``losses`` and ``scaling`` suites: registry names (every case of that
            loss) or case labels such as ``"ici reference"``; Dice is always timed (the ratios' denominator).
            Default: every registered loss and variant.
        malloc: ``"pinned"`` (default) fixes glibc's malloc thresholds for the rest of the process so that timings
            do not depend on the process's allocation history (see :func:`_pin_malloc`; recorded under
            ``environment.malloc``); ``"default"`` leaves glibc's dynamic thresholds alone.

    Returns:
        The result dict described in the module docstring.

    Raises:
        ConfigError: for an unknown suite, a bad size, ``repeats < 1`` or an unavailable device (before anything
            runs).
        LossbenchError: after writing the results, if a suite could not run (for example a missing module) or a
            case raised; the message names them and the result dict is attached as ``exc.results``.
    """
    if isinstance(suites, str):
        suites = [s.strip() for s in suites.split(",") if s.strip()]
    suites = list(dict.fromkeys(suites))
    if not suites:
        raise expect("suites", f"a non-empty selection of {list(SUITES)}", repr(suites))
    for s in suites:
        if s not in SUITES:
            raise ConfigError(f"`suites` must be among {list(SUITES)}, got {s!r}." + suggest(str(s), SUITES))
    size_list = [parse_size(s) for s in (DEFAULT_SIZES if sizes is None else sizes)]
    if not size_list:
        raise expect("sizes", "at least one size", repr(sizes))
    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise expect("repeats", "an int >= 1", repr(repeats))
    dev = _resolve_device(device)
    out_dir = None if out is None else Path(out)
    if isinstance(losses, str):
        losses = [s.strip() for s in losses.split(",") if s.strip()]
    if malloc not in MALLOC_MODES:
        raise ConfigError(f"`malloc` must be one of {list(MALLOC_MODES)}, got {malloc!r}")
    if losses is not None:
        if not losses:
            raise expect("losses", "a non-empty selection of losses (or None for all)", repr(losses))
        from lossbench.losses import list_losses

        known = [_entry_name(e) for e in list_losses()] + [v[0] for v in LOSS_VARIANTS]
        unknown = [name for name in losses if name not in known]
        if unknown:
            raise ConfigError(
                f"`losses` must name registered losses or case labels among {known}, got {unknown!r}."
                + suggest(str(unknown[0]), known)
            )

    console = None
    if show:
        from rich.console import Console

        console = Console(width=None if sys.stdout.isatty() else 160)
    memory_method = _cpu_memory_method()
    run = _Run(dev, int(repeats), memory_method, console, losses)
    malloc_state = _pin_malloc() if malloc == "pinned" else {"mode": "default", "reason": "requested"}
    environment = _environment(dev, memory_method)  # load average at the start; the end is added below
    environment["malloc"] = malloc_state
    for suite in suites:
        if suite == "cc":
            _suite_cc(run, size_list)
        elif suite == "losses":
            _suite_losses(run, size_list)
        elif suite == "scaling":
            _suite_scaling(run)
        else:
            _suite_metrics(run)
    result = {
        "schema_version": SCHEMA_VERSION,
        "environment": {**environment, "load_average_end": _load_average()},
        "settings": {
            "suites": suites,
            "sizes": [_size_name(s) for s in size_list],
            "batches": list(BATCHES),
            "repeats": int(repeats),
            "device": str(dev),
            "losses": None if losses is None else list(losses),
            "method": (
                f"1 warm-up call (peak memory measured on it), then up to {repeats} samples per case, cases of a group "
                "timed round-robin, each sample after one untimed call of the same case; a sample averages "
                f"back-to-back calls lasting >= {MIN_SAMPLE_S * 1e3:g} ms; "
                f"calls > {SLOW_CALL_S:g} s are their own warm-up and stop at {CASE_BUDGET_S:g} s per case; "
                "median, IQR and min/max of the per-call time reported"
            ),
            "argv": sys.argv[1:] if sys.argv and Path(sys.argv[0]).name == "lossbench" else None,
        },
        "results": run.results,
        "ratios": run.ratios,
        "skipped": run.skipped,
        "errors": run.errors,
    }
    result = _jsonable(result)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(out_dir / "bench.json", json.dumps(result, indent=2) + "\n")
        _write_atomic(out_dir / "bench.md", to_markdown(result))
    if console is not None:
        _print_tables(result, console)
        if out_dir is not None:
            console.print(f"wrote {out_dir / 'bench.json'} and {out_dir / 'bench.md'}")
    if run.errors:
        where = f"; the other results were written to {out_dir}" if out_dir is not None else ""
        first = run.errors[0]
        err = LossbenchError(
            f"`lossbench bench` must complete every selected suite, got {len(run.errors)} error(s), first: "
            f"{first['suite']} / {first['case']}: {first['message']}{where}"
        )
        err.results = result  # type: ignore[attr-defined]
        raise err
    return result
