"""Additive and affine coupling (Glow), [B, C, H, W] with C even.

x = (x_a, x_b) split by channel halves; x_a passes through, h = NN(x_a) conditions the update of x_b.
- additive: y_b = x_b + h, log|det| = 0.
- affine: (t, s) = (h[:, 0::2], h[:, 1::2]), y_b = (x_b + t) * sigmoid(s + 2),
  log|det| = sum log sigmoid(s + 2) (the official Glow/CInC form; the scale lies in (0, 1)).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_images, check_positive_int
from .conditioner import Conditioner


def affine_update(x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """y = (x + t) * sigmoid(s + 2) with (t, s) interleaved in h; returns (y, log|det| [B])."""
    log_scale = F.logsigmoid(h[:, 1::2] + 2.0)
    return (x + h[:, 0::2]) * log_scale.exp(), log_scale.flatten(1).sum(1)


def affine_update_inverse(y: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`affine_update` at the same h; returns (x, log|det dx/dy| [B])."""
    log_scale = F.logsigmoid(h[:, 1::2] + 2.0)
    return y * torch.exp(-log_scale) - h[:, 0::2], -log_scale.flatten(1).sum(1)


def _check_even(channels: int) -> None:
    check_positive_int("coupling channels", channels)
    if channels % 2:
        raise ValueError(f"coupling needs an even channel count, got {channels}")


class AffineCoupling(nn.Module):
    def __init__(self, channels: int, width: int = 512, actnorm: bool = True):
        super().__init__()
        _check_even(channels)
        self.channels = channels
        self.nn = Conditioner(channels // 2, channels, width, actnorm)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_images(type(self).__name__, x, self.channels)
        xa, xb = x.chunk(2, dim=1)
        yb, logdet = affine_update(xb, self.nn(xa))
        return torch.cat([xa, yb], dim=1), logdet

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_images(type(self).__name__, y, self.channels)
        ya, yb = y.chunk(2, dim=1)
        xb, logdet = affine_update_inverse(yb, self.nn(ya))
        return torch.cat([ya, xb], dim=1), logdet


class AdditiveCoupling(nn.Module):
    def __init__(self, channels: int, width: int = 512, actnorm: bool = True):
        super().__init__()
        _check_even(channels)
        self.channels = channels
        self.nn = Conditioner(channels // 2, channels // 2, width, actnorm)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_images(type(self).__name__, x, self.channels)
        xa, xb = x.chunk(2, dim=1)
        return torch.cat([xa, xb + self.nn(xa)], dim=1), x.new_zeros(x.shape[0])

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_images(type(self).__name__, y, self.channels)
        ya, yb = y.chunk(2, dim=1)
        return torch.cat([ya, yb - self.nn(ya)], dim=1), y.new_zeros(y.shape[0])
