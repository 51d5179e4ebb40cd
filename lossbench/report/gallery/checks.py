"""The gallery's expectation checks, each computed (never hard-coded) and printed PASS/FAIL.

The checks live in three modules, registered in gallery order when imported:
:mod:`~lossbench.report.gallery.checks_ici` (ICI/DICI, the published loss against lossbench's designs, and the blob
loss), :mod:`~lossbench.report.gallery.checks_labelling` (exact labelling against the public code's and kornia's
iterative max-pooling) and :mod:`~lossbench.report.gallery.checks_cc` (CC-Dice). :func:`run_checks` runs all of
them; a check that raises is a FAIL with the error as its detail. Add a check with the
:func:`~lossbench.report.gallery.registry.check` decorator in one of these modules.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from lossbench.errors import expect
from lossbench.registry import suggest
from lossbench.report.gallery.compute import without_spurious
from lossbench.report.gallery.registry import CHECKS, Check, CheckContext, check, run_spec

#: The check modules in gallery order; importing them registers their checks.
MODULES = tuple(f"lossbench.report.gallery.{m}" for m in ("checks_ici", "checks_labelling", "checks_cc"))
for _name in MODULES:
    importlib.import_module(_name)

__all__ = ["Check", "CheckContext", "CHECKS", "check", "run_checks"]


def run_checks(context: dict[str, Any] | None = None, names: Sequence[str] | None = None) -> list[Check]:
    """Compute the expectation checks of the gallery (2D scenes, default sizes).

    Args:
        context: optional cache of intermediate results shared with the figures (filled in place).
        names: run only these checks (default: all).

    Returns:
        One :class:`Check` per expectation, in gallery order.

    Raises:
        ConfigError: a name that is not a check (with a suggestion).
    """
    ordered = sorted(CHECKS, key=lambda spec: MODULES.index(spec.fn.__module__))  # stable: registration order within
    if names is not None:
        known = [spec.name for spec in ordered]
        for name in names:
            if name not in known:
                raise expect("names", f"names of gallery checks ({', '.join(known)})", repr(name),
                             hint=suggest(str(name), known).strip())  # fmt: skip
        ordered = [spec for spec in ordered if spec.name in names]
    c = _context({} if context is None else context)
    return [run_spec(spec, c) for spec in ordered]


def _context(cache: dict[str, Any]) -> CheckContext:
    from lossbench.data.scenes import get_scene

    fig1 = get_scene("figure1")
    no_spur, spur = without_spurious(fig1)
    return CheckContext(
        fig1=fig1,
        bridge=get_scene("figure4_bridge"),
        missed=get_scene("missed_small"),
        perfect=get_scene("perfect"),
        no_spur=no_spur,
        spur=spur,
        cache=cache,
    )
