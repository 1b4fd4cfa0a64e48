"""The value rules of :class:`~cincflow.training.lit_module.FlowLitModule`'s settings (its constructor
and the configuration check ask this one function), and how the module learns what a schedule takes."""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

INTERVALS = ("step", "epoch")


def check_settings(ema_decay: Any = None, actnorm_init_images: Any = 1, max_bad_steps: Any = None,
                   scheduler_interval: Any = "step") -> None:
    """The value rules of :class:`FlowLitModule`'s settings (its constructor and the configuration
    check call this one function): a ValueError naming the first bad one."""
    if ema_decay is not None and (isinstance(ema_decay, bool) or not 0 <= ema_decay < 1):
        raise ValueError(f"ema_decay must be a number in [0, 1) (null or 0: no averaging), got {ema_decay!r}")
    if isinstance(actnorm_init_images, bool) or not isinstance(actnorm_init_images, int) or actnorm_init_images < 1:
        raise ValueError(f"actnorm_init_images must be a positive integer, got {actnorm_init_images!r}")
    if max_bad_steps is not None and (isinstance(max_bad_steps, bool) or not isinstance(max_bad_steps, int)
                                      or max_bad_steps < 0):
        raise ValueError(f"max_bad_steps must be an integer >= 0 (0 or null: never stop), got {max_bad_steps!r}")
    if scheduler_interval not in INTERVALS:
        raise ValueError(f"scheduler_interval must be step or epoch, got {scheduler_interval!r}")


def takes(factory: Callable, name: str) -> bool:
    """Whether ``factory`` (a function, class or ``functools.partial``) has a parameter ``name``."""
    try:
        return name in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
