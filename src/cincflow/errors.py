"""User-facing errors of the training system, and how the entry scripts report them.

Every class here carries a complete one-sentence message (what is wrong and how to fix it). The
entry scripts (``src/train.py``, ``src/eval.py``, ``src/sample.py``) catch these and the data
layer's :class:`DatasetNotFoundError` / :class:`CorruptDataError` and print

    error: <message>

as ONE line on stderr, then exit with :attr:`CincFlowError.exit_code` (2: bad input or
configuration, 3: a fault while running: non-finite training, a checkpoint that could not be
written). ``HYDRA_FULL_ERROR=1`` or ``CINCFLOW_DEBUG=1`` also prints the traceback first. Any other
exception is a bug and keeps its full traceback.

This module imports nothing but the standard library (``import cincflow.errors`` is instant): OmegaConf's
missing-key errors are recognised by their class names, not imported.
"""
from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

EXIT_BAD_INPUT = 2
EXIT_FAULT = 3


class CincFlowError(RuntimeError):
    """Base of the user-facing errors; ``exit_code`` is the entry scripts' exit status."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(CincFlowError, ValueError):
    """An invalid configuration (model, data shape, script arguments)."""


class CheckpointError(CincFlowError):
    """``ckpt_path`` is not a usable checkpoint (unreadable, truncated, not a Lightning .ckpt)."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """``ckpt_path`` does not exist (or ``ckpt_path=last`` found no last.ckpt)."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's weights do not fit the configured architecture (keys or shapes differ)."""


class CheckpointWriteError(CincFlowError, OSError):
    """A checkpoint could not be written (disk full, unwritable folder); the previous one is intact."""

    exit_code = EXIT_FAULT


class NonFiniteTrainingError(CincFlowError):
    """Too many consecutive optimiser steps with a non-finite loss or gradient."""

    exit_code = EXIT_FAULT


class TrainingInterrupted(CincFlowError):
    """SIGTERM or SIGINT stopped training; the message says how to resume. Exit 128 + signal number
    (143, 130), so a scheduler does not read the run as a success."""

    prefix = "interrupted"

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.exit_code = 128 + int(signal_number)


class DatasetNotFoundError(RuntimeError):
    """The dataset files are missing from ``data_dir`` (and cannot be downloaded); the message says which
    files were expected where and how to obtain them."""


class CorruptDataError(RuntimeError):
    """A dataset file exists but cannot be read or has the wrong shape/format; the message names it."""


USER_ERRORS: tuple[type[BaseException], ...] = (CincFlowError, DatasetNotFoundError, CorruptDataError)


def find_user_error(exc: BaseException | None) -> BaseException | None:
    """The first user-facing error in the chain ``exc``, ``exc.__cause__``, ``exc.__context__``...
    (Hydra's instantiate and some libraries wrap the original exception)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, USER_ERRORS):
            return exc
        missing = missing_key(exc)
        if missing is not None:
            return missing
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def missing_setting(key: str, referrer: str | None = None, example: str | None = None) -> ConfigError:
    """The one message for a setting the configuration lacks (a ``~key`` override removed it): one the
    job needs, or one ``referrer`` interpolates (``${key}``)."""
    if referrer:
        return ConfigError(f"{referrer} refers to {key}, which the configuration lacks (a ~ override removes it): "
                           f"leave it in (defaults: conf/)")
    value = f"e.g. {key}={example}" if example is not None else "(defaults: conf/)"
    return ConfigError(f"the configuration has no {key}, which this job needs (a ~{key} override removes it): "
                       f"leave it in or give it a value, {value}")


def missing_key(exc: BaseException) -> ConfigError | None:
    """:func:`missing_setting` for OmegaConf's "Key 'x' is not in struct" and a dangling
    interpolation raised inside a job, else None (recognised by class name: no OmegaConf import)."""
    names = {cls.__name__ for cls in type(exc).__mro__ if cls.__module__.startswith("omegaconf")}
    if "InterpolationKeyError" in names:  # ${samples.n} where samples was removed
        key = str(exc).split("'")[1] if "'" in str(exc) else str(exc)
        return missing_setting(key, referrer=getattr(exc, "full_key", None) or "a setting")
    if not names & {"ConfigAttributeError", "ConfigKeyError"} or "not in struct" not in str(exc):
        return None
    return missing_setting(getattr(exc, "full_key", None) or str(exc).split("'")[1])


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def exit_code_of(exc: BaseException) -> int:
    return int(getattr(exc, "exit_code", EXIT_BAD_INPUT))


def report_errors(job: Callable[..., Any], *args: Any) -> Any:
    """Run ``job(*args)``; a user-facing error becomes ``error: <message>`` on stderr and
    ``sys.exit(<its exit code>)``; anything else propagates with its traceback."""
    try:
        return job(*args)
    except Exception as exc:
        err = find_user_error(exc)
        if err is None:
            raise
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or os.environ.get("CINCFLOW_DEBUG", "") not in ("", "0"):
            traceback.print_exc()
        sys.stdout.flush()
        print(f"{getattr(err, 'prefix', 'error')}: {one_line(err)}", file=sys.stderr, flush=True)
        sys.exit(exit_code_of(err))
