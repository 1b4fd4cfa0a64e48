"""Polyak averaging: an exponential moving average (EMA) of a model's parameters.

``EMA(model, decay)`` keeps a frozen copy of ``model`` (a submodule, so its weights and buffers live
in the LightningModule's ``state_dict`` and a checkpoint restores them exactly). After each optimiser
step, ``update(model)`` moves every floating-point parameter of the copy towards the live one:

    ema <- ema + (1 - d) * (live - ema),  d = min(decay, (1 + n) / (10 + n))

with n the number of updates so far (the TensorFlow ``num_updates`` warm-up, so the average is not
dominated by the random initial weights). Buffers (e.g. ActNorm's ``initialized``) are copied.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.module = copy.deepcopy(model)
        self.module.requires_grad_(False)
        self.register_buffer("num_updates", torch.tensor(0, dtype=torch.long))

    def current_decay(self) -> float:
        n = int(self.num_updates)
        return min(self.decay, (1.0 + n) / (10.0 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        ema_params = [p for p in self.module.parameters() if p.dtype.is_floating_point]
        live_params = [p.detach() for p in model.parameters() if p.dtype.is_floating_point]
        if len(ema_params) != len(live_params):
            raise RuntimeError("EMA copy and live model have different parameter lists")
        torch._foreach_lerp_(ema_params, live_params, 1.0 - d)
        for b_ema, b_live in zip(self.module.buffers(), model.buffers()):
            b_ema.copy_(b_live)
        self.num_updates += 1

    @torch.no_grad()
    def copy_from(self, model: nn.Module) -> None:
        """Make the average equal to ``model`` (weights and buffers); the update count is kept."""
        self.module.load_state_dict(model.state_dict())

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)
