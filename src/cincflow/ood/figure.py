"""Histograms of OOD scores: one panel per score with the in-distribution set and every OOD set on
shared bins and the threshold at 95 % TPR.
matplotlib's ``Figure`` only (no pyplot: the caller's backend is left alone)."""
from __future__ import annotations

import math
import textwrap

import torch

from .scores import score_label


def draw_histograms(ax, sets: dict[str, torch.Tensor], bins: int = 40) -> None:
    """Density histograms of each named set's finite values on shared bins, labelled with the set's
    name, count, mean (and how many non-finite values are not drawn)."""
    finite = {name: v[torch.isfinite(v)] for name, v in sets.items()}
    drawn = [v for v in finite.values() if len(v)]
    lo = min((float(v.min()) for v in drawn), default=0.0)
    hi = max((float(v.max()) for v in drawn), default=1.0)
    edges = torch.linspace(lo, hi if hi > lo else lo + 1, bins + 1).tolist()
    for name, values in sets.items():
        hidden = len(values) - len(finite[name])
        extra = f", {hidden} non-finite not shown" if hidden else ""
        ax.hist(finite[name].numpy(), bins=edges, alpha=0.55, density=True,
                label=f"{name} (n={len(values)}, mean {float(values.mean()):.3f}{extra})")


def score_figure(values: dict[str, dict[str, torch.Tensor]], in_name: str, columns: list[str],
                 thresholds: dict[str, float], typicality_batch: int | None = None):
    """A ``matplotlib.figure.Figure`` with one panel per score column: histograms of ``values[set][column]``
    for every set (``in_name`` first), the threshold at 95 % TPR ``thresholds[column]`` as a vertical
    line; x axis: the score and its unit (:func:`~cincflow.ood.scores.score_label`), y axis: density."""
    from matplotlib.figure import Figure

    names = [in_name, *(n for n in values if n != in_name)]
    ncols = min(3, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    fig = Figure(figsize=(5.4 * ncols, 4.0 * nrows), dpi=110)
    axes = fig.subplots(nrows, ncols, squeeze=False).flatten()
    for ax, column in zip(axes, columns):
        draw_histograms(ax, {(f"{n} (in)" if n == in_name else n): values[n][column] for n in names})
        t = thresholds[column]
        if math.isfinite(t):
            ax.axvline(t, color="black", linestyle="--", label=f"threshold at 95% TPR: {t:.3f}")
        ax.set_xlabel(score_label(column, typicality_batch) + " (higher = more OOD)", fontsize=8)
        ax.set_ylabel("density", fontsize=8)
        title = f"{column}: {in_name} (in) vs {', '.join(names[1:])}"
        ax.set_title(textwrap.fill(title, 60), fontsize=9)
        ax.legend(fontsize=7)
    for ax in axes[len(columns):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig
