"""The images of an out-of-distribution check: another data set's images converted to the model's
channels and size, batch by batch, up to a cap.

Conversion (:func:`fit_images`): greyscale -> RGB repeats the channel, RGB -> greyscale takes the
luma 0.299 R + 0.587 G + 0.114 B, and a different size is resized bilinearly (antialiased when
shrinking), rounded back to uint8.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

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


def image_batches(batches: Iterable[torch.Tensor], channels: int, size: int, max_images: int | None = None,
                  ) -> Iterator[tuple[torch.Tensor, list[str]]]:
    """The uint8 batches of ``batches`` fitted to [B, channels, size, size] (:func:`fit_images`) with
    their conversion notes, at most ``max_images`` images in all (None: every image)."""
    have = 0
    for batch in batches:
        if max_images is not None and have >= max_images:
            return
        batch = batch if max_images is None else batch[: max_images - have]
        have += batch.shape[0]
        yield fit_images(batch, channels, size)


@torch.no_grad()
def bits_per_image(model: nn.Module, batches: Iterable[torch.Tensor], seed: int, max_images: int | None = None,
                   ) -> tuple[torch.Tensor, list[str]]:
    """Bits/dim [N] (float64, CPU) of every image of ``batches`` (uint8, converted to the model's
    channels and size with :func:`fit_images`), dequantised with the noise of ``seed``; and the
    conversion notes. At most ``max_images`` images (None: all)."""
    gen = torch.Generator().manual_seed(int(seed))
    scores, notes = [], []
    for batch, notes in image_batches(batches, int(model.in_channels), int(model.image_size), max_images):
        scores.append(model.bits_per_dim(batch, generator=gen).double().cpu())
    if not scores:
        raise ConfigError("the data set of the out-of-distribution check has no test images")
    return torch.cat(scores), notes
