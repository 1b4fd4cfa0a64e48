"""Learning-rate schedules, as ``_partial_`` targets of the ``scheduler`` config group
(``conf/scheduler/``). The module calls ``scheduler(optimizer=...)``, so any
``torch.optim.lr_scheduler`` class works as well (``scheduler=step``, ``scheduler=cosine``, ...); a
schedule that takes ``steps_per_epoch`` also gets a function returning the optimiser steps of one
epoch (:func:`steps_per_epoch` of the trainer, evaluated only when needed)."""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from lightning.pytorch import Trainer


def steps_per_epoch(trainer: Trainer) -> int:
    """The optimiser steps of one training epoch: batches / gradient accumulation, rounded up (what a
    schedule's ``steps_per_epoch`` returns)."""
    batches = trainer.num_training_batches
    if not math.isfinite(batches):
        trainer.fit_loop.setup_data()  # what Trainer.estimated_stepping_batches does too
        batches = trainer.num_training_batches
    if not math.isfinite(batches) or batches <= 0:
        raise RuntimeError("scheduler.warmup_epochs needs a sized training dataloader; set scheduler.warmup_steps instead")
    return math.ceil(batches / trainer.accumulate_grad_batches)


def linear_warmup(
    optimizer: torch.optim.Optimizer,
    *,
    warmup_epochs: float = 0.0,
    warmup_steps: int | None = None,
    steps_per_epoch: Callable[[], float] | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Base lr x min(1, (step + 1) / W) at optimiser step ``step`` (0-based), W = ``warmup_steps``,
    or ``warmup_epochs`` x ``steps_per_epoch()`` when ``warmup_steps`` is null; W <= 0: constant lr.
    The factor is a plain function, so a checkpoint stores only the step count (exact on resume)."""
    if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, (int, float)) or not (
            math.isfinite(warmup_epochs) and warmup_epochs >= 0):
        raise ValueError(f"warmup_epochs must be a number >= 0 (0: no warm-up), got {warmup_epochs!r}")
    if warmup_steps is not None and (isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int)
                                     or warmup_steps < 0):
        raise ValueError(f"warmup_steps must be an integer >= 0, or null to count in epochs, got {warmup_steps!r}")
    if warmup_steps is not None:
        total = float(warmup_steps)
    elif warmup_epochs > 0:
        if steps_per_epoch is None:
            raise ValueError("warmup_epochs needs steps_per_epoch (the module passes it): set warmup_steps instead")
        total = float(warmup_epochs) * steps_per_epoch()
    else:
        total = 0.0

    def factor(step: int) -> float:
        return 1.0 if total <= 0 else min(1.0, (step + 1) / total)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
