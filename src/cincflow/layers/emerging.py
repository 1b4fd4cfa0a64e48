"""Emerging convolution (Hoogeboom et al. 2019): two masked 2 x 2 convolutions, one anti-causal and
one causal, together a 3 x 3 receptive field, then a bias.

y = causal(anticausal(x; W1); W2) + b, [B, C, H, W] -> [B, C, H, W].
- anticausal: support in the bottom-right 2 x 2 quadrant, padded bottom/right, upper-triangular
  centre (the top-left tap). It is stored in causal form: anticausal(x) = flip(causal(flip(x), W1'))
  with flip reversing channels, rows and columns, so W1' = flip_weight(W1) has a lower-triangular
  centre; applied as one bottom/right-padded convolution with that weight flipped back.
- causal: support in the top-left 2 x 2 quadrant, padded top/left, lower-triangular centre.
Both centres have diagonal exp(log_diag): log|det| = H * W * (sum log_diag1 + sum log_diag2).
Inverse: undo the bias, solve the causal factor, then the anti-causal one in flipped coordinates;
each factor with the solver ``solver`` of :mod:`cincflow.layers.solvers` (precomputation cached per
factor and weight state). ``condition_number(h, w)`` (the product of the factors' exact ones; each
factor's own: ``layer.causal.condition_number(h, w)``, ``layer.anticausal.condition_number(h, w)``)
and accuracy tracking as in :class:`~cincflow.layers.quarter_plane.QuarterPlaneConv`. The flow step
puts a Glow 1x1 convolution in front.
"""
from __future__ import annotations

import torch
from torch import nn

from .causal import anticausal_conv, causal_conv, flip
from .causal_weight import CausalWeight
from .quarter_plane import QuarterPlaneConv
from .solvers import DEFAULT_SOLVER, Solver


class EmergingConv(QuarterPlaneConv):
    def __init__(self, channels: int, init_std: float = 0.01, solver: str | Solver = DEFAULT_SOLVER):
        super().__init__(solver)
        self.anticausal = CausalWeight(channels, 2, init_std=init_std)  # stored flipped (causal form)
        self.causal = CausalWeight(channels, 2, init_std=init_std)
        self.bias = nn.Parameter(torch.zeros(channels))

    def factors(self) -> list[CausalWeight]:
        return [self.anticausal, self.causal]

    def log_abs_det_per_pixel(self) -> torch.Tensor:
        return self.anticausal.log_abs_det_per_pixel() + self.causal.log_abs_det_per_pixel()

    def _map(self, x: torch.Tensor) -> torch.Tensor:
        h = anticausal_conv(x, self.anticausal().to(x.dtype))
        return causal_conv(h, self.causal().to(x.dtype), self.bias.to(x.dtype))

    def _solve(self, y: torch.Tensor) -> torch.Tensor:
        h = self.causal.solve(y, self.solver, self.bias)
        return flip(self.anticausal.solve(flip(h), self.solver))
