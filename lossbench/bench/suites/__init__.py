"""The benchmark's suites, one module each; :data:`SUITE_RUNNERS` maps a suite name to its runner.

Every runner takes the run's :class:`~lossbench.bench.record.Recorder` and the parsed image sizes (used by the
``cc`` and ``losses`` suites; ``scaling`` and ``metrics`` have fixed sizes of their own).
"""

from __future__ import annotations

from collections.abc import Callable

from lossbench.bench.record import Recorder
from lossbench.bench.suites.cc import run_cc_suite
from lossbench.bench.suites.losses import run_losses_suite
from lossbench.bench.suites.metrics import run_metrics_suite
from lossbench.bench.suites.scaling import run_scaling_suite

__all__ = ["SUITE_RUNNERS"]

SUITE_RUNNERS: dict[str, Callable[[Recorder, list[tuple[int, ...]]], None]] = {
    "cc": run_cc_suite,
    "losses": run_losses_suite,
    "scaling": run_scaling_suite,
    "metrics": run_metrics_suite,
}
