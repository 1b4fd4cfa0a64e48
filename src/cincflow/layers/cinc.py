"""CInC: the characterizable invertible k x k convolution (Nagar et al. 2021).

y = conv(pad_top_left(x, k-1), W) + b, [B, C, H, W] -> [B, C, H, W]. Output (i, j) depends on inputs
(i', j') with i' <= i, j' <= j only; the Jacobian in raster order is block lower-triangular with the
centre tap K_c on the diagonal, so log|det| = H * W * sum(log diag K_c). K_c is lower-triangular with
diagonal exp(log_diag) (or 1 with ``fixed_diagonal``, FInC-style), hence invertible for every
parameter value. Learnable weights: k^2 C^2 - C(C-1)/2 (minus C with a fixed diagonal), plus C bias.

The inverse is exact with the algorithm ``inverse`` (see :mod:`cincflow.layers.causal`; its
precomputation is cached per weight state); residual tracking as in
:class:`~cincflow.layers.quarter_plane.QuarterPlaneConv`.
"""
from __future__ import annotations

import torch
from torch import nn

from ..checks import check_images
from .causal import DEFAULT_INVERSE, CausalInverse, causal_conv
from .causal_weight import CausalWeight
from .quarter_plane import QuarterPlaneConv


class CInCConv(QuarterPlaneConv):
    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        fixed_diagonal: bool = False,
        init_std: float = 0.01,
        inverse: str = DEFAULT_INVERSE,
    ):
        super().__init__(inverse)
        self.kernel = CausalWeight(channels, kernel_size, fixed_diagonal, init_std)
        self.bias = nn.Parameter(torch.zeros(channels))
        self._inverse = CausalInverse()

    def log_abs_det_per_pixel(self) -> torch.Tensor:
        return self.kernel.log_abs_det_per_pixel()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_images("CInCConv", x, self.bias.shape[0])
        return causal_conv(x, self.kernel(), self.bias), self._logdet(x)

    def _solve(self, y: torch.Tensor) -> torch.Tensor:
        return self._inverse(y, self.kernel(), self.bias, self.inverse_mode)
