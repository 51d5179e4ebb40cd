"""rank_table: dense ranks, NaN policy, markers, errors, and the ICI paper's Tables 1-6.

The paper's values are transcribed below from the ICI paper as
``(method, printed mean rank, [(value, printed bracket), ...])``; Tables 2 and 4 print "mean (std)" and
only the mean is ranked. The printed mean rank is compared at its printed precision (two decimals in
Tables 1-4, one in Tables 5-6). The paper's errata are asserted as errata: the test
checks the correct dense rank / mean rank and that the printed number is the one the erratum describes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lossbench.errors import ConfigError, DataError, LossbenchError
from lossbench.metrics import metric_directions
from lossbench.report.ranking import RankTable, dense_ranks, rank_table

BLOB = "blob loss (alpha=2, beta=1)"
A100, A101, A110, A111, AQ = "a=1,b=0,c=0", "a=1,b=0,c=1", "a=1,b=1,c=0", "a=1,b=1,c=1", "a=1/4,b=1/2,c=1/4"
VAL_COLS = ["DSC", "Total MI", "Subjects w/ MI", "all MI", "Total FI", "Subjects w/ FI", "Subjects wo/ MI & FI"]
VAL_DIRS = dict(zip(VAL_COLS, ["max", "min", "min", "min", "min", "min", "max"]))
TEST_COLS = ["DSC", "Volume Difference", "Lesion-wise F1 Score", "Simple Lesion Count"]
TEST_DIRS = dict(zip(TEST_COLS, ["max", "min", "max", "min"]))

# Table 1: validation set, whole image ("Best Epoch" is not ranked).
TABLE1 = [
    (BLOB, "4.00", [(0.3795, 3), (53, 2), (29, 1), (11, 1), (382, 6), (53, 5), (0, 6)]),
    (A100, "3.67", [(0.3773, 4), (58, 5), (32, 3), (14, 3), (149, 3), (46, 2), (4, 2)]),
    (A101, "3.83", [(0.3412, 6), (67, 6), (36, 4), (19, 4), (110, 1), (37, 1), (5, 1)]),
    (A110, "3.67", [(0.3676, 5), (54, 3), (29, 1), (12, 2), (205, 4), (51, 4), (3, 3)]),
    (A111, "3.50", [(0.3884, 2), (51, 1), (30, 2), (11, 1), (225, 5), (54, 6), (1, 4)]),
    (AQ, "2.83", [(0.4142, 1), (55, 4), (32, 3), (11, 1), (124, 2), (49, 3), (3, 3)]),
]
# Table 2: test set, whole image (mean of "mean (std)").
TABLE2 = [
    (BLOB, "5.50", [(0.3954, 5), (18358.73, 6), (0.3036, 5), (6.7900, 6)]),
    (A100, "2.50", [(0.4147, 4), (16437.22, 3), (0.3558, 2), (4.5367, 1)]),
    (A101, "4.25", [(0.3904, 6), (16148.17, 2), (0.3028, 6), (4.9967, 5)]),
    (A110, "3.75", [(0.4160, 3), (17782.27, 5), (0.3233, 4), (4.7367, 3)]),
    (A111, "3.25", [(0.4240, 2), (16717.15, 4), (0.3508, 3), (4.9667, 4)]),
    (AQ, "1.25", [(0.4455, 1), (15993.67, 1), (0.4147, 1), (4.6900, 2)]),
]
# Table 3: validation set, patch-based.
TABLE3 = [
    (BLOB, "3.67", [(0.5237, 3), (34, 4), (24, 3), (6, 2), (471, 3), (53, 4), (1, 3)]),
    (A100, "4.33", [(0.5124, 5), (30, 2), (24, 3), (7, 3), (503, 5), (54, 5), (1, 3)]),
    (A101, "3.83", [(0.5082, 6), (32, 3), (24, 3), (6, 2), (478, 4), (51, 2), (1, 3)]),
    (A110, "3.17", [(0.5310, 1), (36, 5), (27, 4), (6, 2), (462, 2), (52, 3), (2, 2)]),
    (A111, "2.17", [(0.5201, 4), (30, 2), (23, 2), (6, 2), (441, 1), (50, 1), (3, 1)]),
    (AQ, "2.33", [(0.5295, 2), (27, 1), (22, 1), (5, 1), (513, 6), (51, 2), (3, 1)]),
]
# Table 4: test set, patch-based.
TABLE4 = [
    (BLOB, "5.25", [(0.5754, 4), (12210.94, 5), (0.4033, 6), (5.9933, 6)]),
    (A100, "5.00", [(0.5598, 6), (13857.66, 6), (0.4092, 5), (4.9900, 3)]),
    (A101, "4.00", [(0.5713, 5), (12031.63, 4), (0.4263, 3), (5.3000, 4)]),
    (A110, "2.50", [(0.5805, 2), (10978.48, 1), (0.4314, 2), (5.3800, 5)]),
    (A111, "1.75", [(0.5790, 3), (11564.10, 2), (0.4480, 1), (4.7800, 1)]),
    (AQ, "2.50", [(0.5817, 1), (11588.88, 3), (0.4256, 4), (4.9867, 2)]),
]
# Table 5 (Appendix I): a=b=c=1 with center cube sizes 3..63; the two "Losses" columns are Center and Blob.
T5_COLS = ["DSC", "Missed Instances", "False Instances", "Center loss", "Blob loss"]
T5_DIRS = dict(zip(T5_COLS, ["max", "min", "min", "min", "min"]))
TABLE5 = [
    ("size 3", "3.6", [(0.3625, 3), (4.2, 3), (9.6, 3), (0.9261, 7), (0.7725, 2)]),
    ("size 5", "4.0", [(0.3466, 5), (4.9, 5), (7.4, 1), (0.9203, 6), (0.7921, 3)]),
    ("size 7", "2.2", [(0.3884, 1), (1.9, 2), (8.7, 2), (0.8841, 5), (0.7532, 1)]),
    ("size 11", "4.8", [(0.3437, 6), (4.8, 4), (75.0, 5), (0.8550, 4), (0.8016, 5)]),
    ("size 15", "3.2", [(0.3689, 2), (1.8, 1), (16.6, 6), (0.8487, 3), (0.7936, 4)]),
    ("size 31", "4.2", [(0.3514, 4), (4.9, 5), (13.6, 4), (0.7253, 2), (0.8258, 6)]),
    ("size 63", "5.2", [(0.3292, 7), (4.8, 4), (21.5, 7), (0.6285, 1), (0.8417, 7)]),
]
# Table 6 (Appendix J): each base loss is ranked within its own group of three.
T6_COLS = ["DSC", "Mean MI", "Mean FI"]
T6_DIRS = dict(zip(T6_COLS, ["max", "min", "min"]))
B0, B1, BQ = "base a=1,b=0,c=0", "+ICI a=1,b=1,c=1", "+ICI a=1/4,b=1/2,c=1/4"
TABLE6 = {
    "BCE": [
        (B0, "2.3", [(0.2965, 3), (2.0357, 3), (2.8452, 1)]),
        (B1, "1.3", [(0.3114, 1), (1.2083, 1), (6.7500, 2)]),
        (BQ, "2.3", [(0.3027, 2), (1.3571, 2), (14.3869, 3)]),
    ],
    "Focal": [
        (B0, "2.0", [(0.3115, 3), (1.7619, 2), (11.6607, 1)]),
        (B1, "2.7", [(0.3215, 2), (1.8571, 3), (18.3869, 3)]),
        (BQ, "1.3", [(0.3316, 1), (1.7440, 1), (13.0179, 2)]),
    ],
    "DiceCE": [
        (B0, "2.7", [(0.3259, 3), (1.2381, 3), (3.8631, 2)]),
        (B1, "1.7", [(0.3356, 2), (1.2083, 2), (2.3214, 1)]),
        (BQ, "1.7", [(0.3452, 1), (0.9226, 1), (4.2024, 3)]),
    ],
    "DiceFocal": [
        (B0, "2.3", [(0.3557, 3), (1.2619, 1), (5.0119, 3)]),
        (B1, "1.7", [(0.3723, 1), (1.5833, 2), (4.4345, 2)]),
        (BQ, "2.0", [(0.3654, 2), (1.9405, 3), (2.4702, 1)]),
    ],
    # In the stored text this group's last row runs straight into the "Table 5" caption (no newline).
    "GeneralizedDiceFocal": [
        (B0, "3.0", [(0.3512, 3), (1.5833, 3), (6.3036, 3)]),
        (B1, "1.7", [(0.3686, 2), (1.5119, 2), (4.1190, 1)]),
        (BQ, "1.3", [(0.3933, 1), (1.4226, 1), (5.4405, 2)]),
    ],
}

# Errata of printed brackets: (table, method, column) -> (printed, correct dense rank).
BRACKET_ERRATA = {
    ("Table 1", BLOB, "Subjects wo/ MI & FI"): (6, 5),  # value 0 is the 5th distinct value
    ("Table 5", "size 11", "False Instances"): (5, 7),  # 75.0 is the largest FI
    ("Table 5", "size 15", "False Instances"): (6, 5),  # 16.6
    ("Table 5", "size 63", "False Instances"): (7, 6),  # 21.5
}
# Errata of printed mean ranks: (table, method) -> correct mean rank. Those caused by a bracket erratum were
# computed from the printed (wrong) brackets; Table 2's is a misprint of 19/4 = 4.75.
MEAN_ERRATA = {
    ("Table 1", BLOB): 23 / 6,
    ("Table 2", A101): 19 / 4,
    ("Table 5", "size 11"): 26 / 5,
    ("Table 5", "size 15"): 15 / 5,
    ("Table 5", "size 63"): 25 / 5,
}

CASES = [
    ("Table 1", TABLE1, VAL_COLS, VAL_DIRS, 6),
    ("Table 2", TABLE2, TEST_COLS, TEST_DIRS, None),
    ("Table 3", TABLE3, VAL_COLS, VAL_DIRS, 6),
    ("Table 4", TABLE4, TEST_COLS, TEST_DIRS, None),
    ("Table 5", TABLE5, T5_COLS, T5_DIRS, None),
] + [(f"Table 6 {g}", rows, T6_COLS, T6_DIRS, None) for g, rows in TABLE6.items()]


def _frames(rows, cols):
    values = pd.DataFrame([[v for v, _ in cells] for _, _, cells in rows], index=[m for m, _, _ in rows], columns=cols)
    printed = pd.DataFrame([[r for _, r in cells] for _, _, cells in rows], index=values.index, columns=cols)
    means = {m: mean for m, mean, _ in rows}
    return values, printed, means


@pytest.mark.parametrize("name, rows, cols, dirs, divisor", CASES, ids=[c[0] for c in CASES])
def test_paper_tables_brackets_and_mean_ranks(name, rows, cols, dirs, divisor):
    values, printed, means = _frames(rows, cols)
    res = rank_table(values, dirs, divisor=divisor)
    assert res.divisor == (divisor or len(cols))
    checked_errata = 0
    for m in values.index:
        for c in cols:
            erratum = BRACKET_ERRATA.get((name, m, c))
            if erratum is not None:
                printed_rank, correct = erratum
                assert printed.at[m, c] == printed_rank, f"{name} erratum {m}/{c}: transcription"
                assert res.ranks.at[m, c] == correct, f"{name} erratum {m}/{c}: correct dense rank"
                checked_errata += 1
            else:
                assert res.ranks.at[m, c] == printed.at[m, c], f"{name}: {m} / {c}"
        decimals = len(means[m].split(".")[1])
        mean_erratum = MEAN_ERRATA.get((name.split(" ")[0] + " " + name.split(" ")[1], m))
        if mean_erratum is None:
            assert f"{res.mean_rank[m]:.{decimals}f}" == means[m], f"{name}: mean rank of {m}"
        else:
            assert res.mean_rank[m] == pytest.approx(mean_erratum), f"{name}: correct mean rank of {m} (erratum)"
            assert f"{res.mean_rank[m]:.{decimals}f}" != means[m]
    assert checked_errata == sum(1 for k in BRACKET_ERRATA if k[0] == name)


@pytest.mark.parametrize(
    "name, rows, cols, divisor",
    [("Table 1", TABLE1, VAL_COLS, 6), ("Table 5", TABLE5, T5_COLS, 5)],
)
def test_paper_bracket_errata_explain_printed_mean_ranks(name, rows, cols, divisor):
    # Erratum origin: the printed mean rank is the sum of the printed (wrong) brackets / divisor.
    values, printed, means = _frames(rows, cols)
    for (table, m), _ in MEAN_ERRATA.items():
        if table != name:
            continue
        decimals = len(means[m].split(".")[1])
        assert f"{printed.loc[m].sum() / divisor:.{decimals}f}" == means[m]


def test_paper_table2_printed_mean_rank_misprint():
    # Table 2, "a = 1, b = 0, c = 1": brackets 6 + 2 + 6 + 5 = 19 -> 4.75, printed 4.25 (an erratum).
    values, printed, means = _frames(TABLE2, TEST_COLS)
    assert printed.loc[A101].sum() == 19
    assert means[A101] == "4.25"
    assert rank_table(values, TEST_DIRS).mean_rank[A101] == 4.75


def test_paper_tables_1_3_default_divisor_is_the_correct_mean():
    values, _, _ = _frames(TABLE1, VAL_COLS)
    res = rank_table(values, VAL_DIRS)
    assert res.divisor == 7
    # blob loss: 3 + 2 + 1 + 1 + 6 + 5 + 5 = 23 (correct dense ranks) -> 23 / 7
    assert res.mean_rank[BLOB] == pytest.approx(23 / 7)
    assert rank_table(values, VAL_DIRS, divisor=6).mean_rank[BLOB] == pytest.approx(23 / 6)


def test_paper_table1_with_metric_metadata_directions():
    # The same table with lossbench's own metric names: directions come from the metric metadata.
    values, printed, _ = _frames(TABLE1, VAL_COLS)
    names = [
        "dice",
        "total_mi",
        "subjects_with_mi",
        "subjects_all_mi",
        "total_fi",
        "subjects_with_fi",
        "subjects_without_mi_fi",
    ]
    values.columns = names
    res = rank_table(values, metric_directions(names), divisor=6)
    assert res.ranks["dice"].tolist() == printed["DSC"].tolist()
    assert res.ranks["subjects_without_mi_fi"].tolist() == [5, 2, 1, 3, 4, 3]


# --- behaviour on small hand-worked tables -----------------------------------------------------------


def test_dense_ranks_ties_and_directions():
    v = pd.DataFrame({"a": [0.9, 0.9, 0.8, 0.7], "b": [3, 1, 1, 2]}, index=list("wxyz"))
    res = rank_table(v, {"a": "max", "b": "min"})
    assert res.ranks["a"].tolist() == [1, 1, 2, 3]  # dense: 0.8 is 2nd, not 3rd
    assert res.ranks["b"].tolist() == [3, 1, 1, 2]
    assert res.mean_rank.tolist() == [2.0, 1.0, 1.5, 2.5]
    assert res.overall_rank.tolist() == [3, 1, 2, 4]
    assert res.ranks.dtypes.tolist() == [np.int64, np.int64]
    assert isinstance(res, RankTable)


def test_best_second_markers():
    v = pd.DataFrame({"a": [0.9, 0.9, 0.8, 0.7], "b": [3, 1, 1, 2]}, index=list("wxyz"))
    res = rank_table(v, {"a": "max", "b": "min"})
    assert res.best["a"].tolist() == [True, True, False, False]
    assert res.second["a"].tolist() == [False, False, True, False]
    assert res.best["b"].tolist() == [False, True, True, False]
    assert res.second["b"].tolist() == [False, False, False, True]
    assert res.best["mean_rank"].tolist() == [False, True, False, False]
    assert res.second["mean_rank"].tolist() == [False, False, True, False]


def test_nan_ranked_last_and_flagged_not_dropped():
    v = pd.DataFrame({"a": [0.5, np.nan, 0.7, np.nan], "b": [1.0, 2.0, 3.0, 4.0]}, index=list("wxyz"))
    res = rank_table(v, {"a": "max", "b": "min"})
    assert list(res.ranks.index) == list("wxyz")  # nothing dropped
    assert res.ranks["a"].tolist() == [2, 3, 1, 3]  # NaNs share the rank after the worst finite value
    assert res.nan_flags["a"].tolist() == [False, True, False, True]
    assert not res.nan_flags["b"].any()
    assert res.any_nan
    assert not res.best["a"].iloc[1] and not res.second["a"].iloc[3]
    assert res.mean_rank["x"] == pytest.approx((3 + 2) / 2)


def test_nan_is_ranked_after_infinite_values():
    r = dense_ranks(np.array([np.nan, np.inf, 1.0, np.inf]), higher_is_better=False)
    assert r.tolist() == [3, 2, 1, 2]
    r = dense_ranks(np.array([np.nan, -np.inf, 1.0]), higher_is_better=True)
    assert r.tolist() == [3, 2, 1]


def test_all_nan_column():
    v = pd.DataFrame({"a": [np.nan, np.nan]}, index=["p", "q"])
    res = rank_table(v, {"a": "min"})
    assert res.ranks["a"].tolist() == [1, 1]
    assert res.nan_flags["a"].all()
    assert not res.best["a"].any()


def test_dense_ranks_matches_pandas_oracle():
    rng = np.random.default_rng(0)
    for _ in range(50):
        x = rng.integers(0, 5, size=9).astype(float)
        x[rng.random(9) < 0.2] = np.nan
        for hib in (True, False):
            ours = dense_ranks(x, hib)
            oracle = pd.Series(x).rank(method="dense", ascending=not hib)
            finite_max = 0 if oracle.isna().all() else int(oracle.max())
            oracle = oracle.fillna(finite_max + 1).astype(int).to_numpy()
            np.testing.assert_array_equal(ours, oracle)


def test_decimals_makes_printed_ties():
    v = pd.DataFrame({"a": [0.12341, 0.12339, 0.2]}, index=list("xyz"))
    assert rank_table(v, {"a": "min"}).ranks["a"].tolist() == [2, 1, 3]
    assert rank_table(v, {"a": "min"}, decimals=4).ranks["a"].tolist() == [1, 1, 2]


def test_to_frame_layout():
    v = pd.DataFrame({"a": [1.0, 2.0]}, index=["p", "q"])
    f = rank_table(v, {"a": "max"}).to_frame()
    assert list(f.columns) == ["mean_rank", "overall_rank", "a", "a rank"]
    assert f.loc["q", "a rank"] == 1 and f.loc["p", "mean_rank"] == 2.0


def test_input_not_modified():
    v = pd.DataFrame({"a": [0.3, np.nan]}, index=["p", "q"])
    before = v.copy()
    rank_table(v, {"a": "max"}, decimals=1)
    pd.testing.assert_frame_equal(v, before)


@pytest.mark.parametrize(
    "values, directions, divisor, err, match",
    [
        (pd.DataFrame(), {}, None, DataError, "non-empty"),
        (pd.DataFrame(index=["a"]), {}, None, DataError, "non-empty"),
        ([[1.0]], {"a": "max"}, None, DataError, "DataFrame"),
        (pd.DataFrame({"a": [1.0]}), {}, None, ConfigError, "direction"),
        (pd.DataFrame({"a": [1.0]}), {"a": "max", "dsc": "max"}, None, ConfigError, "unknown metric 'dsc'"),
        (pd.DataFrame({"a": [1.0]}), {"a": "up"}, None, ConfigError, "'max'"),
        (pd.DataFrame({"a": [1.0]}), ["max"], None, ConfigError, "mapping"),
        (pd.DataFrame({"a": [1.0]}), {"a": "max"}, 0, ConfigError, "divisor"),
        (pd.DataFrame({"a": [1.0]}), {"a": "max"}, "6", ConfigError, "divisor"),
        (pd.DataFrame({"a": [1.0, 2.0]}, index=["m", "m"]), {"a": "max"}, None, DataError, "duplicate"),
        (pd.DataFrame({"a": ["x"]}), {"a": "max"}, None, DataError, "numeric"),
    ],
)
def test_bad_input(values, directions, divisor, err, match):
    with pytest.raises(err, match=match) as info:
        rank_table(values, directions, divisor)
    assert isinstance(info.value, LossbenchError) and isinstance(info.value, ValueError)


def test_directions_suggests_close_name():
    with pytest.raises(ConfigError, match="Did you mean 'dice'"):
        rank_table(pd.DataFrame({"dice": [1.0]}), {"dice": "max", "dise": "max"})
