"""Between uint8 images and model space (Glow, docs/method.md section 5).

preprocess: x in {0..255} -> reduce to n_bits (floor(x / 2^(8 - n_bits))) -> x / 2^n_bits - 0.5
(+ uniform dequantisation noise U(0, 1 / 2^n_bits)), so model-space values lie in [-0.5, 0.5).
postprocess: the inverse, back to uint8 (bins clamped to the valid range).
bits/dim = -(log p(x) - D log 2^n_bits) / (D ln 2), D = C * H * W.
"""
from __future__ import annotations

import math

import torch

from .numerics import nonfinite_count


def check_bits(n_bits: int) -> None:
    """A ValueError unless ``n_bits`` is an integer from 1 to 8."""
    if isinstance(n_bits, bool) or not isinstance(n_bits, int) or not 1 <= n_bits <= 8:
        raise ValueError(f"n_bits must be an integer from 1 to 8, got {n_bits!r}")


def preprocess(
    x: torch.Tensor,
    n_bits: int = 8,
    dequantize: bool = True,
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """uint8 [B, C, H, W] -> model space, floats centred at 0. The dequantisation noise comes from
    ``generator`` when given (a ``torch.Generator``: the same noise for the same seed, shape and
    dtype; drawn on the generator's device and moved to ``x``'s, so a CPU generator gives the same
    noise on every device), else from torch's global generator."""
    if x.dtype != torch.uint8:
        raise TypeError(f"preprocess expects uint8 images (0..255), got {x.dtype}: convert with .to(torch.uint8)")
    check_bits(n_bits)
    n_bins = 2**n_bits
    x = torch.div(x, 2 ** (8 - n_bits), rounding_mode="floor").to(dtype)
    x = x / n_bins - 0.5
    if dequantize:
        x = x + noise(x, generator) / n_bins
    return x


def noise(like: torch.Tensor, generator: torch.Generator | None = None, normal: bool = False) -> torch.Tensor:
    """U[0, 1) (or, ``normal``, N(0, 1)) noise of ``like``'s shape, dtype and device: from ``generator``
    when given (drawn on its device, then moved, so a CPU generator gives the same noise on every
    device), else from torch's global generator."""
    if generator is None:
        return torch.randn_like(like) if normal else torch.rand_like(like)
    draw = torch.randn if normal else torch.rand
    return draw(like.shape, generator=generator, dtype=like.dtype, device=generator.device).to(like.device)


def dequantized(x: torch.Tensor, n_bits: int, seed: int, like: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`preprocess` with the dequantisation noise of ``seed`` (a private CPU generator: the same
    noise for the same seed, shape and dtype), in the dtype and on the device of ``like``."""
    dtype = torch.float32 if like is None else like.dtype
    x = x if like is None else x.to(like.device)
    return preprocess(x, n_bits, dtype=dtype, generator=torch.Generator().manual_seed(int(seed)))


def postprocess(x: torch.Tensor, n_bits: int = 8, nonfinite: str = "raise") -> torch.Tensor:
    """Model space -> uint8 [B, C, H, W] (the bin of each value, scaled back to 0..255). A NaN or inf
    value (an inaccurate inverse) has no pixel value: ``nonfinite="raise"`` (default) refuses it with a
    ValueError, ``"clamp"`` draws NaN as 0 and +-inf as the extreme bins (the sample grids do, and count them)."""
    check_bits(n_bits)
    if nonfinite not in ("raise", "clamp"):
        raise ValueError(f"nonfinite must be 'raise' or 'clamp', got {nonfinite!r}")
    if nonfinite == "raise":
        bad = nonfinite_count(x)
        if bad:
            raise ValueError(f"postprocess got {bad} non-finite values (of {x.numel()}): these samples have no pixel "
                             f"values; check them with cincflow.sample_with_check, or draw them anyway with "
                             f"postprocess(x, n_bits, nonfinite='clamp')")
    n_bins = 2**n_bits
    bins = torch.floor((x + 0.5) * n_bins).nan_to_num(0.0).clamp(0, n_bins - 1)
    return (bins * 2 ** (8 - n_bits)).to(torch.uint8)


def bits_per_dim(log_prob: torch.Tensor, num_dims: int, n_bits: int = 8) -> torch.Tensor:
    """Discrete bits/dim from the continuous log-density (nats) of dequantised model-space images."""
    return -(log_prob - num_dims * n_bits * math.log(2.0)) / (num_dims * math.log(2.0))
