"""Synthetic gallery: files, computed expectation checks (and planted errors that make them fail), hand-worked
helpers, and a real headless-Chromium load."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from lossbench.errors import ConfigError
from lossbench.report import gallery as g
from lossbench.report.browser import check_page, find_chromium
from lossbench.report.gallery import ccdice, checks_ici, checks_labelling, compute, labelling


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
    assert len(srcs) == 10
    assert {"img/cc_regions.png", "img/cc_missed.png", "img/labelling_stress.png"} <= set(srcs)
    for src in srcs:
        assert src.startswith("img/") and not Path(src).is_absolute()
        assert (out / src).stat().st_size > 1000
        assert f"]({src})" in md
    total = sum(p.stat().st_size for p in (out / "img").glob("*.png"))
    assert total < 2_000_000
    command = f"lossbench gallery --out {out}"
    assert command in html and command in md


def test_provenance_names_the_command_and_matches_the_code(out):
    from lossbench.provenance import check_provenance, source_fingerprint

    record = json.loads((out / "provenance.json").read_text())
    assert record["command"] == f"lossbench gallery --out {out}"
    assert record["fingerprints"] == {"gallery": source_fingerprint("gallery")}
    assert check_provenance(out) is None


def test_every_check_passes(out):
    data = json.loads((out / "checks.json").read_text())
    assert data["total"] >= 23 and data["passed"] == data["total"], [c for c in data["checks"] if not c["passed"]]
    names = [c["name"] for c in data["checks"]]
    assert {
        "default_is_published",
        "spurious_blob",
        "spurious_ici",
        "tp_bridge",
        "published_center_zero",
        "trainable_center_moves",
        "maxpool_spiral",
        "kornia_iterative",
        "cc_missed_equal",
        "cc_missed_push",
        "cc_spurious_penalised",
        "cc_dice_panel",
    } <= set(names)
    # gallery order: ICI checks, then labelling, then CC-Dice
    assert names.index("center_panel") < names.index("maxpool_spiral") < names.index("cc_missed_equal")
    md = (out / "gallery.md").read_text()
    assert "**FAIL**" not in md and md.count("**PASS**") == data["total"]
    html = (out / "gallery.html").read_text()
    assert html.count('<td class="pass">PASS</td>') == data["total"] and 'class="fail"' not in html


def test_page_labels_published_and_lossbench_variants(out):
    md = (out / "gallery.md").read_text()
    for text in ("ici[published]", "ici[lossbench]", "ici[lossbench,tp=keep]", "dici[published]", "cc_dicece"):
        assert f"| {text} |" in md, text
    assert "ici[reference]" not in md and "trainable]" not in md  # the old variant names
    assert "center term (published)" in md and "center term (lossbench's trainable)" in md
    for engineer_file in ("REFERENCE.md", "DESIGN.md", "STYLE.md", "../shared"):
        assert engineer_file not in md and engineer_file not in (out / "gallery.html").read_text()


def test_glossary_defines_the_abbreviations_the_page_prints(out):
    from lossbench.report.gallery.page import GLOSSARY

    terms = " ".join(term for term, _ in GLOSSARY)
    md = (out / "gallery.md").read_text()
    for abbreviation in ("ICI", "DICI", "Eq.", "TP", "-TP", "CC-Dice", "BCE", "L1", "nz", "L2 norm", "stopgrad", "2D",
                         "ceil", "cc3d", "kornia", "id"):  # fmt: skip
        assert abbreviation in md and abbreviation in terms, abbreviation
    assert "| L2 norm, \\|grad\\|, grad L2 |" in md  # a '|' inside a glossary entry does not break the markdown table


def test_html_is_autoescaped(out):
    html = (out / "gallery.html").read_text()
    assert "p &gt;= 0.5" in html  # section texts contain ">=", escaped by jinja2's autoescape
    assert "<script" not in html


def test_checks_are_computed_and_can_fail(monkeypatch):
    # With a fake loss that returns the same value everywhere, the comparisons fail; a labelling helper that
    # crashes turns its checks into FAILs (with the error in the detail), never into a crash of the gallery.
    fake = {"global": 0.5, "blob": 0.5, "instance": 0.5, "center": 0.5, "total": 1.0}
    monkeypatch.setattr(checks_ici, "loss_terms", lambda scene, name, **params: fake)

    def boom():
        raise RuntimeError("no labelling")

    monkeypatch.setattr(checks_labelling, "stress_rows", boom)
    checks = {c.name: c for c in g.run_checks()}
    assert not checks["spurious_blob"].passed
    assert not checks["tp_bridge"].passed
    assert not checks["default_is_published"].passed  # every choice of lossbench's "changes nothing"
    for name in ("maxpool_spiral", "maxpool_corner", "kornia_iterative"):
        assert not checks[name].passed and "no labelling" in checks[name].detail, name
    assert checks["published_center_zero"].passed  # uses the real gradients, not the fake values
    assert checks["published_center_zero"].status == "PASS"
    assert checks["cc_missed_equal"].passed  # the CC-Dice checks do not use the patched function


def test_default_checks_fail_when_the_default_is_lossbench_design(monkeypatch):
    # Planted error: ici/dici without options compute lossbench's design instead of the published loss.
    from lossbench.losses.ici import options

    real = options.make_config
    monkeypatch.setattr(options, "make_config", lambda dual, params: real(dual, {"reference": False, **params}))
    monkeypatch.setattr("lossbench.losses.ici.make_config", options.make_config)
    names = ["default_is_published", "published_center_zero", "figure1_panel", "center_panel", "spurious_blob"]
    checks = {c.name: c for c in g.run_checks(names=names)}
    assert not checks["default_is_published"].passed
    assert not checks["published_center_zero"].passed  # the trainable center term has a gradient
    assert not checks["figure1_panel"].passed and not checks["center_panel"].passed
    assert checks["spurious_blob"].passed


def test_cc_checks_fail_when_the_loss_ignores_the_voronoi_regions(monkeypatch):
    # Planted error: CC-Dice with one region per image (every voxel given to the first component) is a plain Dice
    # over the image: a missed small lesion becomes cheap again and the per-region recomputation disagrees.
    import lossbench.losses.cc_dice as cc_module

    def one_region(mask, connectivity, spacing):
        _, counts = real(mask, connectivity, spacing)
        ones = np.minimum(counts, 1)
        ids = np.where(ones > 0, np.cumsum(ones), 0).astype(np.int32)  # batch-numbered, as batch_regions numbers
        return np.broadcast_to(ids.reshape(-1, *[1] * (mask.ndim - 1)), mask.shape).copy(), ones

    real = cc_module.batch_regions
    monkeypatch.setattr(cc_module, "batch_regions", one_region)
    names = ["cc_missed_equal", "cc_missed_push", "cc_dice_panel", "spurious_blob"]
    checks = {c.name: c for c in g.run_checks(names=names)}
    assert not checks["cc_missed_equal"].passed
    assert not checks["cc_missed_push"].passed
    assert not checks["cc_dice_panel"].passed
    assert checks["spurious_blob"].passed


def test_kornia_check_fails_when_the_iterative_labelling_converges_at_once(monkeypatch):
    # Planted error: a "kornia" that labels exactly after any number of iterations is not the public code's
    # propagation; the check must notice (different partitions at 20 iterations, 1 iteration to converge).
    monkeypatch.setattr(labelling, "kornia_labels", lambda mask, iters: compute.label(mask))
    checks = {c.name: c for c in g.run_checks(names=["kornia_iterative", "maxpool_spiral"])}
    assert not checks["kornia_iterative"].passed
    assert "same as the public code at every iteration count: False" in checks["kornia_iterative"].detail
    assert checks["maxpool_spiral"].passed


def test_run_checks_by_name():
    (only,) = g.run_checks(names=["spurious_blob"])
    assert only.name == "spurious_blob" and only.passed
    with pytest.raises(ConfigError, match="Did you mean 'spurious_blob'"):
        g.run_checks(names=["spurious_blb"])


def test_cube_maps_hand_worked():
    # one voxel at (5, 5) in 16x16, cube 7: center 5, half width 3 -> indices 5 - 3 - 1 = 1 .. 5 + 3 - 1 = 7
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
    assert labelling.iterations_to_converge(line) == 9
    diag = np.eye(12, dtype=bool)
    assert labelling.iterations_to_converge(diag) == 11
    single = np.zeros((12, 12), bool)
    single[4, 4] = True
    assert labelling.iterations_to_converge(single) == 0
    # along the line the largest id moves one voxel left per step: 10 - k distinct ids after k steps
    counts, need = labelling.propagation_curve(line)
    assert need == 9 and counts.tolist() == [10 - k for k in range(10)]
    # the flat-index-0 voxel keeps id 0 and is never counted (the public code's ids are flat indices)
    corner = np.zeros((6, 6), bool)
    corner[0, 0] = corner[5, 5] = True
    assert labelling.propagation_curve(corner)[0].tolist() == [1]


def test_propagation_curve_agrees_with_maxpool_backend(rng):
    mask = rng.random((20, 20)) < 0.45
    counts, need = labelling.propagation_curve(mask)
    for it in (0, 1, 3, need, need + 2):
        n, converged, _ = labelling.maxpool_count(mask, it)
        assert n == counts[min(it, need)] and converged == (it >= need)


def test_kornia_iterations_hand_worked():
    line = np.zeros((12, 12), bool)
    line[3, 1:11] = True  # the largest id travels 9 voxels, as in the public code's propagation
    need, labels = labelling.kornia_iterations_to_converge(line)
    assert need == 9 and np.unique(labels[line]).size == 1 and (labels[~line] == 0).all()
    assert np.unique(labelling.kornia_labels(line, 8)[line]).size == 2  # one step short: 2 pieces
    single = np.zeros((12, 12), bool)
    single[0, 0] = True  # kornia's ids start at 1: the flat-index-0 voxel is kept (the public code drops it)
    need, labels = labelling.kornia_iterations_to_converge(single)
    assert need == 1 and labels[0, 0] > 0


def test_same_as_maxpool_hand_worked():
    mask = np.array([[1, 0, 1], [0, 0, 1]], bool)
    maxpool = np.array([[0, 0, 1], [0, 0, 1]])  # the isolated flat-index-0 voxel is dropped
    assert labelling.same_as_maxpool(np.array([[1, 0, 6], [0, 0, 6]]), maxpool, mask)
    assert not labelling.same_as_maxpool(np.array([[6, 0, 6], [0, 0, 6]]), maxpool, mask)  # merged with it
    assert not labelling.same_as_maxpool(np.array([[1, 0, 3], [0, 0, 6]]), maxpool, mask)  # split
    assert not labelling.same_as_maxpool(np.array([[1, 0, 6], [0, 0, 0]]), maxpool, mask)  # a voxel unlabelled
    dropped_elsewhere = np.array([[2, 0, 1], [0, 0, 0]])
    assert not labelling.same_as_maxpool(np.array([[1, 0, 6], [0, 0, 6]]), dropped_elsewhere, mask)


def test_voronoi_by_distance_hand_worked(rng):
    lab = np.zeros((3, 5), np.int64)
    lab[:, 0], lab[:, 4] = 1, 2
    # column 2 is 2 voxels from both components: the smaller id wins
    assert ccdice.voronoi_by_distance(lab).tolist() == [[1, 1, 1, 2, 2]] * 3
    assert (ccdice.voronoi_by_distance(np.zeros((4, 4), np.int64)) == 0).all()
    from lossbench.cc import voronoi_components

    for _ in range(5):  # the per-component distance transforms agree with lossbench's Voronoi labelling
        mask = rng.random((24, 20)) < 0.04
        regions = voronoi_components(mask[None]).regions[0]
        assert (ccdice.voronoi_by_distance(compute.label(mask)) == regions).all()


def test_region_values_hand_worked():
    # 4x6 image; lesion A = (0, 0) found (p 1), lesion B = (0, 5) missed (p 0), a spurious voxel (3, 1) at p 0.5.
    # Regions: columns 0-2 -> A (column 2 is 2 from A, 3 from B), columns 3-5 -> B; 12 voxels each.
    from lossbench.data.scenes import Scene

    y = np.zeros((4, 6), np.float32)
    y[0, 0] = y[0, 5] = 1
    p = np.zeros((4, 6), np.float32)
    p[0, 0], p[3, 1] = 1.0, 0.5
    sc = Scene("hand", y, p, "hand-worked")
    vals = ccdice.region_values(sc)
    e = 1e-5
    a, b = vals["rows"]
    assert (a["region"], b["region"], a["predicted"], b["predicted"]) == (12, 12, 2, 0)
    assert a["dice"] == pytest.approx(1 - (2 + e) / (2.5 + e), rel=1e-12)
    assert b["dice"] == pytest.approx(1 - e / (1 + e), rel=1e-12)
    # BCE: -log(0.5) on the spurious voxel of A; the missed lesion voxel of B costs the clamp, 100
    assert a["ce"] == pytest.approx(np.log(2) / 12, rel=1e-12) and b["ce"] == pytest.approx(100 / 12, rel=1e-12)
    terms = compute.loss_terms(sc, "cc_dicece")
    assert terms["dice"] == pytest.approx(vals["dice"], abs=1e-12) and terms["ce"] == pytest.approx(vals["ce"])


def test_same_partition():
    a = np.array([[1, 1, 0, 2]])
    assert labelling.same_partition(a, np.array([[3, 3, 0, 1]]))
    assert not labelling.same_partition(a, np.array([[3, 4, 0, 1]]))  # split
    assert not labelling.same_partition(a, np.array([[3, 3, 0, 3]]))  # merged


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
    # glossary, scenes, figure-1 instances, gradients, tp modes, center, labelling, CC-Dice regions and missed
    # lesions, every term, audit, checks
    assert res["tables"] == html.count("<table>") == 12
    for caption in (
        "Every abbreviation and short symbol",
        "Scenes",
        "Per label instance",
        "Instance Dice loss per label instance",
        "Center term on figure1",
        "Components found",
        "CC-Dice per Voronoi region on figure1",
        "A missed small vs a missed large lesion",
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
