"""Split with a learned Gaussian prior (Glow's split2d), [B, C, H, W] -> kept [B, C/2, H, W] and
latent z [B, C/2, H, W].

(mean, log_std) = ZeroConv(kept) (zero-initialised, so the prior starts as N(0, 1));
log p(z | kept) = sum log N(z; mean, exp(log_std)^2). The inverse concatenates kept and z, drawing
z = mean + exp(log_std) * T * eps when no z is given.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..checks import check_images, check_positive_int
from .conditioner import ZeroConv2d


def gaussian_log_prob(z: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """sum over all but the batch dimension of log N(z; mean, exp(log_std)^2); [B]."""
    lp = -0.5 * (math.log(2 * math.pi) + 2.0 * log_std + (z - mean) ** 2 * torch.exp(-2.0 * log_std))
    return lp.flatten(1).sum(1)


def gaussian_sample(
    mean: torch.Tensor, log_std: torch.Tensor, temperature: float, eps: torch.Tensor | None = None
) -> torch.Tensor:
    """mean + exp(log_std) * temperature * eps, eps ~ N(0, I) unless given."""
    eps = torch.randn_like(mean) if eps is None else eps.to(mean)
    return mean + torch.exp(log_std) * temperature * eps


class Split(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.channels = check_positive_int("split channels", channels)
        if channels % 2:
            raise ValueError(f"split needs an even channel count, got {channels}")
        self.prior = ZeroConv2d(channels // 2, channels)

    def _prior(self, kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.prior(kept).chunk(2, dim=1)
        return mean, log_std

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (kept, z, log p(z | kept) [B])."""
        check_images("Split", x, self.channels)
        kept, z = x.chunk(2, dim=1)
        return kept, z, gaussian_log_prob(z, *self._prior(kept))

    def inverse(
        self, kept: torch.Tensor, z: torch.Tensor | None = None, temperature: float = 1.0, eps: torch.Tensor | None = None
    ) -> torch.Tensor:
        check_images("Split.inverse (kept)", kept, self.channels // 2)
        for name, t in (("z", z), ("eps", eps)):
            if t is not None and tuple(t.shape) != tuple(kept.shape):
                raise ValueError(f"Split.inverse: {name} must have the shape of kept, {list(kept.shape)}, "
                                 f"got {list(t.shape)}")
        if z is None:
            z = gaussian_sample(*self._prior(kept), temperature, eps)
        return torch.cat([kept, z], dim=1)
