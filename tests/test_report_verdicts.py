"""The report's Verdicts section, instance-quality table, definitions and provenance; ``report --out``; run warnings.

Most tests use the synthetic run folders of ``test_report`` (written through the store's own writers); the numbers
are checked against :mod:`lossbench.report.verdicts` and, for one comparison, against a Student t interval worked
out here from the per-subject rows the test wrote. The last test trains a tiny real study (3 seeds): a near-copy of
the baseline gets ``no evidence`` everywhere and a loss without gradient is ``worse``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from test_report import STUDY, _row, _section, build_fake_run

from lossbench.provenance import check_provenance, source_fingerprint
from lossbench.report.render import write_report
from lossbench.report.templating import md_escape
from lossbench.report.verdicts import COLUMNS, number, run_verdicts, study_warnings, verdict_findings
from lossbench.study.store import load_results

SEEDS4 = [0, 1, 2, 3]
CONTRACT = ["loss", "metric", "baseline", "difference", "ci_low", "ci_high", "verdict", "n_seeds"]


@pytest.fixture(scope="module")
def four_seeds(tmp_path_factory):
    """The five-loss fake run with four seeds: ICI and blob healthy, one diverged seed, one loss that never finished."""
    root = tmp_path_factory.mktemp("run4")
    written = build_fake_run(root, {**STUDY, "seeds": SEEDS4})
    write_report(root)
    return root, written


def _md(root: Path) -> str:
    return (root / "report.md").read_text()


def _part(md: str, heading: str) -> str:
    """The text of a markdown section up to the next heading of the same or a higher level."""
    start = md.index(heading)
    level = heading.split(" ")[0]
    nxt = re.search(rf"^#{{1,{len(level)}}} ", md[start + len(heading) :], flags=re.M)
    return md[start : start + len(heading) + nxt.start()] if nxt else md[start:]


def test_verdicts_come_first_on_both_pages(four_seeds):
    root, _ = four_seeds
    md = _md(root)
    headings = re.findall(r"^## (.+)$", md, flags=re.M)
    assert headings[:2] == ["Verdicts", "Setup"]
    html = (root / "report.html").read_text()
    assert html.index('id="sec-verdicts"') < html.index('id="sec-setup"') < html.index('id="sec-results-1"')
    for page in (md, html):
        assert "Best mean rank" not in page


def test_verdict_table_and_sentences_match_verdicts_py(four_seeds):
    root, _ = four_seeds
    md = _md(root)
    sec = _part(md, "## Verdicts")
    expected = run_verdicts(load_results(root), "Dice")
    names = {"test_dice": "test DSC (↑)", "test_volume_difference": "test volume difference (↓)", "val_dsc": None}
    assert set(expected["metric"]) == {
        "test_dice",
        "test_volume_difference",
        "test_lesionwise_f1",
        "test_simple_lesion_count",
        "test_pq",
        "test_sq",
        "test_rq",
        "test_cc_dice",
        "val_dsc",
    }
    lines = [ln for ln in sec.splitlines() if ln.startswith("| test ") or ln.startswith("| validation ")]
    assert len(lines) == len(expected) == 9 * 4
    for line, r in zip(lines, expected.itertuples(index=False)):
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        if names.get(r.metric):
            assert cells[0].split(" *(")[0] == names[r.metric]
        assert ("*(" in cells[0]) == bool(r.note)  # the reason why there is no interval
        assert cells[1] == str(md_escape(r.loss))
        assert cells[2] == number(r.difference)
        interval = "n/a" if pd.isna(r.ci_low) else f"{number(r.ci_low)} to {number(r.ci_high)}"
        assert cells[3] == interval and cells[4] == r.verdict and cells[5] == str(r.n_seeds)
    for sentence in verdict_findings(expected):
        assert f"- {md_escape(sentence)}" in sec
    assert "Baseline: Dice. Seeds: 4 (0, 1, 2, 3)" in sec
    assert "Bonferroni-adjusted over the 3 loss(es)" in sec  # blob, ICI and the loss with 3 finished seeds
    # the loss that never finished gets no interval, and says why
    focal = [ln for ln in lines if "| Focal |" in ln]
    assert len(focal) == 9 and all("n/a" in ln and "no evidence" in ln for ln in focal)


def test_verdicts_csv_columns_values_and_an_independent_interval(four_seeds):
    root, written = four_seeds
    back = pd.read_csv(root / "verdicts.csv", keep_default_na=False, na_values=[""])
    assert list(back.columns) == list(COLUMNS) and list(back.columns)[:8] == CONTRACT
    assert set(back["verdict"]) <= {"better", "worse", "no evidence"}
    expected = run_verdicts(load_results(root), "Dice")
    np.testing.assert_allclose(back["difference"], expected["difference"], equal_nan=True)
    np.testing.assert_allclose(back["ci_low"], expected["ci_low"], equal_nan=True)
    assert list(back["n_seeds"]) == list(expected["n_seeds"])
    # ICI vs Dice in test DSC from the rows the test wrote: per-seed mean over subjects, paired by seed, Student t
    # at the Bonferroni level for the 3 losses with an interval.
    test = pd.DataFrame(written["test"])
    cell = test.groupby(["label", "seed"])["dice"].mean()
    d = np.array([cell["ICI <1/4,1/2,1/4>", s] - cell["Dice", s] for s in SEEDS4])
    half = sps.t.ppf(1 - 0.05 / (2 * 3), len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    row = back[(back["loss"] == "ICI <1/4,1/2,1/4>") & (back["metric"] == "test_dice")].iloc[0]
    assert row["difference"] == pytest.approx(d.mean(), abs=1e-12)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half), abs=1e-12)
    assert row["verdict"] == ("better" if d.mean() - half > 0 else "no evidence")
    assert row["baseline"] == "Dice" and row["n_seeds"] == 4


def test_warnings_in_the_report(four_seeds):
    from lossbench.report.render import load_run

    root, _ = four_seeds
    warnings = study_warnings(load_run(root).cells)
    assert warnings and warnings[0].startswith("5 cell(s) did not finish normally")
    assert "Focal seed 3 (failed)" in warnings[0] and "Unstable | IW seed 1 (diverged)" in warnings[0]
    sec = _part(_md(root), "## Verdicts")
    for w in warnings:
        assert f"> **Warning:** {md_escape(w)}" in sec


def test_instance_quality_table_and_its_empty_cases(four_seeds):
    root, written = four_seeds
    md = _md(root)
    sec = _section(md, "### Test set: instance quality")
    assert "| Loss | Mean rank (↓) | PQ (↑) | SQ (↑) | RQ (↑) | CC-Dice (↑) | PQ (DSC) (↑) | CC missed (↓) |" in sec
    test = pd.DataFrame(written["test"])
    for lab in ("Dice", "blob (2,1)"):
        per_seed = test[test.label == lab].groupby("seed")
        pq = per_seed["pq"].mean().mean()  # pandas skips the NaN subjects
        sd = per_seed["pq"].std(ddof=1).mean()
        assert f"{pq:.4f} ({sd:.4f})" in _row(sec, lab)
        cc = per_seed["cc_missed"].mean().mean()
        assert f"{cc:.4f} (" in _row(sec, lab)
    ok_rows = test[test.label.isin(["Dice", "blob (2,1)", "ICI <1/4,1/2,1/4>", "Unstable | IW"])]
    n_nan = int(ok_rows["pq"].isna().sum())
    assert n_nan == 4 + 4  # subject 0 of Dice and of ICI, at each seed
    assert f"left out of those means: {n_nan} of the {len(ok_rows)} (cell, subject) results here" in sec
    assert "(Dice 4/32, ICI &lt;1/4,1/2,1/4&gt; 4/32)" in sec


def test_definitions_cover_every_abbreviation(four_seeds):
    root, _ = four_seeds
    md = _md(root)
    abbrev = _section(md, "### Abbreviations")
    defined = {ln.split(" | ")[0].strip("| ") for ln in abbrev.splitlines()[4:] if ln.startswith("| ")}
    for a in ("DSC", "MI", "FI", "PQ", "SQ", "RQ", "PQ (DSC)", "CC-Dice", "CC missed", "SLC", "VD", "IoU", "CI"):
        assert a in defined, a
    words = {w for d in defined for w in re.split(r"[ ,/]+", d)}
    headers = [ln for ln in md.splitlines() if re.match(r"^\| (Loss|Metric) \|", ln)]
    used = {t for ln in headers for t in re.findall(r"\b[A-Z][A-Z0-9]+(?:-Dice)?\b", ln)}
    used |= set(re.findall(r"\btest ([A-Z][A-Z-a-z]+)", _part(md, "## Verdicts")))
    assert used and used <= words | defined, used - words - defined
    metrics = _part(md, "## Metrics, empty-case policies")
    for name in ("| PQ |", "| SQ |", "| RQ |", "| CC-Dice |", "| PQ (DSC) |", "| CC missed |"):
        assert name in metrics


def test_descriptive_and_conditional_labels_and_bootstrap_shares(four_seeds):
    root, _ = four_seeds
    md = _md(root)
    results = _part(md, "## Results")
    assert "These tables are descriptive: means over seeds and their ranks, not evidence" in results
    assert "### Subject-level tests (test set), conditional on the trained models" in md
    assert "they treat the test subjects, not the training runs, as the unit" in md
    boot = _section(md, "#### Bootstrap rank stability")
    rows = [ln for ln in boot.splitlines() if ln.startswith("| ") and not ln.startswith("| Loss") and "%" in ln]
    first = [float(ln.split(" | ")[5].rstrip("%")) for ln in rows]
    assert len(first) == 4 and sum(first) == pytest.approx(100, abs=0.21)
    assert "so the column sums to 100%" in boot and "Shared first" in boot


def test_provenance_of_a_report_in_the_run_folder(four_seeds):
    root, _ = four_seeds
    record = json.loads((root / "provenance.json").read_text())
    assert record["fingerprints"] == {"study": source_fingerprint("study"), "report": source_fingerprint("report")}
    assert record["command"] == f"lossbench run {root / 'study.yaml'} --out {root}"  # nothing recorded: rebuilt
    assert check_provenance(root) is None
    assert "reconstructed: the run folder does not record the original study file" in _md(root)


def test_run_then_report_out_records_the_commands(tmp_path, monkeypatch, capsys):
    """`lossbench run` records its command line in the report's provenance and prints the warnings.

    Its training is faked. `lossbench report RUN --out DIR` then writes everything into DIR, leaves the run folder
    alone and records both commands.
    """
    import lossbench.study.runner as runner
    from lossbench.cli import main
    from lossbench.report.render import load_run

    monkeypatch.chdir(tmp_path)
    run = Path("runs/fake")
    build_fake_run(run)  # two seeds, one diverged and one failed cell
    calls = []

    def fake_run_study(study, **kwargs):
        calls.append((study, kwargs))
        return Path(kwargs["out"])

    monkeypatch.setattr(runner, "run_study", fake_run_study)
    assert main(["run", "studies/fake.yaml", "--out", "runs/fake", "--workers", "2", "--fresh"]) == 0
    assert calls and calls[0][1]["workers"] == 2
    out, err = capsys.readouterr()
    assert "report: runs/fake/report.md" in out
    table = pd.read_csv(run / "verdicts.csv")
    printed = out[out.index("verdicts against ") :].splitlines()
    assert printed[0].startswith(f"verdicts against {table['baseline'].iloc[0]} over ")
    shown = table[(table["metric"] == "test_dice") | (table["verdict"] != "no evidence")]
    assert [ln.strip() for ln in printed[1:]] == verdict_findings(shown)
    assert any("DSC" in ln for ln in printed[1:])
    warnings = [ln for ln in err.splitlines() if ln.startswith("lossbench run: warning: ")]
    assert warnings == [f"lossbench run: warning: {w}" for w in study_warnings(load_run(run).cells)]
    assert warnings[0].startswith("lossbench run: warning: Only 2 seeds with finished cells")
    assert "Focal seed 1 (failed)" in warnings[1]
    assert "> **Warning:** Only 2 seeds with finished cells" in _part(_md(run), "## Verdicts")
    recorded = json.loads((run / "provenance.json").read_text())["command"]
    assert recorded == "lossbench run studies/fake.yaml --out runs/fake --workers 2"
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.is_file()}

    assert main(["report", "runs/fake", "--out", "reports/fake"]) == 0
    capsys.readouterr()
    dest = Path("reports/fake")
    names = {p.name for p in dest.iterdir()}
    assert names == {
        "report.md", "report.html", "report_files", "verdicts.csv", "provenance.json", "results.csv", "study.yaml"
    }  # fmt: skip
    assert (dest / "results.csv").read_text() == (run / "results.csv").read_text()  # the verdicts' input, alongside
    assert (dest / "study.yaml").read_text() == (run / "study.yaml").read_text()  # what the report reports
    assert len(list((dest / "report_files").glob("*.png"))) == 5
    record = json.loads((dest / "provenance.json").read_text())
    assert record["command"] == (
        "lossbench run studies/fake.yaml --out runs/fake --workers 2 && lossbench report runs/fake --out reports/fake"
    )
    assert set(record["fingerprints"]) == {"study", "report"} and check_provenance(dest) is None
    assert before == {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.is_file()}
    md = (dest / "report.md").read_text()
    assert "| Regenerate with | lossbench run studies/fake.yaml" in md and "reconstructed" not in md
    assert (dest / "verdicts.csv").read_text() == (run / "verdicts.csv").read_text()


def test_report_out_must_be_a_folder(four_seeds, tmp_path, capsys):
    from lossbench.cli import main

    root, _ = four_seeds
    (tmp_path / "file").write_text("x")
    assert main(["report", str(root), "--out", str(tmp_path / "file")]) == 2
    assert "`out` must be a folder for the report" in capsys.readouterr().err


REAL = """\
schema_version: 1
name: nearcopy
seeds: [0, 1, 2]
dataset: {name: synthetic_lesions, spatial_dims: 2, size: 32, n_train: 12, n_val: 4, n_test: 6, n_lesions: [1, 4]}
model: {name: unet, channels: [4, 8, 16], strides: [2, 2], num_res_units: 1}
training: {epochs: 15, batch_size: 3, lr: 1.0e-2, val_every: 1, augment: false}
losses:
  - {label: "Dice", name: dice}
  - {label: "Dice copy", name: dice, smooth_nr: 2.0e-5}
  - {label: "No gradient", name: ici, a: 0, b: 0, c: 1}
evaluation: {connectivity: 1, size_bins: [10, 100]}
report: {baseline: Dice}
"""


def test_real_runs_near_copy_no_evidence_and_no_gradient_worse(tmp_path):
    """3 seeds x 3 losses, 15 epochs on tiny 2D images (about 10 s on one core).

    "Dice copy" differs from the baseline in its smoothing constant only; "No gradient" is the published ICI with
    only its center term, whose gradient is zero: the network keeps its initial weights.
    """
    from rich.console import Console

    from lossbench.study.runner import run_study

    study = tmp_path / "nearcopy.yaml"
    study.write_text(REAL)
    quiet = Console(file=open(os.devnull, "w"), width=160)  # noqa: SIM115 - closed at interpreter exit
    run_dir = run_study(study, out=tmp_path / "run", device="cpu", console=quiet)
    v = run_verdicts(load_results(run_dir), "Dice").set_index(["loss", "metric"])
    assert len(v) == 2 * 9 and (v["n_seeds"] == 3).all()
    copy = v.loc["Dice copy"]
    assert (copy["verdict"] == "no evidence").all(), copy[copy["verdict"] != "no evidence"]
    frozen = v.loc["No gradient"]
    assert frozen.loc["test_dice", "verdict"] == "worse" and frozen.loc["val_dsc", "verdict"] == "worse"
    assert frozen.loc["test_dice", "ci_high"] < -0.1
    assert "better" not in set(frozen["verdict"])


@pytest.mark.parametrize(
    "x, digits, sign, text",
    [
        (0.11, 3, True, "+0.11"),
        (-6.0, 3, True, "-6"),
        (3.333, 3, True, "+3.33"),
        (2413.0, 3, True, "+2,410"),
        (2413.0, 2, False, "2,400"),
        (4.15e-05, 3, True, "+0.0000415"),
        (0.99996, 3, True, "+1"),
        (0.0, 3, True, "+0"),
        (float("nan"), 3, True, "n/a"),
    ],
)
def test_numbers_have_significant_digits_and_no_exponent(x, digits, sign, text):
    assert number(x, digits, sign=sign) == text
