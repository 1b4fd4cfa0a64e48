"""CInC: the characterizable invertible k x k convolution (Nagar et al. 2021).

y = conv(pad_top_left(x, k-1), W) + b, [B, C, H, W] -> [B, C, H, W]. Output (i, j) depends on inputs
(i', j') with i' <= i, j' <= j only; the Jacobian in raster order is block lower-triangular with the
centre tap K_c on the diagonal, so log|det| = H * W * sum(log diag K_c). K_c is lower-triangular with
diagonal exp(log_diag) (or 1 with ``fixed_diagonal``, FInC-style), hence invertible for every
parameter value. Learnable weights: k^2 C^2 - C(C-1)/2 (minus C with a fixed diagonal), plus C bias.

The inverse is exact with the algorithm ``inverse`` (see :mod:`cincflow.layers.causal`; its
precomputation is cached per weight state). With ``track_residual`` set, every inverse also records
``last_residual`` = max over the batch of |forward(x) - y| / |y| (large when K_c is badly conditioned
relative to the other taps: the exact inverse then amplifies rounding errors, PAPER.md section 1).
"""
from __future__ import annotations

import torch
from torch import nn

from .causal import DEFAULT_INVERSE, CausalInverse, causal_conv, check_inverse_mode, relative_residual
from .causal_weight import CausalWeight


class CInCConv(nn.Module):
    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        fixed_diagonal: bool = False,
        init_std: float = 0.01,
        inverse: str = DEFAULT_INVERSE,
    ):
        super().__init__()
        self.inverse_mode = inverse
        self.kernel = CausalWeight(channels, kernel_size, fixed_diagonal, init_std)
        self.bias = nn.Parameter(torch.zeros(channels))
        self.track_residual = False
        self.last_residual: float | None = None
        self._solve = CausalInverse()

    @property
    def inverse_mode(self) -> str:
        return self._inverse_mode

    @inverse_mode.setter
    def inverse_mode(self, mode: str) -> None:
        check_inverse_mode(mode)
        self._inverse_mode = mode

    def _logdet(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return (h * w * self.kernel.log_abs_det_per_pixel()).expand(x.shape[0])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return causal_conv(x, self.kernel(), self.bias), self._logdet(x)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._solve(y, self.kernel(), self.bias, self.inverse_mode)
        if self.track_residual:
            self.last_residual = relative_residual(self.forward(x)[0], y)
        return x, -self._logdet(y)
