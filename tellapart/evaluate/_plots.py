"""Evaluation charts as PNG bytes, drawn with matplotlib.

Every function builds its own :class:`matplotlib.figure.Figure` (never ``pyplot``), so there is
no global figure state, no GUI backend and nothing to close: the charts are safe to draw from
threads, tests and headless servers alike.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from tellapart._files import leaderboard_key

__all__ = [
    "plot_confusion_matrix",
    "plot_leaderboard",
    "plot_learning_curves",
    "plot_reliability",
]

_DPI = 110
_TRAIN_COLOUR = "#1f77b4"
_VAL_COLOUR = "#d62728"
# Above this many classes the per-cell counts would be unreadable, so only colours are drawn.
_MAX_ANNOTATED_CLASSES = 25
_LABEL_CHARS = 32  # a leaderboard bar's label wraps past this many characters


def _png_bytes(fig: Figure) -> bytes:
    """Render ``fig`` to PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
    return buffer.getvalue()


def plot_confusion_matrix(
    cm: Sequence[Sequence[int]] | np.ndarray, class_names: Sequence[str]
) -> bytes:
    """Confusion matrix as a heat map, rows = true class, columns = predicted class.

    Cells are coloured by the fraction of their row (the recall view, so rare classes stay
    visible) and labelled with raw counts while there are few enough classes to read them.

    Args:
        cm: K×K counts, rows = true class.
        class_names: The K class names.

    Returns:
        PNG image bytes.

    Raises:
        ValueError: If ``cm`` is not square or does not match ``class_names``.
    """
    counts = np.asarray(cm, dtype=np.int64)
    k = len(class_names)
    if counts.shape != (k, k):
        raise ValueError(f"confusion matrix shape {counts.shape} does not match {k} class names")
    row_totals = counts.sum(axis=1, keepdims=True)
    row_fraction = np.divide(
        counts, row_totals, out=np.zeros(counts.shape, dtype=np.float64), where=row_totals != 0
    )

    side = min(18.0, max(4.5, 0.55 * k + 2.5))  # inches: readable cells, bounded page size
    fig = Figure(figsize=(side + 1.2, side))
    ax = fig.add_subplot()
    image = ax.imshow(row_fraction, cmap="Blues", vmin=0.0, vmax=1.0)
    colourbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    colourbar.ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    colourbar.set_label("share of true class")

    ticks = np.arange(k)
    label_size = max(4.0, min(10.0, 400.0 / k))  # points: shrink labels so 100+ classes still fit
    names = [str(n) for n in class_names]
    ax.set_xticks(ticks, labels=names, rotation=45, ha="right", fontsize=label_size)
    ax.set_yticks(ticks, labels=names, fontsize=label_size)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= _MAX_ANNOTATED_CLASSES:
        for (i, j), value in np.ndenumerate(counts):
            colour = "white" if row_fraction[i, j] > 0.5 else "black"
            ax.text(j, i, str(value), ha="center", va="center", color=colour, fontsize=9)
    return _png_bytes(fig)


def plot_reliability(bins: Sequence[Mapping[str, Any]]) -> bytes:
    """Reliability diagram: accuracy against confidence per bin, plus the bin counts.

    Args:
        bins: The ``calibration_bins`` table from
            :func:`~tellapart.evaluate.classification_metrics`: dicts with ``lo``, ``hi``,
            ``count``, ``confidence`` and ``accuracy`` (``None`` for empty bins).

    Returns:
        PNG image bytes.
    """
    fig = Figure(figsize=(5.5, 6.0))
    grid = fig.add_gridspec(2, 1, height_ratios=(3, 1), hspace=0.08)
    ax = fig.add_subplot(grid[0])
    ax_counts = fig.add_subplot(grid[1], sharex=ax)

    filled = [b for b in bins if b.get("count") and b.get("accuracy") is not None]
    lefts = np.array([b["lo"] for b in bins], dtype=np.float64)
    widths = np.array([b["hi"] - b["lo"] for b in bins], dtype=np.float64)
    counts = np.array([b.get("count") or 0 for b in bins], dtype=np.float64)

    ax.plot(
        [0, 1],
        [0, 1],
        linestyle="--",
        color="grey",
        linewidth=1,
        zorder=2.5,
        label="perfect calibration",
    )
    if filled:
        f_lefts = np.array([b["lo"] for b in filled])
        f_widths = np.array([b["hi"] - b["lo"] for b in filled])
        accuracy = np.array([b["accuracy"] for b in filled])
        confidence = np.array([b["confidence"] for b in filled])
        ax.bar(
            f_lefts,
            accuracy,
            width=f_widths,
            align="edge",
            color=_TRAIN_COLOUR,
            alpha=0.85,
            edgecolor="white",
            label="accuracy",
        )
        # A bar top below its black tick is over-confidence; the gaps are what the ECE averages.
        ax.scatter(
            f_lefts + f_widths / 2,
            confidence,
            marker="_",
            s=160,
            linewidths=2.5,
            color="black",
            zorder=3,
            label="mean confidence",
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_title("Reliability diagram")
    ax.legend(loc="upper left", frameon=False)
    ax.tick_params(labelbottom=False)

    if counts.size:
        ax_counts.bar(lefts, counts, width=widths, align="edge", color="#7f7f7f", edgecolor="white")
    ax_counts.set_xlabel("confidence of the predicted class")
    ax_counts.set_ylabel("samples")
    ax_counts.xaxis.set_major_formatter(PercentFormatter(1.0))
    return _png_bytes(fig)


def _series(
    history: Sequence[Mapping[str, Any]], x_key: str, y_key: str
) -> tuple[list[float], list[float]]:
    """The ``(x, y)`` points of ``history`` where both keys hold finite numbers."""
    xs: list[float] = []
    ys: list[float] = []
    for row in history:
        x, y = row.get(x_key), row.get(y_key)
        if _is_number(x) and _is_number(y):
            xs.append(float(x))
            ys.append(float(y))
    return xs, ys


def _is_number(value: object) -> TypeGuard[float | np.number[Any]]:
    """Whether ``value`` is a finite real number (bools excluded)."""
    return (
        isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def plot_learning_curves(history: Sequence[Mapping[str, Any]]) -> bytes:
    """Train vs validation loss and accuracy, by epoch (top row) and by wall time (bottom row).

    Args:
        history: One dict per epoch with any of ``epoch``, ``wall_time`` (seconds since the
            start), ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``; missing or ``None``
            values are skipped, and a panel with no data says so.

    Returns:
        PNG image bytes.
    """
    fig = Figure(figsize=(11, 7.5), layout="constrained")
    axes = fig.subplots(2, 2)
    panels = (
        ("epoch", "loss", "epoch"),
        ("epoch", "acc", "epoch"),
        ("wall_time", "loss", "wall time (s)"),
        ("wall_time", "acc", "wall time (s)"),
    )
    for ax, (x_key, metric, x_label) in zip(axes.flat, panels, strict=True):
        plotted = False
        for split, colour in (("train", _TRAIN_COLOUR), ("val", _VAL_COLOUR)):
            xs, ys = _series(history, x_key, f"{split}_{metric}")
            if xs:
                label = "train" if split == "train" else "validation"
                ax.plot(
                    xs,
                    ys,
                    marker="o" if len(xs) < 30 else None,
                    markersize=3,
                    color=colour,
                    label=label,
                )
                plotted = True
        name = "loss" if metric == "loss" else "accuracy"
        ax.set_title(f"{name} by {x_label.split(' (')[0]}")
        ax.set_xlabel(x_label)
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
        if metric == "acc":
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        if plotted:
            ax.legend(frameon=False)
        else:
            ax.text(
                0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey"
            )
    return _png_bytes(fig)


def plot_leaderboard(
    rows: Sequence[Mapping[str, Any]],
    *,
    label_key: str = "name",
    value_key: str = "accuracy",
) -> bytes:
    """Horizontal bar chart of one score per leaderboard row, best at the top.

    Rows are ordered by the leaderboard's one sort key (higher score, then lower validation
    loss, fewer training seconds, the name), the order the report's table shows them in.

    A row with a ``[lo, hi]`` list under ``f"{value_key}_ci"`` gets an error bar.

    Args:
        rows: Leaderboard rows; rows without a numeric ``value_key`` are left out.
        label_key: Key of each bar's label (the row number when absent).
        value_key: Key of the score to plot.

    Returns:
        PNG image bytes.
    """
    scored = sorted(
        ((i, row) for i, row in enumerate(rows) if _is_number(row.get(value_key))),
        key=lambda p: leaderboard_key(p[1], value_key),
    )
    points = [
        # long run names wrap (at hyphens first) instead of squeezing the bars
        (textwrap.fill(str(row.get(label_key, f"#{i + 1}")), _LABEL_CHARS), float(row[value_key]), row.get(f"{value_key}_ci"))
        for i, row in reversed(scored)  # barh draws bottom-up: the best last puts it on top
    ]
    lines = sum(max(1, p[0].count("\n") + 1) for p in points)
    fig = Figure(figsize=(7, max(1.8, 0.35 * len(points) + 0.17 * (lines - len(points)) + 1.0)), layout="constrained")
    ax = fig.add_subplot()
    if not points:
        ax.text(
            0.5,
            0.5,
            f"no rows with a numeric {value_key!r}",
            ha="center",
            va="center",
            transform=ax.transAxes,
            color="grey",
        )
        ax.set_axis_off()
        return _png_bytes(fig)
    labels = [p[0] for p in points]
    values = np.array([p[1] for p in points])
    positions = np.arange(len(points))
    ax.barh(positions, values, height=0.6, color=_TRAIN_COLOUR)
    intervals = [p[2] for p in points]
    if all(isinstance(ci, (list, tuple)) and len(ci) == 2 for ci in intervals):
        bounds = np.array(intervals, dtype=np.float64)  # shape (rows, 2): lo, hi
        lower = values - bounds[:, 0]
        upper = bounds[:, 1] - values
        ax.errorbar(
            values,
            positions,
            xerr=np.clip([lower, upper], 0, None),
            fmt="none",
            ecolor="black",
            capsize=3,
            linewidth=1,
        )
    ax.set_yticks(positions, labels=labels)
    ax.set_xlabel(value_key)
    ax.grid(True, axis="x", alpha=0.3)
    if value_key.endswith(("acc", "accuracy")) and values.max() <= 1.0:
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    return _png_bytes(fig)
