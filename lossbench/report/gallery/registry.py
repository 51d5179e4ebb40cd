"""The registry of the gallery's expectation checks: :class:`Check` results, the shared context, the decorator.

A check is a small function that takes the :class:`CheckContext` and returns ``(passed, detail)``; it is registered
with :func:`check` (in gallery order: the order in which the check modules are imported and their functions
defined) and run by :func:`run_spec`, which turns an exception into a FAIL carrying the error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Check", "CheckContext", "CHECKS", "check", "run_spec", "norm"]


@dataclass(frozen=True)
class Check:
    """One computed expectation of the gallery.

    Attributes:
        name: short identifier.
        expectation: what should hold, in words.
        passed: whether it held.
        detail: the numbers it was decided on.
    """

    name: str
    expectation: str
    passed: bool
    detail: str

    @property
    def status(self) -> str:
        """``"PASS"`` or ``"FAIL"``."""
        return "PASS" if self.passed else "FAIL"


@dataclass
class CheckContext:
    """What the checks look at: the 2D scenes, the Figure 1 scene without its spurious blobs, shared results.

    ``cache`` is shared with the gallery's figures (for example ``fig1_rows``, ``tp_loss``, ``stress``,
    ``kornia``, ``cc_spurious``, ``cc_missed``), so that they show the numbers the checks decided on without
    computing them twice. ``errors`` holds why a shared result could not be computed; :meth:`get` raises it again,
    so every check that needs the result FAILs with that message.
    """

    fig1: Any
    bridge: Any
    missed: Any
    perfect: Any
    no_spur: Any
    spur: np.ndarray
    cache: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        """The shared result ``key``, computed once with ``compute()``; raises if computing it failed, now or before."""
        if key in self.errors:
            raise RuntimeError(f"{key} failed: {self.errors[key]}")
        if self.cache.get(key) is None:
            try:
                self.cache[key] = compute()
            except Exception as exc:  # remembered, so every check that needs it FAILs with the same message
                self.errors[key] = f"{type(exc).__name__}: {exc}"
                raise RuntimeError(f"{key} failed: {self.errors[key]}") from exc
        return self.cache[key]


@dataclass(frozen=True)
class _Spec:
    name: str
    expectation: str
    fn: Callable[[CheckContext], tuple[bool, str]]


#: Every check, in gallery order (the order of registration).
CHECKS: list[_Spec] = []


def check(name: str, expectation: str) -> Callable[[Callable[[CheckContext], tuple[bool, str]]], Any]:
    """Register the decorated function as the check ``name`` with its expectation in words."""

    def register(fn: Callable[[CheckContext], tuple[bool, str]]) -> Callable[[CheckContext], tuple[bool, str]]:
        CHECKS.append(_Spec(name, expectation, fn))
        return fn

    return register


def run_spec(spec: _Spec, c: CheckContext) -> Check:
    """Run one registered check; an exception is a FAIL with the error as its detail."""
    try:
        ok, detail = spec.fn(c)
    except Exception as exc:  # a crash is a failed expectation, reported with its message
        ok, detail = False, f"raised {type(exc).__name__}: {exc}"
    return Check(spec.name, spec.expectation, bool(ok), detail)


def norm(g: np.ndarray) -> float:
    """Euclidean (L2) norm of an array."""
    return float(np.sqrt((g**2).sum()))
