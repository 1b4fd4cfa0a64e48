"""``_target_`` configs without Hydra: the one place that turns such a config into an object and an
object back into its config, so that a model rebuilds from a checkpoint (``cincflow.load``) with
no configuration library.

A config is a mapping with ``_target_`` (a dotted import path) and keyword arguments; with
``_partial_: true`` it stands for ``functools.partial(target, **arguments)``. Arguments may be such
configs themselves (built first). This is the subset of Hydra's ``instantiate`` the project writes.
"""
from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping
from typing import Any

SPECIAL = ("_target_", "_partial_", "_recursive_", "_convert_")


def locate(path: str) -> Any:
    """The object at the dotted ``path`` (the longest importable module prefix, then attributes)."""
    parts = str(path).split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            obj = getattr(obj, attribute)  # AttributeError: the name is not there
        return obj
    raise ImportError(f"no module of {path!r} can be imported")


def is_target(value: Any) -> bool:
    return isinstance(value, Mapping) and "_target_" in value


def build(config: Any) -> Any:
    """The object a ``_target_`` config describes (nested configs and lists built first); other values as they are."""
    if isinstance(config, (list, tuple)):
        return [build(v) for v in config]
    if not is_target(config):
        return {k: build(v) for k, v in config.items()} if isinstance(config, Mapping) else config
    target = locate(config["_target_"])
    options = {k: build(v) for k, v in config.items() if k not in SPECIAL}
    return functools.partial(target, **options) if config.get("_partial_") else target(**options)


def path_of(obj: Any) -> str:
    """The dotted import path of a module-level class or function."""
    return f"{obj.__module__}.{obj.__qualname__}"


def config_of(factory: Any) -> Any:
    """The config of a factory: ``functools.partial(f, **kw)`` -> ``{_target_: f, _partial_: true, **kw}``
    (nested partials too); a module-level class or function -> ``{_target_, _partial_: true}``; a
    string (a registered name) as it is. A ValueError for what no config can describe (a lambda,
    positional arguments bound in a partial)."""
    if isinstance(factory, str):
        return factory
    if isinstance(factory, functools.partial):
        if factory.args:
            raise ValueError(f"{factory!r} binds positional arguments: bind them by keyword so a config can describe it")
        inner = config_of(factory.func)
        if isinstance(inner, str):
            raise ValueError(f"{factory!r} has no importable target")
        return {**inner, **{k: config_of(v) if isinstance(v, functools.partial) else v for k, v in factory.keywords.items()}}
    name = getattr(factory, "__qualname__", "")
    if not callable(factory) or "<" in name or not getattr(factory, "__module__", None):
        raise ValueError(f"{factory!r} is not a module-level class or function, so no config can describe it")
    return {"_target_": path_of(factory), "_partial_": True}
