"""Comparisons in which a NaN counts as the worst value (a residual or error that is not a number
is never "small enough")."""
from __future__ import annotations

import math
from collections.abc import Iterable


def nan_as_worst(value: float) -> float:
    """Sort key: ``value``, with NaN mapped to +inf."""
    return math.inf if math.isnan(value) else value


def worst(values: Iterable[float], default: float = 0.0) -> float:
    """The largest of ``values``, a NaN being larger than everything (``default`` when empty)."""
    return max(values, key=nan_as_worst, default=default)
