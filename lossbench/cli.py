"""Command-line interface: argument parsing only; every subcommand calls one plain Python function.

User mistakes (any :class:`~lossbench.errors.LossbenchError`) are printed as one line on stderr and the
process exits with status 2. Ctrl-C prints one line and exits with status 130.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from lossbench import __version__
from lossbench.errors import LossbenchError

__all__ = ["main", "build_parser"]


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _has_report() -> bool:
    import importlib.util

    return importlib.util.find_spec("lossbench.report.render") is not None


def _report_after_run(run_dir: Path, command: str) -> None:
    """Write the report of a finished run (the study package never imports the report package)."""
    if not _has_report():
        print(f"(no report renderer installed; results table: {run_dir / 'results.csv'})")
        return
    from lossbench.report.render import write_report
    from lossbench.study.config import load_study

    formats = load_study(run_dir / "study.yaml").report.formats
    for path in write_report(run_dir, formats=formats, command=command):
        print(f"report: {path}")
    from lossbench.report.render import headline_verdicts

    for line in headline_verdicts(run_dir):
        print(line)


def _warn_after_run(run_dir: Path) -> None:
    """Print what limits the run's verdicts (too few seeds, cells that did not finish, undertrained models)."""
    if not _has_report():
        return
    from lossbench.report.render import run_warnings

    for warning in run_warnings(run_dir):
        print(f"lossbench run: warning: {warning}", file=sys.stderr)


def _run_command(ns: argparse.Namespace, run_dir: Path) -> str:
    """The ``lossbench run`` command line that reproduces this run (recorded in the report's provenance).

    The study, the run folder, and the options that change what is computed or how fast; not ``--fresh``,
    ``--address`` (a machine's) or ``--no-report``.
    """
    words = ["lossbench", "run", str(ns.study), "--out", str(run_dir)]
    options = (
        ("--executor", ns.executor, "local"),
        ("--workers", ns.workers, 1),
        ("--threads", ns.threads, None),
        ("--scale", ns.scale, None),
        ("--device", ns.device, "auto"),
    )
    for flag, value, default in options:
        if value != default:
            words += [flag, str(value)]
    return shlex.join(words)


def _cmd_run(ns: argparse.Namespace) -> int:
    from lossbench.study.runner import run_study

    run_dir = run_study(
        ns.study,
        out=ns.out,
        executor=ns.executor,
        workers=ns.workers,
        device=ns.device,
        fresh=ns.fresh,
        dry_run=ns.dry_run,
        address=ns.address,
        report=not ns.no_report,
        threads=ns.threads,
        scale=ns.scale,
    )
    if not ns.dry_run and not ns.no_report:
        _report_after_run(run_dir, _run_command(ns, run_dir))
    if not ns.dry_run:
        _warn_after_run(run_dir)
    return 0


def _cmd_validate(ns: argparse.Namespace) -> int:
    from lossbench.study.config import problems_of, validate_study_file

    failed = False
    for study in ns.study:
        try:
            cfg = validate_study_file(study, scale=ns.scale)
        except LossbenchError as exc:
            failed = True
            for problem in problems_of(exc):
                print(f"lossbench validate: error: {' '.join(problem.split())}", file=sys.stderr)
            continue
        print(f"{study}: valid study {cfg.name!r}")
    return 2 if failed else 0


def _cmd_report(ns: argparse.Namespace) -> int:
    from lossbench.report.render import write_report

    for path in write_report(ns.run_dir, formats=_csv(ns.format), out=ns.out):
        print(path)
    return 0


def _cmd_gallery(ns: argparse.Namespace) -> int:
    from lossbench.report.gallery import write_gallery

    md = write_gallery(ns.out)
    print(md)
    print(md.with_name("gallery.html"))
    return 0


def _cmd_audit(ns: argparse.Namespace) -> int:
    from lossbench.audit import run_audit

    run_audit(losses=ns.loss or None, out=ns.out, show=True)
    return 0


def _cmd_bench(ns: argparse.Namespace) -> int:
    from lossbench.bench import run_bench

    run_bench(
        suites=_csv(ns.suite),
        sizes=_csv(ns.sizes) if ns.sizes else None,
        device=ns.device,
        repeats=ns.repeats,
        out=ns.out,
        show=True,
        losses=_csv(ns.losses) if ns.losses else None,
        malloc=ns.malloc,
    )
    return 0


def _cmd_losses(ns: argparse.Namespace) -> int:
    from lossbench.losses import print_losses

    print_losses()
    return 0


def _cmd_nnunet(ns: argparse.Namespace) -> int:
    from lossbench.integrations.nnunet_install import install, uninstall

    result = (install if ns.action == "install" else uninstall)(ns.folder)
    print(result.message())
    if ns.action == "install":
        from lossbench.integrations.nnunet import TRAINERS

        print(f"trainers: {', '.join(TRAINERS)}")
        print("train with: nnUNetv2_train DATASET CONFIGURATION FOLD -tr nnUNetTrainer_ICI")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and documentation)."""
    p = argparse.ArgumentParser(
        prog="lossbench",
        description="Benchmark instance-aware segmentation losses (ICI, blob, inverse weighting, Dice, ...).",
    )
    p.add_argument("--version", action="version", version=f"lossbench {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("run", help="train and evaluate every loss of a study file (resumes by default)")
    r.add_argument("study", type=Path, help="study YAML file")
    r.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<study name>)")
    r.add_argument("--executor", choices=["local", "ray"], default="local")
    r.add_argument("--workers", type=int, default=1, help="cells run at a time (worker processes or local Ray CPUs)")
    r.add_argument("--threads", type=int, default=None, help="torch threads per cell (default 1)")
    r.add_argument("--scale", default=None, help="apply a named entry of the study's `scales:` section (e.g. gpu)")
    r.add_argument("--address", default=None, help="Ray cluster address (ray executor); default starts a local Ray")
    r.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    r.add_argument("--fresh", action="store_true", help="discard this study's previous results and start over")
    r.add_argument("--dry-run", action="store_true", help="print the grid and the number of steps, run nothing")
    r.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    r.set_defaults(func=_cmd_run)

    v = sub.add_parser("validate", help="check study files (schema and every name), run nothing")
    v.add_argument("study", type=Path, nargs="+", help="study YAML file(s); every problem of each is listed")
    v.add_argument("--scale", default=None, help="validate this entry of the study's `scales:` section")
    v.set_defaults(func=_cmd_validate)

    rep = sub.add_parser(
        "report", help="write report.md / report.html (+ figures, verdicts.csv, provenance.json) for a run folder"
    )
    rep.add_argument("run_dir", type=Path)
    rep.add_argument("--format", default="md,html", help="comma-separated: md, html")
    rep.add_argument(
        "--out", type=Path, default=None, help="write the report into this folder instead of the run folder"
    )
    rep.set_defaults(func=_cmd_report)

    g = sub.add_parser("gallery", help="synthetic sanity-check gallery (markdown + HTML + PNG)")
    g.add_argument("--out", type=Path, default=Path("reports/gallery"), help="output folder (default: reports/gallery)")
    g.set_defaults(func=_cmd_gallery)

    a = sub.add_parser("audit", help="gradient audit of every loss term on small scenes")
    a.add_argument("--loss", action="append", help="loss name (repeatable; default: all)")
    a.add_argument("--out", type=Path, default=None, help="folder for audit.md / audit.csv")
    a.set_defaults(func=_cmd_audit)

    b = sub.add_parser("bench", help="performance benchmark: labelling backends, losses, metrics")
    b.add_argument("--suite", default="cc,losses,scaling,metrics", help="comma-separated: cc, losses, scaling, metrics")
    b.add_argument("--sizes", default=None, help="comma-separated sizes, e.g. 512x512,64,96,192")
    b.add_argument("--device", default="cpu", help="cpu, cuda, or auto")
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument(
        "--losses", default=None, help="comma-separated loss names or case labels (default all; Dice always runs)"
    )
    b.add_argument(
        "--malloc",
        choices=["pinned", "default"],
        default="pinned",
        help="pinned (default): fixed glibc malloc thresholds, timings independent of allocation history",
    )
    b.add_argument("--out", type=Path, default=None, help="folder for bench.json / bench.md")
    b.set_defaults(func=_cmd_bench)

    lo = sub.add_parser("losses", help="list the registered losses with parameters and defaults")
    lo.set_defaults(func=_cmd_losses)

    nn = sub.add_parser("nnunet", help="make lossbench's nnU-Net v2 trainers visible to nnUNetv2_train (extra nnunet)")
    nn.add_argument(
        "action", choices=["install", "uninstall"], help="write or remove the importing module in nnU-Net's trainers"
    )
    nn.add_argument("--folder", type=Path, default=None, help="nnU-Net's trainer folder (default: the installed one)")
    nn.set_defaults(func=_cmd_nnunet)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lossbench`` console script."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(ns, "func", None)
    if func is None:
        parser.print_help()
        return 0
    try:
        return func(ns)
    except LossbenchError as exc:
        print(f"lossbench {ns.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        return _interrupted(ns.command, exc)


def _interrupted(command: str, exc: KeyboardInterrupt) -> int:
    """Ctrl-C: print one line (a run says what it kept) and return 130; a further Ctrl-C exits at once.

    The process exits here, without the interpreter's exit handlers (they could wait on killed workers), when
    the run was cut short by a second Ctrl-C (``exc.forced``) or another Ctrl-C comes while the line is printed.
    """
    again: list[int] = []
    with contextlib.suppress(ValueError):  # ValueError: not the main thread, signals are not ours to handle
        signal.signal(signal.SIGINT, lambda signum, frame: again.append(signum))
    print(f"lossbench {command}: {' '.join(str(exc).split()) or 'interrupted'}", file=sys.stderr)
    if getattr(exc, "forced", False) or again:
        _exit_now(130)
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGINT, lambda signum, frame: _exit_now(130))
    return 130


def _exit_now(status: int) -> None:
    """Flush the output and end the process at once, without the interpreter's exit handlers."""
    sys.stdout.flush()
    sys.stderr.flush()
    import multiprocessing.util

    # Unlink the named semaphores of the killed workers' queues, which the skipped exit handlers would have done
    # (multiprocessing's resource tracker would unlink them too, but with a "leaked semaphore objects" warning).
    with contextlib.suppress(Exception):  # a private helper of multiprocessing: best effort
        multiprocessing.util._run_finalizers(0)
    os._exit(status)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
