"""Timing and peak memory of benchmark cases: :class:`Timing` and :func:`measure_group`.

Method: each case gets one warm-up call, then ``repeats`` timed samples; a sample is the mean over enough
back-to-back calls to last ``MIN_SAMPLE_S`` (one call for anything slower), as ``timeit`` does. The cases of one
group are timed round-robin, so a burst of load on a shared machine hits all of them alike; each sample follows one
untimed call of the same case, so that no case inherits the memory state of the previous one. A call longer than
``SLOW_CALL_S`` is its own warm-up: its first call counts as a sample, and further samples are taken only while the
case has used less than ``CASE_BUDGET_S``. On CUDA every timed call is bracketed by ``torch.cuda.synchronize()``.

Peak memory is measured on the untimed calls (the warm-up and the call before each sample) and reported as their
median, so that measuring slows no timed call (but the warm-up of a slow case, which is its first sample). CUDA:
``torch.cuda.max_memory_allocated`` above the memory in use before the call. CPU on Linux: the peak resident set
size above the resident size before the call, with the high-water mark reset through ``/proc/self/clear_refs``, i.e.
newly touched pages. glibc's free heap memory is handed back to the OS first (``malloc_trim``), so that the call's
allocations touch fresh pages instead of reusing pages an earlier case left mapped: the growth is the call's own
peak, not a lower bound that depends on what ran before (other allocators' free lists can still hide some of it).
Elsewhere ``tracemalloc``, which sees numpy and Python allocations only.
"""

from __future__ import annotations

import contextlib
import math
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lossbench.bench.environment import trim_heap

__all__ = ["Timing", "measure_group", "cpu_memory_method", "Case", "SLOW_CALL_S", "CASE_BUDGET_S", "MIN_SAMPLE_S"]

#: A call longer than this is its own warm-up; samples stop once a case has used CASE_BUDGET_S.
SLOW_CALL_S = 1.0
CASE_BUDGET_S = 10.0
#: Fast calls are repeated back to back so that one sample lasts at least this long.
MIN_SAMPLE_S = 0.01

#: A benchmark case: a zero-argument callable and the device it runs on (CUDA calls are synchronised).
Case = tuple[Callable[[], Any], torch.device]


@dataclass
class Timing:
    """Samples (seconds per call) and peak memory of one benchmark case.

    ``mem_samples`` holds the peak memory growth (bytes) of every untimed call: the warm-up and the call before each
    sample; ``peak_mem_bytes`` is their median (a single measurement can catch a page or two of unrelated growth).
    """

    samples: list[float] = field(default_factory=list)
    mem_samples: list[int] = field(default_factory=list)
    calls_per_sample: int = 1
    error: str | None = None

    @property
    def peak_mem_bytes(self) -> int | None:
        """Median peak memory growth of the measured calls (None when none was measured)."""
        return int(np.median(self.mem_samples)) if self.mem_samples else None

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


def cpu_memory_method() -> str:
    """The CPU peak-memory method here: the resident set's high-water mark if it can be reset, else tracemalloc."""
    if not _can_reset_hwm():
        return "tracemalloc"
    return "rss-peak (VmHWM reset via /proc/self/clear_refs" + (", free heap trimmed first)" if trim_heap() else ")")


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
        trim_heap()
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
    cases: dict[str, Case],
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
    allocation page-faults again) it inherits, and a case's time would depend on its neighbour in the list.

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
        _warm_up(out[name], fn, device, memory_method, slow_call_s, min_sample_s)
    for _ in range(repeats):
        for name, (fn, device) in cases.items():
            _take_sample(out[name], fn, device, repeats, memory_method, slow_call_s, case_budget_s)
    return out


def _warm_up(
    tm: Timing, fn: Callable[[], Any], device: torch.device, memory_method: str, slow_call_s: float, min_sample_s: float
) -> None:
    """First call of a case: peak memory, the slow-call rule and the number of calls per sample."""
    try:
        with _peak_memory(device, memory_method) as peak:
            t = _timed(fn, device)
        _keep(tm, peak[0])
        if t > slow_call_s:
            tm.samples.append(t)
        elif t < min_sample_s:
            t = _timed(fn, device)  # calibration: the first call may include one-time costs
            tm.calls_per_sample = max(1, min(10_000, math.ceil(min_sample_s / max(t, 1e-9))))
    except Exception as exc:  # a broken case must not hide the others' numbers; it is reported as an error
        tm.error = f"{type(exc).__name__}: {exc}"


def _keep(tm: Timing, peak: int | None) -> None:
    if peak is not None:
        tm.mem_samples.append(peak)


def _take_sample(
    tm: Timing,
    fn: Callable[[], Any],
    device: torch.device,
    repeats: int,
    memory_method: str,
    slow_call_s: float,
    case_budget_s: float,
) -> None:
    """One timed sample of a case, unless it failed, has its samples or has used its time budget."""
    if tm.error is not None or len(tm.samples) >= repeats or sum(tm.samples) >= case_budget_s:
        return
    try:
        if not tm.samples or tm.samples[0] <= slow_call_s:
            with _peak_memory(device, memory_method) as peak:
                fn()  # re-warm after the previous case (untimed, so its peak memory is measured too)
            _keep(tm, peak[0])
        tm.samples.append(_timed(fn, device, tm.calls_per_sample))
    except Exception as exc:  # same as in _warm_up: recorded, shown, and makes the run fail at the end
        tm.error = f"{type(exc).__name__}: {exc}"
