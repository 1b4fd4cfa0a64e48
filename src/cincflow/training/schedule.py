"""Learning-rate schedules, as ``_partial_`` targets of the ``scheduler`` config: the module calls
``scheduler(optimizer, steps_per_epoch)`` (``steps_per_epoch``: a function, evaluated only when
needed) and steps the result after every optimiser step."""
from __future__ import annotations

from collections.abc import Callable

import torch


def linear_warmup(
    optimizer: torch.optim.Optimizer,
    steps_per_epoch: Callable[[], float],
    *,
    warmup_epochs: float,
    warmup_steps: int | None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Base lr x min(1, (step + 1) / W) at optimiser step ``step`` (0-based), W = ``warmup_steps``,
    or ``warmup_epochs`` x steps per epoch when ``warmup_steps`` is null; W <= 0: constant lr.
    The factor is a plain function, so a checkpoint stores only the step count (exact on resume)."""
    if warmup_steps is not None:
        total = float(warmup_steps)
    else:
        total = float(warmup_epochs) * steps_per_epoch() if warmup_epochs and warmup_epochs > 0 else 0.0

    def factor(step: int) -> float:
        return 1.0 if total <= 0 else min(1.0, (step + 1) / total)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
