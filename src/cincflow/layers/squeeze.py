"""Squeeze: 2 x 2 space-to-depth, [B, C, H, W] -> [B, 4C, H/2, W/2] (a permutation, log|det| = 0).

Output channel c * 4 + 2 * di + dj at (i, j) holds input channel c at (2i + di, 2j + dj), as in Glow.
"""
from __future__ import annotations

import torch
from torch import nn

from ..checks import check_images


class Squeeze(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_images("Squeeze", x)
        b, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"squeeze needs an even height and width, got {h} x {w}")
        y = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
        return y.reshape(b, 4 * c, h // 2, w // 2), x.new_zeros(b)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_images("Squeeze.inverse", y)
        b, c, h, w = y.shape
        if c % 4:
            raise ValueError(f"Squeeze.inverse needs a channel count divisible by 4, got {c}")
        x = y.view(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(b, c // 4, 2 * h, 2 * w), y.new_zeros(b)
