""":func:`run_bench`: check the arguments, run the selected suites, assemble, write and show the result."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lossbench.bench.environment import MALLOC_MODES, environment, load_average, pin_malloc, resolve_device
from lossbench.bench.output import jsonable, print_tables, to_markdown
from lossbench.bench.record import Recorder
from lossbench.bench.settings import BATCHES, DEFAULT_SIZES, SCHEMA_VERSION, SUITES, parse_size, size_name
from lossbench.bench.suites import SUITE_RUNNERS
from lossbench.bench.suites.common import entry_name
from lossbench.bench.suites.losses import LOSS_VARIANTS
from lossbench.bench.suites.noisy import NOISY_CASES, NOISY_REPEATS
from lossbench.bench.timing import CASE_BUDGET_S, MIN_SAMPLE_S, SLOW_CALL_S, cpu_memory_method
from lossbench.errors import ConfigError, LossbenchError, expect
from lossbench.io import atomic_write_text, json_text
from lossbench.registry import suggest

__all__ = ["run_bench", "command_line"]


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
        suites: any of ``"cc"``, ``"losses"``, ``"scaling"``, ``"metrics"`` (see :mod:`lossbench.bench`).
        sizes: image sizes of the ``cc`` and ``losses`` suites: ``"512x512"`` (2D), ``"64"`` (64^3),
            ``"96x96x48"``; default ``DEFAULT_SIZES`` (512^2, 64^3, 96^3, 192^3).
        device: ``"cpu"``, ``"cuda"`` (``"cuda:N"``) or ``"auto"``. On CUDA the torch paths run on the device
            (cc3d and scipy stay CPU references) and every timing is synchronised.
        repeats: timed samples per case after the warm-up (>= 1).
        out: folder to write ``bench.json``, ``bench.md`` and ``provenance.json`` into (created if needed); the
            provenance records the fingerprint of the benchmarked code and the ``lossbench bench`` command that
            reruns this benchmark (:func:`command_line`).
        show: print rich tables and progress to the terminal.
        losses: only these losses in the ``losses`` and ``scaling`` suites: registry names (every case of that
            loss) or case labels such as ``"ici reference=False"``; Dice is always timed (the ratios'
            denominator). The CC-Dice groups run when ``cc_dice`` or ``cc_dicece`` is selected.
            Default: every registered loss and variant.
        malloc: ``"pinned"`` (default) fixes glibc's malloc thresholds for the rest of the process so that timings
            do not depend on the process's allocation history (see
            :func:`lossbench.bench.environment.pin_malloc`; recorded under ``environment.malloc``); ``"default"``
            leaves glibc's dynamic thresholds alone.

    Returns:
        The result dict described in :mod:`lossbench.bench`.

    Raises:
        ConfigError: for an unknown suite, a bad size, ``repeats < 1`` or an unavailable device (before anything
            runs).
        LossbenchError: after writing the results, if a suite could not run (for example a missing module) or a
            case raised; the message names them and the result dict is attached as ``exc.results``.
    """
    args = _check_arguments(suites, sizes, device, repeats, out, losses, malloc)
    console = _console() if show else None
    run = Recorder(args.device, args.repeats, cpu_memory_method(), console, args.losses)
    malloc_state = pin_malloc() if args.malloc == "pinned" else {"mode": "default", "reason": "requested"}
    env = environment(args.device, run.memory_method)  # load average at the start; the end is added in _result
    env["malloc"] = malloc_state
    for suite in args.suites:
        SUITE_RUNNERS[suite](run, args.sizes)
    result = _result(args, env, run)
    if args.out is not None:
        _write(result, args.out, command_line(args))
    if console is not None:
        _show(result, console, args.out)
    if run.errors:
        _raise_errors(run, result, args.out)
    return result


@dataclass(frozen=True)
class _Arguments:
    """The checked arguments of :func:`run_bench`."""

    suites: list[str]
    sizes: list[tuple[int, ...]]
    device: torch.device
    repeats: int
    out: Path | None
    losses: list[str] | None
    malloc: str


def _check_arguments(
    suites: Sequence[str] | str,
    sizes: Sequence[str | int] | None,
    device: str | torch.device,
    repeats: int,
    out: str | os.PathLike[str] | None,
    losses: Sequence[str] | str | None,
    malloc: str,
) -> _Arguments:
    """Every argument checked (and normalised) before anything runs."""
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
    dev = resolve_device(device)
    if isinstance(losses, str):
        losses = [s.strip() for s in losses.split(",") if s.strip()]
    if malloc not in MALLOC_MODES:
        raise ConfigError(f"`malloc` must be one of {list(MALLOC_MODES)}, got {malloc!r}")
    if losses is not None:
        _check_losses(losses)
    return _Arguments(
        suites=suites,
        sizes=size_list,
        device=dev,
        repeats=int(repeats),
        out=None if out is None else Path(out),
        losses=None if losses is None else list(losses),
        malloc=malloc,
    )


def _check_losses(losses: Sequence[str]) -> None:
    """A loss selection names registered losses or case labels of the variants."""
    if not losses:
        raise expect("losses", "a non-empty selection of losses (or None for all)", repr(losses))
    from lossbench.losses import list_losses

    known = [entry_name(e) for e in list_losses()] + [v[0] for v in LOSS_VARIANTS]
    known += [c[0] for c in NOISY_CASES if c[0] not in known]
    unknown = [name for name in losses if name not in known]
    if unknown:
        raise ConfigError(
            f"`losses` must name registered losses or case labels among {known}, got {unknown!r}."
            + suggest(str(unknown[0]), known)
        )


def _console() -> Any:
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)


def _method(repeats: int) -> str:
    """The timing method in words (recorded under ``settings.method``)."""
    return (
        f"1 warm-up call, then up to {repeats} samples per case, cases of a group "
        "timed round-robin, each sample after one untimed call of the same case; a sample averages "
        f"back-to-back calls lasting >= {MIN_SAMPLE_S * 1e3:g} ms; "
        f"calls > {SLOW_CALL_S:g} s are their own warm-up and stop at {CASE_BUDGET_S:g} s per case; "
        f"at most {NOISY_REPEATS} samples per case in the noisy scene; every loss primed on a corner of its inputs; "
        "median, IQR and min/max of the per-call time reported; peak memory: median over the untimed calls"
    )


def _result(args: _Arguments, env: dict[str, Any], run: Recorder) -> dict[str, Any]:
    """The result dict (plain JSON types) of the finished suites."""
    result = {
        "schema_version": SCHEMA_VERSION,
        "environment": {**env, "load_average_end": load_average()},
        "settings": {
            "suites": args.suites,
            "sizes": [size_name(s) for s in args.sizes],
            "batches": list(BATCHES),
            "repeats": args.repeats,
            "device": str(args.device),
            "losses": args.losses,
            "method": _method(args.repeats),
            "argv": sys.argv[1:] if sys.argv and Path(sys.argv[0]).name == "lossbench" else None,
        },
        "results": run.results,
        "ratios": run.ratios,
        "skipped": run.skipped,
        "errors": run.errors,
    }
    return jsonable(result)


def _write(result: dict[str, Any], out_dir: Path, command: str) -> None:
    """``bench.json``, ``bench.md``, then ``provenance.json`` (the code's fingerprint and ``command``)."""
    from lossbench.provenance import write_provenance

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "bench.json", json_text(result))
    atomic_write_text(out_dir / "bench.md", to_markdown(result))
    write_provenance(out_dir, "bench", command)


#: Environment variables that change the benchmark's numbers and are therefore part of the command that reruns it.
_COMMAND_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "THP_MEM_ALLOC_ENABLE", "CUDA_VISIBLE_DEVICES")


def command_line(args: _Arguments) -> str:
    """The shell command that reruns this benchmark: every argument spelled out, thread settings in front.

    For example ``OMP_NUM_THREADS=1 lossbench bench --suite cc,losses --sizes 512x512,96 --device cpu --repeats 5
    --malloc pinned --out reports/bench``.
    """
    parts = [f"{k}={shlex.quote(os.environ[k])}" for k in _COMMAND_ENV if os.environ.get(k) is not None]
    parts += ["lossbench", "bench", "--suite", ",".join(args.suites)]
    parts += ["--sizes", ",".join(_size_arg(s) for s in args.sizes)]
    parts += ["--device", str(args.device), "--repeats", str(args.repeats)]
    if args.losses is not None:
        parts += ["--losses", shlex.quote(",".join(args.losses))]
    parts += ["--malloc", args.malloc]
    if args.out is not None:
        parts += ["--out", shlex.quote(str(args.out))]
    return " ".join(parts)


def _size_arg(size: tuple[int, ...]) -> str:
    """A parsed size as ``--sizes`` takes it: ``96`` for a cube, ``512x512`` or ``96x96x48`` otherwise."""
    return str(size[0]) if len(size) == 3 and len(set(size)) == 1 else "x".join(map(str, size))


def _show(result: dict[str, Any], console: Any, out_dir: Path | None) -> None:
    print_tables(result, console)
    if out_dir is not None:
        console.print(f"wrote {out_dir / 'bench.json'}, {out_dir / 'bench.md'} and {out_dir / 'provenance.json'}")


def _raise_errors(run: Recorder, result: dict[str, Any], out_dir: Path | None) -> None:
    """Fail after the results were written: name the first error; the result dict rides along as ``results``."""
    where = f"; the other results were written to {out_dir}" if out_dir is not None else ""
    first = run.errors[0]
    err = LossbenchError(
        f"`lossbench bench` must complete every selected suite, got {len(run.errors)} error(s), first: "
        f"{first['suite']} / {first['case']}: {first['message']}{where}"
    )
    err.results = result  # type: ignore[attr-defined]
    raise err
