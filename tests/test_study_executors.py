"""Executors: N local worker processes and a local Ray runtime give the same numbers as a sequential run."""

from __future__ import annotations

import pytest
from test_study_run import _quiet, assert_same_results, make_run

from lossbench.study.runner import run_study


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """The sequential reference run of the tiny study."""
    return make_run(tmp_path_factory.mktemp("run"))


def test_parallel_workers_give_the_same_results(finished_run, tmp_path):
    study, run_dir, _ = finished_run
    out = run_study(study, out=tmp_path / "par", device="cpu", workers=2, threads=1, console=_quiet())
    assert_same_results(out, run_dir)


def test_ray_executor_on_a_local_runtime(finished_run, tmp_path):
    pytest.importorskip("ray")
    study, run_dir, _ = finished_run
    out = run_study(study, out=tmp_path / "ray", executor="ray", device="cpu", workers=2, threads=1, console=_quiet())
    assert_same_results(out, run_dir)
    for cell in (out / "cells").iterdir():
        assert (cell / "done.json").is_file() and (cell / "best.pt").is_file()


@pytest.mark.parametrize("mode", ["whole", "patch"])
def test_dataloader_workers_are_reproducible(tmp_path, mode):
    """num_workers > 0: augmented batches from worker processes, the same numbers twice."""
    import pandas as pd

    from lossbench.study.config import load_study
    from lossbench.study.grid import expand_grid
    from lossbench.study.train import train_cell

    patch = ", mode: patch, patch_size: [16, 16], patches_per_subject: 2" if mode == "patch" else ""
    study = tmp_path / "workers.yaml"
    study.write_text(
        "schema_version: 1\nname: workers\nseeds: [5]\n"
        "dataset: {name: synthetic_lesions, spatial_dims: 2, size: 32, n_train: 4, n_val: 2, n_test: 2}\n"
        "model: {name: unet, channels: [4, 8], strides: [2], num_res_units: 0}\n"
        f"training: {{epochs: 2, batch_size: 2, lr: 1.0e-2, num_workers: 2, augment: true{patch}}}\n"
        "losses:\n  - {label: ICI, name: ici}\n"
    )
    cell = expand_grid(load_study(study))[0]
    runs = [train_cell(cell.config, tmp_path / f"r{k}", device="cpu") for k in range(2)]
    assert runs[0]["status"] == "ok" and runs[0]["val"] == runs[1]["val"] and runs[0]["test"] == runs[1]["test"]
    h = [pd.read_csv(tmp_path / f"r{k}" / "history.csv").drop(columns=["epoch_s"]) for k in range(2)]
    pd.testing.assert_frame_equal(h[0], h[1], check_exact=True)
    # Same steps as the in-process path: whole 4 subjects / 2 per step; patch 4 subjects x 2 patches / 2 per step.
    assert list(h[0]["steps"]) == ([2, 2] if mode == "whole" else [4, 4])
