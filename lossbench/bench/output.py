"""The benchmark's outputs: the result dict as markdown, as rich tables on the console, and as JSON."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lossbench.bench.environment import ENV_VARS

__all__ = ["to_markdown", "print_tables", "jsonable"]

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
        else "- environment variables: none of " + ", ".join(ENV_VARS) + " set",
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


def print_tables(result: dict[str, Any], console: Any) -> None:
    """Print one rich table per suite, the targets with a PASS/FAIL count, the skips and the errors."""
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


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON types: numpy scalars as Python numbers, non-finite floats as None, others by repr."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return repr(obj)
