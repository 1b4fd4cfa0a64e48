"""Parameter counting that excludes masked weights.

A module marks the free entries of its parameter ``name`` with a buffer ``name_mask``; only those
are counted. ``requires_grad`` is not looked at: a frozen copy (the Polyak-averaged weights) has the
same count as the model it averages; a constant that is never learned is a buffer, not a parameter.
"""
from __future__ import annotations

from torch import nn


def count_parameters(module: nn.Module) -> int:
    """Free entries of every parameter of ``module`` (masked entries excluded)."""
    total = 0
    for owner in module.modules():
        for name, p in owner.named_parameters(recurse=False):
            mask = getattr(owner, f"{name}_mask", None)
            total += int(mask.count_nonzero()) if mask is not None else p.numel()
    return total
