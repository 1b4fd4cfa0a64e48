"""Sampling with an accuracy check on the exact inverses of the invertible k x k convolutions.

Every CInC / Emerging layer can record, after each inverse, the relative residual
max_b |forward(x)_b - y_b| / |y_b| of its solution. :func:`sample_with_check` turns that on for one
sampling pass and reports the worst value; above ``tolerance`` it warns: the kernels are badly
conditioned (off-centre taps large relative to the centre's diagonal), the exact inverse amplifies
rounding errors geometrically across the image with every algorithm, and the samples are not what the
model defines (PAPER.md section 1).
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .layers.causal import RESIDUAL_TOLERANCE, check_inverse_mode
from .numerics import worst


def invertible_convs(model: nn.Module) -> list[nn.Module]:
    """The layers with an iterative exact inverse (CInC, Emerging): those with ``track_residual``."""
    return [m for m in model.modules() if hasattr(m, "track_residual")]


def set_inverse_mode(model: nn.Module, mode: str) -> None:
    """Use the inverse algorithm ``mode`` in every CInC / Emerging layer of ``model``."""
    check_inverse_mode(mode)
    for layer in invertible_convs(model):
        layer.inverse_mode = mode


@contextmanager
def tracking_residuals(model: nn.Module) -> Iterator[list[nn.Module]]:
    """Record ``last_residual`` in every invertible conv of ``model`` inside the block."""
    layers = invertible_convs(model)
    previous = [layer.track_residual for layer in layers]
    for layer in layers:
        layer.track_residual, layer.last_residual = True, None
    try:
        yield layers
    finally:
        for layer, flag in zip(layers, previous):
            layer.track_residual = flag


def worst_residual(layers: list[nn.Module]) -> float:
    """Largest ``last_residual`` among ``layers``, NaN (non-finite values) counting as the worst;
    0.0 when none ran an inverse."""
    residuals = [layer.last_residual for layer in layers if layer.last_residual is not None]
    return worst(residuals)


def warn_if_inaccurate(residual: float, tolerance: float = RESIDUAL_TOLERANCE) -> None:
    """RuntimeWarning when ``residual`` exceeds ``tolerance`` or is not a number."""
    if not residual <= tolerance:
        warnings.warn(
            f"inverse of an invertible convolution is inaccurate: worst relative residual "
            f"|forward(x) - y| / |y| = {residual:.2e} > {tolerance:g}. Its kernel is badly conditioned "
            "(off-centre taps large relative to the centre's diagonal); every exact inverse algorithm "
            "amplifies rounding errors then, so these samples are not exact (PAPER.md section 1).",
            RuntimeWarning,
            stacklevel=3,
        )


@torch.no_grad()
def sample_with_check(
    model: nn.Module,
    n: int,
    temperature: float = 1.0,
    noise: list[torch.Tensor] | None = None,
    tolerance: float = RESIDUAL_TOLERANCE,
) -> tuple[torch.Tensor, float]:
    """``model.sample(n, temperature, noise)`` plus the worst relative residual of the invertible convs'
    inverses in that pass; warns (RuntimeWarning) when it exceeds ``tolerance``."""
    with tracking_residuals(model) as layers:
        samples = model.sample(n, temperature, noise)
        residual = worst_residual(layers)
    warn_if_inaccurate(residual, tolerance)
    return samples, residual
