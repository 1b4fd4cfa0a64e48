"""Parameter counting that excludes masked weights.

A module marks the free entries of its parameter ``name`` with a buffer ``name_mask``; only those
are counted.
"""
from __future__ import annotations

from torch import nn


def count_parameters(module: nn.Module) -> int:
    total = 0
    for owner in module.modules():
        for name, p in owner.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            mask = getattr(owner, f"{name}_mask", None)
            total += int(mask.count_nonzero()) if mask is not None else p.numel()
    return total
