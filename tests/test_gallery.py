"""Synthetic gallery: files, computed expectation checks, hand-worked helpers, and a real headless-Chromium load."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from lossbench.errors import ConfigError
from lossbench.report import gallery as g
from lossbench.report.browser import check_page, find_chromium
from lossbench.report.gallery import checks as gallery_checks
from lossbench.report.gallery import compute


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("gallery")
    md = g.write_gallery(folder)
    assert md == folder / "gallery.md"
    return folder


def _img_sources(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', html)


def test_files_exist_and_are_referenced_relatively(out):
    html = (out / "gallery.html").read_text()
    md = (out / "gallery.md").read_text()
    srcs = _img_sources(html)
    assert len(srcs) == 8
    for src in srcs:
        assert src.startswith("img/") and not Path(src).is_absolute()
        assert (out / src).stat().st_size > 1000
        assert f"]({src})" in md
    total = sum(p.stat().st_size for p in (out / "img").glob("*.png"))
    assert total < 3_000_000
    assert g.GALLERY_COMMAND in html and g.GALLERY_COMMAND in md


def test_every_check_passes(out):
    data = json.loads((out / "checks.json").read_text())
    assert data["total"] >= 15 and data["passed"] == data["total"], [c for c in data["checks"] if not c["passed"]]
    names = {c["name"] for c in data["checks"]}
    assert {
        "spurious_blob",
        "spurious_ici",
        "tp_bridge",
        "reference_center_zero",
        "trainable_center_moves",
        "maxpool_spiral",
    } <= names
    md = (out / "gallery.md").read_text()
    assert "FAIL" not in md and md.count("**PASS**") == data["total"]
    html = (out / "gallery.html").read_text()
    assert html.count('<td class="pass">PASS</td>') == data["total"] and 'class="fail"' not in html


def test_html_is_autoescaped(out):
    html = (out / "gallery.html").read_text()
    assert "p &gt;= 0.5" in html  # section texts contain ">=", escaped by jinja2's autoescape
    assert "<script" not in html


def test_checks_are_computed_and_can_fail(monkeypatch):
    # With a fake loss that returns the same value everywhere, the comparisons fail; a labelling helper that
    # crashes turns its checks into FAILs (with the error in the detail), never into a crash of the gallery.
    fake = {"blob": 0.5, "instance": 0.5, "center": 0.5}
    monkeypatch.setattr(gallery_checks, "loss_terms", lambda scene, name, **params: fake)

    def boom():
        raise RuntimeError("no labelling")

    monkeypatch.setattr(gallery_checks, "stress_rows", boom)
    checks = {c.name: c for c in g.run_checks()}
    assert not checks["spurious_blob"].passed
    assert not checks["tp_bridge"].passed
    assert not checks["maxpool_spiral"].passed and "no labelling" in checks["maxpool_spiral"].detail
    assert checks["reference_center_zero"].passed  # uses the real gradients, not the fake values
    assert checks["reference_center_zero"].status == "PASS"


def test_cube_maps_hand_worked():
    # one voxel at (5, 5) in 16x16, cube 7: centre 5, half width 3 -> indices 5 - 3 - 1 = 1 .. 5 + 3 - 1 = 7
    lab = np.zeros((16, 16), np.int64)
    lab[5, 5] = 1
    cubes, boxes = compute.cube_maps(lab)
    assert boxes == [((1, 1), (8, 8))]
    assert cubes.sum() == 49 and cubes[1:8, 1:8].all()
    # a 2x2 block at rows/cols 0-1: mean 0.5 -> ceil 1; cube 1-3-1 = -3 -> 0 (truncated) .. 1+3-1 = 3
    lab = np.zeros((16, 16), np.int64)
    lab[0:2, 0:2] = 1
    cubes, boxes = compute.cube_maps(lab)
    assert boxes == [((0, 0), (4, 4))] and cubes.sum() == 16
    # anisotropic 3D image (4 x 16 x 16): half width along z = ceil(4 / 16 * 3) = 1
    lab = np.zeros((4, 16, 16), np.int64)
    lab[2, 8, 8] = 1
    _, boxes = compute.cube_maps(lab)
    assert boxes == [((0, 4, 4), (3, 11, 11))]


def test_reference_center_value_hand_worked():
    # label cube 4 voxels, prediction cube 4 voxels, 2 shared; k = 1 + 1e-7:
    # 1 - (2 k^2 2 + e) / (4k + 4k + e)
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[0, :] = True
    b[0, 2:] = True
    b[1, 2:] = True
    k, e = 1 + 1e-7, 1e-5
    assert compute.center_reference_value(a, b) == pytest.approx(1 - (4 * k * k + e) / (8 * k + e), rel=1e-12)


def test_iterations_to_converge_hand_worked():
    line = np.zeros((12, 12), bool)
    line[3, 1:11] = True  # 10 voxels: the largest flat index needs 9 steps to reach the other end
    assert compute.iterations_to_converge(line) == 9
    diag = np.eye(12, dtype=bool)
    assert compute.iterations_to_converge(diag) == 11
    single = np.zeros((12, 12), bool)
    single[4, 4] = True
    assert compute.iterations_to_converge(single) == 0
    # along the line the largest id moves one voxel left per step: 10 - k distinct ids after k steps
    counts, need = compute.propagation_curve(line)
    assert need == 9 and counts.tolist() == [10 - k for k in range(10)]
    # the flat-index-0 voxel keeps id 0 and is never counted (the reference labelling's ids are flat indices)
    corner = np.zeros((6, 6), bool)
    corner[0, 0] = corner[5, 5] = True
    assert compute.propagation_curve(corner)[0].tolist() == [1]


def test_propagation_curve_agrees_with_maxpool_backend(rng):
    mask = rng.random((20, 20)) < 0.45
    counts, need = compute.propagation_curve(mask)
    for it in (0, 1, 3, need, need + 2):
        n, converged, _ = compute.maxpool_count(mask, it)
        assert n == counts[min(it, need)] and converged == (it >= need)


def test_same_partition():
    a = np.array([[1, 1, 0, 2]])
    assert compute.same_partition(a, np.array([[3, 3, 0, 1]]))
    assert not compute.same_partition(a, np.array([[3, 4, 0, 1]]))  # split
    assert not compute.same_partition(a, np.array([[3, 3, 0, 3]]))  # merged


def test_tp_weights_on_bridge():
    from lossbench.data.scenes import get_scene

    sc = get_scene("figure4_bridge")
    sets = compute.instance_sets(sc)
    lab, comp = sets["lab"], sets["comp"]
    assert sets["n_l"] == 2 and sets["n_p"] == 1
    keep = compute.tp_weights(sc, 1, "keep", sets)
    remove = compute.tp_weights(sc, 1, "remove", sets)
    detached = compute.tp_weights(sc, 1, "remove_detached", sets)
    assert (keep == (comp > 0)).all()
    assert (remove[lab == 2] == 0).all() and (remove[(comp > 0) & (lab != 2)] == 1).all()
    bg_comp = (comp > 0) & (lab == 0)
    np.testing.assert_allclose(detached[bg_comp], sc.pred[bg_comp])
    assert (detached[lab == 2] == 0).all() and (detached[(lab == 1) & (comp > 0)] == 1).all()


def test_bad_output_path(tmp_path):
    f = tmp_path / "not_a_folder"
    f.write_text("x")
    with pytest.raises(ConfigError, match="`out` must be a folder"):
        g.write_gallery(f)


@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed")
def test_real_browser(out):
    html_path = out / "gallery.html"
    html = html_path.read_text()
    shot = out / "screenshot.png"
    res = check_page(html_path, screenshot=shot)
    assert res["errors"] == []
    assert res["title"] == "lossbench synthetic sanity-check gallery"
    # scenes, figure-1 instances, gradients, tp modes, centre, labelling, every term, audit, checks
    assert res["tables"] == html.count("<table>") == 9
    for caption in (
        "Scenes",
        "Per label instance",
        "Instance Dice loss per label instance",
        "Centre term on figure1",
        "Components found",
        "Every term of every loss variant",
        "Gradient audit on figure1",
        "checks pass",
    ):
        assert caption in html, caption
    assert len(res["images"]) == len(_img_sources(html))
    for img in res["images"]:
        assert img["complete"] and img["w"] > 0 and img["h"] > 0, img
    assert shot.exists() and shot.stat().st_size > 10_000


def test_cli_gallery_documents_out_and_prints_both_pages(tmp_path, monkeypatch, capsys):
    from lossbench.cli import build_parser, main
    from lossbench.report import gallery

    sub = build_parser()._subparsers._group_actions[0].choices["gallery"]
    assert "output folder (default: reports/gallery)" in sub.format_help()
    monkeypatch.setattr(gallery, "write_gallery", lambda out: out / "gallery.md")
    assert main(["gallery", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / "gallery.md"), str(tmp_path / "gallery.html")]


def test_plain_table_model():
    from lossbench.report.model import Table

    t = Table.plain("x", "caption", ["name", "kind", "n", "v"], [["a", "s", 3, "0.5"], ["b|c", "t", 10, "1"]], 2)
    assert (t.row_header, t.columns, t.align) == ("name", ["kind", "n", "v"], ["l", "r", "r"])
    assert [r.label for r in t.rows] == ["a", "b|c"]
    assert [[c.text for c in r.cells] for r in t.rows] == [["s", "3", "0.5"], ["t", "10", "1"]]
