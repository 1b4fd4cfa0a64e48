"""What a launch's checks built, handed to its job in the same process.

The Hydra callbacks check a launch's inputs before Hydra makes the run folder, so they read the data
and the checkpoint; the job then takes those objects instead of reading them again (a launch reads
each once). An entry is keyed by what it was built from (the plain data config, the checkpoint's
path) and taken at most once, so nothing outlives the launch that made it; a job that finds nothing
(called from Python, another process, a multirun job) builds its own."""
from __future__ import annotations

import json
from typing import Any

_PREPARED: dict[tuple[str, str], Any] = {}


def key_of(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def keep(kind: str, source: Any, obj: Any) -> None:
    """Hand ``obj`` (built from ``source``) to the job of this launch (the previous one of its kind goes)."""
    for key in [k for k in _PREPARED if k[0] == kind]:
        del _PREPARED[key]
    _PREPARED[(kind, key_of(source))] = obj


def take(kind: str, source: Any) -> Any:
    """The object built from ``source`` by this launch's checks (removed from here), or None."""
    return _PREPARED.pop((kind, key_of(source)), None)
