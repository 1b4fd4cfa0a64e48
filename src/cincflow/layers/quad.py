"""Quad coupling (CInC Flow): a generalised Feistel structure on four channel blocks, [B, C, H, W]
with C % 4 == 0.

x = (X1, X2, X3, X4), blocks of C/4 channels; (+) is the affine update of
:func:`~cincflow.layers.coupling.affine_update`:
    Y4 = X4                      (pass-through)
    Y3 = X3 (+) f1(X4)
    Y2 = X2 (+) f2(X3, X4)
    Y1 = X1 (+) f3(X2, X3, X4)
Every conditioner reads only input blocks, so the forward evaluates f1, f2, f3 independently. The
inverse must run them in sequence: X4 = Y4, then X3, then X2, then X1. (The published code's reverse
pass read the pass-through block from the wrong end; the tests check exact round trips.)
The Jacobian is block-triangular: log|det| = sum of the three updates' log-scales.
"""
from __future__ import annotations

import torch
from torch import nn

from ..checks import check_images, check_positive_int
from .conditioner import Conditioner
from .coupling import affine_update, affine_update_inverse


class QuadCoupling(nn.Module):
    def __init__(self, channels: int, width: int = 512, actnorm: bool = True):
        super().__init__()
        check_positive_int("quad coupling channels", channels)
        if channels % 4:
            raise ValueError(
                f"quad coupling splits channels into 4 equal blocks, but {channels} is not divisible by 4: "
                "use coupling=affine or additive, or a channel count that is a multiple of 4"
            )
        self.channels, q = channels, channels // 4
        self.f1 = Conditioner(q, 2 * q, width, actnorm)
        self.f2 = Conditioner(2 * q, 2 * q, width, actnorm)
        self.f3 = Conditioner(3 * q, 2 * q, width, actnorm)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_images("QuadCoupling", x, self.channels)
        x1, x2, x3, x4 = x.chunk(4, dim=1)
        y3, ld3 = affine_update(x3, self.f1(x4))
        y2, ld2 = affine_update(x2, self.f2(torch.cat([x3, x4], dim=1)))
        y1, ld1 = affine_update(x1, self.f3(torch.cat([x2, x3, x4], dim=1)))
        return torch.cat([y1, y2, y3, x4], dim=1), ld1 + ld2 + ld3

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_images("QuadCoupling", y, self.channels)
        y1, y2, y3, x4 = y.chunk(4, dim=1)
        x3, ld3 = affine_update_inverse(y3, self.f1(x4))
        x2, ld2 = affine_update_inverse(y2, self.f2(torch.cat([x3, x4], dim=1)))
        x1, ld1 = affine_update_inverse(y1, self.f3(torch.cat([x2, x3, x4], dim=1)))
        return torch.cat([x1, x2, x3, x4], dim=1), ld1 + ld2 + ld3
