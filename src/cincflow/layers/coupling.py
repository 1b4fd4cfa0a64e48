"""Coupling layers, [B, C, H, W] -> same shape: one base class, :class:`Coupling`, and the Glow couplings.

The channels are cut into ``blocks`` equal blocks x_0 .. x_{n-1}. Each entry (name, k, sources) of
``updates`` replaces block k by an element-wise invertible map of it whose parameters
h = conditioner_name(x_sources) come from other blocks:

    y_k = g(x_k; h),   h = NN(cat of x_s for s in sources),   log|det| = sum of log|g'(x_k; h)|.

The forward reads every conditioner's sources from the input x; the inverse runs the updates in the
listed order, each reading only blocks already recovered, so a block never conditions on itself and
the Jacobian is block-triangular. A coupling implements only :meth:`Coupling.update` (y, log|det| [B])
and :meth:`Coupling.update_inverse` (x, log|det dx/dy| [B]) and says how many conditioner outputs
each updated channel needs (``params``); split, conditioners, merge and input checks are the base's.
A new coupling is one subclass + one ``conf/coupling/<name>.yaml`` (a ``_partial_`` of it): the
model calls ``factory(channels, width=model.width, actnorm=model.conditioner_actnorm)``; options of
its own are keyword arguments after those (README: Extending cinc-flow).

Glow (blocks 2: x_0 passes through, x_1 updated from x_0):
- additive: y = x + h (1 parameter per channel), log|det| = 0;
- affine: (t, s) = (h[:, 0::2], h[:, 1::2]), y = (x + t) * sigmoid(s + 2) (2 parameters),
  log|det| = sum log sigmoid(s + 2) (the official Glow/CInC form; the scale lies in (0, 1)), computed as
  the published code does, the sigmoid and then its log: two vectorised passes, where ``F.logsigmoid``
  took 10x as long per element on an AVX-512 CPU (a Glow's log_prob 10%, sampling 9% and train step 4%
  slower with it). Where s + 2 < -88 in float32 the scale underflows to 0 and log|det| is -inf (the map
  is singular in float32 there either way).
"""
from __future__ import annotations

import torch
from torch import nn

from ..checks import check_images, check_positive_int
from .conditioner import Conditioner

Update = tuple[str, int, tuple[int, ...]]  # (conditioner name, block updated, blocks it reads)
HALVES: tuple[Update, ...] = (("nn", 1, (0,)),)


class Coupling(nn.Module):
    """Base of every coupling (see the module docstring): ``blocks`` and ``updates`` describe which
    block is updated from which, ``params`` conditioner outputs per updated channel."""

    blocks: int = 2
    updates: tuple[Update, ...] = HALVES

    def __init__(self, channels: int, width: int = 512, actnorm: bool = True, *, params: int):
        super().__init__()
        name = type(self).__name__
        check_positive_int(f"{name} channels", channels)
        if channels % self.blocks:
            fewer = " or a coupling of fewer blocks (coupling=affine or additive need an even count)" if self.blocks > 2 else ""
            raise ValueError(f"{name} splits the channels into {self.blocks} equal blocks, but {channels} is not "
                             f"divisible by {self.blocks}: choose a channel count that is a multiple of {self.blocks}{fewer}")
        check_positive_int(f"{name} width", width)
        self.channels, q = channels, channels // self.blocks
        for conditioner, _, sources in self.updates:
            self.add_module(conditioner, Conditioner(len(sources) * q, params * q, width, actnorm))

    def update(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """y = g(x; h) element-wise and log|dy/dx| summed per example [B]."""
        raise NotImplementedError

    def update_inverse(self, y: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x = g^-1(y; h) and log|dx/dy| summed per example [B] (minus :meth:`update`'s)."""
        raise NotImplementedError

    def _condition(self, conditioner: str, parts: list[torch.Tensor], sources: tuple[int, ...]) -> torch.Tensor:
        x = parts[sources[0]] if len(sources) == 1 else torch.cat([parts[s] for s in sources], dim=1)
        return getattr(self, conditioner)(x)

    def _run(self, x: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        check_images(type(self).__name__, x, self.channels)
        parts = list(x.chunk(self.blocks, dim=1))
        out = parts if inverse else list(parts)  # the inverse reads the blocks it has recovered
        step = self.update_inverse if inverse else self.update
        logdets = []
        for conditioner, block, sources in self.updates:
            out[block], logdet = step(parts[block], self._condition(conditioner, parts, sources))
            logdets.append(logdet)
        total = logdets[-1]
        for logdet in reversed(logdets[:-1]):  # the last update's first (the published summation order)
            total = total + logdet
        return torch.cat(out, dim=1), total

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._run(x, inverse=False)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._run(y, inverse=True)


class AffineCoupling(Coupling):
    def __init__(self, channels: int, width: int = 512, actnorm: bool = True):
        super().__init__(channels, width, actnorm, params=2)

    def update(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale = torch.sigmoid(h[:, 1::2] + 2.0)
        return (x + h[:, 0::2]) * scale, torch.log(scale).flatten(1).sum(1)

    def update_inverse(self, y: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale = torch.sigmoid(h[:, 1::2] + 2.0)
        return y / scale - h[:, 0::2], -torch.log(scale).flatten(1).sum(1)


class AdditiveCoupling(Coupling):
    def __init__(self, channels: int, width: int = 512, actnorm: bool = True):
        super().__init__(channels, width, actnorm, params=1)

    def update(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x + h, x.new_zeros(x.shape[0])

    def update_inverse(self, y: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return y - h, y.new_zeros(y.shape[0])
