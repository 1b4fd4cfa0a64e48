"""The log-likelihood of a multi-scale :class:`~cincflow.Glow` split into its levels' terms.

The model maps x through L levels; level i (squeeze + K flow steps) has log-determinant ld_i, and
its latent z_i (split off with a learned prior for i < L, the top latent for i = L) has the prior
log-density lp_i = log p(z_i | h_i) (the top prior: log p(z_L)). Then

    log p(x) = sum_i (ld_i + lp_i)        (nats; what ``Glow.log_prob`` returns).

:func:`cincflow.ood.scores.level_bpd` turns the terms into each level's share of the bits/dim.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..layers.split import gaussian_log_prob


@dataclass(frozen=True)
class LevelTerms:
    """Per image and level, of a batch of B images through L levels."""

    logdet: torch.Tensor  # [B, L]: ld_i, log|det| of level i's squeeze and flow steps
    latent_log_prob: torch.Tensor  # [B, L]: lp_i, the split priors' log p(z_i | h_i), then the top prior's
    level_dims: tuple[int, ...]  # D_i: the size C_i H_i W_i of latent i
    n_bits: int

    @property
    def num_dims(self) -> int:
        return sum(self.level_dims)

    @property
    def log_prob(self) -> torch.Tensor:
        """log p(x) = sum_i (ld_i + lp_i), nats, [B]."""
        return (self.logdet + self.latent_log_prob).sum(1)


def level_terms(model: nn.Module, x: torch.Tensor) -> LevelTerms:
    """The terms of ``model.log_prob(x)`` per level, for model-space images x [B, C, S, S] (the
    levels walked as ``Glow.encode`` walks them: level flow, then its split, the top prior last)."""
    logdets, log_probs, h = [], [], x
    for i, flow in enumerate(model.levels):
        h, ld = flow(h)
        logdets.append(ld)
        if i < len(model.splits):
            h, _, lp = model.splits[i](h)
            log_probs.append(lp)
    log_probs.append(gaussian_log_prob(h, *model._top(h.shape[0])))
    dims = tuple(math.prod(shape) for shape in model.latent_shapes())
    return LevelTerms(torch.stack(logdets, 1), torch.stack(log_probs, 1), dims, int(model.n_bits))
