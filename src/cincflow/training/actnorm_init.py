"""Data-dependent ActNorm initialisation for training: one forward pass of the flow on a batch of
training images (seeded dequantisation), then, under DDP, rank 0's parameters and buffers broadcast
to every rank so all ranks start identical."""
from __future__ import annotations

import torch
from torch import nn

from ..layers.actnorm import ActNorm
from ..pixels import dequantized


def actnorm_layers(module: nn.Module) -> list[ActNorm]:
    return [m for m in module.modules() if isinstance(m, ActNorm)]


def actnorm_initialized(module: nn.Module) -> bool:
    return all(bool(a.initialized) for a in actnorm_layers(module))


@torch.no_grad()
def initialize_actnorm(model: nn.Module, images: torch.Tensor, seed: int) -> None:
    """(Re-)initialise every ActNorm of ``model`` (a Glow) from ``images`` (uint8), dequantised with
    the noise of ``seed``; under DDP every rank then holds rank 0's result."""
    x = dequantized(images, model.n_bits, seed, like=next(model.parameters()))
    for a in actnorm_layers(model):
        a.initialized.fill_(False)
    was_training = model.training
    model.train()
    model.log_prob(x)
    model.train(was_training)
    broadcast_from_rank0(model)


def broadcast_from_rank0(module: nn.Module) -> None:
    """Every parameter and buffer of ``module`` set to global rank 0's (no-op outside DDP)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    if torch.distributed.get_world_size() < 2:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        if t.dtype == torch.bool:  # gloo has no bool; every rank set the same flags anyway
            flag = t.to(torch.uint8)
            torch.distributed.broadcast(flag, src=0)
            t.copy_(flag.bool())
        else:
            torch.distributed.broadcast(t.data, src=0)
