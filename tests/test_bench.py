import json
import platform
import sys
import time

import numpy as np
import pytest
import torch
from scipy import ndimage

import lossbench.bench as bench
import lossbench.bench.suites.cc as cc_suite
import lossbench.bench.suites.metrics as metrics_suite
import lossbench.bench.suites.scaling as scaling_suite
from lossbench.bench import instances_mask, maxpool_iterations, measure_group, parse_size, run_bench, to_markdown
from lossbench.bench.environment import PINNED_MALLOC
from lossbench.bench.record import Recorder
from lossbench.cc import label_components
from lossbench.cli import main
from lossbench.errors import BackendError, ConfigError, LossbenchError

CPU = torch.device("cpu")
CC_CASES = {"cc3d direct", "cc3d", "scipy", "auto", "torch", "maxpool"}
TIMING_FIELDS = ("median_s", "q1_s", "q3_s", "min_s", "max_s", "samples", "calls_per_sample", "peak_mem_mb")


def _losses_available() -> str | None:
    try:
        from lossbench.losses import build_loss, list_losses  # noqa: F401
    except ImportError as exc:
        return f"lossbench.losses is not available: {exc}"
    return None


def _metrics_available() -> str | None:
    try:
        from lossbench.metrics import atlas_metrics, detection_metrics  # noqa: F401
    except ImportError as exc:
        return f"lossbench.metrics is not available: {exc}"
    return None


needs_losses = pytest.mark.skipif(_losses_available() is not None, reason=str(_losses_available()))
needs_metrics = pytest.mark.skipif(_metrics_available() is not None, reason=str(_metrics_available()))


def rows(result, suite, group=None):
    return [r for r in result["results"] if r["suite"] == suite and (group is None or r["group"] == group)]


def median_of(result, suite, group, case):
    (row,) = [r for r in rows(result, suite, group) if r["case"] == case]
    return row["median_s"]


# ------------------------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("text", "expected"),
    [("64", (64, 64, 64)), ("512x512", (512, 512)), ("96x96x48", (96, 96, 48)), (32, (32, 32, 32))],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["abc", "7", "8x8x8x8", "0x9", "", "16x7"])
def test_parse_size_rejects(text):
    with pytest.raises(ConfigError, match="`sizes` must be"):
        parse_size(text)


def test_paper_iteration_counts():
    assert maxpool_iterations((96, 96, 96)) == 250
    assert maxpool_iterations((192, 192, 192)) == 400
    assert maxpool_iterations((64, 64, 64)) == 350
    assert maxpool_iterations((512, 512)) == 350


@pytest.mark.parametrize("n", [1, 10, 100])
def test_instances_mask_has_exactly_n_components(n):
    m = instances_mask((48, 48, 48), n, seed=n)
    _, count = ndimage.label(m, structure=np.ones((3, 3, 3)))  # full connectivity: balls never touch
    assert count == n
    assert m.sum() == n * 81  # a radius-2.5 ball has 81 voxels (counted in the next test)


def test_ball_volume_worked_by_hand():
    # offsets with dx^2 + dy^2 + dz^2 <= 6.25: 0 (1), 1 (6), 2 (12), 3 (8), 4 (6), 5 (24), 6 (24) -> 81
    m = instances_mask((8, 8, 8), 1, seed=0)
    assert m.sum() == 1 + 6 + 12 + 8 + 6 + 24 + 24


def test_instances_mask_too_many():
    with pytest.raises(ConfigError, match="`n` must be at most 8"):
        instances_mask((16, 16, 16), 9)


# ------------------------------------------------------------------------------------- measurement


def test_measure_group_times_sleep_and_batches_fast_calls():
    out = measure_group(
        {"sleep": (lambda: time.sleep(0.004), CPU), "noop": (lambda: None, CPU)},
        repeats=3,
        min_sample_s=0.02,
    )
    s = out["sleep"].summary()
    assert s["samples"] == 3
    assert 0.004 <= s["min_s"] <= s["median_s"] <= s["max_s"] < 0.1
    assert 2 <= out["sleep"].calls_per_sample <= 6  # about 0.02 / 0.004 back-to-back calls per sample
    assert out["noop"].calls_per_sample > 100
    assert out["noop"].summary()["median_s"] < 1e-4


def test_measure_group_slow_call_is_its_own_warm_up_and_budget_stops_it():
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.05)

    # wide margins so a loaded machine cannot change the count: each call takes >= 50 ms
    out = measure_group({"slow": (slow, CPU)}, repeats=5, slow_call_s=0.001, case_budget_s=0.08)
    # warm-up (counted, > slow_call_s) + one more sample, then the 80 ms budget is used up
    assert len(out["slow"].samples) == 2
    assert len(calls) == 2


def test_measure_group_records_errors_and_keeps_other_cases():
    def boom():
        raise RuntimeError("kaput")

    out = measure_group({"ok": (lambda: None, CPU), "bad": (boom, CPU)}, repeats=2)
    assert out["bad"].error == "RuntimeError: kaput" and out["bad"].samples == []
    assert len(out["ok"].samples) == 2


def test_ratio_status():
    run = Recorder(CPU, 1, "tracemalloc", None)
    kw = {"common": {}, "numerator": "a", "denominator": "b", "group": "g", "case": "a", "short": "/b"}
    run.ratio("cc", "le pass", 3.0, 2.0, target=1.5, op="<=", **kw)
    run.ratio("cc", "le fail", 4.0, 2.0, target=1.5, op="<=", **kw)
    run.ratio("cc", "ge pass", 300.0, 2.0, target=100, op=">=", **kw)
    run.ratio("cc", "ge fail", 100.0, 2.0, target=100, op=">=", **kw)
    run.ratio("cc", "no target", 1.0, 4.0, **kw)
    run.ratio("cc", "missing", None, 4.0, target=1.5, op="<=", **kw)
    got = {r["name"]: (r["value"], r["status"]) for r in run.ratios}
    assert got == {
        "le pass": (1.5, "PASS"),
        "le fail": (2.0, "FAIL"),
        "ge pass": (150.0, "PASS"),
        "ge fail": (50.0, "FAIL"),
        "no target": (0.25, None),
        "missing": (None, None),
    }


# ---------------------------------------------------------------------------------------- cc suite


def test_cc_suite_fields_ratios_and_files(tmp_path):
    res = run_bench(suites=["cc"], sizes=["24x24", "12"], repeats=1, out=tmp_path, show=False)
    assert res["schema_version"] == 1 and res["errors"] == []
    env = res["environment"]
    assert env["device"] == "cpu" and env["torch_threads"] == torch.get_num_threads()
    assert env["versions"]["torch"] == torch.__version__ and env["versions"]["cc3d"]
    assert set(env["env"]) >= {"OMP_NUM_THREADS", "THP_MEM_ALLOC_ENABLE"}
    groups = {"24x24 B=1", "24x24 B=4", "12^3 B=1", "12^3 B=4"}
    assert {r["group"] for r in rows(res, "cc")} == groups
    for g in groups:
        batch = int(g.split("B=")[1])
        got = rows(res, "cc", g)
        assert {r["case"] for r in got} == CC_CASES
        for r in got:
            for f in TIMING_FIELDS:
                assert f in r, (g, r["case"], f)
            assert r["samples"] == 1 and r["median_s"] > 0 and r["peak_mem_mb"] is not None
            assert len(r["components"]) == batch and r["device"] == "cpu"
        # ratios are computed from this run's medians
        ratios = {q["name"]: q for q in res["ratios"] if q["group"] == g}
        want = median_of(res, "cc", g, "auto") / median_of(res, "cc", g, "cc3d direct")
        assert ratios["auto / cc3d direct"]["value"] == pytest.approx(want)
        want = median_of(res, "cc", g, "maxpool") / median_of(res, "cc", g, "auto")
        assert ratios["speed-up auto vs maxpool"]["value"] == pytest.approx(want)
        assert ratios["auto / cc3d direct"]["target"] is None  # targets apply at 96^3 and 192^3 only
    maxpool = [r for r in rows(res, "cc") if r["case"] == "maxpool"]
    assert all(r["note"].startswith("reference, 350 iterations") for r in maxpool)

    written = json.loads((tmp_path / "bench.json").read_text())
    assert written == res
    md = (tmp_path / "bench.md").read_text()
    assert md.startswith("# lossbench bench") and "## cc" in md
    assert "| 12^3 B=4 | cc3d direct | cpu |" in md and "/direct=" in md
    assert md == to_markdown(res)


def test_cc_targets_get_pass_fail_at_96(monkeypatch):
    monkeypatch.setattr(cc_suite, "maxpool_iterations", lambda size: 3)  # the paper's 250 take ~25 s on CPU
    res = run_bench(suites=["cc"], sizes=["96"], repeats=1, show=False)
    targets = {(q["name"], q["batch"]): q for q in res["ratios"] if q["target"] is not None}
    assert set(targets) == {
        ("auto / cc3d direct", 1),
        ("auto / cc3d direct", 4),
        ("speed-up auto vs maxpool", 1),
        ("speed-up auto vs maxpool", 4),
    }
    for q in targets.values():
        assert q["status"] == ("PASS" if (q["value"] <= q["target"]) == (q["op"] == "<=") else "FAIL")
    assert targets[("speed-up auto vs maxpool", 1)]["op"] == ">="
    assert targets[("speed-up auto vs maxpool", 1)]["target"] == 100
    assert all(r["note"] == "reference, 3 iterations" for r in rows(res, "cc") if r["case"] == "maxpool")
    assert all(r["components"] == [49] or len(r["components"]) == 4 for r in rows(res, "cc"))


def test_cc_suite_catches_a_backend_with_wrong_labels(monkeypatch):
    import lossbench.cc.torch_cc as torch_cc

    exact = torch_cc.label_torch

    def off_by_one(mask, connectivity, **kw):
        labels, counts = exact(mask, connectivity, **kw)
        return torch.where(labels > 0, labels + 1, labels), counts

    monkeypatch.setattr(torch_cc, "label_torch", off_by_one)
    with pytest.raises(LossbenchError, match=r"12\^3 B=1 / torch: labels differ from scipy"):
        run_bench(suites=["cc"], sizes=["12"], repeats=1, show=False)


def test_cli_bench_writes_files(tmp_path, capsys):
    rc = main(["bench", "--suite", "cc", "--sizes", "16x16", "--repeats", "1", "--out", str(tmp_path)])
    assert rc == 0
    assert (tmp_path / "bench.json").is_file() and (tmp_path / "bench.md").is_file()
    out = capsys.readouterr().out
    assert "lossbench bench: cc" in out and "cc3d direct" in out


@pytest.mark.parametrize(
    ("kwargs", "exc", "fragment"),
    [
        ({"suites": ["ccc"]}, ConfigError, "Did you mean 'cc'"),
        ({"suites": []}, ConfigError, "`suites` must be"),
        ({"repeats": 0}, ConfigError, "`repeats` must be an int >= 1"),
        ({"sizes": ["4x"]}, ConfigError, "`sizes` must be"),
        ({"device": "tpu"}, ConfigError, "`device` must be"),
        ({"malloc": "fast"}, ConfigError, "`malloc` must be one of"),
        ({"losses": ["icix"]}, ConfigError, "Did you mean 'ici'"),
        ({"losses": []}, ConfigError, "`losses` must be a non-empty selection"),
    ],
)
def test_bad_arguments_fail_before_running(kwargs, exc, fragment, tmp_path):
    with pytest.raises(exc, match=fragment):
        run_bench(**{"suites": ["cc"], "out": tmp_path, "show": False, **kwargs})
    assert not (tmp_path / "bench.json").exists()


@needs_losses
def test_loss_selection_and_malloc_state_are_recorded(tmp_path):
    res = run_bench(suites=["losses"], sizes=["8"], repeats=1, show=False, losses="ici reference,blob", out=tmp_path)
    # a registry name selects all its cases, a case label just that one; Dice and the floor always run
    want = {"dice", "ici reference", "blob", "blob base=dicece", "2 cc3d labellings", "monai DiceLoss"}
    assert {r["case"] for r in rows(res, "losses")} == want
    refs = [q for q in res["ratios"] if q["name"] == "dice / monai DiceLoss"]  # the external reference
    assert len(refs) == 2  # batch 1 and 4
    for q in refs:
        want = median_of(res, "losses", q["group"], "dice") / median_of(res, "losses", q["group"], "monai DiceLoss")
        assert q["value"] == pytest.approx(want)
    assert res["settings"]["losses"] == ["ici reference", "blob"]
    state = res["environment"]["malloc"]
    assert state["mode"] in ("pinned", "default")
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert state == {"mode": "pinned", **PINNED_MALLOC}
    assert "- malloc: " in (tmp_path / "bench.md").read_text()
    res = run_bench(suites=["metrics"], repeats=1, show=False, malloc="default")
    assert res["environment"]["malloc"] == {"mode": "default", "reason": "requested"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_device_is_a_clear_error():
    with pytest.raises(BackendError, match="no CUDA device"):
        run_bench(suites=["cc"], device="cuda", show=False)


# ------------------------------------------------------------- the batched cc3d path the benchmark drove


@pytest.mark.parametrize("conn", [1, 2, 3])
def test_batched_cc3d_paths_equal_scipy(conn):
    """cpu.label_cc3d labels a batch in one call: plain stack when no component can cross images, else
    alternating values. Both paths, with empty images in between, against scipy per image."""
    rng = np.random.default_rng(conn)
    st = ndimage.generate_binary_structure(3, conn)
    for crossing in (False, True):
        mask = rng.random((5, 6, 7, 8)) < 0.3
        mask[2] = False
        if crossing:
            mask[0, -1, 3, 3] = mask[1, 0, 3, 3] = True  # would join images 0 and 1 in a plain stack
        else:
            mask[:, 0] = mask[:, -1] = False
        expected = np.stack([ndimage.label(m, structure=st)[0] for m in mask])
        for backend in ("cc3d", "torch"):
            res = label_components(mask, connectivity=conn, backend=backend)
            np.testing.assert_array_equal(res.labels, expected)
            np.testing.assert_array_equal(res.counts, expected.reshape(5, -1).max(1))


@pytest.mark.parametrize("sync_free", [False, True])
def test_torch_edge_strategies_equal_scipy(sync_free):
    """The CUDA default (sync_free: self-loops instead of boolean compaction) is exercised here on CPU."""
    from lossbench.cc.torch_cc import label_torch

    rng = np.random.default_rng(7)
    for nd, shape in ((2, (3, 9, 11)), (3, (2, 6, 7, 5)), (3, (1, 1, 1, 9))):
        for density in (0.1, 0.4, 0.7):
            mask = rng.random(shape) < density
            for conn in range(1, nd + 1):
                st = ndimage.generate_binary_structure(nd, conn)
                expected = np.stack([ndimage.label(m, structure=st)[0] for m in mask])
                labels, counts = label_torch(torch.from_numpy(mask), conn, sync_free=sync_free)
                np.testing.assert_array_equal(labels.numpy(), expected)
                np.testing.assert_array_equal(counts.numpy(), expected.reshape(len(mask), -1).max(1))


# ----------------------------------------------------------------------------- losses / scaling / metrics


def test_missing_losses_module_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "lossbench.losses", None)  # makes `import lossbench.losses` fail
    with pytest.raises(LossbenchError, match=r"lossbench\.losses") as info:
        run_bench(suites=["losses", "scaling"], out=tmp_path, show=False)
    res = info.value.results
    assert [e["suite"] for e in res["errors"]] == ["losses", "scaling"]
    assert json.loads((tmp_path / "bench.json").read_text())["errors"] == res["errors"]
    assert "## errors" in (tmp_path / "bench.md").read_text()
    rc = main(["bench", "--suite", "losses", "--sizes", "8"])
    err = capsys.readouterr().err
    assert rc == 2 and "lossbench bench: error:" in err and "lossbench.losses" in err and "Traceback" not in err


def test_missing_metrics_module_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "lossbench.metrics", None)
    with pytest.raises(LossbenchError, match=r"needs lossbench\.metrics \(atlas_metrics, detection_metrics\)"):
        run_bench(suites=["metrics"], show=False)


@needs_losses
def test_losses_suite_fields_and_ratios():
    from lossbench.losses import list_losses

    res = run_bench(suites=["losses"], sizes=["16x16", "8"], repeats=1, show=False)
    assert res["errors"] == []
    registered = {e["name"] for e in list_losses()}
    for g in ("16x16 B=1", "16x16 B=4", "8^3 B=1", "8^3 B=4"):
        cases = {r["case"] for r in rows(res, "losses", g)}
        assert registered | {"2 cc3d labellings"} <= cases
        assert {"ici reference", "ici tp_mode=keep", "dici reference"} <= cases
        ratios = {q["name"]: q for q in res["ratios"] if q["suite"] == "losses" and q["group"] == g}
        dice = median_of(res, "losses", g, "dice")
        floor = dice + median_of(res, "losses", g, "2 cc3d labellings")
        ici = median_of(res, "losses", g, "ici")
        assert ratios["ici / dice"]["value"] == pytest.approx(ici / dice)
        assert ratios["ici / (dice + 2 labellings)"]["value"] == pytest.approx(ici / floor)
        assert ratios["ici / (dice + 2 labellings)"]["target"] is None  # checked at 96^3 and 192^3 only


@needs_losses
def test_scaling_suite_small(monkeypatch):
    monkeypatch.setattr(scaling_suite, "SCALING_SIZE", (24, 24, 24))
    monkeypatch.setattr(scaling_suite, "SCALING_COUNTS", (2, 8))
    res = run_bench(suites=["scaling"], repeats=1, show=False)
    assert res["errors"] == []
    groups = {f"24^3 n={n} ({s})" for n in (2, 8) for s in ("fixed foreground", "fixed size")}
    assert {r["group"] for r in rows(res, "scaling")} == groups
    cases = {r["case"] for r in rows(res, "scaling", "24^3 n=8 (fixed size)")}
    assert {"dice", "2 cc3d labellings", "ici", "dici", "blob"} <= cases
    # fixed foreground: the two counts hold about the same number of voxels; fixed size: 4x as many for 4x the balls
    fg = {(r["instances"], r["series"]): r["foreground"] for r in rows(res, "scaling") if r["case"] == "dice"}
    assert fg[(8, "fixed size")] == 4 * fg[(2, "fixed size")]
    assert abs(fg[(2, "fixed foreground")] - fg[(8, "fixed foreground")]) <= 0.25 * fg[(8, "fixed foreground")]
    ratios = {q["name"]: q for q in res["ratios"] if q["suite"] == "scaling"}
    for name in ("ici", "dici", "blob"):
        for series, target in (("fixed foreground", 1.5), ("fixed size", None)):
            q = ratios[f"{name}: t(8) / t(2) ({series})"]
            want = median_of(res, "scaling", f"24^3 n=8 ({series})", name) / median_of(
                res, "scaling", f"24^3 n=2 ({series})", name
            )
            assert q["value"] == pytest.approx(want) and q["target"] == target
            assert q["status"] in (("PASS", "FAIL") if target else (None,))


@needs_metrics
def test_metrics_suite_small(monkeypatch):
    monkeypatch.setattr(metrics_suite, "METRICS_SHAPE", (48, 50, 44))
    monkeypatch.setattr(metrics_suite, "METRICS_LESIONS", 5)
    res = run_bench(suites=["metrics"], repeats=1, show=False)
    assert res["errors"] == []
    got = rows(res, "metrics")
    assert {r["case"] for r in got} == {"atlas_metrics", "detection_metrics", "atlas + detection"}
    assert all(r["lesions"] >= 3 for r in got)
    (q,) = [q for q in res["ratios"] if q["suite"] == "metrics"]
    assert q["value"] == pytest.approx(median_of(res, "metrics", "48x50x44", "atlas + detection"))
    assert q["target"] == 0.1


@pytest.mark.slow
@needs_losses
@needs_metrics
def test_full_suites_at_small_sizes(tmp_path):
    res = run_bench(sizes=["32", "64x64"], repeats=1, out=tmp_path, show=False)
    assert res["errors"] == [] and {r["suite"] for r in res["results"]} == set(bench.SUITES)


# -------------------------------------------------------------------------------------------- CUDA


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bench_and_torch_labels_equal_cc3d():
    res = run_bench(suites=["cc"], sizes=["32"], device="cuda", repeats=1, show=False)
    assert res["errors"] == [] and res["environment"]["memory_method"] == "torch.cuda.max_memory_allocated"
    for r in rows(res, "cc"):
        assert r["device"] == ("cuda" if r["case"] in ("auto", "torch", "maxpool") else "cpu")
    from lossbench.cc.shapes import blobs_mask

    for size in (96, 192):
        mask = np.stack([blobs_mask((size,) * 3, 50, seed=s) for s in range(2)])
        exact = label_components(mask, backend="cc3d")
        gpu = label_components(torch.from_numpy(mask).cuda())
        assert gpu.labels.is_cuda and gpu.labels.dtype == torch.int64
        np.testing.assert_array_equal(gpu.labels.cpu().numpy(), exact.labels)
        np.testing.assert_array_equal(gpu.counts.cpu().numpy(), exact.counts)
