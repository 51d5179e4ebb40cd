"""Tests of ``lossbench report``: a synthetic run folder written through the store's own writer API.

The run has five losses x two seeds on one dataset: three healthy losses, one with a diverged seed,
one whose seeds diverged / failed (so it has no finished cell). Expected table values are computed
here from the rows the test itself wrote (independent oracle: plain loops, scipy for the Wilcoxon).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from lossbench.errors import ConfigError, StudyError
from lossbench.report.browser import check_page, find_chromium
from lossbench.report.render import write_report
from lossbench.study.config import load_study
from lossbench.study.grid import expand_grid
from lossbench.study.store import RunStore, atomic_write_csv, atomic_write_json, atomic_write_text

LABELS = ["Dice", "blob (2,1)", "ICI <1/4,1/2,1/4>", "Unstable | IW", "Focal"]
QUALITY = {"Dice": 0.40, "blob (2,1)": 0.37, "ICI <1/4,1/2,1/4>": 0.46, "Unstable | IW": 0.33, "Focal": 0.30}
SEEDS = [0, 1]
N_VAL, N_TEST, EPOCHS = 5, 8, 6
BINS = ["1_10", "10_100", "100_inf"]

STUDY = {
    "schema_version": 1,
    "name": "fake",
    "seeds": SEEDS,
    "dataset": {
        "name": "synthetic_lesions",
        "spatial_dims": 2,
        "size": 32,
        "n_train": 4,
        "n_val": N_VAL,
        "n_test": N_TEST,
    },
    "model": {"name": "unet", "channels": [8, 16], "strides": [2], "num_res_units": 1},
    "training": {"epochs": EPOCHS, "batch_size": 2, "lr": 0.001, "val_every": 2},
    "losses": [
        {"label": "Dice", "name": "dice"},
        {"label": "blob (2,1)", "name": "blob", "alpha": 2, "beta": 1},
        {"label": "ICI <1/4,1/2,1/4>", "name": "ici", "a": 0.25, "b": 0.5, "c": 0.25},
        {"label": "Unstable | IW", "name": "inverse_weighting"},
        {"label": "Focal", "name": "focal"},
    ],
    "evaluation": {"connectivity": 1, "size_bins": [10, 100]},
    "report": {"baseline": "Dice"},
}


def _status(label: str, seed: int) -> str:
    if label == "Unstable | IW" and seed == 1:
        return "diverged"
    if label == "Focal":
        return "diverged" if seed == 0 else "failed"
    return "ok"


def _detection(rng: np.random.Generator, q: float) -> dict:
    row = {}
    tot = {"n_target": 0, "detected": 0, "n_pred": 0, "false": 0}
    for b, p_det in zip(BINS, (q * 0.6, q * 1.4, min(0.98, q * 2.1))):
        nt = int(rng.integers(0, 6))
        det = int(rng.binomial(nt, min(p_det, 1.0)))
        fp = int(rng.integers(0, 3))
        row.update(
            {
                f"n_target_{b}": nt,
                f"detected_{b}": det,
                f"missed_{b}": nt - det,
                f"recall_{b}": det / nt if nt else float("nan"),
                f"n_pred_{b}": det + fp,
                f"false_{b}": fp,
            }
        )
        tot["n_target"] += nt
        tot["detected"] += det
        tot["n_pred"] += det + fp
        tot["false"] += fp
    row.update(tot)
    row["missed"] = tot["n_target"] - tot["detected"]
    row["recall"] = tot["detected"] / tot["n_target"] if tot["n_target"] else float("nan")
    return row


def _instance_quality(rng: np.random.Generator, q: float, empty: bool) -> dict:
    """Panoptic and CC metrics of one subject; ``empty``: target and prediction both empty (PQ, SQ, RQ undefined)."""
    if empty:
        nan = float("nan")
        return {"pq": nan, "sq": nan, "rq": nan, "pq_dsc": nan, "sq_dsc": nan, "cc_dice": 1.0, "cc_missed": 0}
    sq = float(np.clip(q + 0.4 + rng.normal(0, 0.05), 0, 1))
    rq = float(np.clip(q + 0.2 + rng.normal(0, 0.1), 0, 1))
    sq_dsc = float(np.clip(sq + 0.05, 0, 1))
    return {
        "pq": sq * rq,
        "sq": sq,
        "rq": rq,
        "pq_dsc": sq_dsc * rq,
        "sq_dsc": sq_dsc,
        "cc_dice": float(np.clip(q + 0.3 + rng.normal(0, 0.1), 0, 1)),
        "cc_missed": int(rng.integers(0, 3)),
    }


def _test_summary(rows: list[dict]) -> dict:
    """The runner's test summary of a cell: the mean over subjects of every numeric column, NaN values left out."""
    frame = pd.DataFrame(rows).drop(columns=["subject"])
    return {k: float(v.dropna().mean()) if v.notna().any() else float("nan") for k, v in frame.items()}


def _test_rows(rng: np.random.Generator, irng: np.random.Generator, lab: str, q: float, subj_effect) -> list[dict]:
    """The per-subject test rows of one cell.

    The instance-quality columns come from their own generator ``irng`` (the other columns stay as they were before
    those metrics existed); subject 0 of the losses of quality >= 0.4 is an empty case (no target, no prediction).
    """
    rows = []
    for s in range(N_TEST):
        det = _detection(rng, q)
        dice = float(np.clip(q + subj_effect[s] + rng.normal(0, 0.03), 0, 1))
        rows.append(
            {
                "subject": f"test_{s:03d}",
                "dice": dice,
                "volume_difference": int(rng.integers(10, 4000)),
                "lesionwise_f1": float(np.clip(q + rng.normal(0, 0.1), 0, 1)),
                "simple_lesion_count": int(rng.integers(0, 6)),
                **det,
                **_instance_quality(irng, q, empty=s == 0 and QUALITY.get(lab, 0.4) >= 0.4),
            }
        )
    return rows


def build_fake_run(root: Path, study: dict = STUDY, status_of=lambda cell: _status(cell.label, cell.seed)) -> dict:
    """Write a run folder with RunStore and the store's atomic writers; return what was written."""
    store = RunStore(root)
    store.prepare(study["name"], yaml.safe_dump(study, sort_keys=False), fresh=False, device="cpu")
    cells = expand_grid(load_study(root / "study.yaml"))
    rng = np.random.default_rng(1234)
    written = {"val": [], "test": [], "done": {}}
    subj_effect = rng.normal(0, 0.08, size=N_TEST)
    for cell in cells:
        lab, seed = cell.label, cell.seed
        q = QUALITY.get(lab, 0.4) + 0.01 * seed
        status = status_of(cell)
        d = store.reset_cell(cell.id)
        atomic_write_json(d / "config.json", {"cell_id": cell.id, "config": cell.config}, device="cpu", seed=seed)
        if status == "failed":
            atomic_write_text(d / "error.txt", "Traceback (most recent call last):\nRuntimeError: out of memory\n")
            continue
        last = EPOCHS if status == "ok" else 3
        history, val_rows = [], []
        best = (None, -1.0, None)
        for epoch in range(1, last + 1):
            row = {"epoch": epoch, "steps": 2, "train_total": 1.0 / (epoch + 1) + (1 - q), "epoch_s": 0.5}
            if epoch % 2 == 0:
                rows = []
                for s in range(N_VAL):
                    det = _detection(rng, q + 0.02 * epoch)
                    rows.append(
                        {
                            "epoch": epoch,
                            "subject": f"val_{s:03d}",
                            "dice": float(np.clip(q + 0.03 * epoch / 2 + rng.normal(0, 0.05), 0, 1)),
                            **det,
                        }
                    )
                val_rows.extend(rows)
                dsc = float(np.mean([r["dice"] for r in rows]))
                mi = sum(r["missed"] for r in rows)
                fi = sum(r["false"] for r in rows)
                row.update(val_dsc=dsc, val_total_mi=mi, val_total_fi=fi)
                if dsc > best[1]:
                    best = (epoch, dsc, {"dsc": dsc, "total_mi": mi, "total_fi": fi})
            history.append(row)
        atomic_write_csv(d / "history.csv", history)
        atomic_write_csv(d / "val_subjects.csv", val_rows)
        written["val"].extend({"label": lab, "seed": seed, **r} for r in val_rows)
        test_summary = {}
        if status == "ok":
            test_rows = _test_rows(rng, np.random.default_rng([seed, sum(map(ord, lab))]), lab, q, subj_effect)
            atomic_write_csv(d / "test_subjects.csv", test_rows)
            written["test"].extend({"label": lab, "seed": seed, **r} for r in test_rows)
            test_summary = _test_summary(test_rows)
        timing = {
            "steps": 2 * last,
            "mean_step_s": 0.05 + 0.1 * (lab != "Dice"),
            "loss_share": 0.2 + 0.5 * q,
            "wall_s": 12.0 + seed,
            "steps_total": 2 * last,
        }
        atomic_write_json(d / "timing.json", {"cell_id": cell.id, **timing}, device="cpu", seed=seed)
        done = {
            "cell_id": cell.id,
            "label": lab,
            "loss": cell.config["loss"]["name"],
            "dataset_label": cell.dataset_label,
            "status": status,
            "reason": "" if status == "ok" else "non-finite loss (nan) at epoch 3, step 1; non-finite terms: ['total']",
            "epochs_run": last if status == "ok" else last - 1,
            "best_epoch": best[0],
            "val": best[2],
            "test": test_summary,
            "timing": {k: timing[k] for k in ("wall_s", "mean_step_s", "loss_share", "steps")},
        }
        atomic_write_json(d / "done.json", done, device="cpu", seed=seed)
        written["done"][(lab, seed)] = done
    store.write_results(c.id for c in cells)
    written["cells"] = cells
    return written


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    written = build_fake_run(root)
    paths = write_report(root)
    return root, written, paths


def _section(md: str, heading: str) -> str:
    start = md.index(heading)
    nxt = md.find("\n#", start + 1)
    return md[start : nxt if nxt > 0 else len(md)]


def _row(section: str, label: str) -> str:
    esc = label.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    lines = [ln for ln in section.splitlines() if ln.startswith(f"| {esc}")]
    assert len(lines) == 1, (label, lines)
    return lines[0]


def _ok_labels():
    return [lab for lab in LABELS if any(_status(lab, s) == "ok" for s in SEEDS)]


def test_files_written_and_relative_images(report):
    root, _, paths = report
    assert [p.name for p in paths] == ["report.md", "report.html"]
    html = (root / "report.html").read_text()
    md = (root / "report.md").read_text()
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert len(srcs) == 5  # curves, size bins, rank heatmap, timing, bootstrap blobs
    for src in srcs:
        assert src.startswith("report_files/") and (root / src).stat().st_size > 5000
    assert sorted(re.findall(r"\]\((report_files/[^)]+)\)", md)) == sorted(srcs)
    assert "{{" not in md and "{%" not in html


def test_test_table_values_ranks_and_markers(report):
    root, written, _ = report
    md = (root / "report.md").read_text()
    sec = _section(md, "### Test set")
    test = pd.DataFrame(written["test"])
    means = {}
    for lab in _ok_labels():
        per_seed = [test[(test.label == lab) & (test.seed == s)]["dice"] for s in SEEDS if _status(lab, s) == "ok"]
        m = sum(float(x.mean()) for x in per_seed) / len(per_seed)
        sd = sum(float(x.std(ddof=1)) for x in per_seed) / len(per_seed)
        means[lab] = round(m, 4)
        assert f"{m:.4f} ({sd:.4f})" in _row(sec, lab)
    order = sorted(means, key=lambda k: -means[k])
    assert f"**{means[order[0]]:.4f}" in _row(sec, order[0])
    assert f"<u>{means[order[1]]:.4f}" in _row(sec, order[1])
    ranks = {lab: 1 + len({v for v in means.values() if v > means[lab]}) for lab in means}
    for lab, r in ranks.items():
        assert re.search(rf"{means[lab]:.4f} \([0-9.]+\)\**(</u>)? \[{r}\]", _row(sec, lab)), (lab, r)
    # the loss without a finished cell is shown, marked, and ranked last
    focal = _row(sec, "Focal")
    assert "n/a [" in focal and "no finished seed" in focal
    # a seed spread is printed for losses with two finished seeds, not for one
    assert "±" in _row(sec, "Dice") and "±" not in _row(sec, "Unstable | IW")
    assert "seed 1 diverged" in _row(sec, "Unstable | IW")


def test_validation_table_uses_best_epoch_subjects(report):
    root, written, _ = report
    md = (root / "report.md").read_text()
    sec = _section(md, "### Validation set")
    val = pd.DataFrame(written["val"])
    for lab in _ok_labels():
        mi, fi, wo = [], [], []
        for s in SEEDS:
            if _status(lab, s) != "ok":
                continue
            be = written["done"][(lab, s)]["best_epoch"]
            rows = val[(val.label == lab) & (val.seed == s) & (val.epoch == be)]
            mi.append(sum(int(x) for x in rows["missed"]))
            fi.append(sum(int(x) for x in rows["false"]))
            wo.append(sum(1 for a, b in zip(rows["missed"], rows["false"]) if a == 0 and b == 0))
        cells = [c.strip() for c in _row(sec, lab).split(" | ")]
        # columns: label, mean rank, DSC, total MI, w/ MI, all MI, total FI, w/ FI, wo MI&FI, best epoch
        for col, vals in ((3, mi), (6, fi), (8, wo)):
            mean = sum(vals) / len(vals)
            text = str(int(mean)) if mean == int(mean) else f"{mean:.1f}"
            assert re.sub(r"\*\*|</?u>", "", cells[col]).startswith(text + " ["), (lab, col, cells[col], text)


def test_mean_rank_and_escaping(report):
    root, _, _ = report
    html = (root / "report.html").read_text()
    md = (root / "report.md").read_text()
    assert "ICI &lt;1/4,1/2,1/4&gt;" in html and "ICI <1/4" not in html
    assert "Unstable \\| IW" in md
    sec = _section(md, "### Test set")
    row = _row(sec, "Dice")
    brackets = [int(x) for x in re.findall(r"\[(\d+)\]", row)]
    assert len(brackets) == 4
    mean_rank = float(re.sub(r"\*\*|</?u>", "", row.split(" | ")[1]))
    assert mean_rank == pytest.approx(sum(brackets) / 4, abs=0.005)


def test_header_and_sections(report):
    root, _, _ = report
    md = (root / "report.md").read_text()
    for needle in (
        "synthetic_lesions",
        "unet",
        "mode whole",
        "Seeds | 0, 1",
        "1 orthogonal hop",
        "Dice: none (pixel-wise)",
        "blob (2,1): full",
        "Matching rule",
        "1.0 when prediction and target",
        "divisor",
        "torch ",
        "Device | cpu",
        "Total time",
        "Baseline | Dice",
        "Wilcoxon",
        "Friedman",
        "Bootstrap rank stability",
        "Kendall",
        "Test-then-rank",
        "Gradient audit",
        "out of memory",
        "10 expected: 7 ok, 2 diverged, 1 failed",
    ):
        assert needle in md, needle


def test_wilcoxon_matches_scipy_with_holm(report):
    from scipy.stats import wilcoxon

    root, written, _ = report
    md = (root / "report.md").read_text()
    sec = _section(md, "#### Wilcoxon")
    test = pd.DataFrame(written["test"])
    paired = test.groupby(["label", "subject"])["dice"].mean().unstack(0)
    others = [lab for lab in _ok_labels() if lab != "Dice"]
    raw = {lab: wilcoxon(paired[lab] - paired["Dice"]).pvalue for lab in others}
    order = sorted(others, key=lambda k: raw[k])
    holm, running = {}, 0.0
    for i, lab in enumerate(order):
        running = max(running, min(1.0, (len(order) - i) * raw[lab]))
        holm[lab] = running
    for lab in others:
        med = float(np.median(paired[lab] - paired["Dice"]))
        assert f"{med:+.4g} (p={holm[lab]:.3g}, n={N_TEST})" in _row(sec, lab)
    assert "| Focal" not in sec  # no finished cell: not in the paired tests


def test_only_markdown_with_divisor(tmp_path):
    build_fake_run(tmp_path, {**STUDY, "report": {"baseline": "Dice", "ranking": {"divisor": 3}}})
    assert write_report(tmp_path, formats=["md"]) == [tmp_path / "report.md"]
    assert not (tmp_path / "report.html").exists()
    md = (tmp_path / "report.md").read_text()
    assert "divisor 3 (set in the study)" in md
    row = _row(_section(md, "### Test set"), "Dice")
    brackets = [int(x) for x in re.findall(r"\[(\d+)\]", row)]
    assert float(re.sub(r"\*\*|</?u>", "", row.split(" | ")[1])) == pytest.approx(sum(brackets) / 3, abs=0.005)
    with pytest.raises(ConfigError, match="formats"):
        write_report(tmp_path, formats=["pdf"])


def _prepared(root: Path) -> RunStore:
    store = RunStore(root)
    store.prepare("fake", yaml.safe_dump(STUDY, sort_keys=False), fresh=False, device="cpu")
    return store


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: p / "missing", "no such folder"),
        (lambda p: (p / "file.txt").write_text("x") and p / "file.txt", "it is a file"),
        (lambda p: p, "has no run.json"),
        (lambda p: (_prepared(p), p)[1], "without results.csv"),
        (lambda p: (_prepared(p).write_results([]), p)[1], "at least one finished cell"),
    ],
    ids=["missing", "file", "plain-folder", "no-results", "empty-results"],
)
def test_bad_run_dir(tmp_path, setup, message):
    path = setup(tmp_path)
    with pytest.raises(StudyError, match=re.escape(message)):
        write_report(path)


def test_all_cells_diverged(tmp_path):
    store = _prepared(tmp_path)
    cell = expand_grid(load_study(tmp_path / "study.yaml"))[0]
    d = store.reset_cell(cell.id)
    atomic_write_csv(d / "history.csv", [{"epoch": 1, "train_total": float("nan")}])
    atomic_write_json(
        d / "done.json",
        {
            "cell_id": cell.id,
            "label": cell.label,
            "status": "diverged",
            "reason": "non-finite loss",
            "dataset_label": cell.dataset_label,
            "seed": 0,
            "val": {},
            "test": {},
        },
        device="cpu",
        seed=0,
    )
    store.write_results([cell.id])
    with pytest.raises(StudyError, match="all diverged"):
        write_report(tmp_path)


def test_cli_one_line_exit_2(tmp_path, capsys):
    from lossbench.cli import main

    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lossbench report: error: `run_dir` must be")


@pytest.mark.browser
@pytest.mark.skipif(find_chromium() is None, reason="chromium not installed")
def test_report_in_headless_chromium(report):
    root, _, _ = report
    html = root / "report.html"
    shot = root / "report.png"
    res = check_page(html, screenshot=shot)
    assert res["errors"] == []
    n_tables = html.read_text().count("<table")
    assert res["tables"] == n_tables >= 9  # setup, val, test, wilcoxon, friedman, bootstrap, ttr, cells, metrics
    assert len(res["images"]) == 5
    for img in res["images"]:
        assert img["w"] > 0 and img["h"] > 0, img
    assert shot.stat().st_size > 10_000
    assert math.isfinite(shot.stat().st_size)


def test_two_datasets_one_loss(tmp_path):
    study = {k: v for k, v in STUDY.items() if k != "dataset"}
    study.update(
        name="two",
        seeds=[3],
        datasets=[
            {"label": "small", **STUDY["dataset"]},
            {"label": "large", **STUDY["dataset"], "size": 48},
            {"label": "tiny", **STUDY["dataset"], "size": 16},
        ],
        losses=[{"label": "Dice", "name": "dice"}],
    )
    build_fake_run(tmp_path, study, status_of=lambda c: "failed" if c.dataset_label == "tiny" else "ok")
    md_path, html_path = write_report(tmp_path)
    md = md_path.read_text()
    assert "## Results: small" in md and "## Results: large" in md and "## Results: tiny" in md
    assert md.count("Fewer than two losses have finished cells") == 2
    assert "No cell of this dataset finished training." in md
    figs = sorted(p.name for p in (tmp_path / "report_files").glob("*.png"))
    assert figs == sorted(
        f"{k}_{d}.png" for k in ("curves", "size_bins", "rank_heatmap", "timing") for d in ("small", "large")
    )
    ids = re.findall(r'<table id="([^"]+)"', html_path.read_text())
    assert len(ids) == len(set(ids)) and {"validation_small", "test_large"} <= set(ids)


def test_loss_colors_stable_and_distinct():
    from lossbench.errors import DataError
    from lossbench.report.plots import loss_colors

    a = loss_colors(LABELS)
    assert a == loss_colors(LABELS) and list(a) == LABELS
    assert len(set(a.values())) == len(LABELS) and all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in a.values())
    many = loss_colors([f"l{i}" for i in range(14)])
    assert len(set(many.values())) == 14
    with pytest.raises(DataError, match="unique"):
        loss_colors(["a", "a"])


def test_size_bin_table_pools_over_subjects():
    from lossbench.report.plots import size_bin_table

    # two subjects of one cell: bin 1_10 has 3 + 1 targets, 1 + 1 detected -> recall 2/4, missed 2;
    # bin 10_inf has no target instance -> recall NaN (undefined), missed 0
    rows = pd.DataFrame(
        {
            "label": ["A", "A"],
            "seed": [0, 0],
            "n_target_1_10": [3, 1],
            "detected_1_10": [1, 1],
            "missed_1_10": [2, 0],
            "n_target_10_inf": [0, 0],
            "detected_10_inf": [0, 0],
            "missed_10_inf": [0, 0],
        }
    )
    t = size_bin_table(rows, ["1_10", "10_inf"]).set_index("bin")
    assert t.at["1_10", "recall"] == 0.5 and t.at["1_10", "missed"] == 2 and t.at["1_10", "n_target"] == 4
    assert math.isnan(t.at["10_inf", "recall"]) and t.at["10_inf", "missed"] == 0


def test_audit_section_uses_study_configs_and_degrades_visibly(report, monkeypatch):
    import lossbench.audit as audit
    from lossbench.report import render
    from lossbench.report.sections.audit import audit_tables

    root, _, _ = report
    data = render.load_run(root)
    tables, note = audit_tables(data)
    assert note.startswith("Computed on the study's loss configurations")
    labels = {row.label for t in tables for row in t.rows}
    assert labels == set(LABELS)  # the study's labels, i.e. its own parameters, not registry defaults

    real = audit.run_audit

    def names_only(losses=None, out=None, show=True):
        if any(not isinstance(x, str) for x in losses):
            raise TypeError("names only")
        return real(losses=losses, out=out, show=show)

    monkeypatch.setattr(audit, "run_audit", names_only)
    tables, note = audit_tables(data)
    assert "default parameters" in note and tables
    assert "ici[published]" in {row.label for t in tables for row in t.rows}

    def broken(losses=None, out=None, show=True):
        raise RuntimeError("boom")

    monkeypatch.setattr(audit, "run_audit", broken)
    tables, note = audit_tables(data)
    assert tables == [] and "Gradient audit failed" in note and "boom" in note


def test_interrupted_run_without_results_table(tmp_path):
    written = build_fake_run(tmp_path)
    (tmp_path / "results.csv").unlink()
    (tmp_path / "results.parquet").unlink(missing_ok=True)
    (md,) = write_report(tmp_path, formats=["md"])
    text = md.read_text()
    assert "results.csv was missing (interrupted run) and was rebuilt" in text
    n_done = len(written["done"])
    assert len(pd.read_csv(tmp_path / "results.csv")) == n_done == 9


def test_several_datasets_get_the_differences_per_dataset_figure(tmp_path):
    """A study over several datasets (an imbalance sweep): the Verdicts section draws every loss's difference to the
    baseline per dataset with its interval, from the same verdicts as the table."""
    from lossbench.report.plots import loss_colors, plot_verdict_levels
    from lossbench.report.verdicts import run_verdicts

    study = {k: v for k, v in STUDY.items() if k != "dataset"}
    study.update(
        name="levels",
        datasets=[{"label": "L1", **STUDY["dataset"]}, {"label": "L2", **STUDY["dataset"], "max_volume": 100}],
        losses=STUDY["losses"][:3],
    )
    build_fake_run(tmp_path, study, status_of=lambda c: "ok")
    md_path, html_path = write_report(tmp_path)
    md = md_path.read_text()
    fig = tmp_path / "report_files" / "verdicts_by_dataset.png"
    assert fig.stat().st_size > 10_000
    head = md.split("## Setup")[0]  # the figure sits in the Verdicts section, before the setup
    assert "verdicts_by_dataset.png" in head and "Differences from the baseline per dataset" in head
    assert "verdicts_by_dataset.png" in html_path.read_text()
    # one error bar per (metric, loss, dataset): the plot reads the verdict table it is given
    verdicts = run_verdicts(pd.read_csv(tmp_path / "results.csv"), "Dice", metrics=["test_dice"])
    assert set(verdicts["dataset"]) == {"L1", "L2"} and len(verdicts) == 4
    out = plot_verdict_levels(verdicts, ["test_dice"], {"test_dice": "test DSC"}, loss_colors(["Dice", "blob (2,1)",
                              "ICI <1/4,1/2,1/4>"]), tmp_path / "one.png")  # fmt: skip
    assert out.stat().st_size > 5_000
    single = tmp_path / "single"
    build_fake_run(single, STUDY)
    write_report(single)
    assert not (single / "report_files" / "verdicts_by_dataset.png").exists()
