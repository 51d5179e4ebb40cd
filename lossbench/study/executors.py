"""Where cells run: in this process, in N local worker processes, or as Ray tasks.

Every executor takes the pending cells and calls ``on_event`` (progress: cell started, epoch
finished) and ``on_done`` (a :class:`CellOutcome`, once per cell) in the driver process. A cell that
raises is reported as a failed outcome (traceback in ``cells/<id>/error.txt``) and the other cells go
on; it has no ``done.json``, so the next run retries it.

Every cell runs with ``threads`` torch threads (default 1). One thread per cell is the default
because (a) the numbers of a cell on CPU depend on the thread count, so a fixed default makes runs
reproducible across machines, (b) running cells side by side (``workers``) uses cores far better than
intra-op threads for the small networks of synthetic studies, and (c) several OpenMP threads per
process collapse when the cores are oversubscribed (measured: 50x slower epochs on a busy 2-core
machine). Raise ``threads`` for large 3D networks on many-core CPUs.

* ``local`` with ``workers=1``: sequential, in this process.
* ``local`` with ``workers=N``: a pool of N spawned processes, each with its own torch thread count,
  all writing into the run folder directly.
* ``ray``: each cell is a Ray task declaring ``num_cpus`` (= ``threads``) and ``num_gpus`` (1 on
  CUDA, else 0). Without an address a local Ray runtime with ``workers x threads`` CPUs is started
  (and stopped at the end), so ``workers`` cells run at a time; with an address the driver joins that
  cluster and the cluster's resources decide how many cells run at once. The task trains in a
  temporary folder *on the worker* and returns the cell's files to the driver, which writes them into
  the run folder (``done.json`` last): the run folder does not need to be on a shared filesystem, and
  lossbench (same version) must be installed on the workers.

Interruption (Ctrl-C): a ``KeyboardInterrupt`` in the driver stops the executor at once. Queued
cells are cancelled and running ones are stopped; their folders have no ``done.json``, so the next run
redoes them. Worker processes ignore SIGINT from birth (it is blocked while they are spawned: the local
pool's workers, and every process of a local Ray runtime), so a Ctrl-C that the terminal sends to the
whole process group reaches only the driver, which then stops them: the outcome does not depend on who
received the signal. The local pool's workers are terminated; a local Ray runtime is shut down as a
whole, which ends its tasks (no task is cancelled one by one: Ray can abort the driver on an internal
check when a task completes while it is being force-cancelled); on a Ray runtime that this process did
not start, the tasks that have not finished are cancelled with ``force=True``. :meth:`LocalExecutor.abort`
kills the workers without waiting (a second Ctrl-C).

Temporary folders: a Ray task trains in a temporary folder. With a local runtime these folders lie in
one folder (``lossbench-ray-<driver pid>-*`` in the system's temporary folder) that the driver removes
when the run ends, interrupted or not; on a cluster each task removes its own, except a task killed by
a cancellation, which leaves it in the node's temporary folder.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing as mp
import os
import queue as queue_mod
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossbench.errors import MissingExtraError, expect
from lossbench.study.grid import Cell
from lossbench.study.store import RunStore, atomic_write_text

__all__ = ["CellOutcome", "LocalExecutor", "RayExecutor", "make_executor", "run_cell_in_store"]

EventFn = Callable[[dict[str, Any]], None]
DoneFn = Callable[["CellOutcome"], None]


@dataclass
class CellOutcome:
    """What happened to one cell: its ``done.json`` content, or the error that stopped it."""

    cell_id: str
    done: dict[str, Any] | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the cell finished (``status`` may still be ``"diverged"``)."""
        return self.done is not None


def _set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(int(threads))


def run_cell_in_store(
    cell: Cell, run_dir: str | Path, device: str, threads: int | None, progress: EventFn | None = None
) -> CellOutcome:
    """Reset the cell's folder, train the cell into it and return the outcome (never raises for a cell error)."""
    from lossbench.study.train import format_exception, train_cell

    store = RunStore(run_dir)
    _set_threads(threads)
    cell_dir = store.reset_cell(cell.id)
    try:
        done = train_cell(cell.config, cell_dir, device=device, cell_id=cell.id, progress=progress)
    except Exception as exc:  # noqa: BLE001 - a failing cell must not stop the study
        text = format_exception(exc)
        atomic_write_text(cell_dir / "error.txt", text)
        return CellOutcome(cell.id, None, f"{type(exc).__name__}: {exc}")
    return CellOutcome(cell.id, done)


class LocalExecutor:
    """Run cells in this process (``workers=1``) or in a pool of spawned worker processes.

    Args:
        workers: number of worker processes (>= 1).
        threads: torch threads per cell (default 1, see the module docstring).
    """

    name = "local"

    def __init__(self, workers: int = 1, threads: int | None = None):
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise expect("workers", "a positive integer", workers)
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise expect("threads", "a positive integer or None", threads)
        self.workers = workers
        self.threads = threads if threads is not None else 1
        self._workers: list[Any] = []

    def run(self, cells: Sequence[Cell], run_dir: Path, device: str, on_event: EventFn, on_done: DoneFn) -> None:
        """Run ``cells``; report progress and outcomes through the callbacks (in the driver process).

        Raises:
            KeyboardInterrupt: Ctrl-C; queued cells were cancelled and running ones stopped before it propagates.
        """
        if self.workers == 1 or len(cells) <= 1:
            for cell in cells:
                on_done(run_cell_in_store(cell, run_dir, device, self.threads, on_event))
            return
        ctx = mp.get_context("spawn")
        events = ctx.Queue()
        pool = cf.ProcessPoolExecutor(
            max_workers=min(self.workers, len(cells)), mp_context=ctx, initializer=_init_worker, initargs=(events,)
        )
        try:
            with _sigint_blocked():  # the workers inherit the blocked signal: Ctrl-C never reaches them
                futures = {pool.submit(_worker_cell, cell, str(run_dir), device, self.threads): cell for cell in cells}
            self._workers = _pool_processes(pool)
            _collect(futures, events, on_event, on_done)
            pool.shutdown(wait=True)
        except BaseException:
            self._workers = self._workers or _pool_processes(pool)  # interrupted while submitting
            _stop_pool(pool, self._workers)
            raise
        finally:
            self._workers = []
        _drain(events, on_event)
        events.close()

    def abort(self) -> None:
        """Kill the worker processes of a running :meth:`run` without waiting (for a second Ctrl-C)."""
        for proc in self._workers:
            with contextlib.suppress(Exception):
                proc.kill()


def _collect(futures: dict[cf.Future, Cell], events: Any, on_event: EventFn, on_done: DoneFn) -> None:
    """Pass progress events and outcomes to the callbacks until every future is done."""
    pending = set(futures)
    while pending:
        finished, pending = cf.wait(pending, timeout=0.2, return_when=cf.FIRST_COMPLETED)
        _drain(events, on_event)
        for fut in finished:
            cell = futures[fut]
            try:
                outcome = fut.result()
            except Exception as exc:  # noqa: BLE001 - e.g. a worker killed by the OS
                outcome = CellOutcome(cell.id, None, f"worker failed: {type(exc).__name__}: {exc}")
            on_done(outcome)


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread for the duration (processes spawned meanwhile start with it blocked).

    A Ctrl-C meanwhile is not lost: it stays pending, or another thread of the process takes it, and Python runs
    its handler in the main thread as usual.
    """
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - not POSIX
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _pool_processes(pool: cf.ProcessPoolExecutor) -> list[Any]:
    """The worker processes of ``pool`` (all spawned by the time every cell is submitted)."""
    # ProcessPoolExecutor has no public handle on its workers before Python 3.14 (terminate_workers).
    return list((getattr(pool, "_processes", None) or {}).values())


def _stop_pool(pool: cf.ProcessPoolExecutor, workers: list[Any]) -> None:
    """Cancel the queued cells and terminate the running ones; wait briefly for the workers to exit."""
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in workers:
        with contextlib.suppress(Exception):
            proc.terminate()
    for proc in workers:
        with contextlib.suppress(Exception):
            proc.join(timeout=5)


def _drain(events: Any, on_event: EventFn) -> None:
    while True:
        try:
            on_event(events.get_nowait())
        except queue_mod.Empty:
            return


_EVENTS: Any = None  # the progress queue of a worker process (set by _init_worker)


def _init_worker(events: Any) -> None:
    """Worker start-up: ignore Ctrl-C (the driver stops the workers) and keep the progress queue."""
    global _EVENTS
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _EVENTS = events


def _worker_cell(cell: Cell, run_dir: str, device: str, threads: int | None) -> CellOutcome:
    return run_cell_in_store(cell, run_dir, device, threads, _EVENTS.put)


def _ray_cell(config: dict[str, Any], cell_id: str, device: str, threads: int, tmp_root: str | None) -> dict[str, Any]:
    """Ray task body: train in a temporary folder on the worker (under ``tmp_root`` if given) and return the files."""
    from lossbench.study.train import collect_files, format_exception, resolve_device, train_cell

    _set_threads(threads)
    with tempfile.TemporaryDirectory(prefix=f"lossbench-{cell_id}-", dir=tmp_root) as tmp:
        try:
            done = train_cell(config, Path(tmp) / cell_id, device=resolve_device(device), cell_id=cell_id)
        except Exception as exc:  # noqa: BLE001 - reported to the driver
            return {"error": f"{type(exc).__name__}: {exc}", "traceback": format_exception(exc)}
        return {"done": done, "files": collect_files(Path(tmp) / cell_id)}


class RayExecutor:
    """Run each cell as a Ray task with declared CPU/GPU resources.

    Args:
        address: Ray cluster address (``"auto"``, ``"ray://host:10001"``, ...); ``None`` starts a local runtime.
        threads: CPUs declared per cell (= torch threads in the task); default 1.
        num_cpus: CPUs of the local runtime (only without ``address``); default all cores.
    """

    name = "ray"

    def __init__(self, address: str | None = None, threads: int | None = None, num_cpus: int | None = None):
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise expect("threads", "a positive integer or None", threads)
        if address is not None and num_cpus is not None:
            raise expect("workers", "1 when joining a Ray cluster (its resources decide)", num_cpus)
        self.address = address
        self.threads = int(threads) if threads else 1
        self.num_cpus = num_cpus

    def run(self, cells: Sequence[Cell], run_dir: Path, device: str, on_event: EventFn, on_done: DoneFn) -> None:
        """Submit every cell, write each result into the run folder as it arrives.

        Raises:
            KeyboardInterrupt: Ctrl-C; every unfinished task was ended before it propagates (see the module docstring).
        """
        try:
            import ray
        except ImportError:
            raise MissingExtraError(
                "`executor` 'ray' must have the ray package installed, got no ray (pip install 'lossbench[ray]')"
            ) from None
        connected_before = ray.is_initialized()
        local = not connected_before and self.address is None
        tmp_root = tempfile.mkdtemp(prefix=f"lossbench-ray-{os.getpid()}-") if local else None
        unfinished: dict[Any, Cell] = {}
        try:
            self._connect(ray)
            gpus = 1 if device.startswith("cuda") else 0
            if device == "auto" and ray.cluster_resources().get("GPU", 0) > 0:
                gpus = 1
            task = ray.remote(num_cpus=self.threads, num_gpus=gpus, max_retries=0)(_ray_cell)
            for cell in cells:
                unfinished[task.remote(cell.config, cell.id, device, self.threads, tmp_root)] = cell
                on_event({"cell": cell.id, "kind": "submitted"})
            store = RunStore(run_dir)
            while unfinished:
                ready, _ = ray.wait(list(unfinished), num_returns=1, timeout=1.0)
                for ref in ready:
                    on_done(_commit_ray_result(ray, ref, unfinished.pop(ref), store))
        except BaseException:
            if not local and unfinished and ray.is_initialized():
                _cancel_unfinished(ray, list(unfinished))
            raise
        finally:
            if not connected_before and ray.is_initialized():
                ray.shutdown()  # a local runtime stops as a whole, and with it every task it runs
            if tmp_root is not None:
                shutil.rmtree(tmp_root, ignore_errors=True)

    def _connect(self, ray: Any) -> None:
        """Start a local Ray runtime, or join the cluster, unless Ray is already initialised.

        A local runtime's processes (and the workers they start) are spawned with SIGINT blocked: the terminal's
        Ctrl-C reaches only the driver.
        """
        if ray.is_initialized():
            return
        if self.address is None:
            with _sigint_blocked():
                ray.init(
                    num_cpus=self.num_cpus or os.cpu_count() or 1,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
        else:
            ray.init(address=self.address, log_to_driver=False)

    def abort(self) -> None:
        """Nothing to kill from here: Ray ends a driver's tasks (and a local runtime) when the driver exits."""


def _cancel_unfinished(ray: Any, refs: list[Any]) -> None:
    """Cancel (``force=True``) the tasks of ``refs`` that have not finished; a finished task is left alone."""
    with contextlib.suppress(Exception):
        finished = set(ray.wait(refs, num_returns=len(refs), timeout=0)[0])
        refs = [ref for ref in refs if ref not in finished]
    for ref in refs:  # queued tasks are dropped, running ones killed
        with contextlib.suppress(Exception):
            ray.cancel(ref, force=True)


def _commit_ray_result(ray: Any, ref: Any, cell: Cell, store: RunStore) -> CellOutcome:
    """Fetch a finished task's result and write the cell's files (or its ``error.txt``) into the run folder."""
    try:
        result = ray.get(ref)
    except Exception as exc:  # noqa: BLE001 - task or node failure
        if _interrupted(exc):  # Ctrl-C reached the task (same process group) or cancelled it: nothing to record
            return CellOutcome(cell.id, None, "interrupted")
        result = {"error": f"{type(exc).__name__}: {exc}", "traceback": str(exc)}
    if "error" in result:
        d = store.reset_cell(cell.id)
        atomic_write_text(d / "error.txt", result["traceback"])
        return CellOutcome(cell.id, None, result["error"])
    store.commit_files(cell.id, result["files"])
    return CellOutcome(cell.id, store.done(cell.id))


def _interrupted(exc: BaseException) -> bool:
    """Whether a Ray task's failure is a cancellation or a Ctrl-C that reached its worker, not an error of the cell."""
    return type(exc).__name__ == "TaskCancelledError" or "KeyboardInterrupt" in str(exc)


def make_executor(
    kind: str, *, workers: int = 1, threads: int | None = None, address: str | None = None
) -> LocalExecutor | RayExecutor:
    """Build the executor named ``kind`` ("local" or "ray").

    Raises:
        ConfigError: unknown kind, invalid worker count, or ``address`` given for the local executor.
    """
    if kind == "local":
        if address is not None:
            raise expect("address", "omitted with the local executor (it is for --executor ray)", repr(address))
        return LocalExecutor(workers=workers, threads=threads)
    if kind == "ray":
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise expect("workers", "a positive integer", workers)
        if address is not None and workers != 1:
            raise expect("workers", "1 with --address (the cluster's resources decide)", workers)
        threads = threads if threads is not None else 1
        return RayExecutor(address=address, threads=threads, num_cpus=None if address else workers * threads)
    raise expect("executor", "'local' or 'ray'", repr(kind))
