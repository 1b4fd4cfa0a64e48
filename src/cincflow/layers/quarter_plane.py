"""What CInC and Emerging share: a convolution whose Jacobian is a product of quarter-plane
triangular factors, each with the same diagonal block at every pixel.

Subclasses provide ``log_abs_det_per_pixel()`` (log|det| of the diagonal blocks, summed over the
factors), ``forward`` and ``_solve(y)`` (the exact inverse with ``self.inverse_mode``). This base adds
log|det| = H * W * log_abs_det_per_pixel(), the selectable inverse algorithm, and residual tracking:
with ``track_residual`` set, every inverse records ``last_residual`` = max over the batch of
|forward(x) - y| / |y| (large when the kernel is badly conditioned: the exact inverse then amplifies
rounding errors, PAPER.md section 1). Subclasses have a ``bias`` [C]: the inverse checks y against it.
"""
from __future__ import annotations

import torch
from torch import nn

from ..checks import check_images
from .causal import check_inverse_mode, relative_residual


class QuarterPlaneConv(nn.Module):
    def __init__(self, inverse: str):
        super().__init__()
        self.inverse_mode = inverse
        self.track_residual = False
        self.last_residual: float | None = None

    @property
    def inverse_mode(self) -> str:
        return self._inverse_mode

    @inverse_mode.setter
    def inverse_mode(self, mode: str) -> None:
        check_inverse_mode(mode)
        self._inverse_mode = mode

    def log_abs_det_per_pixel(self) -> torch.Tensor:
        raise NotImplementedError

    def _solve(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _logdet(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return (h * w * self.log_abs_det_per_pixel()).expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_images(type(self).__name__, y, self.bias.shape[0])
        x = self._solve(y)
        if self.track_residual:
            self.last_residual = relative_residual(self.forward(x)[0], y)
        return x, -self._logdet(y)
