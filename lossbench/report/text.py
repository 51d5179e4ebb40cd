"""Small text helpers of the report: one-line text, ``key=value`` lists, durations."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["clean", "kv", "duration"]


def clean(x: Any) -> str:
    """``x`` as one line of text; ``None`` and NaN as the empty string."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return " ".join(str(x).split())


def kv(value: Any) -> str:
    """A parameter value as text: dicts as ``k=v, ...``, lists as ``[a, b]``, recursively."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={kv(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(kv(v) for v in value) + "]"
    return str(value)


def duration(seconds: float) -> str:
    """Seconds in a readable unit: ``12.3 s``, ``4.5 min`` or ``1.25 h``; ``n/a`` when not finite."""
    if not np.isfinite(seconds):
        return "n/a"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"
