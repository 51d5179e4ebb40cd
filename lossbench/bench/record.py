"""The benchmark's record of one run: result rows, ratios, skips and errors (:class:`Recorder`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from lossbench.bench.timing import SLOW_CALL_S, Case, measure_group

__all__ = ["Recorder"]


class Recorder:
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
        """Print a time-stamped progress line (when there is a console)."""
        if self.console is not None:
            self.console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {text}", highlight=False)

    def group(
        self,
        suite: str,
        group: str,
        cases: dict[str, Case],
        meta: dict[str, dict[str, Any]],
        common: dict[str, Any],
        *,
        repeats: int | None = None,
    ) -> dict[str, float | None]:
        """Measure one group, record a row per case, and return name -> median seconds (None on error).

        ``repeats`` caps the run's samples per case for a group of large cases (default: the run's ``repeats``).
        """
        self.log(f"[{suite}] {group}: {', '.join(cases)}")
        repeats = self.repeats if repeats is None else min(repeats, self.repeats)
        timings = measure_group(cases, repeats=repeats, memory_method=self.memory_method)
        medians: dict[str, float | None] = {}
        for name, tm in timings.items():
            row = {"suite": suite, "group": group, "case": name, **common, "device": cases[name][1].type}
            row.update(meta.get(name, {}))
            row.update(tm.summary())
            row.setdefault("note", "")
            if tm.samples and tm.samples[0] > SLOW_CALL_S and len(tm.samples) < repeats:
                extra = f"{len(tm.samples)} sample(s): calls > {SLOW_CALL_S:g} s are their own warm-up"
                row["note"] = f"{row['note']}; {extra}" if row["note"] else extra
            if tm.error is not None:
                row["error"] = tm.error
                self.errors.append({"suite": suite, "case": f"{group} / {name}", "message": tm.error})
            self.results.append(row)
            medians[name] = row["median_s"]
        return medians

    def column(self, suite: str, group: str, key: str) -> dict[str, Any]:
        """Case -> ``key`` of the result rows recorded for ``group`` of ``suite`` (e.g. ``"peak_mem_mb"``)."""
        return {r["case"]: r.get(key) for r in self.results if r["suite"] == suite and r["group"] == group}

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
        """Record a case that was not timed, with the reason."""
        self.skipped.append({"suite": suite, "case": case, **common, "reason": reason})
        self.log(f"[{suite}] skipped {case}: {reason}")

    def error(self, suite: str, case: str, message: str) -> None:
        """Record an error (the run fails at the end, after writing every result)."""
        self.errors.append({"suite": suite, "case": case, "message": message})
        self.log(f"[{suite}] error in {case}: {message}")
