"""Run-level verdicts: coverage and false-positive rate by simulation, hand-computed tables, sentences, warnings."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats.power import TTestPower

from lossbench.errors import ConfigError, DataError, RegistryError
from lossbench.report.sections.verdicts import run_warnings_of
from lossbench.report.stats import wilcoxon_vs_baseline
from lossbench.report.verdicts import (
    COLUMNS,
    metric_direction,
    minimum_detectable_effect,
    paired_t,
    run_verdicts,
    study_warnings,
    verdict_findings,
    write_verdicts,
)
from lossbench.study.store import load_results

# ---------------------------------------------------------------------------------------------- simulation


def _simulate(rng: np.random.Generator, studies: int, effects: list[float], seeds: int = 4, subjects: int = 24):
    """Two-level data, shape (studies, losses, seeds, subjects); loss 0 is the baseline.

    value = 0.7 + effect[loss] + seed effect (shared by every loss at that seed: split, initialisation)
            + run effect (loss x seed: what one training run adds) + subject effect (the same subjects for every
            loss and seed) + residual (loss x seed x subject).
    """
    n = len(effects)
    seed_effect = rng.normal(0, 0.02, (studies, 1, seeds, 1))
    run_effect = rng.normal(0, 0.015, (studies, n, seeds, 1))
    subject = rng.normal(0, 0.1, (studies, 1, 1, subjects))
    residual = rng.normal(0, 0.03, (studies, n, seeds, subjects))
    return 0.7 + np.asarray(effects)[None, :, None, None] + seed_effect + run_effect + subject + residual


def _cells(y: np.ndarray) -> np.ndarray:
    """Run-level metric of every cell: the mean over the test subjects, (studies, losses, seeds)."""
    return y.mean(axis=-1)


def _results_table(cells: np.ndarray, metric: str = "test_dice") -> pd.DataFrame:
    """One simulated study as a results table (labels L0 = baseline, L1, ...)."""
    return pd.DataFrame(
        [
            {"label": f"L{li}", "seed": s, "status": "ok", "dataset": "sim", metric: cells[li, s]}
            for s in range(cells.shape[1])
            for li in range(cells.shape[0])
        ]
    )


def test_simulation_error_rate_coverage_power_and_the_seed_averaged_wilcoxon():
    rng = np.random.default_rng(20261201)
    null = _simulate(rng, 2000, [0.0, 0.0, 0.0, 0.0])
    d = _cells(null)[:, 1:] - _cells(null)[:, :1]  # (studies, 3 losses, 4 seeds)
    st = paired_t(d, n_compared=3)
    any_verdict = ((st["ci_low"] > 0) | (st["ci_high"] < 0)).any(axis=1)
    fpr = any_verdict.mean()
    assert 0.02 <= fpr <= 0.09, fpr  # family-wise over the 3 losses, per metric
    assert (st["p_adjusted"] < 0.05).any(axis=1).mean() == fpr  # the interval and the p-value agree
    single = paired_t(d, n_compared=1)  # one unadjusted interval: its coverage of the true 0
    coverage = ((single["ci_low"] <= 0) & (single["ci_high"] >= 0)).mean()
    assert 0.935 <= coverage <= 0.965, coverage
    assert 1 - fpr >= 0.94  # the three adjusted intervals hold together
    # A percentile bootstrap over the 4 seeds covers far less (its interval ignores the t quantile and n - 1).
    boot = d[:1000, 0][:, rng.integers(0, 4, (2000, 4))].mean(axis=-1)  # (studies, resamples)
    lo, hi = np.quantile(boot, 0.025, axis=1), np.quantile(boot, 0.975, axis=1)
    assert ((lo <= 0) & (hi >= 0)).mean() < 0.85

    # The old approach on the same null studies: each subject's value averaged over the seeds, Wilcoxon over
    # the subjects vs the baseline, Holm over the 3 losses. Holm rejects anything iff min p < alpha / 3.
    subj = null[:400].mean(axis=2)  # (studies, losses, subjects)
    p_old = sps.wilcoxon(subj[:, 1:] - subj[:, :1], axis=-1).pvalue  # (studies, 3)
    old_fpr = (p_old.min(axis=1) < 0.05 / 3).mean()
    assert old_fpr > 0.4 and old_fpr > 5 * fpr, (old_fpr, fpr)
    for s in range(5):  # the vectorised old approach is the report's function
        table = pd.DataFrame(subj[s].T, columns=["L0", "L1", "L2", "L3"])
        res = wilcoxon_vs_baseline(table, "L0", "max")
        np.testing.assert_allclose(res["p_value"].to_numpy(), p_old[s])
        assert bool(res["significant"].any()) == bool(p_old[s].min() < 0.05 / 3)

    # A large effect (+0.1 on loss 1, about 4.6 standard deviations of the per-seed differences) is found.
    alt = _simulate(rng, 1000, [0.0, 0.1, 0.0, 0.0])
    d = _cells(alt)[:, 1:] - _cells(alt)[:, :1]
    st = paired_t(d, n_compared=3)
    assert (st["ci_low"][:, 0] > 0).mean() >= 0.95
    truth = np.array([0.1, 0.0, 0.0])
    assert ((st["ci_low"] <= truth) & (st["ci_high"] >= truth)).all(axis=1).mean() >= 0.94

    # The table function computes the same as the vectorised core.
    cells = _cells(alt)[0]
    v = run_verdicts(_results_table(cells), "L0", metrics=["test_dice"])
    np.testing.assert_allclose(v["ci_low"], st["ci_low"][0])
    np.testing.assert_allclose(v["ci_high"], st["ci_high"][0])
    np.testing.assert_allclose(v["difference"], d[0].mean(axis=-1))


# ----------------------------------------------------------------------------------------- hand-worked table

# Dice is the baseline; 3 seeds; test_dice (higher is better), test_volume_difference (lower is better).
#   A - Dice, DSC:   +0.10, +0.11, +0.12  mean +0.11, sd 0.01
#   B - Dice, DSC:   +0.01, -0.01,  0.00  mean  0,    sd 0.01
#   A - Dice, VD:    -5, -6, -7           mean -6,    sd 1
#   B - Dice, VD:    +3, +3, +4           mean +10/3, sd 1/sqrt(3)
# k = 2 losses: the interval is mean +- t(1 - 0.05/4, df=2) * sd / sqrt(3), t(0.9875, 2) = 6.2053.
HAND = pd.DataFrame(
    {
        "label": ["Dice", "A", "B"] * 3,
        "seed": [0, 0, 0, 1, 1, 1, 2, 2, 2],
        "status": ["ok"] * 9,
        "test_dice": [0.80, 0.90, 0.81, 0.82, 0.93, 0.81, 0.78, 0.90, 0.78],
        "test_volume_difference": [10.0, 5.0, 13.0, 12.0, 6.0, 15.0, 14.0, 7.0, 18.0],
    }
)
T2 = 6.205346816  # t quantile 0.9875, 2 degrees of freedom


def _row(v: pd.DataFrame, loss: str, metric: str) -> pd.Series:
    return v[(v["loss"] == loss) & (v["metric"] == metric)].iloc[0]


def test_hand_computed_table_values_verdicts_and_directions():
    assert sps.t.ppf(1 - 0.05 / 4, 2) == pytest.approx(T2)
    v = run_verdicts(HAND, "Dice", metrics=["test_dice", "test_volume_difference"])
    assert list(v.columns) == list(COLUMNS)
    assert list(zip(v["loss"], v["metric"])) == [
        ("A", "test_dice"),
        ("B", "test_dice"),
        ("A", "test_volume_difference"),
        ("B", "test_volume_difference"),
    ]
    assert (v["baseline"] == "Dice").all() and (v["n_seeds"] == 3).all() and (v["n_compared"] == 2).all()
    half = T2 * 0.01 / math.sqrt(3)
    a = _row(v, "A", "test_dice")
    assert (a["difference"], a["ci_low"], a["ci_high"]) == pytest.approx((0.11, 0.11 - half, 0.11 + half))
    assert a["verdict"] == "better" and a["direction"] == "max"
    t_a = 0.11 / (0.01 / math.sqrt(3))
    assert a["p_value"] == pytest.approx(2 * sps.t.sf(t_a, 2)) and a["p_adjusted"] == pytest.approx(2 * a["p_value"])
    assert a["per_seed"] == "0:+0.1; 1:+0.11; 2:+0.12"
    b = _row(v, "B", "test_dice")
    assert (b["difference"], b["ci_low"], b["ci_high"]) == pytest.approx((0.0, -half, half), abs=1e-9)
    assert b["verdict"] == "no evidence"
    # Lower is better for the volume difference: a negative difference is "better".
    a = _row(v, "A", "test_volume_difference")
    assert (a["ci_low"], a["ci_high"]) == pytest.approx((-6 - T2 / math.sqrt(3), -6 + T2 / math.sqrt(3)))
    assert a["verdict"] == "better" and a["direction"] == "min"
    b = _row(v, "B", "test_volume_difference")
    hb = T2 * (1 / math.sqrt(3)) / math.sqrt(3)
    assert (b["difference"], b["ci_low"], b["ci_high"]) == pytest.approx((10 / 3, 10 / 3 - hb, 10 / 3 + hb))
    assert b["verdict"] == "worse"
    assert set(v["verdict"]) <= {"better", "worse", "no evidence"}


def test_multiplicity_adjustment_widens_with_the_number_of_losses():
    only_a = HAND[HAND["label"] != "B"]
    v1 = _row(run_verdicts(only_a, "Dice", metrics=["test_dice"]), "A", "test_dice")
    v2 = _row(run_verdicts(HAND, "Dice", metrics=["test_dice"]), "A", "test_dice")
    assert v1["n_compared"] == 1 and v2["n_compared"] == 2
    t1 = 4.302652730  # t quantile 0.975, 2 degrees of freedom: no adjustment with one loss
    assert v1["ci_high"] - v1["difference"] == pytest.approx(t1 * 0.01 / math.sqrt(3))
    assert v2["ci_high"] - v2["difference"] == pytest.approx(T2 * 0.01 / math.sqrt(3))
    assert v1["p_adjusted"] == pytest.approx(v1["p_value"]) and v2["p_adjusted"] == pytest.approx(2 * v2["p_value"])
    # At alpha = 0.001 (99.95 % intervals for k = 2) the same data are no evidence: interval and verdict agree.
    strict = _row(run_verdicts(HAND, "Dice", metrics=["test_dice"], alpha=0.001), "A", "test_dice")
    assert strict["ci_low"] < 0 < strict["ci_high"] and strict["verdict"] == "no evidence"
    assert strict["p_adjusted"] >= 0.001


def test_unpaired_failed_diverged_and_missing_values_are_dropped_and_named():
    rows = [{"label": "Dice", "seed": s, "status": "ok", "test_dice": 0.8 + 0.01 * s, "dataset": "d"} for s in range(4)]
    rows += [
        {"label": "A", "seed": 0, "status": "ok", "test_dice": 0.85, "dataset": "d"},
        {"label": "A", "seed": 1, "status": "ok", "test_dice": 0.87, "dataset": "d"},
        {"label": "A", "seed": 2, "status": "ok", "test_dice": float("nan"), "dataset": "d"},
        {"label": "A", "seed": 3, "status": "diverged", "test_dice": float("nan"), "dataset": "d"},
        {"label": "B", "seed": 0, "status": "ok", "test_dice": 0.7, "dataset": "d"},  # seeds 1-3 failed: no rows
    ]
    v = run_verdicts(pd.DataFrame(rows), "Dice", metrics=["test_dice"])
    a, b = _row(v, "A", "test_dice"), _row(v, "B", "test_dice")
    assert a["n_seeds"] == 2 and a["per_seed"] == "0:+0.05; 1:+0.06"
    assert a["dropped"] == "seed 2: A has no test_dice value; seed 3: A diverged"
    assert a["n_compared"] == 1  # B has no interval, so only A counts for the adjustment
    assert b["n_seeds"] == 1 and b["verdict"] == "no evidence" and math.isnan(b["ci_low"])
    assert b["difference"] == pytest.approx(-0.1) and "fewer than 2 seeds paired with Dice" in b["note"]
    assert (
        b["dropped"] == "seed 1: B has no finished cell; seed 2: B has no finished cell; seed 3: B has no finished cell"
    )
    text = verdict_findings(v)
    assert "B: no verdict in test DSC (fewer than 2 seeds paired with Dice: no interval)." in text
    assert any(
        t.startswith("Left out of the test DSC comparisons (no pair): seed 2: A has no test_dice value") for t in text
    )


def test_zero_spread_of_the_differences():
    d = np.array([[0.0, 0.0, 0.0], [0.02, 0.02, 0.02], [0.1, 0.1 + 1e-17, 0.1]])
    st = paired_t(d)
    assert st["ci_low"][0] == st["ci_high"][0] == 0.0 and st["p_value"][0] == 1.0  # the same loss twice
    assert np.isnan(st["ci_low"][1:]).all() and np.isnan(st["p_value"][1:]).all()  # constant nonzero: no interval
    table = pd.DataFrame(
        {"label": ["Dice", "A", "C"] * 2, "seed": [0, 0, 0, 1, 1, 1], "test_dice": [0.5, 0.5, 0.6, 0.7, 0.7, 0.8]}
    )
    v = run_verdicts(table, "Dice", metrics=["test_dice"])
    a, c = _row(v, "A", "test_dice"), _row(v, "C", "test_dice")
    assert (a["verdict"], a["ci_low"], a["ci_high"], a["sd"]) == ("no evidence", 0.0, 0.0, 0.0)
    assert c["verdict"] == "no evidence" and math.isnan(c["ci_low"]) and math.isnan(c["mde"])
    assert "the same difference at every seed" in c["note"]


def test_minimum_detectable_effect_matches_statsmodels_power():
    for n, k in ((5, 1), (4, 3), (10, 2)):
        es = TTestPower().solve_power(effect_size=None, nobs=n, alpha=0.05 / k, power=0.8, alternative="two-sided")
        assert minimum_detectable_effect(0.02, n, n_compared=k) == pytest.approx(0.02 * es, rel=1e-4)
    # Two seeds: detectable only with an effect of tens of standard deviations (statsmodels fails there).
    assert minimum_detectable_effect(1.0, 2) > 10
    assert minimum_detectable_effect(0.0, 4) == 0.0 and math.isnan(minimum_detectable_effect(float("nan"), 4))


def test_findings_sentences():
    v = run_verdicts(HAND, "Dice", metrics=["test_dice", "test_volume_difference"])
    mde_b = v.loc[(v["loss"] == "B") & (v["metric"] == "test_dice"), "mde"].iloc[0]
    assert verdict_findings(v) == [
        "A is better than Dice in test DSC by +0.11 (95% CI +0.0742 to +0.146) at 3 seeds.",
        f"No evidence that B differs from Dice in test DSC at 3 seeds; the smallest difference this study could "
        f"detect is about {mde_b:.2g}.",
        "A is better than Dice in test volume difference by -6 (95% CI -9.58 to -2.42) at 3 seeds.",
        "B is worse than Dice in test volume difference by +3.33 (95% CI +1.26 to +5.4) at 3 seeds.",
    ]
    null = HAND.copy()
    null.loc[null["label"] == "A", "test_dice"] = [0.80, 0.83, 0.77]  # A - Dice: 0, +0.01, -0.01
    v = run_verdicts(null, "Dice", metrics=["test_dice"])
    (sentence,) = verdict_findings(v, names={"test_dice": "DSC"})
    assert sentence.startswith(
        "No evidence that any loss differs from Dice in DSC at 3 seeds; the smallest difference this study"
    )


def test_metric_directions_come_from_the_metric_registry():
    assert metric_direction("test_dice") == "max" and metric_direction("val_dsc") == "max"
    assert metric_direction("test_volume_difference") == "min" and metric_direction("val_total_mi") == "min"
    with pytest.raises(RegistryError):
        metric_direction("test_n_target")  # a count without direction


def test_errors():
    with pytest.raises(ConfigError, match="`baseline` must be a loss label"):
        run_verdicts(HAND, "dice")
    with pytest.raises(DataError, match="one row per"):
        run_verdicts(pd.concat([HAND, HAND.iloc[:1]]), "Dice")
    with pytest.raises(ConfigError, match="`alpha`"):
        run_verdicts(HAND, "Dice", alpha=1.5)
    with pytest.raises(ConfigError, match="at least 2 paired differences"):
        paired_t(np.array([0.1]))


def test_absent_metric_column_gives_no_verdict():
    v = run_verdicts(HAND, "Dice", metrics=["test_lesionwise_f1"])
    assert (v["n_seeds"] == 0).all() and (v["verdict"] == "no evidence").all()


def test_write_verdicts(tmp_path):
    v = run_verdicts(HAND, "Dice", metrics=["test_dice"])
    path = write_verdicts(v, tmp_path)
    back = pd.read_csv(path, keep_default_na=False, na_values=[""])
    assert path.name == "verdicts.csv" and list(back.columns)[:8] == [
        "loss",
        "metric",
        "baseline",
        "difference",
        "ci_low",
        "ci_high",
        "verdict",
        "n_seeds",
    ]
    assert list(back["verdict"]) == ["better", "no evidence"]
    np.testing.assert_allclose(back["ci_low"], v["ci_low"])
    assert not list(tmp_path.glob(".*tmp*"))


def test_study_warnings():
    ok = pd.DataFrame(
        {
            "label": ["Dice", "A"] * 3,
            "seed": [0, 0, 1, 1, 2, 2],
            "status": ["ok"] * 5 + ["diverged"],
            "best_epoch": [10, 40, 40, 38, 12, None],
            "epochs_run": [40, 40, 40, 40, 40, 39],
        }
    )
    w = study_warnings(ok)
    assert len(w) == 2
    assert w[0] == "1 cell(s) did not finish normally and are left out of the verdicts: A seed 2 (diverged)."
    assert w[1].startswith(
        "2 of 5 finished cells (40%) have their best validation DSC at the last epoch (Dice 1/3, A 1/2)"
    )
    assert study_warnings(ok, undertrained_share=0.5) == w[:1]
    few = study_warnings(ok[ok["seed"] < 2])
    assert few[0].startswith("Only 2 seeds with finished cells") and "use at least 3 seeds" in few[0]


def test_study_warnings_name_runs_that_did_not_learn():
    rows = []
    for dataset in ("L1", "L2"):
        for seed in range(5):
            for label in ("Dice", "CC"):
                val = 0.8 + 0.01 * seed
                if label == "CC" and dataset == "L1" and seed in (0, 3):
                    val = 0.05 * (seed + 1)  # 0.05 and 0.20: below half the median (0.81)
                rows.append({"dataset": dataset, "label": label, "seed": seed, "status": "ok", "val_dsc": val})
    w = study_warnings(pd.DataFrame(rows))
    assert w == [
        "2 finished cell(s) reached less than 50% of their loss's median validation DSC, runs that did not learn: "
        "CC [L1] seed(s) 0, 3 (validation DSC 0.05, 0.20; median of its cells 0.81). They stay in the verdicts and "
        "widen the intervals of their loss; it may need more epochs or another learning rate."
    ]
    assert study_warnings(pd.DataFrame(rows), not_learned=0.01) == []
    one = pd.DataFrame(rows)
    one = one[one["dataset"] == "L1"].drop(columns="dataset")
    assert study_warnings(one)[0].startswith("2 finished cell(s) reached less than 50%")
    assert "CC seed(s) 0, 3" in study_warnings(one)[0]
    # The report's warnings take the validation DSC from the results table (the cells table has none).
    results = one.assign(cell_id=[f"c{i}" for i in range(len(one))])
    data = SimpleNamespace(cells=results.drop(columns="val_dsc"), results=results)
    assert run_warnings_of(data) == study_warnings(one)


def test_on_a_real_run_folder(tmp_path):
    """The columns of a real results table (written by the study runner) are the ones the verdicts read."""
    from test_study_run import make_run

    _, run_dir, _ = make_run(tmp_path)
    results = load_results(run_dir)
    v = run_verdicts(results, "Dice")
    assert set(v["metric"]) == {
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
    assert (v["n_seeds"] == 1).all() and (v["verdict"] == "no evidence").all()  # one seed: no interval
    assert any(w.startswith("Only 1 seed") for w in study_warnings(results))
