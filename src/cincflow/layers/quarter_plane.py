"""What CInC and Emerging share: a convolution whose matrix is a product of quarter-plane triangular
factors (:class:`~cincflow.layers.causal_weight.CausalWeight`), each with the same diagonal block at
every pixel, followed by a bias.

Subclasses provide ``factors()`` (their CausalWeights), ``log_abs_det_per_pixel()`` (log|det| of the
diagonal blocks, summed over the factors), ``_map(x)`` (the forward map, weights used in x's dtype)
and ``_solve(y)`` (its exact inverse with ``self.solver``, in y's dtype). This base adds
log|det| = H * W * log_abs_det_per_pixel(), the solver (a name or a
:class:`~cincflow.layers.solvers.Solver`), the condition number, and accuracy tracking: with
``track_accuracy`` set, every inverse records ``last_accuracy`` (cond_inf of the layer on that grid,
the float64 relative residual max_b ||f(x_b) - y_b||_inf / ||y_b - bias||_inf, their product, a
rigorous bound on the relative forward error, and cond_inf * unit round-off, the estimate before
solving; docs/method.md section 1). With ``fallback_tolerance`` set too, a float32 (or lower) solve
whose bound exceeds it is redone in float64 and kept if its residual is smaller: the bound of the
returned x is then cond_inf * residual_64 + u (its rounding back to y's dtype). Subclasses have a
``bias`` [C]: forward and inverse check their input's channels and dtype against it. Both run with
autocast off (in the input's dtype): under bf16-mixed training the flow itself and its log-determinants
stay float32, only the coupling networks compute in bf16.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from ..checks import check_images
from ..numerics import nan_as_worst
from .solvers import DEFAULT_SOLVER, Solver, make_solver, relative_residual, unit_roundoff


class SolveAccuracy(NamedTuple):
    """The accuracy of one inverse of one layer (see the module docstring)."""

    condition: float  # cond_inf of the layer's matrix on the grid (for several factors: the product)
    residual: float  # float64 relative residual of the returned solution, infinity norm
    bound: float  # rigorous bound on max_b ||x_hat - x||_inf / ||x||_inf
    estimate: float  # condition * unit round-off of y's dtype
    float64_fallback: bool  # True: solved again in float64 (y was float32 or lower)


class QuarterPlaneConv(nn.Module):
    def __init__(self, solver: str | Solver = DEFAULT_SOLVER):
        super().__init__()
        self.solver = solver
        self.track_accuracy = False
        self.fallback_tolerance: float | None = None
        self.last_accuracy: SolveAccuracy | None = None

    @property
    def solver(self) -> Solver:
        return self._solver

    @solver.setter
    def solver(self, solver: str | Solver) -> None:
        self._solver = make_solver(solver)

    def factors(self) -> list[nn.Module]:
        raise NotImplementedError

    def log_abs_det_per_pixel(self) -> torch.Tensor:
        raise NotImplementedError

    def _map(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _solve(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _logdet(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return (h * w * self.log_abs_det_per_pixel()).expand(x.shape[0])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_images(type(self).__name__, x, self.bias.shape[0])
        with torch.autocast(x.device.type, enabled=False):
            return self._map(x), self._logdet(x)

    def condition_number(self, h: int, w: int) -> float:
        """cond_inf of the layer's matrix on an h x w grid: exact for one factor (CInC), the product of
        the factors' (an upper bound, exact per factor) for several (Emerging)."""
        return math.prod(factor.condition_number(h, w) for factor in self.factors())

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_images(type(self).__name__, y, self.bias.shape[0])
        with torch.autocast(y.device.type, enabled=False):
            x = self._solve(y)
            if self.track_accuracy:
                x = self._checked(x, y)
            return x, -self._logdet(y)

    @torch.no_grad()
    def _checked(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        cond = self.condition_number(*y.shape[-2:])
        residual = relative_residual(self._map(x.to(torch.float64)), y, self.bias)
        bound, fallback = cond * residual, False
        if self.fallback_tolerance is not None and y.dtype != torch.float64 and not bound <= self.fallback_tolerance:
            x64 = self._solve(y.to(torch.float64))
            r64 = relative_residual(self._map(x64), y, self.bias)
            if nan_as_worst(r64) < nan_as_worst(residual):
                x, residual, bound, fallback = x64.to(y.dtype), r64, cond * r64 + unit_roundoff(y.dtype), True
        self.last_accuracy = SolveAccuracy(cond, residual, bound, cond * unit_roundoff(y.dtype), fallback)
        return x
