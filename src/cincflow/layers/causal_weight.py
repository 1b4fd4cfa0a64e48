"""A k x k causal convolution weight whose centre tap is triangular with a positive diagonal.

weight_eff[:, :, k-1, k-1] = strictly-lower part of the free centre + diag(exp(log_diag)) (or the
identity diagonal when ``fixed_diagonal``); the other k*k - 1 taps are free. The masked entries of
the stored tensor (upper triangle and diagonal of the centre) are not parameters: ``weight_mask``
marks the free ones and :func:`cincflow.params.count_parameters` counts only those.

A CausalWeight is one triangular factor of a layer's matrix: :meth:`solve` inverts its causal
convolution with a solver of :mod:`cincflow.layers.solvers`, and :meth:`condition_number` gives the
factor's exact cond_inf on an H x W grid, both from precomputations cached per weight state.
"""
from __future__ import annotations

import torch
from torch import nn

from ..checks import check_positive_int
from .solvers import Solver, SolveCache, condition_number


class CausalWeight(nn.Module):
    def __init__(self, channels: int, kernel_size: int, fixed_diagonal: bool = False, init_std: float = 0.01):
        super().__init__()
        c = check_positive_int("channels", channels)
        k = check_positive_int("kernel_size", kernel_size, minimum=2)  # k = 1 has no causal taps
        self.channels, self.kernel_size, self.fixed_diagonal = c, k, fixed_diagonal
        mask = torch.ones(c, c, k, k)
        mask[:, :, k - 1, k - 1] = torch.tril(torch.ones(c, c), diagonal=-1)
        self.register_buffer("weight_mask", mask)
        self.weight = nn.Parameter(torch.randn(c, c, k, k) * init_std * mask)
        if fixed_diagonal:
            self.register_buffer("log_diag", torch.zeros(c))
        else:
            self.log_diag = nn.Parameter(torch.zeros(c))
        self.cache = SolveCache()

    def forward(self) -> torch.Tensor:
        """The effective weight [C, C, k, k]; its centre tap is lower-triangular with diag > 0."""
        k = self.kernel_size
        centre = torch.zeros_like(self.weight)
        centre[:, :, k - 1, k - 1] = torch.diag(self.log_diag.exp())
        return self.weight * self.weight_mask + centre

    def log_abs_det_per_pixel(self) -> torch.Tensor:
        """log|det centre| = sum(log_diag): the log-determinant contributed by each pixel."""
        return self.log_diag.sum()

    def solve(self, y: torch.Tensor, solver: Solver, bias: torch.Tensor | None = None) -> torch.Tensor:
        """x with causal_conv(x, self(), bias) = y, [B, C, H, W], in y's dtype."""
        weight = self()
        return solver.solve(y, weight, bias, self.cache.entries(weight))

    @torch.no_grad()
    def condition_number(self, h: int, w: int) -> float:
        """cond_inf = ||M||_inf ||M^-1||_inf of this factor's causal convolution on an h x w grid."""
        weight = self()
        return condition_number(weight, h, w, self.cache.entries(weight))
