"""A checkpoint's settings read back into a module, without Hydra and without knowing the module's
class (it is passed in): what ``FlowLitModule.load_from_checkpoint`` runs.

Checkpoint formats (``checkpoint["cincflow_format"]``):

* 3: hyper-parameters ``model_config`` (the flow's own :meth:`~cincflow.Glow.config`: ``_target_``,
  arguments, conv and coupling as ``_partial_`` configs), ``data``, the module's settings and
  ``dequant_config`` (the dequantiser's ``_partial_`` config; absent before it existed: uniform).
* 2: the same, the coupling as a name (``"quad"``), which the flow still takes.
* 1 (no entry; written before the job instantiated the flow): ``model`` (the flow's config, the
  conv as a name plus ``conv_kwargs``) and ``optim``. Upgraded on reading: ``model`` becomes
  ``model_config``, ``optim`` is dropped (it never affected the weights).
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import CheckpointError, ConfigError, one_line
from ..targets import build
from .checkpoints import check_state_dict, load_checkpoint_dict


def build_model(config: Mapping[str, Any]) -> nn.Module:
    """The flow of ``config`` (``_target_`` + keyword arguments); a bad argument is a ConfigError."""
    try:
        return build(dict(config))
    except (ValueError, TypeError, ImportError, AttributeError) as err:
        raise ConfigError(f"invalid model configuration: {one_line(err)} (check the model.* / conv / coupling "
                          f"settings)") from err


def module_arguments(hparams: Any, path: Path, module_class: type) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the flow's config, the keyword arguments of ``module_class``) of a checkpoint's hyper-parameters
    (format 1 upgraded); a CheckpointError when they are missing or ``module_class`` does not take them."""
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
    model_config = args.pop("model_config", None)
    dequant_config = args.pop("dequant_config", None)
    if dequant_config is not None:
        try:
            args["dequant"] = build(dict(dequant_config))  # a factory: nothing is built yet
        except (ImportError, AttributeError) as err:
            raise CheckpointError(f"ckpt_path={path} has a dequantiser this version does not have ({one_line(err)}): "
                                  f"train it again with dequant=uniform or dequant=variational") from err
    if not isinstance(model_config, Mapping):
        raise CheckpointError(f"ckpt_path={path} has no model hyper-parameters: pass a .ckpt file written by src/train.py")
    try:  # the module takes them (before any model is built)
        inspect.signature(module_class).bind(None, **args)
    except TypeError as err:  # hyper-parameters of a version this one does not know
        raise CheckpointError(
            f"ckpt_path={path} has hyper-parameters this version does not take ({err}): load its state_dict into "
            f"a {module_class.__name__} built with matching settings, or train it again"
        ) from err
    return dict(model_config), args


def restore_module(module_class: type, path: Path, ckpt: Mapping[str, Any] | None = None) -> Any:
    """``module_class`` rebuilt from the checkpoint at ``path`` (its dict ``ckpt`` when already read),
    weights and counters loaded, on the CPU, in eval mode."""
    ckpt = load_checkpoint_dict(path) if ckpt is None else ckpt
    model_config, args = module_arguments(ckpt.get("hyper_parameters"), path, module_class)
    try:
        model = build_model(model_config)
    except ConfigError as err:
        raise CheckpointError(
            f"ckpt_path={path} stores model settings this version cannot build ({one_line(err)}): load its "
            f"state_dict into a model built with matching settings, or train it again"
        ) from err
    module = module_class(model, **args)
    check_state_dict(module, ckpt, path)
    module.load_state_dict(ckpt["state_dict"])
    module.on_load_checkpoint(ckpt)
    return module.eval()
