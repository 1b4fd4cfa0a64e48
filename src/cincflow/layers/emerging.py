"""Emerging convolution (Hoogeboom et al. 2019): two masked 2 x 2 convolutions, one anti-causal and
one causal, together a 3 x 3 receptive field, then a bias.

y = causal(anticausal(x; W1); W2) + b, [B, C, H, W] -> [B, C, H, W].
- anticausal: support in the bottom-right 2 x 2 quadrant, padded bottom/right, upper-triangular
  centre (the top-left tap). It is stored in causal form: anticausal(x) = flip(causal(flip(x), W1'))
  with flip reversing channels, rows and columns, so W1' = flip_weight(W1) has a lower-triangular
  centre.
- causal: support in the top-left 2 x 2 quadrant, padded top/left, lower-triangular centre.
Both centres have diagonal exp(log_diag): log|det| = H * W * (sum log_diag1 + sum log_diag2).
Inverse: undo the bias, solve the causal factor, then the anti-causal one in flipped coordinates;
each factor with the exact algorithm ``inverse`` of :mod:`cincflow.layers.causal` (precomputation
cached per factor and weight state). ``track_residual`` / ``last_residual`` as in
:class:`~cincflow.layers.cinc.CInCConv`. The flow step puts a Glow 1x1 convolution in front.
"""
from __future__ import annotations

import torch
from torch import nn

from ..checks import check_images
from .causal import DEFAULT_INVERSE, CausalInverse, causal_conv, flip
from .causal_weight import CausalWeight
from .quarter_plane import QuarterPlaneConv


class EmergingConv(QuarterPlaneConv):
    def __init__(self, channels: int, init_std: float = 0.01, inverse: str = DEFAULT_INVERSE):
        super().__init__(inverse)
        self.anticausal = CausalWeight(channels, 2, init_std=init_std)  # stored flipped (causal form)
        self.causal = CausalWeight(channels, 2, init_std=init_std)
        self.bias = nn.Parameter(torch.zeros(channels))
        self._solve_causal = CausalInverse()
        self._solve_anticausal = CausalInverse()

    def log_abs_det_per_pixel(self) -> torch.Tensor:
        return self.anticausal.log_abs_det_per_pixel() + self.causal.log_abs_det_per_pixel()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_images("EmergingConv", x, self.bias.shape[0])
        h = flip(causal_conv(flip(x), self.anticausal()))
        return causal_conv(h, self.causal(), self.bias), self._logdet(x)

    def _solve(self, y: torch.Tensor) -> torch.Tensor:
        h = self._solve_causal(y, self.causal(), self.bias, self.inverse_mode)
        return flip(self._solve_anticausal(flip(h), self.anticausal(), None, self.inverse_mode))
