"""Sampling with an accuracy guard on the exact inverses of the invertible k x k convolutions.

Every CInC / Emerging layer can record, after each inverse, a rigorous bound on the relative forward
error of its solution, cond_inf * relative residual (:mod:`cincflow.layers.solvers`;
docs/method.md section 1). The residual alone cannot see an ill-conditioned layer: triangular
substitution is backward stable, so its residual stays tiny while the solution is far from the true
one. :func:`sample_with_check` turns the tracking on for one sampling pass, reports the worst layer
(:class:`AccuracyReport`) and, when its bound exceeds ``tolerance``, warns with
:class:`InverseAccuracyWarning`. With ``float64_fallback`` a layer whose float32 solution misses the
tolerance is solved again in float64 (named in the report) instead.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .layers.quarter_plane import QuarterPlaneConv
from .numerics import nan_as_worst
from .layers.solvers import ACCURACY_TOLERANCE, Solver, make_solver


class InverseAccuracyWarning(RuntimeWarning):
    """An inverse's forward-error bound exceeds the tolerance: the samples may not be what the model defines."""


@dataclass(frozen=True)
class AccuracyReport:
    """The worst layer of one or more sampling passes: its forward-error bound and name, the worst
    relative residual of any layer (infinity norm) and the layers solved in float64 by the fallback."""

    bound: float = 0.0
    layer: str | None = None
    residual: float = 0.0
    float64_layers: tuple[str, ...] = ()

    def worst(self, other: AccuracyReport) -> AccuracyReport:
        """The two reports combined (NaN counts as the worst)."""
        top = self if nan_as_worst(self.bound) >= nan_as_worst(other.bound) else other
        return AccuracyReport(
            top.bound, top.layer, max(self.residual, other.residual, key=nan_as_worst),
            tuple(sorted({*self.float64_layers, *other.float64_layers})),
        )

    def __str__(self) -> str:
        text = f"forward-error bound {self.bound:.2e} (layer {self.layer}), relative residual {self.residual:.2e}"
        return text + (f"; solved in float64: {', '.join(self.float64_layers)}" if self.float64_layers else "")


def invertible_convs(model: nn.Module) -> list[QuarterPlaneConv]:
    """The layers with an iterative exact inverse (CInC, Emerging)."""
    return [m for m in model.modules() if isinstance(m, QuarterPlaneConv)]


def set_solver(model: nn.Module, solver: str | Solver) -> None:
    """Use ``solver`` (a name: one new solver object per layer; or one object for all) in every CInC /
    Emerging layer of ``model``."""
    make_solver(solver)  # a bad name fails before any layer changes
    for layer in invertible_convs(model):
        layer.solver = solver


@contextmanager
def tracking_accuracy(model: nn.Module, fallback_tolerance: float | None = None) -> Iterator[list[tuple[str, QuarterPlaneConv]]]:
    """Record ``last_accuracy`` in every invertible conv of ``model`` inside the block (with the float64
    fallback above ``fallback_tolerance`` when given); yields the (name, layer) pairs."""
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, QuarterPlaneConv)]
    previous = [(layer.track_accuracy, layer.fallback_tolerance) for _, layer in layers]
    for _, layer in layers:
        layer.track_accuracy, layer.fallback_tolerance, layer.last_accuracy = True, fallback_tolerance, None
    try:
        yield layers
    finally:
        for (_, layer), (flag, tolerance) in zip(layers, previous):
            layer.track_accuracy, layer.fallback_tolerance = flag, tolerance


def accuracy_report(layers: list[tuple[str, QuarterPlaneConv]]) -> AccuracyReport:
    """The worst ``last_accuracy`` among the (name, layer) pairs; all zero when none ran an inverse."""
    report = AccuracyReport()
    for name, layer in layers:
        acc = layer.last_accuracy
        if acc is not None:
            float64 = (name,) if acc.float64_fallback else ()
            report = report.worst(AccuracyReport(acc.bound, name, acc.residual, float64))
    return report


def warn_if_inaccurate(report: AccuracyReport, tolerance: float = ACCURACY_TOLERANCE) -> None:
    """InverseAccuracyWarning when the worst bound exceeds ``tolerance`` or is not a number."""
    if not report.bound <= tolerance:
        warnings.warn(
            f"inverse of an invertible convolution may be inaccurate: {report} > tolerance {tolerance:g}. "
            "The layer is badly conditioned (off-centre taps large relative to the centre's diagonal), so every "
            "exact solver amplifies rounding errors and these samples may not be what the model defines "
            "(docs/method.md section 1); float64_fallback=True solves such layers in float64.",
            InverseAccuracyWarning,
            stacklevel=3,
        )


@torch.no_grad()
def sample_with_check(
    model: nn.Module,
    n: int,
    temperature: float = 1.0,
    noise: list[torch.Tensor] | None = None,
    tolerance: float = ACCURACY_TOLERANCE,
    float64_fallback: bool = False,
) -> tuple[torch.Tensor, AccuracyReport]:
    """``model.sample(n, temperature, noise)`` and the :class:`AccuracyReport` of its inverses; warns
    (:class:`InverseAccuracyWarning`) when the worst layer's forward-error bound exceeds ``tolerance``.
    ``float64_fallback``: a layer whose bound exceeds ``tolerance`` is solved again in float64."""
    with tracking_accuracy(model, tolerance if float64_fallback else None) as layers:
        samples = model.sample(n, temperature, noise)
        report = accuracy_report(layers)
    warn_if_inaccurate(report, tolerance)
    return samples, report
