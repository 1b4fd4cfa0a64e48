"""Argument checks of the Python API: one ``ValueError``/``TypeError`` naming the expected shape,
dtype or range, raised before any computation.

:func:`check_images` runs in every layer's ``forward``/``inverse`` (a handful of attribute reads,
cheap on the hot path); :func:`check_positive_int` in the layer constructors.
"""
from __future__ import annotations

import math

import torch


def check_positive_int(name: str, value, minimum: int = 1) -> int:
    """``value`` as an int; ValueError unless it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_temperature(name: str, value) -> float:
    """``value`` as a float; ValueError unless it is a finite number >= 0 (0: the mode of each latent)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0 (1: the model's distribution, below 1: sharper), "
                         f"got {value!r}")
    return float(value)


def check_images(layer: str, x, channels: int | None = None) -> None:
    """``x`` must be a floating-point tensor [B, C, H, W] with C = ``channels`` (when given).

    TypeError for a non-tensor or an integer/bool tensor (images are preprocessed to floats first:
    :func:`cincflow.pixels.preprocess`, or :meth:`cincflow.Glow.bits_per_dim` for uint8 images),
    ValueError for another rank or channel count."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{layer} expects a tensor [B, C, H, W], got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{layer} expects a floating-point tensor [B, C, H, W], got dtype {x.dtype}: preprocess uint8 images "
            f"first (cincflow.preprocess) or use Glow.bits_per_dim, which does"
        )
    if x.dim() != 4 or (channels is not None and x.shape[1] != channels):
        want = f"[B, {channels}, H, W]" if channels is not None else "[B, C, H, W]"
        raise ValueError(f"{layer} expects a tensor of shape {want}, got {list(x.shape)}")
