"""Out-of-distribution check of a likelihood model (Nalisnick et al. 2019): the bits/dim of every
image of the model's test set and of another data set, their summary statistics and the AUROC of
bits/dim as an OOD score, and both histograms in one picture.

The other data set is converted to the model's images explicitly (:func:`fit_images`): greyscale ->
RGB repeats the channel, RGB -> greyscale takes the luma 0.299 R + 0.587 G + 0.114 B, and a
different size is resized bilinearly (antialiased when shrinking), rounded back to uint8.
"""
from __future__ import annotations

import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601


def fit_images(x: torch.Tensor, channels: int, size: int) -> tuple[torch.Tensor, list[str]]:
    """uint8 [B, C, H, W] -> uint8 [B, channels, size, size], and what was done (one line each)."""
    notes, (c, h, w) = [], x.shape[1:]
    if c != channels:
        if c == 1:
            x = x.expand(-1, channels, -1, -1)
            notes.append(f"greyscale -> {channels} channels (the channel repeated)")
        elif c == 3 and channels == 1:
            weights = torch.tensor(LUMA, dtype=torch.float32).view(1, 3, 1, 1)
            x = (x.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
            notes.append("RGB -> greyscale (luma 0.299 R + 0.587 G + 0.114 B)")
        else:
            raise ConfigError(f"cannot convert {c}-channel images to the model's {channels} channels: "
                              "choose ood_data with 1 or 3 channels")
    if (h, w) != (size, size):
        y = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=size < max(h, w))
        x = y.round().clamp(0, 255).to(torch.uint8)
        notes.append(f"{h}x{w} -> {size}x{size} (bilinear{', antialiased' if size < max(h, w) else ''})")
    return x.contiguous(), notes


@torch.no_grad()
def bits_per_image(model: nn.Module, batches: Iterable[torch.Tensor], seed: int, max_images: int | None = None,
                   ) -> tuple[torch.Tensor, list[str]]:
    """Bits/dim [N] (float64, CPU) of every image of ``batches`` (uint8, converted to the model's
    channels and size with :func:`fit_images`), dequantised with the noise of ``seed``; and the
    conversion notes. At most ``max_images`` images (None: all)."""
    gen = torch.Generator().manual_seed(int(seed))
    scores, notes, have = [], [], 0
    for batch in batches:
        if max_images is not None and have >= max_images:
            break
        batch = batch if max_images is None else batch[: max_images - have]
        batch, notes = fit_images(batch, int(model.in_channels), int(model.image_size))
        scores.append(model.bits_per_dim(batch, generator=gen).double().cpu())
        have += batch.shape[0]
    if not scores:
        raise ConfigError("the data set of the out-of-distribution check has no test images")
    return torch.cat(scores), notes


def auroc(in_scores: torch.Tensor, out_scores: torch.Tensor) -> float:
    """AUROC of the score as a detector of the ``out`` images = P(out > in) + P(out = in) / 2
    (Mann-Whitney: average ranks for ties); 0.5 is chance, < 0.5 means the out images score lower."""
    both = torch.cat([in_scores, out_scores]).double()
    _, inverse, counts = torch.unique(both, return_inverse=True, return_counts=True)
    counts = counts.double()
    first = torch.cumsum(counts, 0) - counts  # 0-based rank of each distinct value's first copy
    ranks = (first + (counts + 1) / 2.0)[inverse]  # average 1-based rank
    n_in, n_out = len(in_scores), len(out_scores)
    return float((ranks[n_in:].sum() - n_out * (n_out + 1) / 2) / (n_in * n_out))


def summary(bpd: torch.Tensor) -> dict[str, float]:
    """Count, mean, its standard error, standard deviation, median, 5 % and 95 % quantiles, min, max."""
    q = torch.quantile(bpd, torch.tensor([0.05, 0.5, 0.95], dtype=bpd.dtype))
    std = float(bpd.std()) if len(bpd) > 1 else 0.0
    return {"n": len(bpd), "mean": float(bpd.mean()), "se": std / len(bpd) ** 0.5, "std": std,
            "median": float(q[1]), "q05": float(q[0]), "q95": float(q[2]),
            "min": float(bpd.min()), "max": float(bpd.max())}


def histogram_png(sets: dict[str, torch.Tensor], path: Path, title: str) -> None:
    """Histograms of bits/dim of each named set on shared bins, in one PNG."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    lo = min(float(v.min()) for v in sets.values())
    hi = max(float(v.max()) for v in sets.values())
    bins = torch.linspace(lo, hi if hi > lo else lo + 1, 41).tolist()
    fig = Figure(figsize=(6, 3.6), dpi=120)
    ax = fig.subplots()
    for name, values in sets.items():
        ax.hist(values.numpy(), bins=bins, alpha=0.55, density=True, label=f"{name} (n={len(values)}, mean {values.mean():.3f})")
    ax.set_xlabel("bits/dim (lower = more likely under the model)")
    ax.set_ylabel("density")
    ax.set_title("\n".join(textwrap.fill(line, 90) for line in title.split("\n")), fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def ood_report(in_bpd: torch.Tensor, ood_bpd: torch.Tensor, in_name: str, ood_name: str,
               notes: list[str]) -> dict[str, Any]:
    """The record of ``ood.json``: both summaries, the conversion of the OOD images, the AUROC."""
    return {
        "in_distribution": {"data": in_name, **summary(in_bpd)},
        "ood": {"data": ood_name, "conversion": notes or ["none: same channels and size as the model"],
                **summary(ood_bpd)},
        "auroc": auroc(in_bpd, ood_bpd),
        "auroc_meaning": "P(an OOD image has higher bits/dim than a test image): 1 = separated by likelihood, "
                         "0.5 = chance, below 0.5 = the OOD images look MORE likely to the model",
    }
