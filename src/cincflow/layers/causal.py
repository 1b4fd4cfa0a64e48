"""Quarter-plane causal convolutions and their exact inverses.

A causal k x k convolution pads its input with k-1 zero rows on the top and k-1 zero columns on the
left (nothing bottom/right), so output pixel (i, j) reads only input pixels (i', j') with i' <= i and
j' <= j. With weight W of shape [C, C, k, k] the tap W[:, :, k-1, k-1] (the "centre", C x C)
multiplies x[:, :, i, j] itself. If the centre is lower-triangular, the convolution matrix in raster
order (channels inside pixels) is lower-triangular with the centre on every diagonal block, so
det = det(centre) ** (H * W).

The anti-causal convolution (padding bottom/right, centre = top-left tap, upper-triangular) is the
causal one conjugated by a flip of rows, columns and channels: flip(anticausal(x, W)) =
causal_conv(flip(x), W.flip(0, 1, 2, 3)).
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F


def causal_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = conv(pad_top_left(x), weight) + bias; [B, C, H, W] -> [B, C, H, W]."""
    k = weight.shape[-1]
    return F.conv2d(F.pad(x, (k - 1, 0, k - 1, 0)), weight, bias)


def flip(x: torch.Tensor) -> torch.Tensor:
    """Reverse channels, rows and columns of [B, C, H, W] (an involution)."""
    return x.flip(1, 2, 3)


@lru_cache(maxsize=64)
def _diagonals(h: int, w: int, k: int, device: torch.device):
    """For each anti-diagonal d = i + j: pixel rows i, cols j, and the k x k patch indices into the
    top-left padded image (rows i + p, cols j + q, p, q in 0..k-1)."""
    out = []
    taps = torch.arange(k, device=device)
    for d in range(h + w - 1):
        i = torch.arange(max(0, d - w + 1), min(d, h - 1) + 1, device=device)
        j = d - i
        rows = (i[:, None, None] + taps[None, :, None]).expand(-1, k, k)
        cols = (j[:, None, None] + taps[None, None, :]).expand(-1, k, k)
        out.append((i, j, rows, cols))
    return tuple(out)


def causal_conv_inverse_wavefront(
    y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Solve causal_conv(x, weight, bias) = y for x (centre tap lower-triangular, non-singular).

    Pixels on one anti-diagonal i + j = d depend only on earlier diagonals, so the solve takes
    H + W - 1 sequential steps, each one batched over all pixels of the diagonal, the batch and the
    channels: gather the k x k causal patches, subtract the off-centre taps' contribution, and solve
    the triangular C x C centre system.
    """
    b, c, h, w = y.shape
    k = weight.shape[-1]
    centre = weight[:, :, k - 1, k - 1]
    off = weight.clone()
    off[:, :, k - 1, k - 1] = 0
    if bias is not None:
        y = y - bias.view(1, c, 1, 1)
    xp = y.new_zeros(b, c, h + k - 1, w + k - 1)
    for i, j, rows, cols in _diagonals(h, w, k, y.device):
        patch = xp[:, :, rows, cols]  # [B, C, N, k, k]
        r = y[:, :, i, j] - torch.einsum("bcnpq,ocpq->bon", patch, off)  # [B, C, N]
        n = i.numel()
        sol = torch.linalg.solve_triangular(centre, r.transpose(0, 1).reshape(c, b * n), upper=False)
        xp[:, :, i + k - 1, j + k - 1] = sol.reshape(c, b, n).transpose(0, 1)
    return xp[:, :, k - 1 :, k - 1 :]


INVERSE_MODES = ("wavefront",)


def causal_conv_inverse(
    y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, mode: str = "wavefront"
) -> torch.Tensor:
    """Exact inverse of :func:`causal_conv` with the algorithm named by ``mode``."""
    check_inverse_mode(mode)
    return causal_conv_inverse_wavefront(y, weight, bias)


def check_inverse_mode(mode: str) -> None:
    if mode not in INVERSE_MODES:
        raise ValueError(f"unknown inverse mode {mode!r}: choose one of {', '.join(INVERSE_MODES)}")
