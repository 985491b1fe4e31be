"""Plots the chapters share: attention heatmaps, timing curves, parameter breakdowns.

Every function takes plain tensors/arrays and returns the matplotlib Figure,
so a notebook can show it, save it, or test it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch


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
        size = max(3.0, 0.35 * max(probs.shape) + 1.5)
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
    cell = max(2.2, 0.22 * length + 1.0)
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell * ncols, cell * nrows), squeeze=False)
    for head, ax in enumerate(axes.flat):
        if head >= num_heads:
            ax.axis("off")
            continue
        ax.imshow(probs[head], cmap=cmap, vmin=0.0, vmax=max(float(probs[head].max()), 1e-9))
        ax.set_title(head_titles[head] if head_titles else f"head {head}", fontsize=9)
        show_labels = tokens is not None and length <= 24
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
