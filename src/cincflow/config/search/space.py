"""The checks of an Optuna search before its first trial (the launch's Hydra callback runs them,
cincflow.config.launch.check_inputs): ``optimized_metric`` is a metric the job logs, every entry of
``hydra.sweeper.params`` is a key of the configuration (or a config group with those options) written in a
distribution syntax the sweeper reads; each problem is one line ``error: ...`` (exit 2) before any folder
or trial. :func:`check_search` also returns one trial's overrides (every parameter at its first choice or
lower bound), whose configuration the launch then checks like a single run's."""
from __future__ import annotations

import difflib
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..choices import options_of, repository
from ..schema import as_override
from ...errors import ConfigError, one_line
from .objective import LOGGED_METRICS

SYNTAX = ("choice(a, b, ...), range(start, stop, step), interval(low, high) or tag(log, interval(low, high)) "
          "(Hydra's override grammar; a plain value fixes the key)")
OPTUNA_SWEEPER = "OptunaSweeper"


def is_search(config: DictConfig) -> bool:
    """Whether the sweeper is an Optuna one (hydra-optuna-sweeper's or cinc-flow's resumable one)."""
    return str(OmegaConf.select(config, "hydra.sweeper._target_") or "").endswith(OPTUNA_SWEEPER)


def _keys(node: Any, prefix: str = "") -> list[str]:
    if not isinstance(node, DictConfig):
        return []
    out = []
    for key in node.keys():
        out.append(f"{prefix}{key}")
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            out.extend(_keys(child, f"{prefix}{key}."))
    return out


def _first_value(distribution: Any) -> Any:
    """A value of ``distribution`` (an Optuna distribution): its first choice, else its lower bound."""
    choices = getattr(distribution, "choices", None)
    return choices[0] if choices is not None else distribution.low


def check_metric(config: DictConfig) -> None:
    metric = config.get("optimized_metric")
    if metric not in LOGGED_METRICS:
        raise ConfigError(f"optimized_metric={metric} is not a metric the training job logs: choose one of "
                          f"{', '.join(LOGGED_METRICS)} (e.g. optimized_metric=val/bpd_best)")


def check_key(config: DictConfig, key: str, distribution: Any, repo: Any) -> None:
    """ConfigError unless ``key`` is a config group with the searched options or a key of ``config``."""
    name = key.lstrip("+")
    if repo.group_exists(name):
        for choice in getattr(distribution, "choices", None) or [distribution]:
            if not repo.config_exists(f"{name}/{choice}.yaml"):
                raise ConfigError(f"hydra.sweeper.params.{name}: unknown {name} option {choice!r} in the search space: "
                                  f"choose among {', '.join(options_of(repo, name))} (conf/{name}/)")
        return
    if key.startswith("+") or OmegaConf.select(config, name, default=KeyError) is not KeyError:
        return
    near = difflib.get_close_matches(name, _keys(config), n=1)
    hint = f" (did you mean {near[0]}?)" if near else ""
    raise ConfigError(f"hydra.sweeper.params: {name} is not a key of this configuration{hint}: search keys that "
                      f"`python src/train.py --cfg job` shows, or config groups (conv, coupling, ...); +{name} adds a new one")


def check_search(config: DictConfig) -> list[str]:
    """Check the search (see the module's docstring); the overrides of one trial of it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override

    check_metric(config)
    parser = OverridesParser.create()
    repo = repository([])
    trial = []
    for key, value in (OmegaConf.select(config, "hydra.sweeper.params") or {}).items():
        text = f"{key}={value}"
        try:
            (override,) = parser.parse_overrides([text])
            distribution = create_optuna_distribution_from_override(override)
        except Exception as err:  # noqa: BLE001 - Hydra's parser and the sweeper raise several kinds
            raise ConfigError(f"hydra.sweeper.params.{key}: {value!r} is not a search-space entry the Optuna sweeper "
                              f"reads ({one_line(err)}): write {SYNTAX}") from err
        if isinstance(distribution, str):  # a fixed value
            check_key(config, str(key), distribution, repo)
            trial.append(text)
            continue
        check_key(config, str(key), distribution, repo)
        trial.append(f"{key}={as_override(_first_value(distribution))}")
    return trial
