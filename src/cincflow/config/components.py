"""Checks of the ``_target_`` nodes of a configuration (data, model, conv and coupling factories, optimiser,
schedule, the LightningModule, callbacks), before anything is built: one rule, one home.

* the options given: the target's signature takes them, each of its annotated type, and every
  option it requires is there (:func:`check_target`);
* their values: the component's own rules, where they live. A class with a ``check_settings``
  static method (:class:`~cincflow.training.lit_module.FlowLitModule`,
  :class:`~cincflow.training.callbacks.SampleGrids`) is asked with the options given; factories
  are tried on a tiny input (one conv layer, one coupling, one schedule of a throw-away optimiser),
  so their constructors' rules apply unchanged.
"""
from __future__ import annotations

import inspect
from typing import Any, get_type_hints

import torch
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError, missing_setting, one_line
from ..layers.step import CONV_LAYERS, COUPLINGS, check_choice
from ..paths import CONF_DIR
from .schema import check_value, plain

EXAMPLES = {"data": "cincflow.data.DigitsDataModule", "optimizer": "torch.optim.Adamax",
            "scheduler": "cincflow.training.schedule.linear_warmup", "model": "cincflow.Glow",
            "model.conv": "cincflow.layers.step.cinc", "model.coupling": "cincflow.layers.quad.QuadCoupling",
            "module": "cincflow.training.lit_module.FlowLitModule", "module.dequant": "cincflow.dequant.VariationalDequantizer"}
#: options a coupling factory is called with by the model (and where they are set instead)
COUPLING_ARGS = {"width": "model.width", "actnorm": "model.conditioner_actnorm"}
#: options the module passes to a dequantiser itself
DEQUANT_ARGS = {"channels": "the module, from model.in_channels"}
#: options the module passes to a schedule itself
SCHEDULER_ARGS = {"steps_per_epoch": "the module, from the training data"}


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
    constructor (a ``**common`` passed on to the base class's: its options too), a function, or for a
    conv factory the layer its options go to."""
    fn = CONV_LAYERS.get(target, target)
    chain = [c.__init__ for c in fn.__mro__ if "__init__" in vars(c)] if inspect.isclass(fn) else [fn]
    named: dict[str, inspect.Parameter] = {}
    hints: dict[str, Any] = {}
    var_kw = True
    for init in chain:  # each constructor in the order its **kwargs pass them on
        params = list(inspect.signature(init).parameters.values())
        if params and params[0].name == "self":
            params = params[1:]
        if not named:
            while target in CONV_LAYERS and params and params[0].default is inspect.Parameter.empty:
                params = params[1:]  # a conv layer's channels: the factory passes them
        try:
            hints = {**get_type_hints(init), **hints}
        except Exception:  # unresolvable annotations: options are checked by name only
            pass
        for p in params:
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                named.setdefault(p.name, p)
        var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
        if not var_kw:
            break
    return named, hints, var_kw


def resolved(node: DictConfig, key: str) -> tuple[bool, Any]:
    """(True, the plain value of ``node[key]``), or (False, None) while it cannot resolve yet (a
    ``${hydra:...}`` of a folder Hydra has not made; it resolves when the job runs)."""
    try:
        return True, plain(node[key])
    except Exception:  # noqa: BLE001 - another resolver's business, checked where it resolves
        return False, None


def given_options(node: DictConfig) -> dict[str, Any]:
    """The options given in ``node`` that can be resolved now, as plain values."""
    values = {str(k): resolved(node, str(k)) for k in node if not str(k).startswith("_")}
    return {k: v for k, (ok, v) in values.items() if ok}


def check_target(node: Any, key: str, call_args: int = 0, supplied: dict[str, str] | None = None) -> Any:
    """``node`` (a ``_target_`` config) names an importable object that takes every option given, each
    of its annotated type, and is given every option it requires; ``call_args`` positional arguments
    and the ``supplied`` keywords (name -> who supplies it) are passed at call time. Returns the target."""
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return None
    target = target_of(node, key)
    named, hints, var_kw = options_of(target)
    supplied = supplied or {}
    positional = [n for n, p in named.items() if p.default is inspect.Parameter.empty
                  and p.kind is p.POSITIONAL_OR_KEYWORD][:call_args]
    where = key.split(".")[0]
    given = [str(k) for k in node if not str(k).startswith("_")]
    for option in given:
        if option in supplied:
            raise ConfigError(f"invalid {where} configuration: {key}.{option} is not an option of {node._target_} here: "
                              f"{supplied[option]} sets it; remove it (~{key}.{option})")
        if option in positional or (option not in named and not var_kw):
            takes = ", ".join(n for n in named if n not in positional and n not in supplied) or "no options"
            raise ConfigError(
                f"invalid {where} configuration: {node._target_} got an unexpected keyword argument '{option}' "
                f"({key}.{option}; it takes: {takes}): remove it (~{key}.{option}) or choose another {key}._target_ "
                f"that takes it")
    rules = getattr(target, "check_settings", None)
    if callable(rules):  # the component's own value rules (types included) first: its own words
        try:
            rules(**{k: v for k, v in given_options(node).items() if k in inspect.signature(rules).parameters})
        except (ValueError, TypeError) as err:
            message = one_line(err)
            option = message.split()[0]  # the rules name the option first
            raise ConfigError(f"invalid {where} configuration: {message}: change it with {key}.{option}=...") from None
    for option in given:
        ok, value = resolved(node, option)
        if ok and option in hints and value is not None:  # null: the default (or, for the model, from the data)
            default = named[option].default if option in named else None
            example = default if default not in (None, inspect.Parameter.empty) else "..."
            check_value(f"{key}.{option}", value, hints[option], {"example": example}, f"{where} ")
    if not node.get("_partial_"):  # a call with the options alone: every required one must be there
        for name, p in named.items():
            if p.default is inspect.Parameter.empty and name not in positional and name not in supplied and name not in node:
                raise missing_setting(f"{key}.{name}")
    return target


def try_factory(node: Any, key: str, call: Any, group: str) -> None:
    """``call(target, options)`` (a tiny build) turns the factory's own ValueError/TypeError into one line."""
    try:
        call(target_of(node, key), given_options(node))
    except (ValueError, TypeError) as err:
        raise ConfigError(f"invalid {key.split('.')[0]} configuration: {one_line(err)} ({key}: {node._target_}): change "
                          f"the {key} option it names (defaults: conf/{group}/)") from None


def check_conv(node: Any) -> None:
    """Build one conv layer of the factory ``model.conv`` (4 channels) to check its option values."""
    if check_target(node, "model.conv", call_args=1) is not None:
        try_factory(node, "model.conv", lambda target, options: target(4, **options), "conv")


def check_coupling(node: Any) -> None:
    """``model.coupling``: a name of :data:`~cincflow.layers.step.COUPLINGS`, or a coupling factory, one
    of which is built (the smallest channel count it takes) to check its option values."""
    if isinstance(node, str):
        try:
            check_choice("coupling", node, tuple(COUPLINGS))
        except ValueError as err:
            raise ConfigError(f"invalid model configuration: {err}") from None
    elif check_target(node, "model.coupling", call_args=1, supplied=COUPLING_ARGS) is not None:
        def build(target, options):
            return target(2 * getattr(target, "blocks", 2), width=2, actnorm=False, **options)

        try_factory(node, "model.coupling", build, "coupling")


def check_scheduler(node: Any) -> None:
    """``scheduler``: a factory called as ``scheduler(optimizer=...)``; one is made for a throw-away
    optimiser to check its option values (torch's own rules included)."""
    if check_target(node, "scheduler", call_args=1, supplied=SCHEDULER_ARGS) is None:
        return

    def build(target, options):
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        extra = {"steps_per_epoch": lambda: 1} if "steps_per_epoch" in options_of(target)[0] else {}
        target(optimizer=optimizer, **options, **extra)

    try_factory(node, "scheduler", build, "scheduler")


def check_dequant(node: Any) -> None:
    """``module.dequant``: a factory called as ``dequant(channels=C)``; one is built for one channel to
    check its option values."""
    if check_target(node, "module.dequant", supplied=DEQUANT_ARGS) is not None:
        try_factory(node, "module.dequant", lambda target, options: target(channels=1, **options), "dequant")


def default_optimizer():
    """The training job's default optimiser, ``conf/train.yaml``'s ``optimizer`` node: a partial taking the parameters."""
    return instantiate(OmegaConf.load(CONF_DIR / "train.yaml").optimizer)


def check_optimizer(node: Any) -> None:
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return
    target = target_of(node, "optimizer")
    if not (inspect.isclass(target) and issubclass(target, torch.optim.Optimizer)):
        raise ConfigError(f"optimizer._target_={node._target_} is not a torch.optim.Optimizer: use e.g. "
                          f"optimizer._target_=torch.optim.Adamax (or Adam, AdamW)")
    check_target(node, "optimizer", call_args=1)


def check_callbacks(node: Any) -> None:
    """Every entry of the ``callbacks`` group with a ``_target_``."""
    if isinstance(node, DictConfig):
        for name, entry in node.items():
            check_target(entry, f"callbacks.{name}")
