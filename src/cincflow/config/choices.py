"""Config-group options named on the command line, checked before Hydra composes the configuration:
``data=nope`` (or ``conv=``, ``coupling=``, ``trainer=``, ``experiment=``, ... a sweep's every value
included) is one line ``error: unknown data option 'nope': choose one of ...``, exit status 2, instead of
Hydra's block with its search path (exit 1). The groups are those of ``conf/`` and of any folder added
with ``hydra.searchpath=[...]``; Hydra's own groups (``hydra/...``) are left to Hydra."""
from __future__ import annotations

from hydra._internal.config_repository import ConfigRepository
from hydra._internal.config_search_path_impl import ConfigSearchPathImpl
from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, Override
from hydra.core.plugins import Plugins

from ..errors import ConfigError
from ..paths import CONF_DIR


def repository(search_path: list[str]) -> ConfigRepository:
    """The config repository of ``conf/`` and ``search_path`` (``file://`` or ``pkg://`` entries)."""
    Plugins.instance()  # registers Hydra's config sources (file://, pkg://)
    path = ConfigSearchPathImpl()
    path.append("main", f"file://{CONF_DIR}")
    for entry in search_path:
        path.append("command-line", str(entry))
    return ConfigRepository(config_search_path=path)


def named_values(override: Override) -> list[str]:
    """The options an override names: one, a list (``logger=[csv,wandb]``) or a sweep's (``conv=cinc,glow``)."""
    value = override.value()
    values = value.list if isinstance(value, ChoiceSweep) else value if isinstance(value, list) else [value]
    return [str(v) for v in values if isinstance(v, (str, int, float)) and not isinstance(v, bool)]


def options_of(repo: ConfigRepository, group: str) -> list[str]:
    """The options of ``group``, then each sub-group as ``<sub>/<name> (N in conf/<group>/<sub>/)``."""
    options = sorted(repo.get_group_options(group))
    for sub in sorted(repo.get_group_options(group, results_filter=None)):
        if sub not in options and repo.group_exists(f"{group}/{sub}"):
            options.append(f"{sub}/<name> ({len(repo.get_group_options(f'{group}/{sub}'))} in conf/{group}/{sub}/)")
    return options


def check_choices(argv: list[str]) -> None:
    """A ConfigError naming the first ``group=option`` of ``argv`` whose group has no such option."""
    try:
        known, extra = get_args_parser().parse_known_args(argv)
        overrides = OverridesParser.create().parse_overrides([*known.overrides, *extra])
    except Exception:  # noqa: BLE001 - a malformed command line: Hydra's own message says what is wrong
        return
    search = [v for o in overrides if o.key_or_group == "hydra.searchpath" for v in (o.value() or [])]
    repo = repository(search)
    for override in overrides:
        group = override.key_or_group
        if override.is_delete() or group.startswith("hydra") or not repo.group_exists(group):
            continue
        for value in named_values(override):
            if value != "null" and not repo.config_exists(f"{group}/{value}.yaml"):
                raise ConfigError(f"unknown {group} option {value!r}: choose one of {', '.join(options_of(repo, group))} "
                                  f"(conf/{group}/)")
