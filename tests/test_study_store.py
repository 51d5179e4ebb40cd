"""Results store: atomic writes, versioned JSON, ownership, cell reset, commit order, empty results."""

from __future__ import annotations

import importlib.util
import json
import math

import pandas as pd
import pytest

import lossbench.io as io_mod
import lossbench.study.store as store_mod
from lossbench.errors import StudyError
from lossbench.study.store import (
    RunStore,
    atomic_write_json,
    atomic_write_text,
    load_results,
    package_versions,
    read_json,
)


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "a" / "f.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert sorted(x.name for x in p.parent.iterdir()) == ["f.txt"]


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    p = tmp_path / "f.txt"
    atomic_write_text(p, "old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(io_mod.os, "replace", boom)  # the store writes through lossbench.io
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(p, "new")
    assert p.read_text() == "old"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["f.txt"]  # the temporary file was removed


def test_json_envelope_and_non_finite_numbers(tmp_path):
    p = atomic_write_json(
        tmp_path / "x.json", {"a": float("nan"), "b": [1.5, float("inf")], "c": 2}, device="cpu", seed=7
    )
    text = p.read_text()
    data = json.loads(text)  # strict JSON: no NaN / Infinity tokens
    assert "NaN" not in text and "Infinity" not in text
    assert data["a"] is None and data["b"] == [1.5, "inf"] and data["c"] == 2
    assert data["schema_version"] == 1 and data["device"] == "cpu" and data["seed"] == 7
    assert data["versions"] == package_versions() and "torch" in data["versions"]
    with pytest.raises(StudyError, match="must exist"):
        read_json(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(StudyError, match="valid JSON"):
        read_json(tmp_path / "bad.json")


def test_ownership_rules(tmp_path):
    s = RunStore(tmp_path / "run")
    s.check_owner("a")  # absent: fine
    s.prepare("a", "name: a\n", fresh=False, device="cpu")
    s.check_owner("a")
    with pytest.raises(StudyError, match="belongs to study 'a'"):
        s.check_owner("b")
    (s.cell_dir("c1")).mkdir()
    (s.cell_dir("c1") / "x").write_text("1")
    s.prepare("a", "name: a\n", fresh=True, device="cpu")  # fresh: this study's results are deleted
    assert not s.cell_dir("c1").exists() and s.owner() == "a"
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    with pytest.raises(StudyError, match="no run.json"):
        RunStore(other).prepare("a", "", fresh=True, device=None)
    assert (other / "notes.txt").read_text() == "keep"
    with pytest.raises(StudyError, match="must be a folder"):
        RunStore(other / "notes.txt").check_owner("a")


def test_reset_and_commit(tmp_path, monkeypatch):
    s = RunStore(tmp_path)
    d = s.reset_cell("c")
    (d / "junk").write_text("half-written")
    assert not s.is_done("c")
    s.reset_cell("c")
    assert list(d.iterdir()) == []
    (d / "done.json").write_text("{trunc")  # unreadable done.json: not finished
    assert not s.is_done("c")
    order = []
    real = store_mod.atomic_write_bytes
    monkeypatch.setattr(store_mod, "atomic_write_bytes", lambda p, b: order.append(p.name) or real(p, b))
    done = json.dumps({"cell_id": "c", "label": "L", "status": "ok", "val": {"dsc": 0.5}}).encode()
    s.commit_files("c", {"done.json": done, "history.csv": b"epoch\n1\n", "best.pt": b"x"})
    assert order == ["history.csv", "best.pt", "done.json"]
    assert s.is_done("c") and s.done("c")["val"]["dsc"] == 0.5
    with pytest.raises(StudyError, match="unfinished"):
        s.reset_cell("c")


def test_results_table(tmp_path):
    s = RunStore(tmp_path)
    s.cells_dir.mkdir()
    s.write_results([])
    empty = load_results(tmp_path)
    assert len(empty) == 0 and {"cell_id", "label", "status"} <= set(empty.columns)
    for cid, label, dsc in (("a", "nan", 0.25), ("b", "None", float("nan"))):
        s.reset_cell(cid)
        atomic_write_json(
            s.cell_dir(cid) / "done.json",
            {"cell_id": cid, "label": label, "status": "ok", "val": {"dsc": dsc}, "test": {"dice": 0.5}},
            seed=0,
        )
    s.reset_cell("unfinished")
    table = s.write_results(["a", "unfinished", "b"])
    back = load_results(tmp_path)
    assert list(back["cell_id"]) == ["a", "b"] and list(back["label"]) == ["nan", "None"]
    assert back["val_dsc"][0] == 0.25 and math.isnan(back["val_dsc"][1])
    pd.testing.assert_series_equal(table["test_dice"], back["test_dice"])
    if importlib.util.find_spec("pyarrow") is not None:
        assert pd.read_parquet(tmp_path / "results.parquet")["cell_id"].tolist() == ["a", "b"]
    with pytest.raises(StudyError, match="results.csv"):
        load_results(tmp_path / "nowhere")
