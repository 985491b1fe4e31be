"""Plots the chapters share: attention heatmaps, timing curves, parameter breakdowns.

Every function takes plain tensors/arrays and returns the matplotlib Figure,
so a notebook can show it, save it, or test it.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = [
    "COLUMN_WIDTH",
    "BOOK_STYLE",
    "use_book_style",
    "column_figure",
    "plot_attention",
    "plot_attention_heads",
    "plot_scaling",
    "plot_parameter_breakdown",
    "read_training_log",
    "plot_training_curves",
    "plot_confusion_matrix",
]


# The book's text column is about 700 px wide; matplotlib draws 100 px per inch. A figure
# at most this wide is shown at its own size, so 8-point legend text stays about 11 px tall
# on the page (a 15-inch figure squeezed into the column shrank it to about 5 px).
COLUMN_WIDTH = 7.0  # inches
BOOK_STYLE = {
    "figure.figsize": (COLUMN_WIDTH, 3.6),
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "figure.titlesize": 10,
}


def use_book_style() -> None:
    """Size every figure that follows for the book's column (see BOOK_STYLE)."""
    plt.rcParams.update(BOOK_STYLE)


def column_figure(nrows: int = 1, ncols: int = 1, height: float | None = None, **kwargs):
    """plt.subplots sized for the column: the full width, `height` inches (default 3.6 per row)."""
    height = height if height is not None else 3.6 * nrows
    return plt.subplots(nrows, ncols, figsize=(COLUMN_WIDTH, height), **kwargs)


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=float)


def plot_attention(
    attention_probs,
    tokens: Sequence[str] | None = None,
    key_tokens: Sequence[str] | None = None,
    title: str | None = None,
    ax: plt.Axes | None = None,
    colorbar: bool = True,
    cmap: str = "viridis",
) -> plt.Figure:
    """Heatmap of one head: row = query token, column = the key tokens it attends to.

    attention_probs: (L_q, L_k); each row sums to 1.
    """
    probs = _as_numpy(attention_probs)
    if probs.ndim != 2:
        raise ValueError(f"plot_attention takes one head (L_q, L_k), got shape {probs.shape}.")
    key_tokens = tokens if key_tokens is None else key_tokens
    if ax is None:
        size = min(COLUMN_WIDTH - 1, max(3.0, 0.3 * max(probs.shape) + 1.5))  # fits the column
        fig, ax = plt.subplots(figsize=(size + (1 if colorbar else 0), size))
    else:
        fig = ax.figure
    image = ax.imshow(probs, cmap=cmap, vmin=0.0, vmax=max(float(probs.max()), 1e-9))
    if tokens is not None:
        ax.set_yticks(range(len(tokens)), labels=list(tokens))
    if key_tokens is not None:
        ax.set_xticks(range(len(key_tokens)), labels=list(key_tokens), rotation=90)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    if title:
        ax.set_title(title)
    if colorbar:
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="attention weight")
    return fig


def plot_attention_heads(
    attention_probs,
    tokens: Sequence[str] | None = None,
    ncols: int = 4,
    title: str | None = None,
    head_titles: Sequence[str] | None = None,
    cmap: str = "viridis",
) -> plt.Figure:
    """Every head of one layer side by side. attention_probs: (num_heads, L, L)."""
    probs = _as_numpy(attention_probs)
    if probs.ndim != 3:
        raise ValueError(
            f"plot_attention_heads takes (num_heads, L, L), got shape {probs.shape}; "
            "for a batch, pick one example: probs[0]."
        )
    num_heads, length, _ = probs.shape
    ncols = min(ncols, num_heads)
    nrows = math.ceil(num_heads / ncols)
    cell = min(COLUMN_WIDTH / ncols, max(1.6, 0.22 * length + 1.0))  # the row fits the column
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell * ncols, cell * nrows), squeeze=False)
    for head, ax in enumerate(axes.flat):
        if head >= num_heads:
            ax.axis("off")
            continue
        ax.imshow(probs[head], cmap=cmap, vmin=0.0, vmax=max(float(probs[head].max()), 1e-9))
        ax.set_title(head_titles[head] if head_titles else f"head {head}", fontsize=9)
        show_labels = tokens is not None and length * 0.1 <= cell - 0.6  # 7-point labels fit
        if show_labels:
            ax.set_xticks(range(length), labels=list(tokens), rotation=90, fontsize=7)
            ax.set_yticks(range(length), labels=list(tokens), fontsize=7)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_scaling(
    lengths: Sequence[int],
    series: Mapping[str, Sequence[float]],
    ylabel: str,
    title: str | None = None,
    reference_power: float | None = 2.0,
    ax: plt.Axes | None = None,
) -> plt.Figure:
    """Log-log plot of a cost (time, memory) against sequence length, with an n^p guide line."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4))
    else:
        fig = ax.figure
    lengths = np.asarray(lengths, dtype=float)
    for label, values in series.items():
        ax.loglog(lengths, values, "o-", label=label)
    if reference_power is not None and series:
        first = np.asarray(next(iter(series.values())), dtype=float)
        guide = first[-1] * (lengths / lengths[-1]) ** reference_power
        ax.loglog(lengths, guide, "k--", alpha=0.5, label=f"∝ n^{reference_power:g}")
    # Label exactly the measured lengths; log-axis minor labels would overlap.
    ax.set_xticks(lengths, labels=[f"{n:g}" for n in lengths])
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.set_xlabel("sequence length n")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    return fig


def plot_parameter_breakdown(counts: Mapping[str, int], title: str | None = None) -> plt.Figure:
    """Horizontal bars: how many parameters each part of the model holds."""
    names = list(counts)
    values = np.array([counts[n] for n in names], dtype=float)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.2))
    bars = ax.barh(names, values / 1e6)
    total = values.sum()
    for bar, value in zip(bars, values, strict=True):
        ax.text(
            bar.get_width(),
            bar.get_y() + bar.get_height() / 2,
            f" {value / 1e6:.2f}M ({100 * value / total:.1f}%)",
            va="center",
            fontsize=8,
        )
    ax.invert_yaxis()
    ax.set_xlabel("parameters (millions)")
    ax.set_xlim(0, values.max() / 1e6 * 1.35)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def read_training_log(log_path) -> list[dict[str, float]]:
    """The rows of a training log (log.csv or log.jsonl from bertcourse.training), numbers as floats."""
    path = Path(log_path)
    if path.is_dir():
        path = path / "log.csv"
    if not path.is_file():
        raise FileNotFoundError(f"No training log at {path}: train() writes log.csv in output_dir.")
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    else:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))

    def number(value) -> float:
        try:
            return float(value)
        except (TypeError, ValueError):  # "" or None: not logged in this row
            return math.nan

    return [{key: number(value) for key, value in row.items()} for row in rows]


def plot_training_curves(log_path, title: str | None = None) -> plt.Figure:
    """Loss (training and evaluation) and evaluation accuracies against the step.

    log_path: a run's output directory, its log.csv or its log.jsonl. The
    training loss is averaged over the steps between two log rows, so it is
    smoother than the loss of one batch; evaluation points come from a fixed
    set of masked examples, so they are comparable from step to step.
    """
    rows = read_training_log(log_path)

    def series(key: str) -> tuple[list[float], list[float]]:
        points = [(r["step"], r[key]) for r in rows if not math.isnan(r.get(key, math.nan))]
        return [s for s, _ in points], [v for _, v in points]

    keys = list(dict.fromkeys(key for row in rows for key in row))
    losses = [k for k in keys if k == "loss" or (k.startswith("eval_") and k.endswith("loss"))]
    accuracies = [k for k in keys if k.endswith("accuracy")]
    fig, axes = plt.subplots(1, 2 if accuracies else 1, figsize=(COLUMN_WIDTH, 3.4))
    axes = np.atleast_1d(axes)
    for key in losses:
        steps, values = series(key)
        style = "-" if key == "loss" else "o-"
        label = "training loss" if key == "loss" else key.removeprefix("eval_").replace("_", " ")
        axes[0].plot(steps, values, style, label=label if key == "loss" else f"eval {label}")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("loss (cross-entropy, nats)")
    axes[0].set_title("loss")
    axes[0].legend()
    axes[0].grid(True, alpha=0.3)
    if accuracies:
        for key in accuracies:
            steps, values = series(key)
            label = key.removeprefix("eval_").replace("_", " ")
            axes[1].plot(steps, [100 * v for v in values], "o-", label=label)
        axes[1].set_xlabel("step")
        axes[1].set_ylabel("accuracy (%)")
        axes[1].set_title("evaluation accuracy")
        axes[1].legend()
        axes[1].grid(True, alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_confusion_matrix(
    matrix, label_names: Sequence[str], title: str | None = None, normalize: bool = True
) -> plt.Figure:
    """Rows: the true class; columns: the predicted class. Cells show the count (and row share).

    With normalize, the colour is the share of the row (the recall of each
    class on the diagonal), so a rare class is as visible as a frequent one.
    """
    counts = np.asarray(matrix, dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = min(COLUMN_WIDTH - 1, max(3.5, 0.55 * len(label_names) + 2))
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(shares if normalize else counts, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, label="share of the true class" if normalize else "examples")
    ticks = range(len(label_names))
    ax.set_xticks(ticks, label_names, rotation=45, ha="right")
    ax.set_yticks(ticks, label_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    threshold = (shares if normalize else counts).max() / 2
    for i in ticks:
        for j in ticks:
            value = shares[i, j] if normalize else counts[i, j]
            text = (
                f"{int(counts[i, j])}\n{shares[i, j]:.0%}" if normalize else f"{int(counts[i, j])}"
            )
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=8,
                color="white" if value > threshold else "black",
            )
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
