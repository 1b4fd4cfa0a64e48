"""A trained :class:`FlowLitModule` or flow from a checkpoint file alone: the entry scripts, the final
sample grid, the reproduction, and :func:`load` = ``cincflow.load``, which returns the flow itself.
(:mod:`.restore` reads the checkpoint's settings back; no configuration library is involved.)"""
from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .checkpoints import resolve_ckpt_path
from .lit_module import FlowLitModule
from .restore import restore_module


def device_of(name: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else the CPU; any other name as a torch device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_module(ckpt_path: str | os.PathLike, use_ema: bool = True, device: str = "auto",
                ckpt: Mapping[str, Any] | None = None) -> FlowLitModule:
    """A trained FlowLitModule from a checkpoint (its dict ``ckpt`` when already read), in eval mode;
    ``use_ema=False`` drops the Polyak average so the raw training weights are used. Clear errors
    (CheckpointError and subclasses) for a missing, unreadable or inconsistent file."""
    path = resolve_ckpt_path(ckpt_path)  # a path here: `last` is resolved by the scripts
    module = restore_module(FlowLitModule, path, ckpt)
    if not use_ema:
        module.ema = None
    return module.to(device_of(device))


def load(path: str | os.PathLike, ema: bool = True, map_location: str | torch.device = "cpu") -> nn.Module:
    """The trained flow (a :class:`cincflow.Glow`) of a checkpoint written by ``src/train.py``, in eval
    mode on ``map_location`` (``auto``: CUDA when available), ready for ``sample``, ``encode`` and
    ``bits_per_dim``. ``ema=True``: the Polyak-averaged weights (a warning, and the training weights,
    when the run had no averaging: ``module.ema_decay=null``); ``ema=False``: the training weights. The
    averaged copy is frozen (``requires_grad`` off); call ``requires_grad_(True)`` to fine-tune it."""
    module = load_module(path, use_ema=ema, device=str(map_location))
    if ema and module.ema is None:
        warnings.warn(f"{path} has no Polyak-averaged weights (trained with module.ema_decay=null): "
                      "returning its training weights", stacklevel=2)
    return module.eval_model.eval()
