"""Statistics over paired per-subject results: Wilcoxon + Holm, Friedman, bootstrap ranking, test-then-rank."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from lossbench.errors import ConfigError, DataError
from lossbench.report.stats import (
    bootstrap_ranking,
    friedman_test,
    pivot_subjects,
    test_then_rank,
    wilcoxon_vs_baseline,
)

N = 20


def _table(seed: int = 0) -> pd.DataFrame:
    """Dice-like scores: 'good' beats 'base' on every subject, 'bad' is worse, 'same' equals 'base'."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.3, 0.7, N)
    return pd.DataFrame(
        {
            "base": base,
            "good": base + 0.05 + rng.uniform(0, 0.02, N),
            "bad": base - 0.04 - rng.uniform(0, 0.02, N),
            "same": base.copy(),
            "noise": base + rng.normal(0, 0.01, N),
        },
        index=pd.Index([f"s{i:02d}" for i in range(N)], name="subject"),
    )


def _holm(p: np.ndarray) -> np.ndarray:
    """Independent Holm step-down oracle."""
    m = len(p)
    order = np.argsort(p)
    adj = np.empty(m)
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[i]))
        adj[i] = running
    return adj


def test_wilcoxon_vs_baseline_dominating_worse_identical():
    t = _table()
    res = wilcoxon_vs_baseline(t, "base", "max")
    assert list(res.index) == ["good", "bad", "same", "noise"]
    assert res.loc["good", "p_adjusted"] < 0.05 and res.loc["good", "better"] and not res.loc["good", "worse"]
    assert res.loc["bad", "p_adjusted"] < 0.05 and res.loc["bad", "worse"] and not res.loc["bad", "better"]
    assert res.loc["same", "p_value"] == 1.0 and np.isnan(res.loc["same", "statistic"])
    assert not res.loc["same", "significant"]
    assert (res["n"] == N).all()
    # p-values are scipy's, corrected by Holm (independent oracle)
    for m in res.index:
        d = t[m] - t["base"]
        if (d != 0).any():
            assert res.loc[m, "p_value"] == pytest.approx(sps.wilcoxon(d).pvalue)
    np.testing.assert_allclose(res["p_adjusted"], _holm(res["p_value"].to_numpy()))
    # 20 subjects all in one direction: exact two-sided p = 2 / 2^20, Holm x 4 tests (smallest p)
    assert res.loc["good", "p_value"] == pytest.approx(2 / 2**20)
    assert res.loc["good", "p_adjusted"] == pytest.approx(min(res.loc[["good", "bad"], "p_value"]) * 4)


def test_wilcoxon_direction_min_flips_better():
    res = wilcoxon_vs_baseline(_table(), "base", "min")
    assert res.loc["bad", "better"] and res.loc["good", "worse"]


def test_wilcoxon_p_adjust_none():
    res = wilcoxon_vs_baseline(_table(), "base", "max", p_adjust="none")
    np.testing.assert_allclose(res["p_adjusted"], res["p_value"])


def test_wilcoxon_nan_policy():
    t = _table()
    t.iloc[3, 1] = np.nan
    with pytest.raises(DataError, match="nan_policy='omit'"):
        wilcoxon_vs_baseline(t, "base", "max")
    res = wilcoxon_vs_baseline(t, "base", "max", nan_policy="omit")
    assert (res["n"] == N - 1).all()


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        ({"baseline": "basee"}, ConfigError, "Did you mean 'base'"),
        ({"direction": "up"}, ConfigError, "direction"),
        ({"alpha": 1.5}, ConfigError, "alpha"),
        ({"p_adjust": "holmes"}, ConfigError, "p_adjust"),
        ({"nan_policy": "drop"}, ConfigError, "nan_policy"),
    ],
)
def test_wilcoxon_bad_options(kwargs, err, match):
    args = {"baseline": "base", "direction": "max", **kwargs}
    with pytest.raises(err, match=match):
        wilcoxon_vs_baseline(_table(), **args)


def test_bad_tables():
    with pytest.raises(DataError, match="DataFrame"):
        wilcoxon_vs_baseline(np.zeros((3, 2)), "base", "max")
    with pytest.raises(DataError, match="at least 2 method"):
        wilcoxon_vs_baseline(_table()[["base"]], "base", "max")
    with pytest.raises(DataError, match="at least 2 subjects"):
        wilcoxon_vs_baseline(_table().iloc[:1], "base", "max")
    with pytest.raises(DataError, match="at least 3 method"):
        friedman_test(_table()[["base", "good"]])


def test_friedman_matches_scipy_and_identical_case():
    t = _table()
    res = friedman_test(t)
    ref = sps.friedmanchisquare(*[t[c] for c in t.columns])
    assert res["statistic"] == pytest.approx(ref.statistic) and res["p_value"] == pytest.approx(ref.pvalue)
    assert res["p_value"] < 1e-6 and (res["n_subjects"], res["n_methods"]) == (N, 5)
    same = pd.DataFrame({"a": t["base"], "b": t["base"], "c": t["base"]})
    res = friedman_test(same)
    assert res["p_value"] == 1.0 and np.isnan(res["statistic"])


def test_pivot_subjects():
    long = pd.DataFrame(
        {"subject": ["s1", "s1", "s2", "s2"], "method": ["a", "b", "a", "b"], "dice": [0.1, 0.2, 0.3, 0.4]}
    )
    wide = pivot_subjects(long, "dice")
    assert wide.loc["s2", "a"] == 0.3 and list(wide.columns) == ["a", "b"]
    with pytest.raises(DataError, match="Did you mean 'dice'"):
        pivot_subjects(long, "dise")
    with pytest.raises(DataError, match="duplicate"):
        pivot_subjects(pd.concat([long, long.iloc[:1]]), "dice")


def test_bootstrap_deterministic_and_correct():
    t = _table()[["base", "good", "bad"]]
    a = bootstrap_ranking({"dice": t}, {"dice": "max"}, n_resamples=200, seed=5)
    b = bootstrap_ranking({"dice": t}, {"dice": "max"}, n_resamples=200, seed=5)
    pd.testing.assert_frame_equal(a.ranks, b.ranks)
    np.testing.assert_array_equal(a.kendall_tau, b.kendall_tau)
    assert a.full_rank.to_dict() == {"base": 2, "good": 1, "bad": 3}
    # 'good' beats 'base' beats 'bad' on every subject, so every resample gives the full ranking
    assert (a.ranks == a.full_rank).all().all()
    assert np.all(a.kendall_tau == 1.0) and a.kendall_tau_median == 1.0
    assert a.summary.loc["good", "p_first"] == 1.0
    np.testing.assert_allclose(a.rank_frequency.sum(axis=1), 1.0)
    assert a.ranks.shape == (200, 3) and a.n_subjects == N and a.seed == 5


def test_bootstrap_resample_oracle_and_seed_dependence():
    rng = np.random.default_rng(1)
    t = pd.DataFrame(rng.normal(size=(15, 4)), columns=list("wxyz"))
    res = bootstrap_ranking({"m": t}, {"m": "min"}, n_resamples=50, seed=11)
    idx = np.random.default_rng(11).integers(0, 15, size=(50, 15))
    for r in (0, 17, 49):
        means = t.to_numpy()[idx[r]].mean(axis=0)
        want = pd.Series(means).rank(method="dense", ascending=True).astype(int).to_numpy()
        np.testing.assert_array_equal(res.ranks.iloc[r].to_numpy(), want)
        assert res.kendall_tau[r] == pytest.approx(sps.kendalltau(want, res.full_rank.to_numpy()).statistic)
    other = bootstrap_ranking({"m": t}, {"m": "min"}, n_resamples=50, seed=12)
    assert not other.ranks.equals(res.ranks)
    assert bootstrap_ranking({"m": t}, {"m": "min"}).ranks.shape == (1000, 4)  # default 1000 resamples


def test_bootstrap_multi_metric_mean_rank():
    t = _table()[["base", "good", "bad"]]
    # metric 2 reverses the order of 'good' and 'base' (lower is better there: 'base' wins).
    vd = pd.DataFrame({"base": np.ones(N), "good": np.full(N, 2.0), "bad": np.full(N, 3.0)}, index=t.index)
    res = bootstrap_ranking({"dice": t, "vd": vd}, {"dice": "max", "vd": "min"}, n_resamples=20)
    # mean ranks: base (2 + 1) / 2 = 1.5, good (1 + 2) / 2 = 1.5, bad 3 -> dense 1, 1, 2
    assert res.full_rank.to_dict() == {"base": 1, "good": 1, "bad": 2}


def test_bootstrap_first_place_ties_are_split_and_sum_to_one():
    t = _table()[["base", "good", "bad"]]
    vd = pd.DataFrame({"base": np.ones(N), "good": np.full(N, 2.0), "bad": np.full(N, 3.0)}, index=t.index)
    # 'base' and 'good' tie for first in every resample (see the test above): half a first place each.
    res = bootstrap_ranking({"dice": t, "vd": vd}, {"dice": "max", "vd": "min"}, n_resamples=50)
    assert res.summary["p_first"].to_dict() == {"base": 0.5, "good": 0.5, "bad": 0.0}
    assert res.summary["p_tied_first"].to_dict() == {"base": 1.0, "good": 1.0, "bad": 0.0}
    # Random data with frequent ties ('same' copies 'base'): the loop oracle, and the shares sum to 1.
    rng = np.random.default_rng(3)
    r = pd.DataFrame(rng.normal(size=(6, 3)).round(1), columns=["a", "b", "c"])
    r["same"] = r["a"]
    res = bootstrap_ranking({"m": r}, {"m": "max"}, n_resamples=300, seed=2)
    share = dict.fromkeys(r.columns, 0.0)
    tied = dict.fromkeys(r.columns, 0)
    for _, ranks in res.ranks.iterrows():
        winners = [m for m in r.columns if ranks[m] == 1]
        for m in winners:
            share[m] += 1 / len(winners) / 300
            tied[m] += len(winners) > 1
    assert res.summary["p_first"].to_dict() == pytest.approx(share)
    assert res.summary["p_tied_first"].to_dict() == pytest.approx({m: n / 300 for m, n in tied.items()})
    assert res.summary["p_first"].sum() == pytest.approx(1.0)
    # 'a' is never first alone (its copy ties with it), and the old per-method share counted each tie in full.
    assert res.summary.loc["a", "p_tied_first"] == res.rank_frequency.loc["a", 1] > 0
    assert res.rank_frequency[1].sum() > 1.0


def test_bootstrap_bad_input():
    t = _table()[["base", "good"]]
    with pytest.raises(DataError, match="non-empty"):
        bootstrap_ranking({}, {})
    with pytest.raises(ConfigError, match="none for 'dice'"):
        bootstrap_ranking({"dice": t}, {})
    with pytest.raises(ConfigError, match="n_resamples"):
        bootstrap_ranking({"dice": t}, {"dice": "max"}, n_resamples=0)
    with pytest.raises(DataError, match="same subjects"):
        bootstrap_ranking({"a": t, "b": t.iloc[:5]}, {"a": "max", "b": "max"})
    tn = t.copy()
    tn.iloc[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        bootstrap_ranking({"a": tn}, {"a": "max"})
    res = bootstrap_ranking({"a": tn, "b": t}, {"a": "max", "b": "max"}, nan_policy="omit", n_resamples=5)
    assert res.n_subjects == N - 1


def test_test_then_rank_hand_example():
    t = _table()[["bad", "base", "good", "same"]]
    res = test_then_rank(t, "max")
    # good beats base, same, bad; base and same (identical) beat bad only; bad beats nobody
    assert res.wins.to_dict() == {"bad": 0, "base": 1, "good": 3, "same": 1}
    assert res.rank.to_dict() == {"bad": 4, "base": 2, "good": 1, "same": 2}  # ties take the smallest rank
    assert np.isnan(np.diag(res.p_values.to_numpy())).all()
    assert res.significant.loc["good", "bad"] and not res.significant.loc["bad", "good"]
    assert not res.significant.loc["base", "same"] and res.p_values.loc["base", "same"] == 1.0
    flipped = test_then_rank(t, "min")
    assert flipped.rank.to_dict() == {"bad": 1, "base": 2, "good": 4, "same": 2}


def test_test_then_rank_correction_matters():
    # 6 subjects, every difference in the same direction: one-sided exact p = 1/64 = 0.0156 < 0.05 without
    # correction; with 4 methods there are 12 ordered pairs and Holm multiplies the smallest p by 12 -> 0.19.
    x = np.arange(6, dtype=float)
    t = pd.DataFrame({"a": x + 1, "b": x + 2.5, "c": x + 4, "d": x + 5.5})
    assert test_then_rank(t, "max", p_adjust="none").wins.to_dict() == {"a": 0, "b": 1, "c": 2, "d": 3}
    assert test_then_rank(t, "max").wins.sum() == 0
    with pytest.raises(ConfigError, match="p_adjust"):
        test_then_rank(t, "max", p_adjust="nope")
