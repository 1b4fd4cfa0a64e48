"""The coupling conditioner network (Glow): conv3x3 -> ActNorm -> ReLU -> conv1x1 -> ActNorm ->
ReLU -> zero-initialised conv3x3, [B, C_in, H, W] -> [B, C_out, H, W] ("same" padding)."""
from __future__ import annotations

import torch
from torch import nn

from .actnorm import ActNormFeatures


class ZeroConv2d(nn.Module):
    """3x3 conv initialised to zero, output scaled by exp(3 * logs) per channel (Glow's conv2d_zeros)."""

    def __init__(self, in_channels: int, out_channels: int, logscale_factor: float = 3.0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.logs = nn.Parameter(torch.zeros(1, out_channels, 1, 1))
        self.logscale_factor = logscale_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * torch.exp(self.logs * self.logscale_factor)


class Conditioner(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, width: int, actnorm: bool = True):
        def norm():
            return ActNormFeatures(width) if actnorm else nn.Identity()

        super().__init__(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=not actnorm),
            norm(),
            nn.ReLU(),
            nn.Conv2d(width, width, 1, bias=not actnorm),
            norm(),
            nn.ReLU(),
            ZeroConv2d(width, out_channels),
        )
