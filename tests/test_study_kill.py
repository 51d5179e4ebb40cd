"""Reliability: SIGKILL `python -m lossbench run` in the middle of a cell, rerun, compare with an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_study_run import REPO, _quiet, _study, assert_same_results

from lossbench.study.config import load_study
from lossbench.study.grid import expand_grid
from lossbench.study.runner import run_study
from lossbench.study.store import load_results


def _cell_state(cell_dir: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(cell_dir.iterdir())}


def test_sigkill_mid_cell_then_resume_equals_uninterrupted_run(tmp_path):
    """SIGKILL `python -m lossbench run` inside the second cell, rerun, compare with an uninterrupted run."""
    study = _study(tmp_path, epochs=12)
    cells = expand_grid(load_study(study))
    reference = run_study(study, out=tmp_path / "reference", device="cpu", console=_quiet())
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}  # same thread count as this process
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "lossbench", "run", str(study), "--out", str(out), "--device", "cpu", "--no-report"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    second = out / "cells" / cells[1].id
    deadline = time.monotonic() + 120
    try:
        # Kill once the second cell has logged an epoch but is not finished.
        while time.monotonic() < deadline:
            if (second / "history.csv").is_file() and not (second / "done.json").exists():
                break
            if proc.poll() is not None:
                pytest.fail("the run finished before it could be killed")
            time.sleep(0.005)
        else:
            pytest.fail("the second cell never started")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert (out / "cells" / cells[0].id / "done.json").is_file()
    assert not (second / "done.json").exists()
    assert not (out / "cells" / cells[2].id / "done.json").exists()
    first_before = _cell_state(out / "cells" / cells[0].id)

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "1 finished, 2 to run" in rerun.stdout
    assert _cell_state(out / "cells" / cells[0].id) == first_before  # hashes and mtimes untouched
    assert_same_results(out, reference)
    assert len(load_results(out)) == 3
