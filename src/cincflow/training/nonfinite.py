"""Non-finite training steps: when the loss or any gradient is NaN/inf (checked after backward, before
the optimiser step; under DDP the decision is reduced over all ranks, so every rank takes the same),
every gradient is dropped, so the optimiser updates no parameter and no optimiser state, and the EMA
is not updated either (the global step and the warm-up schedule still advance by one).
``max_bad_steps`` consecutive bad steps stop training with
:class:`~cincflow.errors.NonFiniteTrainingError` (checkpoints written so far stay intact); a resume
starts counting afresh (the stop advice is to lower the lr and resume).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import NonFiniteTrainingError


class NonFiniteSteps:
    """The skip decision and its counters: ``skipped`` (total, kept in checkpoints) and ``consecutive``."""

    def __init__(self, max_bad_steps: int | None):
        self.limit = int(max_bad_steps or 0)  # 0: never stop
        self.skipped = 0
        self.consecutive = 0

    def check(self, optimizer: torch.optim.Optimizer, loss_finite: bool,
              any_rank: Callable[[bool], bool] | None = None) -> tuple[bool, torch.Tensor | None]:
        """(skip this step, the gradients' total 2-norm or None); drops every gradient of a skipped step.
        ``any_rank(flag)``: True when the flag is set on any rank (DDP), None for one process."""
        params = [p for group in optimizer.param_groups for p in group["params"]]
        grads = [p.grad for p in params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0) if grads else None
        bad = not loss_finite or (norm is not None and not bool(torch.isfinite(norm)))
        if any_rank is not None:
            bad = any_rank(bad)
        if bad:
            for p in params:
                p.grad = None  # torch optimisers skip parameters without gradient: no update at all
            self.skipped += 1
            self.consecutive += 1
        else:
            self.consecutive = 0
        return bad, norm

    def stop_if_too_many(self, step: int) -> None:
        """Raise NonFiniteTrainingError after ``max_bad_steps`` consecutive bad steps."""
        if self.limit > 0 and self.consecutive >= self.limit:
            raise NonFiniteTrainingError(
                f"training stopped at step {step}: {self.consecutive} consecutive steps had a non-finite loss or "
                f"gradient (all skipped, {self.skipped} in total); the checkpoints written so far are intact: lower "
                f"optimizer.lr or check the data, then resume with ckpt_path=last (max_bad_steps sets this limit)"
            )

    def state(self) -> dict[str, int]:
        return {"skipped": self.skipped, "consecutive": self.consecutive}

    def load(self, state: dict | None) -> None:
        """The total back from a checkpoint; the consecutive count starts afresh."""
        self.skipped = int((state or {}).get("skipped", 0))
        self.consecutive = 0
