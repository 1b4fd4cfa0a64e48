"""Quad coupling (CInC Flow): a generalised Feistel structure on four channel blocks, [B, C, H, W]
with C % 4 == 0.

x = (X1, X2, X3, X4), blocks of C/4 channels; (+) is the affine update of
:class:`~cincflow.layers.coupling.AffineCoupling`:
    Y4 = X4                      (pass-through)
    Y3 = X3 (+) f1(X4)
    Y2 = X2 (+) f2(X3, X4)
    Y1 = X1 (+) f3(X2, X3, X4)
Every conditioner reads only input blocks, so the forward evaluates f1, f2, f3 independently. The
inverse must run them in sequence: X4 = Y4, then X3, then X2, then X1 (the order of ``updates``;
the published code's reverse pass read the pass-through block from the wrong end; the tests check
exact round trips). The Jacobian is block-triangular: log|det| = sum of the three updates' log-scales.
"""
from __future__ import annotations

from .coupling import AffineCoupling, Update

QUAD: tuple[Update, ...] = (("f1", 2, (3,)), ("f2", 1, (2, 3)), ("f3", 0, (1, 2, 3)))


class QuadCoupling(AffineCoupling):
    blocks = 4
    updates = QUAD
