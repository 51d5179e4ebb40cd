"""lossbench.io: atomic writes (no temporary file left, the old file intact when a write fails)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lossbench import io
from lossbench.study import store


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_text_bytes_csv_json(tmp_path):
    assert io.atomic_write_text(tmp_path / "sub" / "a.txt", "héllo\n") == tmp_path / "sub" / "a.txt"
    assert (tmp_path / "sub" / "a.txt").read_bytes() == "héllo\n".encode()
    io.atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    io.atomic_write_csv(tmp_path / "c.csv", [{"x": 1, "y": "a"}, {"x": 2, "y": "b"}])
    assert (tmp_path / "c.csv").read_text() == "x,y\n1,a\n2,b\n"
    text = io.json_text({"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "np": np.float32(0.5), "t": (1, 2)})
    assert json.loads(text) == {"nan": None, "inf": "inf", "ninf": "-inf", "np": 0.5, "t": [1, 2]}
    assert text.endswith("}\n") and text.startswith('{\n  "nan": null')
    assert _names(tmp_path) == ["b.bin", "c.csv", "sub"]  # no temporary file left


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "fig.png"
    target.write_bytes(b"old")

    class Broken:
        def savefig(self, buf, **kw):
            buf.write(b"partial")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        io.atomic_save_figure(Broken(), target)
    assert target.read_bytes() == b"old" and _names(tmp_path) == ["fig.png"]


def test_figure_bytes_equal_a_direct_save(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    kw = {"dpi": 50, "metadata": {"Software": None}}
    fig.savefig(tmp_path / "direct.png", **kw)
    io.atomic_save_figure(fig, tmp_path / "atomic.png", **kw)
    plt.close(fig)
    assert (tmp_path / "atomic.png").read_bytes() == (tmp_path / "direct.png").read_bytes()


def test_torch_save_and_store_reexports(tmp_path):
    import torch

    io.atomic_torch_save(tmp_path / "t.pt", {"w": torch.arange(3)})
    assert torch.equal(torch.load(tmp_path / "t.pt")["w"], torch.arange(3))
    for name in ("atomic_write_bytes", "atomic_write_text", "atomic_write_csv", "atomic_torch_save"):
        assert getattr(store, name) is getattr(io, name)
    store.atomic_write_json(tmp_path / "e.json", {"v": math.nan}, device="cpu", seed=3)
    data = json.loads((tmp_path / "e.json").read_text())
    assert data["v"] is None and data["seed"] == 3 and data["schema_version"] == 1
