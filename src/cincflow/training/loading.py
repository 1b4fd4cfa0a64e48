"""Building the flow from its config, and a trained :class:`FlowLitModule` from a checkpoint file
alone: the one place that reads a checkpoint back into a model (the entry scripts, the final sample
grid, the reproduction, ``FlowLitModule.load_from_checkpoint``, and :func:`load` = ``cincflow.load``,
which returns the flow itself).

Checkpoint formats (``checkpoint["cincflow_format"]``):

* 2: hyper-parameters ``model_config`` (the flow's config, ``_target_`` + arguments) and the
  module's other arguments; optimiser and schedule are not needed to load.
* 1 (no entry; written before the job instantiated the flow): ``model`` (the flow's config, the
  conv as a name plus ``conv_kwargs``) and ``optim``. Upgraded on reading: ``model`` becomes
  ``model_config``, ``optim`` is dropped (it never affected the weights).
"""
from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from torch import nn

from ..errors import CheckpointError, ConfigError, one_line
from .checkpoints import check_state_dict, load_checkpoint_dict, resolve_ckpt_path
from .lit_module import FlowLitModule


def build_model(config: Mapping[str, Any]) -> nn.Module:
    """The flow of ``config`` (``_target_`` + keyword arguments); a bad argument is a ConfigError."""
    try:
        return instantiate(dict(config), _convert_="all")
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, (ValueError, TypeError)):
            raise ConfigError(f"invalid model configuration: {cause} (check the model.* / conv / coupling settings)") from cause
        raise


def module_arguments(hparams: Any, path: Path) -> dict[str, Any]:
    """The checkpoint's hyper-parameters as keyword arguments of FlowLitModule (format 1 upgraded)."""
    if not isinstance(hparams, Mapping):
        raise CheckpointError(f"ckpt_path={path} has no model hyper-parameters: pass a .ckpt file written by src/train.py")
    args = dict(hparams)
    if "model_config" not in args and isinstance(args.get("model"), Mapping):  # format 1
        model = dict(args.pop("model"))
        conv_kwargs = dict(model.get("conv_kwargs") or {})
        if "inverse" in conv_kwargs:  # format 1 named the solver `inverse` (same choices)
            conv_kwargs["solver"] = conv_kwargs.pop("inverse")
            model["conv_kwargs"] = conv_kwargs
        args["model_config"] = {"_target_": "cincflow.Glow", **model}
        args.pop("optim", None)
    if not isinstance(args.get("model_config"), Mapping):
        raise CheckpointError(f"ckpt_path={path} has no model hyper-parameters: pass a .ckpt file written by src/train.py")
    try:  # FlowLitModule takes them (before any model is built)
        inspect.signature(FlowLitModule).bind(None, **args)
    except TypeError as err:  # hyper-parameters of a version this one does not know
        raise CheckpointError(
            f"ckpt_path={path} has hyper-parameters this version does not take ({err}): load its state_dict into "
            f"a FlowLitModule built with matching settings, or train it again"
        ) from err
    return args


def device_of(name: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else the CPU; any other name as a torch device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_module(ckpt_path: str | os.PathLike, use_ema: bool = True, device: str = "auto") -> FlowLitModule:
    """A trained FlowLitModule from a checkpoint, in eval mode; ``use_ema=False`` drops the
    Polyak average so the raw training weights are used. Clear errors (CheckpointError and
    subclasses) for a missing, unreadable or inconsistent file."""
    path = resolve_ckpt_path(ckpt_path)  # a path here: `last` is resolved by the scripts
    ckpt = load_checkpoint_dict(path)
    args = module_arguments(ckpt.get("hyper_parameters"), path)
    try:
        model = build_model(args["model_config"])
    except ConfigError as err:
        raise CheckpointError(
            f"ckpt_path={path} stores model settings this version cannot build ({one_line(err)}): load its "
            f"state_dict into a model built with matching settings, or train it again"
        ) from err
    module = FlowLitModule(model, **args)
    check_state_dict(module, ckpt, path)
    module.load_state_dict(ckpt["state_dict"])
    module.on_load_checkpoint(ckpt)
    del ckpt
    if not use_ema:
        module.ema = None
    module.eval()
    return module.to(device_of(device))


def load(path: str | os.PathLike, ema: bool = True, map_location: str | torch.device = "cpu") -> nn.Module:
    """The trained flow (a :class:`cincflow.Glow`) of a checkpoint written by ``src/train.py``, in eval
    mode on ``map_location`` (``auto``: CUDA when available), ready for ``sample``, ``encode`` and
    ``bits_per_dim``. ``ema=True``: the Polyak-averaged weights (a warning, and the training weights,
    when the run had no averaging: ``ema_decay=null``); ``ema=False``: the training weights. The
    averaged copy is frozen (``requires_grad`` off); call ``requires_grad_(True)`` to fine-tune it."""
    module = load_module(path, use_ema=ema, device=str(map_location))
    if ema and module.ema is None:
        warnings.warn(f"{path} has no Polyak-averaged weights (trained with ema_decay=null): "
                      "returning its training weights", stacklevel=2)
    return module.eval_model.eval()
