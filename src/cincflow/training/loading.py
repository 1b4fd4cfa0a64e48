"""A trained :class:`FlowLitModule` from a checkpoint file alone: the one place that reads a
checkpoint back into a model (the entry scripts, the final sample grid, the reproduction)."""
from __future__ import annotations

import os

import torch

from ..errors import CheckpointError
from .checkpoints import check_state_dict, load_checkpoint_dict, resolve_ckpt_path
from .lit_module import FlowLitModule


def device_of(name: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else the CPU; any other name as a torch device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_module(ckpt_path: str | os.PathLike, use_ema: bool = True, device: str = "auto") -> FlowLitModule:
    """A trained FlowLitModule from a checkpoint, in eval mode; ``use_ema=False`` drops the
    Polyak average so the raw training weights are used. Clear errors (CheckpointError and
    subclasses) for a missing, unreadable or inconsistent file."""
    path = resolve_ckpt_path(ckpt_path, None, same_task=False)  # a path here: `last` is resolved by the scripts
    ckpt = load_checkpoint_dict(path)
    hparams = ckpt.get("hyper_parameters")
    if not isinstance(hparams, dict) or "model" not in hparams:
        raise CheckpointError(f"ckpt_path={path} has no model hyper-parameters: pass a .ckpt file written by src/train.py")
    module = FlowLitModule(**hparams)
    check_state_dict(module, ckpt, path)
    module.load_state_dict(ckpt["state_dict"])
    module.on_load_checkpoint(ckpt)
    del ckpt
    if not use_ema:
        module.ema = None
    module.eval()
    return module.to(device_of(device))
