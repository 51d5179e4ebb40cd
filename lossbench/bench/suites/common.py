"""Helpers the suites share: importing a suite's dependencies with a clear error, reading registry entries."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from lossbench.bench.record import Recorder

__all__ = ["import_or_error", "entry_name", "entry_params"]


def import_or_error(run: Recorder, suite: str, module: str, names: Sequence[str]) -> dict[str, Any] | None:
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


def entry_name(entry: Any) -> str:
    """The registry name of a ``list_losses()`` entry (a name, a dict or an object with ``name``)."""
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict):
        return str(entry["name"])
    return str(entry.name)


def entry_params(entry: Any) -> dict[str, Any]:
    """The default parameters of a ``list_losses()`` entry (empty when it has none)."""
    if isinstance(entry, dict):
        return dict(entry.get("params", {}) or {})
    return dict(getattr(entry, "params", {}) or {})
