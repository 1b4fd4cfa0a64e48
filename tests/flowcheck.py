"""Shared checks for flow layers: randomised weights, brute-force Jacobians (float64), and the adapter
that lets :class:`~cincflow.layers.split.Split` run through the same checks."""
from __future__ import annotations

import torch
from torch.autograd.functional import jacobian


@torch.no_grad()
def randomize(module: torch.nn.Module, x: torch.Tensor, scale: float = 0.1, seed: int = 0) -> torch.nn.Module:
    """Initialise every ActNorm on ``x`` (one forward), then perturb every parameter by N(0, scale^2),
    so that zero-initialised layers (conditioner outputs, priors, biases) do real work."""
    module(x)
    gen = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)
    return module


class SplitAsFlow(torch.nn.Module):
    """Split in the layers' interface, as the bijection its prior defines: x = (kept, z) ->
    (kept, eps) with eps = (z - mean(kept)) / std(kept), log|det| = -sum log std; the inverse is
    ``split.inverse(kept, eps=eps)``, the sampling path. So log p(z | kept) = log N(eps; 0, I) + log|det|."""

    def __init__(self, split: torch.nn.Module):
        super().__init__()
        self.split = split

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kept, z, _ = self.split(x)
        mean, log_std = self.split.prior(kept).chunk(2, dim=1)
        return torch.cat([kept, (z - mean) * torch.exp(-log_std)], dim=1), -log_std.flatten(1).sum(1)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kept, eps = y.chunk(2, dim=1)
        _, log_std = self.split.prior(kept).chunk(2, dim=1)
        return self.split.inverse(kept, None, 1.0, eps), log_std.flatten(1).sum(1)


def jacobian_matrix(fn, x: torch.Tensor) -> torch.Tensor:
    """Jacobian of a single example: fn maps [1, *shape] -> tensor; returns [out_dim, in_dim]."""
    shape = x.shape
    return jacobian(lambda v: fn(v.view(1, *shape)).flatten(), x.flatten(), vectorize=True)


def brute_force_logdet(layer, x: torch.Tensor) -> torch.Tensor:
    """log|det d layer(x)[0] / dx| per example, [B], from the dense Jacobian and slogdet."""
    out = []
    for xb in x:
        sign, logabs = torch.linalg.slogdet(jacobian_matrix(lambda v: layer(v)[0], xb))
        assert sign != 0, "the Jacobian is singular"
        out.append(logabs)
    return torch.stack(out)


def raster_jacobian(fn, x: torch.Tensor) -> torch.Tensor:
    """Jacobian of one example [C, H, W] with pixels in raster order and channels inside each pixel."""
    c, h, w = x.shape
    perm = torch.arange(c * h * w).view(c, h, w).permute(1, 2, 0).flatten()  # raster index -> CHW index
    return jacobian_matrix(fn, x)[perm][:, perm]
