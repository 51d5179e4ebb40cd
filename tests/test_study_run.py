"""End-to-end study runs with the real losses, metrics and data: files, determinism, resumption, failures."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lossbench.errors import StudyError
from lossbench.registry import Entry
from lossbench.study.config import load_study
from lossbench.study.datasets import build_splits
from lossbench.study.grid import expand_grid
from lossbench.study.model import build_model
from lossbench.study.runner import run_study
from lossbench.study.store import RunStore, load_history, load_results, load_subjects
from lossbench.study.train import train_cell

REPO = Path(__file__).resolve().parents[1]

TINY = """\
schema_version: 1
name: tiny
seeds: [0]
dataset: {name: synthetic_lesions, spatial_dims: 2, size: 32, n_train: 6, n_val: 3, n_test: 3, n_lesions: [1, 4]}
model: {name: unet, channels: [4, 8, 16], strides: [2, 2], num_res_units: 1}
training: {epochs: EPOCHS, batch_size: 3, lr: 1.0e-2, val_every: 1, augment: false}
losses:
  - {label: "Dice", name: dice}
  - {label: "blob (2,1)", name: blob, alpha: 2, beta: 1}
  - {label: "ICI 1/4,1/2,1/4", name: ici, a: 0.25, b: 0.5, c: 0.25}
evaluation: {connectivity: 1, size_bins: [10, 100]}
"""


def _study(tmp_path: Path, epochs: int = 3, name: str = "tiny", extra: str = "") -> Path:
    p = tmp_path / f"{name}-{epochs}.yaml"
    p.write_text(TINY.replace("EPOCHS", str(epochs)).replace("name: tiny", f"name: {name}") + extra)
    return p


def _quiet():
    from rich.console import Console

    return Console(file=open(os.devnull, "w"), width=160)  # noqa: SIM115 - closed at interpreter exit


def _comparable(run_dir: Path) -> dict[str, object]:
    """Everything a run computed, without wall times and timestamps."""
    out: dict[str, object] = {}
    for cell in sorted((run_dir / "cells").iterdir()):
        done = json.loads((cell / "done.json").read_text())
        hist = pd.read_csv(cell / "history.csv").drop(columns=["epoch_s"])
        out[cell.name] = {
            "val": done["val"],
            "test": done["test"],
            "best_epoch": done["best_epoch"],
            "status": done["status"],
            "history": hist.to_dict("list"),
            "test_subjects": (cell / "test_subjects.csv").read_text(),
            "val_subjects": (cell / "val_subjects.csv").read_text(),
        }
    return out


def make_run(tmp: Path) -> tuple[Path, Path, float]:
    """One sequential run of the tiny study (3 losses x 1 seed, 3 epochs): ``(study, run_dir, seconds)``."""
    study = _study(tmp)
    t0 = time.perf_counter()
    run_dir = run_study(study, out=tmp / "run", device="cpu", console=_quiet())
    return study, run_dir, time.perf_counter() - t0


def assert_same_results(a: Path, b: Path) -> None:
    """Assert two run folders computed the same numbers; name the first differing cell and file on failure."""
    ca, cb = _comparable(a), _comparable(b)
    assert sorted(ca) == sorted(cb), (sorted(ca), sorted(cb))
    for cell in ca:
        for key in ca[cell]:
            assert ca[cell][key] == cb[cell][key], f"{cell}: {key} differs"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """The tiny study run once, shared by several tests of this module."""
    return make_run(tmp_path_factory.mktemp("run"))


def test_end_to_end_files_and_values(finished_run):
    study, run_dir, _ = finished_run
    cfg = load_study(study)
    cells = expand_grid(cfg)
    results = load_results(run_dir)
    assert list(results["cell_id"]) == [c.id for c in cells]
    assert set(results["status"]) == {"ok"}
    assert (run_dir / "run.json").is_file() and (run_dir / "study.yaml").is_file()
    assert (run_dir / "results.parquet").is_file()
    for cell in cells:
        d = run_dir / "cells" / cell.id
        for name in ("config.json", "history.csv", "val_subjects.csv", "test_subjects.csv", "best.pt", "timing.json"):
            assert (d / name).is_file(), name
        done = json.loads((d / "done.json").read_text())
        for key in ("schema_version", "versions", "device", "seed"):
            assert key in done
        assert done["seed"] == 0 and done["device"] == "cpu" and done["versions"]["torch"] == torch.__version__
        assert not list(d.glob(".*tmp*"))  # no temporary file left behind
        hist = pd.read_csv(d / "history.csv")
        assert list(hist["epoch"]) == [1, 2, 3]
        # Best epoch = first epoch with the highest val DSC (the paper's rule), read back from the history.
        assert done["best_epoch"] == int(hist["epoch"][hist["val_dsc"].idxmax()])
        assert done["val"]["dsc"] == pytest.approx(hist["val_dsc"].max())
        timing = json.loads((d / "timing.json").read_text())
        assert timing["steps"] == 3 * 2 and 0 < timing["loss_share"] < 1
    # Every term of loss.terms() is logged per epoch.
    hist_ici = pd.read_csv(run_dir / "cells" / cells[2].id / "history.csv")
    for term in ("global", "instance", "center", "total"):
        assert f"train_{term}" in hist_ici
    assert {"train_main", "train_blob"} <= set(pd.read_csv(run_dir / "cells" / cells[1].id / "history.csv"))
    # Store readers used by the report.
    assert len(load_subjects(run_dir, "test")) == 3 * 3
    assert set(load_history(run_dir)["label"]) == {"Dice", "blob (2,1)", "ICI 1/4,1/2,1/4"}


def test_test_metrics_match_an_independent_recomputation(finished_run):
    """Reload best.pt, predict the test split by hand, recompute the Dice with numpy."""
    study, run_dir, _ = finished_run
    cell = expand_grid(load_study(study))[2]
    ckpt = torch.load(run_dir / "cells" / cell.id / "best.pt", weights_only=True)
    model = build_model("unet", {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}, spatial_dims=2)
    model.load_state_dict(ckpt["model_state"])
    model.eval()
    ds = dict(cell.config["dataset"])
    splits = build_splits(ds.pop("name"), ds)
    table = pd.read_csv(run_dir / "cells" / cell.id / "test_subjects.csv")
    for subject, row in zip(splits["test"], table.itertuples()):
        img = subject["image"]
        img = (img - img.mean()) / img.std(unbiased=False)  # z-score, as the evaluation transform
        with torch.no_grad():
            pred = (torch.sigmoid(model(img[None]))[0, 0] >= 0.5).numpy()
        target = subject["label"][0].numpy() > 0.5
        denom = pred.sum() + target.sum()
        dice = 1.0 if denom == 0 else 2.0 * (pred & target).sum() / denom
        assert row.subject == subject["id"]
        assert row.dice == pytest.approx(dice, abs=1e-6)


def test_same_cell_twice_gives_identical_numbers(finished_run, tmp_path):
    study, run_dir, _ = finished_run
    cell = expand_grid(load_study(study))[2]
    train_cell(cell.config, tmp_path / "again", device="cpu", cell_id=cell.id)
    a = pd.read_csv(run_dir / "cells" / cell.id / "history.csv").drop(columns=["epoch_s"])
    b = pd.read_csv(tmp_path / "again" / "history.csv").drop(columns=["epoch_s"])
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert (run_dir / "cells" / cell.id / "test_subjects.csv").read_text() == (
        tmp_path / "again" / "test_subjects.csv"
    ).read_text()
    sa = torch.load(run_dir / "cells" / cell.id / "best.pt", weights_only=True)["model_state"]
    sb = torch.load(tmp_path / "again" / "best.pt", weights_only=True)["model_state"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_keeps_finished_cells_and_redoes_half_written_ones(finished_run, tmp_path):
    study, run_dir, _ = finished_run
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    cells = expand_grid(load_study(study))
    # Simulate a killed run: the last cell has files but no done.json.
    half = copy / "cells" / cells[2].id
    (half / "done.json").unlink()
    (half / "junk.tmp").write_text("left by a killed run")
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (copy / "cells" / cells[0].id).iterdir()}
    time.sleep(0.01)
    run_study(study, out=copy, device="cpu", console=_quiet())
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (copy / "cells" / cells[0].id).iterdir()}
    assert before == after
    assert not (half / "junk.tmp").exists() and (half / "done.json").is_file()
    assert_same_results(copy, run_dir)
    # --fresh recomputes everything, with the same numbers.
    run_study(study, out=copy, device="cpu", fresh=True, console=_quiet())
    assert (copy / "cells" / cells[0].id / "done.json").stat().st_mtime_ns > before[
        copy / "cells" / cells[0].id / "done.json"
    ][1]
    assert_same_results(copy, run_dir)


def test_run_folder_ownership(finished_run, tmp_path):
    study, run_dir, _ = finished_run
    other = _study(tmp_path, name="other")
    for fresh in (False, True):
        with pytest.raises(StudyError, match="belongs to study 'tiny'"):
            run_study(other, out=run_dir, fresh=fresh, console=_quiet())
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "thesis.tex").write_text("precious")
    with pytest.raises(StudyError, match="no run.json"):
        run_study(study, out=stranger, fresh=True, console=_quiet())
    assert (stranger / "thesis.tex").read_text() == "precious"
    assert load_results(run_dir).shape[0] == 3


def test_dry_run_prints_grid_and_creates_nothing(tmp_path):
    from rich.console import Console

    console = Console(record=True, width=200, file=open(os.devnull, "w"))  # noqa: SIM115
    out = tmp_path / "dry"
    run_study(_study(tmp_path), out=out, dry_run=True, console=console)
    text = console.export_text()
    assert not out.exists()
    assert "3 cells" in text and "18 optimiser steps in total" in text  # 3 cells x 3 epochs x ceil(6/3)
    assert text.count("│ pending") == 3


def test_diverging_cells_are_recorded_and_the_study_goes_on(tmp_path, monkeypatch):
    """A huge learning rate makes the network output inf/NaN; a fake loss returns NaN: both stop only their cell."""
    from lossbench.losses import LOSSES, DiceLoss

    class NaNAfterTwo(DiceLoss):
        calls = 0

        def terms(self, input, target):
            out = super().terms(input, target)
            NaNAfterTwo.calls += 1
            if NaNAfterTwo.calls > 2:
                out = {k: v * float("nan") for k, v in out.items()}
            return out

    monkeypatch.setitem(LOSSES._entries, "nan_after_two", Entry("nan_after_two", NaNAfterTwo, "", {"sigmoid": False}))
    text = TINY.replace("EPOCHS", "2").split("losses:")[0] + (
        "losses:\n  - {label: nan, name: nan_after_two}\n  - {label: Dice, name: dice}\n"
    )
    study = tmp_path / "nan.yaml"
    study.write_text(text)
    run_dir = run_study(study, out=tmp_path / "run", device="cpu", console=_quiet())
    results = load_results(run_dir).set_index("label")
    assert results.loc["nan", "status"] == "diverged"
    assert "non-finite loss" in results.loc["nan", "reason"] and "epoch 2, step 1" in results.loc["nan", "reason"]
    assert results.loc["Dice", "status"] == "ok"
    hist = pd.read_csv(run_dir / "cells" / results.loc["nan", "cell_id"] / "history.csv")
    assert list(hist["epoch"]) == [1, 2]  # epoch 1 complete, epoch 2 stopped at its first step
    # Diverged cells are finished: a rerun keeps them.
    stamp = (run_dir / "cells" / results.loc["nan", "cell_id"] / "done.json").stat().st_mtime_ns
    run_study(study, out=run_dir, device="cpu", console=_quiet())
    assert (run_dir / "cells" / results.loc["nan", "cell_id"] / "done.json").stat().st_mtime_ns == stamp

    huge = tmp_path / "huge.yaml"
    huge.write_text(TINY.replace("EPOCHS", "1").replace("lr: 1.0e-2", "lr: 1.0e+30"))
    res = load_results(run_study(huge, out=tmp_path / "huge", device="cpu", console=_quiet()))
    assert set(res["status"]) == {"diverged"}
    assert all("non-finite network output" in r for r in res["reason"])


def test_results_are_nan_safe_json(finished_run):
    _, run_dir, _ = finished_run

    def reject(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    for path in run_dir.rglob("*.json"):
        json.loads(path.read_text(), parse_constant=reject)
    store = RunStore(run_dir)
    assert store.owner() == "tiny"
    assert np.isfinite(load_results(run_dir)["val_dsc"]).all()


def test_patch_mode_3d_with_augmentation(tmp_path):
    """3D, random patches (half lesion-centered), augmentation on, sliding-window validation and test."""
    study = tmp_path / "patch.yaml"
    study.write_text(
        "schema_version: 1\nname: patch3d\nseeds: [3]\n"
        "dataset: {name: synthetic_lesions, spatial_dims: 3, size: 16, n_train: 2, n_val: 1, n_test: 2}\n"
        "model: {name: unet, channels: [4, 8], strides: [2], num_res_units: 0}\n"
        "training: {epochs: 1, batch_size: 2, lr: 1.0e-2, mode: patch, patch_size: [8, 8, 8], patches_per_subject: 2}\n"
        "losses:\n  - {label: ICI, name: ici}\n"
    )
    run_dir = run_study(study, out=tmp_path / "run", device="cpu", console=_quiet())
    res = load_results(run_dir)
    assert list(res["status"]) == ["ok"] and res["seed"][0] == 3
    timing = json.loads((run_dir / "cells" / res["cell_id"][0] / "timing.json").read_text())
    assert timing["steps"] == 2  # 2 subjects x 2 patches / batch 2
    test = pd.read_csv(run_dir / "cells" / res["cell_id"][0] / "test_subjects.csv")
    assert len(test) == 2 and test["dice"].between(0, 1).all()


def test_paper_network_preset():
    net = build_model("unet_ici_paper", {}, spatial_dims=3)
    assert tuple(net.channels) == (16, 32, 64, 128, 256) and tuple(net.strides) == (2, 2, 2, 2)
    assert net.num_res_units == 2 and net.dimensions == 3
    assert sum(p.numel() for p in net.parameters()) > 4_000_000
    small = build_model("unet_ici_paper", {"channels": [4, 8, 16, 32, 64]}, spatial_dims=2)
    assert tuple(small.channels) == (4, 8, 16, 32, 64) and small.num_res_units == 2
    with torch.no_grad():
        assert small(torch.zeros(1, 1, 32, 32)).shape == (1, 1, 32, 32)


def test_a_locked_run_folder_is_refused(finished_run):
    study, run_dir, _ = finished_run
    handle = RunStore(run_dir).lock()
    try:
        with pytest.raises(StudyError, match="locked"):
            run_study(study, out=run_dir, console=_quiet())
    finally:
        handle.close()
    run_study(study, out=run_dir, console=_quiet())  # released: resumes (nothing to do)
    assert len(load_results(run_dir)) == 3


def test_cli_run_resumes_and_writes_the_report(finished_run, tmp_path, capsys):
    """`lossbench run` = run_study + the report (when the report package is present), exit status 0."""
    import importlib.util
    import shutil

    from lossbench.cli import main

    study, run_dir, _ = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    assert main(["run", str(study), "--out", str(copy)]) == 0
    out = capsys.readouterr().out
    assert "3 cells (3 finished, 0 to run)" in out
    if importlib.util.find_spec("lossbench.report.render") is not None:
        assert (copy / "report.md").is_file() and (copy / "report.html").is_file()
        assert f"report: {copy / 'report.md'}" in out
    else:
        assert "no report renderer installed" in out


def test_option_errors_before_anything_runs(finished_run, tmp_path):
    from lossbench.errors import ConfigError
    from lossbench.study.executors import make_executor
    from lossbench.study.train import resolve_device

    study, _, _ = finished_run
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="`device` must be one of"):
        resolve_device("tpu")
    with pytest.raises(ConfigError, match="`workers` must be a positive integer, got 0"):
        make_executor("local", workers=0)
    with pytest.raises(ConfigError, match="`address` must be omitted"):
        make_executor("local", address="ray://x:10001")
    with pytest.raises(ConfigError, match="`workers` must be 1 with --address"):
        make_executor("ray", workers=2, address="auto")
    with pytest.raises(ConfigError, match="`executor` must be 'local' or 'ray'"):
        make_executor("slurm")
    with pytest.raises(ConfigError, match="`threads` must be a positive integer"):
        run_study(study, out=tmp_path / "x", threads=0, console=_quiet())
    assert not (tmp_path / "x").exists()
