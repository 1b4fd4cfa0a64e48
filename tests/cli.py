"""The entry scripts (``src/train.py``, ``src/eval.py``, ...) run as a user runs them, in a child process.

``run_cases([(script, args), ...])`` executes each script with ``runpy`` as ``__main__`` under
``sys.argv = [script, *args]`` (so Hydra parses the real command line and the script exits as it
would: ``sys.exit`` statuses, an uncaught exception is status 1 with its traceback), one after the
other in ONE new child process, and returns per command ``{"code", "stdout", "stderr"}``. Output is
captured at the file-descriptor level, so it holds everything the command prints: Python, logging
handlers, C extensions and the processes it starts.

A fresh interpreter costs ~6 s of imports (torch, Lightning) before the first line of a script, so
the children are forked from multiprocessing's *forkserver*, a clean single-threaded process that
imported those libraries once (per test process): each call still gets a new process with the
environment and working directory of a real launch (``env``: default the test's ``os.environ``
without ``HYDRA_FULL_ERROR``/``CINCFLOW_DEBUG``), at the cost of a fork. Tests of the process
itself (exit status seen by a shell, signals, concurrent launches) use ``subprocess`` instead.
"""
from __future__ import annotations

import multiprocessing
import os
import runpy
import sys
import tempfile
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRELOAD = ["hydra", "lightning.pytorch", "cincflow.jobs", "cincflow.config", "cincflow.bench.suite", "cincflow.reproduce"]
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(PRELOAD)


def launch_env(**extra: str) -> dict[str, str]:
    """The environment of a user's launch: this one, without the traceback switches, unbuffered."""
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "CINCFLOW_DEBUG")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def _run_one(script: str, args: list[str]) -> int:
    sys.argv = [script, *args]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # as the interpreter does with an uncaught exception
        traceback.print_exc()
        return 1
    return 0


def _child(conn, cases: list[tuple[str, list[str]]], env: dict[str, str], cwd: str, paths: list[str]) -> None:
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    sys.path[:0] = paths  # as PYTHONPATH would put them
    results = []
    for script, args in cases:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(out.fileno(), 1), os.dup2(err.fileno(), 2)
            code = _run_one(script, args)
            sys.stdout.flush(), sys.stderr.flush()
            texts = []
            for f in (out, err):
                f.seek(0)
                texts.append(f.read().decode(errors="replace"))
        results.append({"code": code, "stdout": texts[0], "stderr": texts[1]})
    conn.send(results)
    conn.close()


def run_cases(cases: list[tuple[str, list[str]]], timeout: float = 300, env: dict[str, str] | None = None,
              paths: list[str] | None = None) -> list[dict]:
    """Run ``(script, args)`` commands (script: ``train``, ``eval``, ``sample``, ``benchmark``, ... in
    src/, or an absolute path) one after the other in one new process; their results in order. ``paths``: folders to import
    from first (a user's own packages, as PYTHONPATH would add them)."""
    paths_ = [(script if Path(script).is_absolute() else str(ROOT / "src" / f"{script.removesuffix('.py')}.py"),
               [str(a) for a in args]) for script, args in cases]
    receive, send = _CONTEXT.Pipe(duplex=False)
    child = _CONTEXT.Process(target=_child, args=(send, paths_, env if env is not None else launch_env(), str(ROOT), list(paths or [])))
    child.start()
    send.close()
    try:
        if not receive.poll(timeout):
            raise AssertionError(f"the commands did not finish within {timeout} s: {cases}")
        results = receive.recv()
    except EOFError:
        raise AssertionError(f"the child process died (exit {child.exitcode}) running {cases}") from None
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
    return results
