import json
import platform
import shlex
import sys
import time

import numpy as np
import pytest
import torch
from scipy import ndimage

import lossbench.bench as bench
import lossbench.bench.suites.cc as cc_suite
import lossbench.bench.suites.cc_dice as cc_dice_suite
import lossbench.bench.suites.cc_refs as cc_refs
import lossbench.bench.suites.metrics as metrics_suite
import lossbench.bench.suites.noisy as noisy_suite
import lossbench.bench.suites.scaling as scaling_suite
from lossbench.bench import instances_mask, maxpool_iterations, measure_group, parse_size, run_bench, to_markdown
from lossbench.bench.environment import PINNED_MALLOC, pin_malloc
from lossbench.bench.masks import lesions_mask, noisy_logits
from lossbench.bench.record import Recorder
from lossbench.bench.timing import cpu_memory_method
from lossbench.cc import label_components
from lossbench.cli import build_parser, main
from lossbench.errors import BackendError, ConfigError, LossbenchError
from lossbench.provenance import check_provenance

CPU = torch.device("cpu")
CC_CASES = {"cc3d direct", "cc3d", "scipy", "auto", "torch", "skimage", "maxpool"}
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
        kornia = {r["case"] for r in got if r["case"].startswith("kornia")}
        assert {r["case"] for r in got} == CC_CASES | kornia
        # kornia labels 2D images only; its default 100 steps are exact on these masks, so the smallest exact count
        # (below 100) is timed as well
        if g.startswith("24x24"):
            (n,) = {r["smallest_exact_iterations"] for r in got if r["case"].endswith("iterations)")}
            assert kornia == {"kornia (100 iterations)", f"kornia ({n} iterations)", "kornia union-find"} and n < 100
        else:
            assert kornia == set()
        assert all(r["exact"] for r in got if r["case"] in {"cc3d", "auto", "torch", "skimage"} | kornia)
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
    command = json.loads((tmp_path / "provenance.json").read_text())["command"]
    assert "lossbench bench --suite cc --sizes 16x16 --device cpu --repeats 1 --malloc pinned --out " in command


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
    res = run_bench(
        suites=["losses"], sizes=["8"], repeats=1, show=False, losses="ici reference=False,blob", out=tmp_path
    )
    # a registry name selects all its cases, a case label just that one; Dice and the floor always run
    want = {"dice", "ici reference=False", "blob", "blob base=dicece", "2 cc3d labellings", "monai DiceLoss"}
    assert {r["case"] for r in rows(res, "losses")} == want
    refs = [q for q in res["ratios"] if q["name"] == "dice / monai DiceLoss"]  # the external reference
    assert len(refs) == 2  # batch 1 and 4
    for q in refs:
        want = median_of(res, "losses", q["group"], "dice") / median_of(res, "losses", q["group"], "monai DiceLoss")
        assert q["value"] == pytest.approx(want)
    assert res["settings"]["losses"] == ["ici reference=False", "blob"]
    # the provenance's command quotes the selection (it holds a space) and parses back to it
    command = json.loads((tmp_path / "provenance.json").read_text())["command"]
    assert "--losses 'ici reference=False,blob'" in command
    ns = build_parser().parse_args(shlex.split(command.split("lossbench ", 1)[1]))
    assert (ns.suite, ns.sizes, ns.losses) == ("losses", "8", "ici reference=False,blob")
    state = res["environment"]["malloc"]
    assert state["mode"] in ("pinned", "default")
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert state == {"mode": "pinned", **PINNED_MALLOC}
    assert "- malloc: " in (tmp_path / "bench.md").read_text()
    res = run_bench(suites=["metrics"], repeats=1, show=False, malloc="default")
    assert res["environment"]["malloc"] == {"mode": "default", "reason": "requested"}


def test_provenance_names_the_command_that_reruns_the_benchmark(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for name in ("MKL_NUM_THREADS", "THP_MEM_ALLOC_ENABLE", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(metrics_suite, "METRICS_SHAPE", (48, 50, 44))
    out = tmp_path / "bench out"
    run_bench(suites=["metrics"], sizes=["8x8", "8", "8x8x9"], repeats=1, out=out, show=False, malloc="default")
    record = json.loads((out / "provenance.json").read_text())
    assert record["command"] == (
        "OMP_NUM_THREADS=1 lossbench bench --suite metrics --sizes 8x8,8,8x8x9 --device cpu --repeats 1 "
        f"--malloc default --out '{out}'"
    )
    assert set(record["fingerprints"]) == {"bench"} and check_provenance(out) is None
    env, *argv = shlex.split(record["command"])
    assert env == "OMP_NUM_THREADS=1" and argv[:2] == ["lossbench", "bench"]
    ns = build_parser().parse_args(argv[1:])
    want = ("metrics", "8x8,8,8x8x9", "cpu", 1, "default", out)
    assert (ns.suite, ns.sizes, ns.device, ns.repeats, ns.malloc, ns.out) == want


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc heap and /proc peak memory"
)
def test_peak_memory_counts_heap_pages_an_earlier_case_left_mapped():
    pin_malloc()  # blocks below 64 MiB come from the heap, which keeps freed pages mapped

    def touch():
        a = np.ones(32 * 2**20 // 8)  # 32 MiB written
        return float(a[::4096].sum())

    out = measure_group({"first": (touch, CPU), "second": (touch, CPU)}, repeats=1, memory_method=cpu_memory_method())
    # the second case reuses the pages the first freed; without handing them back first it would measure ~0
    for name in ("first", "second"):
        assert len(out[name].mem_samples) == 2  # the warm-up and the untimed call before the sample
        assert min(out[name].mem_samples) >= 30 * 2**20


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
        assert {"ici reference=False", "ici tp_mode=keep", "dici reference=False"} <= cases
        ratios = {q["name"]: q for q in res["ratios"] if q["suite"] == "losses" and q["group"] == g}
        dice = median_of(res, "losses", g, "dice")
        floor = dice + median_of(res, "losses", g, "2 cc3d labellings")
        ici = median_of(res, "losses", g, "ici")
        assert ratios["ici / dice"]["value"] == pytest.approx(ici / dice)
        assert ratios["ici / (dice + 2 labellings)"]["value"] == pytest.approx(ici / floor)
        assert ratios["ici / (dice + 2 labellings)"]["target"] is None  # checked at 96^3 and 192^3 only


@pytest.fixture
def tiny_scaling(monkeypatch):
    """The scaling suite at tiny sizes: 24^3 with 2 and 8 instances, the noisy scene 2 x 40^3 with 3 lesions."""
    monkeypatch.setattr(scaling_suite, "SCALING_SIZE", (24, 24, 24))
    monkeypatch.setattr(scaling_suite, "SCALING_COUNTS", (2, 8))
    monkeypatch.setattr(noisy_suite, "NOISY_SHAPE", (40, 40, 40))  # lesions need sides >= 37
    monkeypatch.setattr(noisy_suite, "NOISY_LESIONS", 3)


@needs_losses
def test_scaling_suite_small(tiny_scaling):
    res = run_bench(suites=["scaling"], repeats=1, show=False)
    assert res["errors"] == []
    groups = {f"24^3 n={n} ({s})" for n in (2, 8) for s in ("fixed foreground", "fixed size")}
    groups.add("40^3 B=2 (noisy)")
    assert {r["group"] for r in rows(res, "scaling")} == groups
    cases = {r["case"] for r in rows(res, "scaling", "24^3 n=8 (fixed size)")}
    assert {"dice", "2 cc3d labellings", "ici", "dici", "blob"} <= cases
    # fixed foreground: the two counts hold about the same number of voxels; fixed size: 4x as many for 4x the balls
    fg = {
        (r["instances"], r["series"]): r["foreground"]
        for r in rows(res, "scaling")
        if r["case"] == "dice" and "instances" in r
    }
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


def test_noisy_logits_are_4y_minus_2_plus_standard_noise():
    y = np.zeros((2, 40, 40, 40), bool)
    y[:, 10:20, 10:20, 10:20] = True
    x = noisy_logits(y, seed=3)
    noise = x - (4.0 * y - 2.0)
    assert x.dtype == np.float32 and abs(noise.mean()) < 0.01 and abs(noise.std() - 1) < 0.01
    assert abs((x[~y] > 0).mean() - 0.02275) < 0.002  # P(N(0, 1) > 2): background predicted as foreground
    np.testing.assert_array_equal(x, noisy_logits(y, seed=3))


@needs_losses
def test_noisy_scene_rows_time_and_memory_ratios(tiny_scaling):
    res = run_bench(suites=["scaling"], repeats=1, show=False)
    assert res["errors"] == []
    got = {r["case"]: r for r in rows(res, "scaling", "40^3 B=2 (noisy)")}
    labels = [c[0] for c in noisy_suite.NOISY_CASES]
    floor_case = "dice + 2 cc3d labellings"
    assert set(got) == {*labels, floor_case}
    # the prediction is logits > 0 of seed 0; its components counted independently (scipy, full connectivity)
    target = np.stack([lesions_mask((40, 40, 40), 3, seed=b) for b in range(2)])
    full = np.ones((3, 3, 3))
    want = [ndimage.label(p, structure=full)[1] for p in noisy_logits(target, seed=0) > 0]
    assert min(want) > 100  # 2.3 % of 64,000 background voxels, mostly isolated
    for r in got.values():
        assert r["prediction_components"] == want and (r["size"], r["batch"]) == ("40^3", 2)
        assert r["samples"] == 1 and r["median_s"] > 0 and r["peak_mem_mb"] is not None
    floor = got[floor_case]
    ratios = {q["name"]: q for q in res["ratios"] if q.get("scene") == "noisy"}
    assert len(ratios) == 2 * (len(labels) - 1)  # time and memory of every case but Dice
    targeted = {"ici", "ici reference=False", "ici b=0 c=0", "dici", "dici reference=False"}
    for label in labels[1:]:
        time_q = ratios[f"{label} / floor, time (noisy)"]
        mem_q = ratios[f"{label} / floor, peak memory (noisy)"]
        assert time_q["value"] == pytest.approx(got[label]["median_s"] / floor["median_s"])
        if floor["peak_mem_mb"]:
            assert mem_q["value"] == pytest.approx(got[label]["peak_mem_mb"] / floor["peak_mem_mb"])
        for q in (time_q, mem_q):
            if label in targeted:
                assert (q["target"], q["op"]) == (3.0, "<=")
                assert q["status"] == ("PASS" if q["value"] <= 3.0 else "FAIL")
            else:
                assert q["target"] is None and q["status"] is None
    assert "no target" in got["ici reference=False base=dicece"]["note"]
    md = to_markdown(res)
    assert "| 40^3 B=2 (noisy) | ici reference=False |" in md and "mem/floor=" in md


@needs_losses
def test_noisy_scene_follows_the_loss_selection(tiny_scaling, monkeypatch):
    monkeypatch.setattr(scaling_suite, "SCALING_COUNTS", (2,))
    res = run_bench(suites=["scaling"], repeats=1, show=False, losses="ici reference=False,ici b=0 c=0")
    got = {r["case"] for r in rows(res, "scaling", "40^3 B=2 (noisy)")}
    assert got == {"dice", "ici reference=False", "ici b=0 c=0", "dice + 2 cc3d labellings"}


@needs_losses
def test_cc_dice_group_rows_and_targets(monkeypatch):
    monkeypatch.setattr(cc_dice_suite, "CC_DICE_TARGET_SIZES", ((16, 16, 16),))
    res = run_bench(suites=["losses"], sizes=["16", "20x20"], repeats=1, show=False, losses="cc_dice")
    assert res["errors"] == []
    cases = {"voronoi labelling", "scipy EDT", "dice", "blob", "cc_dice", "cc_dice own work", "cc_dicece"}
    cases |= {"cc_dicece own work"}
    for size, checked in (("16^3", True), ("20x20", False)):
        group = f"{size} B=1 (CC-Dice)"
        got = {r["case"]: r for r in rows(res, "losses", group)}
        assert set(got) == cases
        label = cc_dice_suite.cc_dice_label(parse_size(size.replace("^3", "")))[0]
        n = ndimage.label(label, structure=np.ones((3,) * label.ndim))[1]
        assert n >= 2 and all(r["components"] == n for r in got.values())  # the regions need a distance transform
        med = {k: r["median_s"] for k, r in got.items()}
        ratios = {q["name"]: q for q in res["ratios"] if q["group"] == group}
        assert ratios["voronoi labelling / scipy EDT"]["value"] == pytest.approx(
            med["voronoi labelling"] / med["scipy EDT"]
        )
        for k in ("cc_dice", "cc_dicece"):
            own, whole = ratios[f"{k} own work / blob"], ratios[f"{k} / (voronoi + dice)"]
            assert own["value"] == pytest.approx(med[f"{k} own work"] / med["blob"])
            assert whole["value"] == pytest.approx(med[k] / (med["voronoi labelling"] + med["dice"]))
            assert (own["target"], whole["target"]) == ((2.0, 1.5) if checked else (None, None))
            for q in (own, whole):
                assert q["status"] == (("PASS" if q["value"] <= q["target"] else "FAIL") if checked else None)


@needs_losses
def test_cc_dice_own_work_skips_the_labelling_and_gives_the_same_loss(monkeypatch):
    import lossbench.losses.cc_dice as cc_module
    from lossbench.bench.suites.steps import forward_backward, loss_inputs
    from lossbench.losses import build_loss

    label = cc_dice_suite.cc_dice_label((24, 24, 24))
    x, y = loss_inputs(label, np.roll(label, 1, axis=-1), CPU)
    loss = build_loss("cc_dice", sigmoid=True)
    real = cc_module.batch_regions
    regions = real(label, 3, None)
    calls = []
    monkeypatch.setattr(cc_module, "batch_regions", lambda *args: calls.append(1) or real(*args))
    step = forward_backward(loss, x, y)
    cc_dice_suite._own_work(cc_module, step, regions)()
    assert calls == [] and cc_module.batch_regions is not real  # looked up, and the labelling put back after
    grad = x.grad.clone()
    step()
    assert calls == [1] and torch.equal(x.grad, grad)
    run = Recorder(CPU, 1, "tracemalloc", None)
    cc_dice_suite._check_lookup(run, cc_module, loss, x, y, regions, "cc_dice")
    assert run.errors == []
    other = real(np.roll(label, 5, axis=1), 3, None)  # regions of another label
    cc_dice_suite._check_lookup(run, cc_module, loss, x, y, other, "cc_dice")
    assert [e["case"] for e in run.errors] == ["cc_dice own work"]


# ------------------------------------------------------------------------- labelling references


def test_same_partition_hand_cases():
    a = np.array([[[1, 1, 0, 2, 2]]])
    assert cc_refs.same_partition(a, 7 * a)  # other ids
    assert cc_refs.same_partition(a, np.array([[[9, 9, 0, 3, 3]]]))  # other order
    assert not cc_refs.same_partition(a, np.array([[[1, 1, 0, 1, 1]]]))  # merged
    assert not cc_refs.same_partition(np.array([[[1, 1, 0, 1, 1]]]), a)  # split
    assert not cc_refs.same_partition(a, np.array([[[1, 1, 1, 2, 2]]]))  # other foreground
    two = np.array([[[1, 0, 2]], [[1, 0, 2]]])
    assert cc_refs.same_partition(two, np.array([[[5, 0, 6]], [[6, 0, 5]]]))  # ids are per image
    assert not cc_refs.same_partition(two, np.array([[[5, 0, 5]], [[6, 0, 7]]]))
    assert cc_refs.same_partition(np.zeros((2, 3, 3)), np.zeros((2, 3, 3)))


def test_smallest_exact_iterations_search():
    calls = []

    def from_37(n):
        calls.append(n)
        return n >= 37

    assert cc_refs.smallest_exact_iterations(from_37, 4096) == 37
    assert len(calls) <= 2 * 7  # doubling to 64, then bisection in (32, 64]
    assert cc_refs.smallest_exact_iterations(lambda n: n >= 37, 20) is None
    assert cc_refs.smallest_exact_iterations(lambda n: True, 10) == 1
    assert cc_refs.smallest_exact_iterations(lambda n: n >= 4096, 4096) == 4096


def test_kornia_needs_a_step_per_pixel_of_a_line(monkeypatch):
    pytest.importorskip("kornia")
    # a 1 x 30 line: its largest pixel id (the right end) reaches the left end after 29 max-pooling steps
    monkeypatch.setattr(cc_refs, "KORNIA_DEFAULT_ITERATIONS", 10)
    mask = np.zeros((1, 5, 40), bool)
    mask[0, 2, 5:35] = True
    cases, meta = cc_refs.kornia_cases(mask, mask.astype(np.int64), CPU)
    assert {k: (m.get("iterations"), m["exact"]) for k, m in meta.items() if "iterations)" in k} == {
        "kornia (10 iterations)": (10, False),
        "kornia (29 iterations)": (29, True),
    }
    assert meta["kornia (10 iterations)"]["smallest_exact_iterations"] == 29
    assert "exact partition: no" in meta["kornia (10 iterations)"]["note"]
    split = cases["kornia (10 iterations)"][0]().numpy()
    assert len(np.unique(split[split > 0])) == 20  # pixels 19..29 hold the right end's id, 0..18 one id each
    assert len(np.unique(cases["kornia (29 iterations)"][0]().numpy())) == 2
    if "kornia union-find" in meta:
        assert meta["kornia union-find"]["exact"] is True


def test_cc_suite_catches_a_wrong_skimage_partition(monkeypatch):
    from skimage import measure

    def every_voxel_its_own(mask, connectivity, background):
        return np.where(mask, np.arange(mask.size).reshape(mask.shape) + 1, 0)

    monkeypatch.setattr(measure, "label", every_voxel_its_own)
    with pytest.raises(LossbenchError, match=r"12\^3 B=1 / skimage: labels are not the partition") as info:
        run_bench(suites=["cc"], sizes=["12"], repeats=1, show=False)
    assert [r["exact"] for r in info.value.results["results"] if r["case"] == "skimage"] == [False, False]


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
def test_full_suites_at_small_sizes(tmp_path, monkeypatch):
    monkeypatch.setattr(noisy_suite, "NOISY_SHAPE", (48, 48, 48))
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
