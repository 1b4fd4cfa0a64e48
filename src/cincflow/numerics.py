"""Comparisons in which a NaN counts as the worst value (a residual or error that is not a number
is never "small enough"), and the count of non-finite entries of a tensor."""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def nan_as_worst(value: float) -> float:
    """Sort key: ``value``, with NaN mapped to +inf."""
    return math.inf if math.isnan(value) else value


def worst(values: Iterable[float], default: float = 0.0) -> float:
    """The largest of ``values``, a NaN being larger than everything (``default`` when empty)."""
    return max(values, key=nan_as_worst, default=default)


def nonfinite_count(x: torch.Tensor) -> int:
    """How many entries of the tensor ``x`` are NaN or +-inf. One reduction decides the usual case: the sum
    of finite values is finite unless it overflows, so only a non-finite sum (a bad entry, or finite ones
    summing past the dtype's range) pays for the exact count (about 20x the sum's time)."""
    if bool(torch.isfinite(x.sum())):
        return 0
    return int((~torch.isfinite(x)).sum())
