"""Ctrl-C in `lossbench run`: queued cells cancelled at once, one line, exit 130, nothing half-written kept."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from test_study_run import REPO, _quiet

from lossbench.study.config import load_study
from lossbench.study.grid import expand_grid
from lossbench.study.runner import RunInterrupted, _sigint_policy, run_study
from lossbench.study.store import load_results

# 2 losses x 3 seeds = 6 cells of ~1-3 s each on one thread.
STUDY = """\
schema_version: 1
name: ctrlc
seeds: [0, 1, 2]
dataset: {name: synthetic_lesions, spatial_dims: 2, size: 32, n_train: 6, n_val: 2, n_test: 2, n_lesions: [1, 3]}
model: {name: unet, channels: [4, 8], strides: [2], num_res_units: 0}
training: {epochs: 6, batch_size: 3, lr: 1.0e-2, val_every: 1, augment: false}
losses:
  - {label: "Dice", name: dice}
  - {label: "BCE", name: bce}
evaluation: {connectivity: 1, size_bins: [10]}
"""

LINE = re.compile(
    r"^lossbench run: interrupted(?P<again>(?: again: stopped at once)?); (?P<n>\d+) of 6 cells finished and are kept; "
    r"run the same command again to resume the other (?P<rest>\d+)$"
)


def _write_study(tmp_path: Path) -> Path:
    path = tmp_path / "ctrlc.yaml"
    path.write_text(STUDY)
    return path


def _start(study: Path, out: Path, *extra: str) -> subprocess.Popen:
    """`python -m lossbench run` in its own process group (a terminal-like Ctrl-C reaches it and its workers only)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "lossbench", "run", str(study), "--out", str(out), "--device", "cpu", "--no-report"]
    return subprocess.Popen(
        [*cmd, *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def _wait_first_cell(proc: subprocess.Popen, out: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not list(out.glob("cells/*/done.json")):
        if proc.poll() is not None:
            pytest.fail(f"the run ended before a cell finished: {proc.communicate()[1][-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no cell finished in time")
        time.sleep(0.01)


def _finish(proc: subprocess.Popen, t_signal: float) -> tuple[str, float]:
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return err, time.monotonic() - t_signal


def _cells(out: Path) -> tuple[set[str], set[str]]:
    """(cell folders, finished cells) of a run folder."""
    folders = {p.name for p in (out / "cells").iterdir() if p.is_dir()}
    return folders, {p for p in folders if (out / "cells" / p / "done.json").is_file()}


def _state(cell_dir: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(cell_dir.iterdir())}


def _check_stopped(err: str, seconds: float, out: Path, *, forced_ok: bool, bound: float = 20) -> set[str]:
    """Exit within a generous bound, no traceback, one line that counts the finished cells; no worker left behind."""
    assert seconds < bound, f"exit took {seconds:.1f} s"
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("lossbench run:")]
    assert len(lines) == 1, err
    m = LINE.match(lines[0])
    assert m, lines[0]
    assert forced_ok or not m["again"]
    folders, done = _cells(out)
    assert int(m["n"]) == len(done) and int(m["rest"]) == 6 - len(done)
    assert len(folders) < 6, "queued cells were started after Ctrl-C"  # some never started: cancelled at once
    time.sleep(1.0)  # a surviving worker would still be writing
    assert _cells(out) == (folders, done)
    return done


def test_ctrl_c_with_two_workers_stops_at_once_and_resumes(tmp_path):
    study = _write_study(tmp_path)
    out = tmp_path / "run"
    proc = _start(study, out, "--workers", "2")
    _wait_first_cell(proc, out)
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: the driver and its workers get the signal
    err, seconds = _finish(proc, t0)
    assert proc.returncode == 130, err
    done = _check_stopped(err, seconds, out, forced_ok=False)
    assert 1 <= len(done) < 6
    before = {cid: _state(out / "cells" / cid) for cid in done}
    assert len(load_results(out)) == len(done)  # the results table of the finished cells was written

    run_study(study, out=out, device="cpu", console=_quiet())  # resume (in this process, sequentially)
    folders, finished = _cells(out)
    assert finished == {c.id for c in expand_grid(load_study(study))}
    assert {cid: _state(out / "cells" / cid) for cid in done} == before  # untouched: same bytes and times
    assert len(load_results(out)) == 6


def test_second_ctrl_c_exits_at_once(tmp_path):
    study = _write_study(tmp_path)
    out = tmp_path / "run"
    proc = _start(study, out, "--workers", "2")
    _wait_first_cell(proc, out)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)  # `kill -INT <driver>`: only the driver gets it
    time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    err, seconds = _finish(proc, t0)
    assert proc.returncode == 130, err
    assert seconds < 10, f"exit took {seconds:.1f} s"
    assert "leaked" not in err, err  # the killed workers' semaphores were released
    _check_stopped(err, seconds, out, forced_ok=True)


def test_ctrl_c_with_the_ray_executor_cancels_its_tasks(tmp_path):
    pytest.importorskip("ray")
    study = _write_study(tmp_path)
    out = tmp_path / "run"
    proc = _start(study, out, "--executor", "ray", "--workers", "2")
    _wait_first_cell(proc, out, timeout=180)
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    err, seconds = _finish(proc, t0)
    assert proc.returncode == 130, err
    # The Ray executor writes a cell's folder only when its task has finished; Ctrl-C may still land while the
    # driver writes one, which then has no done.json (the next run redoes it). What must hold: every folder that
    # looks finished is complete.
    _, done = _cells(out)
    for cell in done:
        assert {"config.json", "history.csv", "test_subjects.csv"} <= {p.name for p in (out / "cells" / cell).iterdir()}
    _check_stopped(err, seconds, out, forced_ok=False, bound=45)
    # The tasks' temporary folders (killed mid-training, they cannot remove their own) went with the driver's.
    assert not list(Path(tempfile.gettempdir()).glob(f"lossbench-ray-{proc.pid}-*"))


class _InterruptingExecutor:
    """Runs the first cell for real, then behaves as if Ctrl-C came (once, or again during the clean-up)."""

    def __init__(self, presses: int):
        self.presses = presses
        self.aborted = 0

    def run(self, cells, run_dir, device, on_event, on_done):
        from lossbench.study.executors import run_cell_in_store

        on_done(run_cell_in_store(cells[0], run_dir, device, 1))
        try:
            signal.raise_signal(signal.SIGINT)
        finally:  # the clean-up, where a second Ctrl-C may land
            if self.presses > 1:
                signal.raise_signal(signal.SIGINT)

    def abort(self):
        self.aborted += 1


@pytest.mark.parametrize("presses", [1, 2])
def test_run_study_raises_run_interrupted_with_the_count(tmp_path, monkeypatch, presses):
    import lossbench.study.runner as runner_mod

    fake = _InterruptingExecutor(presses)
    monkeypatch.setattr(runner_mod, "make_executor", lambda *a, **k: fake)
    study = _write_study(tmp_path)
    with pytest.raises(RunInterrupted) as info:
        run_study(study, out=tmp_path / "run", device="cpu", console=_quiet())
    exc = info.value
    assert isinstance(exc, KeyboardInterrupt)
    assert (exc.finished, exc.total, exc.forced) == (1, 6, presses == 2)
    assert fake.aborted == presses - 1
    assert LINE.match(f"lossbench run: {exc}")
    # The first Ctrl-C writes the results table of the finished cells; a forced stop skips it.
    assert (tmp_path / "run" / "results.csv").is_file() == (presses == 1)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is restored


def test_sigint_policy_third_press_only_aborts():
    calls = []
    with _sigint_policy(lambda: calls.append("abort")) as state:
        for expected_raise in (True, True, False):
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:
                assert expected_raise
            else:
                assert not expected_raise
    assert state["count"] == 3 and calls == ["abort", "abort"]
