"""Figures of a study report: training curves, detection by instance size, ranks, bootstrap blobs, timing.

Every function takes tidy pandas tables (as loaded by :mod:`lossbench.study.store`), a colour per
loss label from :func:`loss_colors` (the same mapping for every figure of a report, so a loss has one
colour everywhere), and the path of the PNG to write. Figures are built with matplotlib's object API
(:class:`matplotlib.figure.Figure` on an Agg canvas): no pyplot global state and no display needed.

Seeds: a curve or bar is the mean over the seeds of a loss; the shaded band / error bar is the
spread over seeds (min to max for curves, one standard deviation for bars), drawn only when a loss
has more than one finished seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from lossbench.errors import DataError, expect
from lossbench.io import atomic_save_figure

__all__ = [
    "loss_colors",
    "plot_curves",
    "plot_size_bins",
    "plot_rank_heatmap",
    "plot_bootstrap_blobs",
    "plot_timing",
    "size_bin_table",
    "CURVE_PANELS",
]

#: Panels of :func:`plot_curves` in the spirit of the ICI paper's Figure 3: (history column, title, y label).
CURVE_PANELS = (
    ("train_total", "A  training loss", "loss (each loss on its own scale)"),
    ("val_total_mi", "B  validation: missed instances", "total missed instances (MI)"),
    ("val_total_fi", "C  validation: false instances", "total false instances (FI)"),
    ("val_dsc", "D  validation: Dice (DSC)", "mean DSC over subjects"),
)

_DPI = 100


def loss_colors(labels: Sequence[str]) -> dict[str, str]:
    """One distinct colour per loss label, in the given (study) order; the same input gives the same colours.

    Uses seaborn's colour-blind-safe palette for up to 10 losses and evenly spaced HUSL hues beyond.

    Args:
        labels: the loss labels, in study order (duplicates are an error).

    Returns:
        ``{label: "#rrggbb"}``.

    Raises:
        DataError: duplicate labels.
    """
    import seaborn as sns

    labels = [str(x) for x in labels]
    if len(set(labels)) != len(labels):
        raise expect("labels", "unique loss labels", f"{labels}", cls=DataError)
    n = len(labels)
    palette = sns.color_palette("colorblind", n) if n <= 10 else sns.color_palette("husl", n)
    return {lab: "#{:02x}{:02x}{:02x}".format(*(int(round(255 * c)) for c in rgb)) for lab, rgb in zip(labels, palette)}


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    return atomic_save_figure(fig, path, dpi=_DPI, bbox_inches="tight", facecolor="white")


def _ordered(labels: Sequence[str], colors: Mapping[str, str]) -> list[str]:
    """Labels present in the data, in the colour mapping's (study) order."""
    present = set(labels)
    return [lab for lab in colors if lab in present]


def plot_curves(history: pd.DataFrame, colors: Mapping[str, str], path: str | Path) -> Path:
    """Training loss and validation missed / false instances and DSC against epoch, one line per loss.

    For each loss and epoch the line is the mean over seeds and the band spans the seeds' minimum to
    maximum. Validation columns hold values only on validation epochs; other epochs are skipped. The
    training-loss panel uses a log scale when the losses' values differ by more than a factor 50; the
    instance-count panels use a symlog scale when their largest value exceeds 20 times their median.

    Args:
        history: per-epoch rows with ``label``, ``seed``, ``epoch`` and the columns of :data:`CURVE_PANELS`
            (missing columns give an empty panel with a note).
        colors: :func:`loss_colors` mapping.
        path: PNG to write.

    Returns:
        ``path``.

    Raises:
        DataError: ``history`` lacks ``label``, ``seed`` or ``epoch``.
    """
    _need(history, ("label", "seed", "epoch"), "history")
    fig = Figure(figsize=(11, 7.6))
    axes = fig.subplots(2, 2).ravel()
    labels = _ordered(history["label"].unique(), colors)
    for ax, (col, title, ylabel) in zip(axes, CURVE_PANELS):
        ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if col not in history.columns:
            ax.text(0.5, 0.5, f"no column {col!r} in history", ha="center", va="center", transform=ax.transAxes)
            continue
        positive: list[float] = []
        for lab in labels:
            sub = history.loc[history["label"] == lab, ["seed", "epoch", col]].dropna()
            if sub.empty:
                continue
            g = sub.groupby("epoch")[col]
            mean, lo, hi, n = g.mean(), g.min(), g.max(), g.count()
            ax.plot(
                mean.index,
                mean.to_numpy(),
                color=colors[lab],
                lw=1.8,
                marker="o" if len(mean) < 15 else None,
                ms=3,
                label=lab,
            )
            if (n > 1).any():
                ax.fill_between(mean.index, lo.to_numpy(), hi.to_numpy(), color=colors[lab], alpha=0.18, lw=0)
            positive.extend(v for v in sub[col].to_numpy(dtype=float) if v > 0)
        if col == "train_total" and positive and max(positive) / min(positive) > 50:
            ax.set_yscale("log")
        if col in ("val_total_mi", "val_total_fi"):
            # early epochs can have 100x more false instances than late ones: a symlog axis keeps both readable
            if positive and max(positive) > 20 * float(np.median(positive)):
                ax.set_yscale("symlog", linthresh=1.0)
                ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.set_ylabel(f"{ylabel}, symlog scale")
            ax.set_ylim(bottom=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = [Line2D([], [], color=colors[lab], lw=2.5) for lab in labels]
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), frameon=False, fontsize=10)
    fig.tight_layout(rect=(0, 0.06 + 0.03 * ((len(labels) - 1) // 4), 1, 1))
    return _save(fig, path)


def _need(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise expect(name, "a pandas DataFrame", type(frame).__name__, cls=DataError)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise expect(name, f"a table with columns {list(columns)}", f"no column(s) {missing}", cls=DataError)


def size_bin_table(subjects: pd.DataFrame, bins: Sequence[str]) -> pd.DataFrame:
    """Per loss, seed and size bin: pooled recall and total missed instances over the subjects.

    ``recall = sum_s detected_<bin> / sum_s n_target_<bin>`` (pooled over subjects, NaN when the bin has no
    target instance) and ``missed = sum_s missed_<bin>``.

    Args:
        subjects: per-subject test rows with ``label``, ``seed`` and ``n_target_<bin>``, ``detected_<bin>``,
            ``missed_<bin>`` for every bin.
        bins: bin names such as ``"1_10"`` (see :func:`lossbench.metrics.bin_names`).

    Returns:
        Long table with columns ``label``, ``seed``, ``bin``, ``n_target``, ``recall``, ``missed``.

    Raises:
        DataError: missing columns.
    """
    cols = [f"{k}_{b}" for b in bins for k in ("n_target", "detected", "missed")]
    _need(subjects, ["label", "seed", *cols], "subjects")
    sums = subjects.groupby(["label", "seed"], sort=False)[cols].sum()
    rows = []
    for (lab, seed), r in sums.iterrows():
        for b in bins:
            nt = float(r[f"n_target_{b}"])
            rows.append(
                {
                    "label": lab,
                    "seed": seed,
                    "bin": b,
                    "n_target": nt,
                    "recall": float(r[f"detected_{b}"]) / nt if nt > 0 else float("nan"),
                    "missed": float(r[f"missed_{b}"]),
                }
            )
    return pd.DataFrame(rows, columns=["label", "seed", "bin", "n_target", "recall", "missed"])


def _bin_label(name: str) -> str:
    lo, hi = name.split("_")
    return f"[{lo}, {hi})" if hi != "inf" else f">= {lo}"


def plot_size_bins(subjects: pd.DataFrame, bins: Sequence[str], colors: Mapping[str, str], path: str | Path) -> Path:
    """Grouped bars per instance-size bin: instance recall (left) and missed instances (right), one bar per loss.

    Bars are means over seeds of :func:`size_bin_table`; error bars are the standard deviation over seeds.
    Bin labels are target sizes in voxels.

    Args:
        subjects: per-subject test rows (see :func:`size_bin_table`).
        bins: bin names (``lossbench.metrics.bin_names(size_bins)``).
        colors: :func:`loss_colors` mapping.
        path: PNG to write.

    Returns:
        ``path``.
    """
    tab = size_bin_table(subjects, bins)
    labels = _ordered(tab["label"].unique(), colors)
    fig = Figure(figsize=(11, 4.4))
    axes = fig.subplots(1, 2)
    width = 0.8 / max(len(labels), 1)
    x = np.arange(len(bins))
    n_per_bin = tab.groupby(["bin", "label"], sort=False)["n_target"].mean().groupby("bin").max()
    for ax, col, title, ylabel in (
        (axes[0], "recall", "Instance recall by target size", "recall (detected / target instances)"),
        (axes[1], "missed", "Missed instances by target size", "missed instances (sum over test subjects)"),
    ):
        for i, lab in enumerate(labels):
            sub = tab[tab["label"] == lab].groupby("bin", sort=False)[col]
            mean = sub.mean().reindex(bins)
            std = sub.std(ddof=1).reindex(bins) if sub.count().max() > 1 else None
            ax.bar(
                x - 0.4 + width * (i + 0.5),
                mean.to_numpy(dtype=float),
                width,
                color=colors[lab],
                yerr=None if std is None else std.fillna(0).to_numpy(dtype=float),
                capsize=2,
                label=lab,
                edgecolor="white",
                lw=0.5,
            )
        ax.set_xticks(x)
        ax.set_xticklabels([f"{_bin_label(b)}\n(n={int(n_per_bin.get(b, 0))})" for b in bins], fontsize=9)
        ax.set_xlabel("target instance size (voxels); n = target instances")
        ax.set_ylabel(ylabel)
        ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
        ax.grid(axis="y", alpha=0.3)
        if col == "recall":
            ax.set_ylim(0, 1.05)
        else:
            ax.set_ylim(0, max(1.0, ax.get_ylim()[1]))  # counts: from 0, and a visible axis when all are 0
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    handles = [Line2D([], [], color=colors[lab], lw=8) for lab in labels]
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), frameon=False, fontsize=10)
    fig.tight_layout(rect=(0, 0.1 + 0.05 * ((len(labels) - 1) // 4), 1, 1))
    return _save(fig, path)


def plot_rank_heatmap(ranks: pd.DataFrame, path: str | Path, *, title: str = "Dense rank per metric") -> Path:
    """Heatmap of ranks (losses x metrics), annotated with the rank; rank 1 is dark green, the worst red.

    Args:
        ranks: integer (or float, e.g. mean rank) table, one row per loss, one column per metric; NaN cells are
            left blank.
        path: PNG to write.
        title: figure title.

    Returns:
        ``path``.

    Raises:
        DataError: empty table.
    """
    import seaborn as sns

    if not isinstance(ranks, pd.DataFrame) or ranks.empty:
        raise expect("ranks", "a non-empty DataFrame (losses x metrics)", repr(ranks)[:60], cls=DataError)
    data = ranks.astype(float)
    labels = [str(i) for i in data.index]
    h = 2.6 + 0.42 * len(data)  # room for the rotated metric names below
    w = 2.6 + 0.95 * data.shape[1]
    fig = Figure(figsize=(w, h))
    ax = fig.subplots()
    annot = data.map(lambda v: "–" if np.isnan(v) else (f"{v:.0f}" if float(v).is_integer() else f"{v:.2f}"))
    sns.heatmap(
        data,
        ax=ax,
        cmap="RdYlGn_r",
        annot=annot.to_numpy(),
        fmt="",
        cbar_kws={"label": "rank (1 = best)"},
        linewidths=0.6,
        linecolor="white",
        vmin=1,
    )
    ax.set_facecolor("#e6e6e6")  # NaN cells (no value) are not drawn by seaborn: show them grey
    ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
    ax.set_ylabel("")
    ax.set_xlabel("")
    ax.set_yticks(np.arange(len(labels)) + 0.5)
    ax.set_yticklabels(labels)
    ax.set_xticklabels(ax.get_xticklabels(), rotation=35, ha="right", fontsize=9)
    ax.set_yticklabels(ax.get_yticklabels(), rotation=0, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_bootstrap_blobs(
    rank_frequency: pd.DataFrame,
    summary: pd.DataFrame,
    colors: Mapping[str, str],
    path: str | Path,
    *,
    n_resamples: int | None = None,
) -> Path:
    """Blob plot of bootstrap rank distributions (as challengeR's): one column of discs per loss.

    A disc at (loss, rank k) has an area proportional to the fraction of bootstrap resamples that ranked
    the loss k-th; the black bar spans the 2.5 % to 97.5 % quantiles of its rank, the black dot is the
    median and the cross the rank on all subjects. Losses are ordered by their full-data rank.

    Args:
        rank_frequency: losses x ranks (1..n), fractions (``BootstrapRanking.rank_frequency``).
        summary: losses with ``full_rank``, ``median_rank``, ``rank_q025``, ``rank_q975``
            (``BootstrapRanking.summary``).
        colors: :func:`loss_colors` mapping.
        path: PNG to write.
        n_resamples: number of resamples (shown in the title).

    Returns:
        ``path``.
    """
    _need(summary, ("full_rank", "median_rank", "rank_q025", "rank_q975"), "summary")
    order = summary.sort_values(["full_rank", "median_rank"]).index.tolist()
    n_rank = rank_frequency.shape[1]
    fig = Figure(figsize=(max(5.0, 1.1 * len(order) + 2.0), 4.2))
    ax = fig.subplots()
    for i, lab in enumerate(order):
        freq = rank_frequency.loc[lab]
        ks = np.array([int(k) for k in freq.index])
        f = freq.to_numpy(dtype=float)
        keep = f > 0
        ax.scatter(
            np.full(keep.sum(), i),
            ks[keep],
            s=900 * f[keep],
            color=colors.get(lab, "#777777"),
            alpha=0.85,
            edgecolor="black",
            lw=0.4,
            zorder=2,
        )
        s = summary.loc[lab]
        ax.vlines(i, s["rank_q025"], s["rank_q975"], color="black", lw=1.4, zorder=3)
        ax.plot(i, s["median_rank"], "o", color="black", ms=4, zorder=4)
        ax.plot(i + 0.22, s["full_rank"], "x", color="black", ms=7, mew=1.8, zorder=4)
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels(order, rotation=30, ha="right", fontsize=9)
    ax.set_yticks(range(1, n_rank + 1))
    ax.set_ylim(n_rank + 0.7, 0.3)
    ax.set_xlim(-0.7, len(order) - 0.3)
    ax.set_ylabel("rank (1 = best)")
    ax.grid(axis="y", alpha=0.3)
    extra = f", {n_resamples} resamples" if n_resamples else ""
    ax.set_title(f"Bootstrap rank distribution (test subjects{extra})", loc="left", fontsize=11, fontweight="bold")
    legend = [
        Line2D([], [], marker="o", ls="", color="#999999", ms=10, label="share of resamples at that rank"),
        Line2D([], [], color="black", lw=1.4, marker="o", ms=4, label="median and 95% interval"),
        Line2D([], [], marker="x", ls="", color="black", ms=7, mew=1.8, label="rank on all subjects"),
    ]
    ax.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_timing(results: pd.DataFrame, colors: Mapping[str, str], path: str | Path) -> Path:
    """Mean time per optimiser step per loss, with the part spent in the loss (darker) and its share in %.

    Bar = mean over seeds of ``mean_step_s``; the inner dark bar = mean over seeds of
    ``mean_step_s * loss_share`` (loss forward + backward); error bar = standard deviation of the step
    time over seeds.

    Args:
        results: one row per finished cell with ``label``, ``mean_step_s``, ``loss_share``.
        colors: :func:`loss_colors` mapping.
        path: PNG to write.

    Returns:
        ``path``.
    """
    _need(results, ("label", "mean_step_s", "loss_share"), "results")
    df = results[["label", "mean_step_s", "loss_share"]].astype({"mean_step_s": float, "loss_share": float}).copy()
    df["loss_s"] = df["mean_step_s"] * df["loss_share"]
    labels = _ordered(df["label"].unique(), colors)
    g = df.groupby("label")
    step_ms = g["mean_step_s"].mean().reindex(labels) * 1000
    loss_ms = g["loss_s"].mean().reindex(labels) * 1000
    std_ms = g["mean_step_s"].std(ddof=1).reindex(labels) * 1000
    fig = Figure(figsize=(9, 1.3 + 0.5 * len(labels)))
    ax = fig.subplots()
    y = np.arange(len(labels))
    cols = [colors[lab] for lab in labels]
    ax.barh(
        y,
        step_ms.to_numpy(),
        color=cols,
        alpha=0.35,
        xerr=std_ms.fillna(0).to_numpy(),
        capsize=3,
        label="whole step (data, forward, loss, backward, optimiser)",
    )
    ax.barh(y, loss_ms.to_numpy(), color=cols, alpha=1.0, label="loss forward + backward")
    reach = (step_ms + std_ms.fillna(0)).to_numpy(dtype=float)  # the text goes right of the error bar
    top = float(np.nanmax(reach)) if len(labels) and np.isfinite(reach).any() else 1.0
    for yi, s, lo, end in zip(y, step_ms.to_numpy(), loss_ms.to_numpy(), reach):
        if np.isfinite(s) and np.isfinite(lo) and s > 0:
            ax.text(end + 0.015 * top, yi, f"{s:.1f} ms, loss {100 * lo / s:.0f}%", va="center", fontsize=9)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.4 if np.isfinite(top) and top > 0 else 1)
    ax.set_xlabel("time per training step (ms, mean over seeds)")
    ax.set_title("Time per step and the loss's share", loc="left", fontsize=11, fontweight="bold")
    from matplotlib.patches import Patch

    ax.legend(
        handles=[
            Patch(color="#777777", alpha=0.35, label="whole step (data, forward, loss, backward, optimiser)"),
            Patch(color="#777777", label="loss forward + backward"),
        ],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.28 if len(labels) > 2 else -0.5),
        ncol=2,
        fontsize=8,
        frameon=False,
    )
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_verdict_levels(verdicts: pd.DataFrame, metrics: Sequence[str], names: Mapping[str, str],
                        colors: Mapping[str, str], path: str | Path) -> Path:  # fmt: skip
    """Every loss's difference to the baseline per dataset, with its 95% interval: one panel per metric.

    For studies over several datasets (e.g. levels of instance imbalance): x is the dataset in study order, y the
    mean per-seed difference (loss minus baseline) with its Bonferroni-adjusted interval; filled markers are
    ``better``/``worse`` verdicts, open ones ``no evidence``. The dashed line is no difference.
    """
    frame = verdicts[verdicts["metric"].isin(metrics)]
    datasets = list(dict.fromkeys(frame["dataset"]))
    losses = [lab for lab in colors if lab in set(frame["loss"])]
    fig = Figure(figsize=(4.2 * len(metrics), 3.6))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    width = 0.7 / max(len(losses), 1)
    for ax, metric in zip(axes, metrics):
        rows = frame[frame["metric"] == metric]
        for k, loss in enumerate(losses):
            part = rows[rows["loss"] == loss].set_index("dataset").reindex(datasets)
            x = np.arange(len(datasets)) - 0.35 + width * (k + 0.5)
            y = part["difference"].to_numpy(dtype=float)
            lo = y - part["ci_low"].to_numpy(dtype=float)
            hi = part["ci_high"].to_numpy(dtype=float) - y
            ax.errorbar(x, y, yerr=[lo, hi], fmt="none", ecolor=colors[loss], elinewidth=1.2, capsize=2)
            decided = (part["verdict"] != "no evidence").to_numpy()
            ax.scatter(x[decided], y[decided], color=colors[loss], s=28, zorder=3)
            ax.scatter(x[~decided], y[~decided], facecolor="white", edgecolor=colors[loss], s=28, zorder=3)
        ax.axhline(0.0, color="0.4", linestyle="--", linewidth=0.8)
        ax.set_xticks(np.arange(len(datasets)), datasets, rotation=20, ha="right", fontsize=8)
        ax.set_title(f"{names.get(metric, metric)}: loss − baseline", fontsize=9)
    handles = [Line2D([0], [0], marker="o", color=colors[lab], linestyle="", label=lab) for lab in losses]
    handles.append(Line2D([0], [0], marker="o", markerfacecolor="white", markeredgecolor="0.3", linestyle="",
                          label="open: no evidence"))  # fmt: skip
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, -0.08))  # fmt: skip
    fig.tight_layout()
    return _save(fig, path)
