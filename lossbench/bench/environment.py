"""What a benchmark result records about where it ran, and the process settings it pins (glibc malloc)."""

from __future__ import annotations

import datetime as _dt
import importlib
import os
import platform
from typing import Any

import numpy as np
import torch

from lossbench.errors import BackendError, expect

__all__ = [
    "ENV_VARS",
    "PINNED_MALLOC",
    "MALLOC_MODES",
    "environment",
    "load_average",
    "pin_malloc",
    "trim_heap",
    "resolve_device",
]


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the platform has none)."""
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


#: Environment variables recorded with every result: thread counts, huge pages and malloc settings change CPU timings.
ENV_VARS = (
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


def pin_malloc() -> dict[str, Any]:
    """Fix glibc's malloc thresholds for this process (Linux/glibc only); return what was done.

    By default glibc moves its mmap threshold as blocks are freed and hands free memory at the top of the heap back
    to the OS, so whether a tensor of a few MB is served from already mapped memory or page-faults afresh depends on
    what the process allocated and freed before, and the same call can take twice as long in one process as in
    another. Fixed thresholds keep every allocation below 64 MiB on the heap and the heap mapped, i.e. the steady
    state of a long training loop, for every case alike.
    """
    libc = _glibc()
    if libc is None:
        return {"mode": "default", "reason": "not glibc"}
    try:
        ok = libc.mallopt(_M_MMAP_THRESHOLD, PINNED_MALLOC["mmap_threshold"]) == 1
        ok = libc.mallopt(_M_TRIM_THRESHOLD, PINNED_MALLOC["trim_threshold"]) == 1 and ok
    except AttributeError as exc:
        return {"mode": "default", "reason": f"mallopt unavailable: {exc}"}
    return {"mode": "pinned", **PINNED_MALLOC} if ok else {"mode": "default", "reason": "mallopt refused"}


def trim_heap() -> bool:
    """Hand the free memory of glibc's heap back to the OS (``malloc_trim(0)``); return whether it ran.

    A peak-memory measurement that counts newly touched resident pages sees only what the heap could not serve from
    pages it already holds. After a trim every allocation of the measured call touches fresh pages, so the measured
    growth is the call's own peak, whatever the process ran before.
    """
    libc = _glibc()
    if libc is None:
        return False
    try:
        libc.malloc_trim(0)
    except AttributeError:
        return False
    return True


def _glibc() -> Any:
    """The C library through ctypes when it is glibc on Linux, else None."""
    import ctypes
    import ctypes.util

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def environment(device: torch.device, memory_method: str) -> dict[str, Any]:
    """Machine, versions, threads, device and the environment variables that change CPU timings."""
    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for mod in ("lossbench", "cc3d", "scipy", "monai"):
        try:
            m = importlib.import_module(mod)
            versions[mod] = getattr(m, "__version__", None) or _dist_version(mod)
        except ImportError:
            versions[mod] = None
    for mod in ("skimage", "kornia", "numba"):  # references of the cc suite, the Voronoi labelling's compiler
        versions[mod] = _dist_version(mod)
    env: dict[str, Any] = {
        "load_average": load_average(),
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
        "env": {k: os.environ.get(k) for k in ENV_VARS},
        "versions": versions,
    }
    return env


def _dist_version(module: str) -> str | None:
    from importlib import metadata

    dist = {"cc3d": "connected-components-3d", "skimage": "scikit-image"}.get(module, module)
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; check that a named device exists.

    Raises:
        ConfigError: not a CPU/CUDA device name. BackendError: CUDA asked for without a CUDA device.
    """
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
