"""The repository's own folders, and paths given on the command line (relative to the directory the
command was run in)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]  # the repository's (src/cincflow/paths.py)
CONF_DIR = REPO_ROOT / "conf"


def resolve_path(path: str | os.PathLike) -> Path:
    """An absolute path; ``~`` is expanded and relative paths are taken from the current directory."""
    p = Path(os.path.expanduser(str(path)))
    return p if p.is_absolute() else (Path.cwd() / p).resolve()


def ensure_writable_dir(path: Path) -> None:
    """Create ``path`` and make sure files can be written there (a :class:`ConfigError` otherwise)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_test_"):
            pass
    except OSError as err:
        raise ConfigError(
            f"the output folder {path} is not writable ({err.strerror or err}): choose another one with "
            f"hydra.run.dir=... or paths.log_dir=..."
        ) from err
