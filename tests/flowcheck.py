"""Shared checks for flow layers: randomised weights and brute-force Jacobians (float64)."""
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
