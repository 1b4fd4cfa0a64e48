"""The checks of a composed configuration that need more than its types: the ``_target_`` nodes
(optimiser, schedule, model, conv factory) take the options they are given, a trial build of one
conv layer, devices this machine has, and folders that can be created. :func:`validate` runs the
schema (:mod:`.schema`) and these, before anything is built or written."""
from __future__ import annotations

import inspect
import os
import tempfile
from pathlib import Path
from typing import Any, get_type_hints

import torch
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig
from omegaconf.errors import InterpolationKeyError

from ..errors import ConfigError, missing_key, one_line
from ..layers.step import CONV_LAYERS, COUPLINGS, check_choice
from ..paths import resolve_path
from .schema import SCHEMAS, check_node, check_value, plain

REQUIRED_NODES = {"train": ("data", "model", "optimizer", "trainer"), "eval": ("trainer",), "sample": ()}
EXAMPLES = {"data": "cincflow.data.DigitsDataModule", "optimizer": "torch.optim.Adamax", "scheduler": "cincflow.training.schedule.linear_warmup",
            "model": "cincflow.Glow", "model.conv": "cincflow.layers.step.cinc"}


def target_of(node: DictConfig, key: str) -> Any:
    """The object ``node._target_`` names (a ConfigError when it cannot be imported)."""
    name = node.get("_target_")
    try:
        return get_object(str(name))
    except Exception:  # ImportError, AttributeError, Hydra's wrapping of them
        raise ConfigError(f"{key}._target_={name} cannot be imported (no such module or name): use e.g. "
                          f"{key}._target_={EXAMPLES.get(key, '<module.name>')}") from None


def options_of(target: Any) -> tuple[dict[str, inspect.Parameter], dict[str, Any], bool]:
    """(keyword options, their type hints, takes any keyword) of a ``_target_``: a class's
    constructor, a function, or for a conv factory the layer its options go to."""
    fn = CONV_LAYERS.get(target, target)
    fn = fn.__init__ if inspect.isclass(fn) else fn
    params = list(inspect.signature(fn).parameters.values())
    if params and params[0].name == "self":
        params = params[1:]
    while target in CONV_LAYERS and params and params[0].default is inspect.Parameter.empty:
        params = params[1:]  # a conv layer's channels: the factory passes them
    try:
        hints = get_type_hints(fn)
    except Exception:  # unresolvable annotations: options are checked by name only
        hints = {}
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    named = {p.name: p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return named, hints, var_kw


def check_target(node: Any, key: str, call_args: int = 0) -> Any:
    """``node`` (a ``_target_`` config) names an importable object that takes every option given,
    each of its annotated type; ``call_args`` positional arguments are supplied at call time."""
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return None
    target = target_of(node, key)
    named, hints, var_kw = options_of(target)
    positional = [n for n, p in named.items() if p.default is inspect.Parameter.empty
                  and p.kind is p.POSITIONAL_OR_KEYWORD][:call_args]
    where = key.split(".")[0]
    for option in (k for k in node if not str(k).startswith("_")):
        if option in positional or (option not in named and not var_kw):
            takes = ", ".join(n for n in named if n not in positional) or "no options"
            raise ConfigError(
                f"invalid {where} configuration: {node._target_} got an unexpected keyword argument '{option}' "
                f"({key}.{option}; it takes: {takes}): remove it (~{key}.{option}) or choose another {key}._target_ "
                f"that takes it")
        value = plain(node[option])
        if option in hints and value is not None:  # null: the default (or, for the model, from the data)
            default = named[option].default if option in named else None
            example = default if default not in (None, inspect.Parameter.empty) else "..."
            check_value(f"{key}.{option}", value, hints[option], {"example": example}, f"{where} ")
    return target


def check_conv(node: Any) -> None:
    """Build one conv layer of the factory ``model.conv`` (4 channels) to check its option values."""
    target = check_target(node, "model.conv", call_args=1)
    if target is None:
        return
    options = {k: plain(v) for k, v in node.items() if not str(k).startswith("_")}
    try:
        target(4, **options)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"invalid model configuration: {one_line(err)} (model.conv: {node._target_}): change the "
                          f"model.conv option it names (defaults: conf/conv/)") from None


def check_optimizer(node: Any) -> None:
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return
    target = target_of(node, "optimizer")
    if not (inspect.isclass(target) and issubclass(target, torch.optim.Optimizer)):
        raise ConfigError(f"optimizer._target_={node._target_} is not a torch.optim.Optimizer: use e.g. "
                          f"optimizer._target_=torch.optim.Adamax (or Adam, AdamW)")
    check_target(node, "optimizer", call_args=1)


def check_device(name: str, key: str = "device") -> None:
    """``name`` must be a torch device this machine has (cpu, or cuda[:index] with that GPU)."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{key}={name} is not a torch device: use {key}=cpu or {key}=cuda[:index]") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index or 0) >= count:
            raise ConfigError(
                f"{key}={name}: torch {torch.__version__} sees {count} CUDA GPU(s) on this machine; "
                f"use {key}=cpu{'' if count == 0 else f' or {key}=cuda:<0..{count - 1}>'}")
    elif device.type != "cpu":
        raise ConfigError(f"{key}={name}: only cpu and cuda devices are supported: use {key}=cpu or {key}=cuda")


def check_creatable(path: str | os.PathLike, name: str, fix: str, is_file: bool = False) -> None:
    """The folder ``path`` (the file ``path`` with ``is_file``) exists as such, or can be created:
    its nearest existing ancestor is a folder a new folder can be made in (tried: a probe folder is
    made and removed again). Leaves nothing behind. ``name`` starts the
    message: ``"data.cache_dir="`` or ``"the output folder "``."""
    path = resolve_path(path)
    if path.exists():
        if path.is_dir() == is_file:
            kind = "a folder" if is_file else "a file"
            raise ConfigError(f"{name}{path} is {kind}, not {'a file' if is_file else 'a folder'}: {fix}")
        return
    ancestor = next(p for p in path.parents if p.exists())
    if not ancestor.is_dir():
        raise ConfigError(f"{name}{path} is not writable (it cannot be created: {ancestor} is a file, not a folder): {fix}")
    try:  # the OS decides (permissions, read-only mounts, /proc, ...; os.access lets root pass everywhere)
        os.rmdir(tempfile.mkdtemp(prefix=".cincflow-write-check-", dir=ancestor))
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ConfigError(f"{name}{path} is not writable (it cannot be created in {ancestor}: {reason}): {fix}") from None


def check_data_folders(data: Any) -> None:
    """A folder the data config would write into (a download, ImageNet's ``.npy`` caches) can be made."""
    if not isinstance(data, DictConfig):
        return
    fix = "choose a writable folder with paths.data_dir=... (or data.cache_dir=...)"
    if data.get("cache_dir"):
        check_creatable(data.cache_dir, "data.cache_dir=", fix)
    elif "cache_dir" in data and data.get("data_dir"):
        check_creatable(Path(data.data_dir) / "cache", "the data cache folder ", fix)
    if data.get("download") and data.get("data_dir"):
        check_creatable(data.data_dir, "data.data_dir=", fix)


def check_references(node: Any, prefix: str = "") -> None:
    """Every ``${key}`` interpolation of ``node`` finds its key (``~samples`` would leave
    ``callbacks.samples.n: ${samples.n}`` dangling); Hydra's own resolvers (``${hydra:...}``,
    set once the run starts) are left to resolve later."""
    keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
    for key in keys:
        if not prefix and key == "hydra":
            continue
        try:
            value = node[key]
        except InterpolationKeyError as err:
            raise missing_key(err) from None
        except Exception:  # noqa: BLE001 - another resolver's business, checked where it resolves
            continue
        if isinstance(value, (DictConfig, ListConfig)):
            check_references(value, f"{prefix}{key}.")


def validate(cfg: DictConfig, script: str, output_dir: str | os.PathLike | None = None) -> None:
    """Check the composed config of ``script`` (train | eval | sample) before any work: the
    schema, the ``_target_`` nodes, devices and folders (``output_dir``: default
    ``cfg.paths.output_dir``). The first problem is a one-sentence :class:`ConfigError`."""
    for key in REQUIRED_NODES[script]:  # each is instantiated: a _target_ and its options
        if not isinstance(cfg.get(key), DictConfig) or "_target_" not in cfg[key]:
            raise ConfigError(f"the configuration has no {key} settings with a _target_, which {script} needs (a ~{key} "
                              f"override removes them): leave them in (defaults: conf/{script}.yaml and its groups)")
    check_references(cfg)
    check_node(cfg, SCHEMAS[script])
    folder_fix = "choose another folder with hydra.run.dir=... or paths.log_dir=..."
    check_creatable(output_dir if output_dir is not None else cfg.paths.output_dir, "the output folder ", folder_fix)
    check_target(cfg.get("data"), "data")
    check_data_folders(cfg.get("data"))
    if script == "train":
        check_optimizer(cfg.get("optimizer"))
        check_target(cfg.get("scheduler"), "scheduler", call_args=2)
        model = cfg.get("model")
        check_target(model, "model")
        if isinstance(model, DictConfig) and isinstance(model.get("coupling"), str):
            try:
                check_choice("coupling", model.coupling, tuple(COUPLINGS))
            except ValueError as err:
                raise ConfigError(f"invalid model configuration: {err}") from None
        check_conv(model.get("conv") if isinstance(model, DictConfig) else None)
    if script == "sample":
        if cfg.get("device", "auto") != "auto":
            check_device(str(cfg.device))
        if cfg.get("output"):
            check_creatable(cfg.output, "output=", "choose another file with output=<folder>/<name>.png", is_file=True)
