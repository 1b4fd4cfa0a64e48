"""``torch.compile`` for a :class:`~cincflow.Glow`: :func:`compile_flow`.

What is compiled, and why there:
- ``_log_prob`` (hence ``log_prob``, ``bits_per_dim``, the training step's forward and backward, and evaluation), as
  one graph: the data -> latents pass has no data-dependent control flow. ActNorm's lazy
  initialisation is the one exception: a call with any ActNorm not initialised runs eagerly (and
  initialises them); the compiled graph reads the flags' last values
  (:meth:`~cincflow.layers.actnorm.ActNorm.is_initialized`), refreshed before every call;
- for sampling (``sample``, ``decode``), every coupling conditioner network and every split prior,
  one graph per input shape shared by all of them. The inverses of the invertible convolutions stay
  eager: their solvers decide per weight state and shape, cache precomputations keyed on the weights
  and bound their own accuracy, all Python control flow on tensor values.

The compiled functions are bound methods of the model (and of its modules): ``copy.deepcopy`` (the
EMA copy) rebinds them to the copy, which compiles its own graphs on first use. Measured on a 2-core
CPU (``src/benchmark.py``, issue #22's table) compiling takes minutes and does not pay off there;
on a GPU it may.
"""
from __future__ import annotations

import types

import torch
from torch import nn

from .layers.actnorm import ActNorm
from .layers.conditioner import Conditioner, ZeroConv2d


def compile_flow(model: nn.Module, sampling: bool = True, **options) -> nn.Module:
    """Compile ``model`` (a :class:`~cincflow.Glow`) in place, see the module docstring; ``options``
    go to ``torch.compile`` (e.g. ``mode``, ``dynamic``). Returns ``model``."""
    compiled_log_prob = torch.compile(type(model)._log_prob, **options)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        ready = all([m.is_initialized() for m in self.modules() if isinstance(m, ActNorm)])
        return compiled_log_prob(self, x) if ready else type(self)._log_prob(self, x)

    model._log_prob = types.MethodType(log_prob, model)
    if sampling:
        for cls in (Conditioner, ZeroConv2d):
            forward = torch.compile(cls.forward, **options)
            for m in model.modules():
                if type(m) is cls:
                    m.forward = types.MethodType(forward, m)
    return model


def compile_options(backend: bool | str) -> dict:
    """``torch.compile``'s options for a ``compile=`` setting: True is its default (inductor), a string a backend."""
    return {} if backend is True else {"backend": str(backend)}
