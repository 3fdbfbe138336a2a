"""The report's figures, as PNG bytes (matplotlib, Agg backend, no timestamps: reproducible)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False})


def to_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def _interval(table: pd.DataFrame, low: str, high: str, fallback: tuple[str, str]):
    if low in table and table[low].notna().all():
        return table[low].to_numpy(float), table[high].to_numpy(float)
    return table[fallback[0]].to_numpy(float), table[fallback[1]].to_numpy(float)


def _point_and_interval(ax, value, y, lo, hi, color: str) -> None:
    """A point and its interval as a segment: a percentile interval need not contain the
    point estimate (e.g. under a prior), so it cannot be drawn as error lengths."""
    ax.hlines(y, lo, hi, color=color)
    ax.plot(value, y, "o", color=color)


def scores_plot(scores: pd.DataFrame, title: str, level: float) -> bytes:
    """BT scores (bootstrap interval, else Wald) beside Thurstone JOD, best on top."""
    table = scores.sort_values("bt_score")
    y = np.arange(len(table))
    fig, axes = plt.subplots(1, 2, figsize=(9, 0.45 * len(table) + 1.4), sharey=True)
    for ax, (column, low, high, fallback, label) in zip(
        axes,
        [
            (
                "bt_score",
                "boot_low",
                "boot_high",
                ("wald_low", "wald_high"),
                "Bradley-Terry score (logit)",
            ),
            ("jod", "jod_low", "jod_high", ("jod_low", "jod_high"), "Thurstone (JOD; 1 JOD = 75%)"),
        ],
        strict=True,
    ):
        value = table[column].to_numpy(float)
        lo, hi = _interval(table, low, high, fallback)
        _point_and_interval(ax, value, y, lo, hi, "#1f4e79")
        ax.axvline(0, color="#999", lw=0.8)
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, table["variant"])
    fig.suptitle(f"{title} ({level:.0%} intervals)")
    return to_png(fig)


def matrix_plot(matrix: pd.DataFrame, title: str, *, fmt: str, cmap: str, vmin=None, vmax=None,
                label: str = "") -> bytes:  # fmt: skip
    """A square heatmap with the value written in each cell (rows over columns)."""
    values = matrix.to_numpy(float)
    k = len(matrix)
    fig, ax = plt.subplots(figsize=(0.6 * k + 2.6, 0.5 * k + 1.8))
    image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_xticks(range(k), matrix.columns, rotation=45, ha="right")
    ax.set_yticks(range(k), matrix.index)
    if k <= 25:
        for i in range(k):
            for j in range(k):
                if np.isfinite(values[i, j]):
                    ax.text(j, i, format(values[i, j], fmt), ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, shrink=0.8, label=label)
    ax.set_title(title)
    return to_png(fig)


def mos_plot(mos: pd.DataFrame, level: float) -> bytes:
    """MOS per variant and criterion, with the t-interval (and the bootstrap one if present)."""
    criteria = sorted(mos["criterion"].unique())
    fig, axes = plt.subplots(
        1,
        len(criteria),
        figsize=(4.2 * len(criteria), 0.4 * mos["variant"].nunique() + 1.6),
        squeeze=False,
    )
    for ax, criterion in zip(axes[0], criteria, strict=True):
        part = mos[mos["criterion"] == criterion].sort_values("mean")
        y = np.arange(len(part))
        lo, hi = _interval(part, "boot_low", "boot_high", ("ci_low", "ci_high"))
        m = part["mean"].to_numpy(float)
        _point_and_interval(ax, m, y, lo, hi, "#7a3b00")
        ax.set_yticks(y, part["variant"])
        ax.set_xlabel("mean opinion score")
        ax.set_title(criterion)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"MOS ({level:.0%} intervals)")
    return to_png(fig)


def metric_scatter(human: pd.Series, means: pd.DataFrame, title: str) -> bytes:
    """Human score against each metric's variant mean, one panel per metric."""
    metrics = list(means.columns)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        common = [v for v in human.index if v in means.index and np.isfinite(means.loc[v, metric])]
        x = means.loc[common, metric].to_numpy(float)
        y = human[common].to_numpy(float)
        ax.scatter(x, y, color="#1f4e79")
        for xi, yi, name in zip(x, y, common, strict=True):
            ax.annotate(name, (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(metric)
        ax.set_ylabel("human score")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return to_png(fig)


def qc_plot(participants: pd.DataFrame, min_rt_ms: float, outlier: tuple[str, str, float]) -> bytes:
    """Four panels: median response time, the leave-one-out outlier statistic (``outlier``:
    column, label, threshold), left-choice rate, circular triads."""
    fig, axes = plt.subplots(2, 2, figsize=(9, 6))
    excluded = participants["excluded"].to_numpy(bool)
    colours = np.where(excluded, "#c0392b", "#1f4e79")
    panels = [
        ("median_rt_ms", "median response time (ms)", min_rt_ms),
        outlier,
        ("left_rate", "share of left choices", 0.5),
        ("circular_fraction", "circular triads (0 consistent, 0.25 random)", 0.25),
    ]
    for ax, (column, label, line) in zip(axes.ravel(), panels, strict=True):
        if column not in participants or participants[column].notna().sum() == 0:
            ax.text(0.5, 0.5, "not available", ha="center", va="center", transform=ax.transAxes)
            ax.set_title(label)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        values = participants[column].to_numpy(float)
        order = np.argsort(np.nan_to_num(values, nan=np.inf), kind="stable")
        ax.scatter(np.arange(len(values)), values[order], c=colours[order], s=14)
        ax.axhline(line, color="#999", lw=0.8, ls="--")
        ax.set_title(label)
        ax.set_xlabel("participants (sorted; red = excluded)")
    fig.tight_layout()
    return to_png(fig)
