"""Issue #22's measurements (``src/benchmark.py suite=speed``, part of ``suite=all``): the comparison
with normflows (:mod:`.compare`), the solver table (:mod:`.solver_table`), training throughput
(:mod:`.throughput`) and ``torch.compile`` of glow + affine at normflows' shape (compile time: the
first call of each task, which compiles; speed-up: interleaved medians against the eager model)."""
from __future__ import annotations

import contextlib
import copy
import os
import tempfile
from collections.abc import Callable, Iterator
from unittest import mock

import torch

from ..compiled import compile_flow
from ..timing import wall_time
from . import compare, solver_table, throughput
from .measure import gemm_rates, timed

SIZES = {
    "cpu": dict(shape=compare.SHAPE, reference=True, reps=15, solver_n=100, solver_reps=15, solver_shapes=solver_table.SHAPES,
                cold=True, throughput=throughput.SIZES, throughput_reps=5, compile=True),
    "tiny": dict(shape=dict(channels=3, image_size=8, levels=2, depth=1, width=8, batch=4, samples=4), reference=False, reps=1,
                 solver_n=4, solver_reps=1, solver_shapes=((12, 4),), cold=False, compile=False, throughput_reps=1,
                 throughput={"tiny": dict(channels=1, image_size=8, levels=2, depth=1, width=8, n_bits=5, batch=4)}),
}
SIZES["paper"] = SIZES["cpu"]


@contextlib.contextmanager
def fresh_inductor_cache() -> Iterator[None]:
    """An empty TorchInductor cache folder for the block (read by inductor at each compile), so that a
    first call measures a real compilation, not a hit in the cache of an earlier run."""
    with tempfile.TemporaryDirectory(prefix="inductor-") as folder, mock.patch.dict(os.environ, TORCHINDUCTOR_CACHE_DIR=folder):
        yield


def bench_compile(device: torch.device, reps: int, shape: dict, log: Callable[[str], None] = print) -> dict:
    """glow + affine compiled with :func:`~cincflow.compiled.compile_flow` against the eager model: the
    first call of each task (compiling, with an empty inductor cache) and the warm medians, interleaved."""
    torch.manual_seed(0)
    x = (torch.rand(shape["batch"], shape["channels"], shape["image_size"], shape["image_size"]) - 0.5).to(device)
    eager = compare.ours("glow", x, shape).to(device)
    built = {"eager": eager, "compiled": compile_flow(copy.deepcopy(eager))}
    tasks = {name: (compare.our_tasks(m, x, shape["samples"], True), compare.our_tasks(copy.deepcopy(m), x, shape["samples"], False))
             for name, m in built.items()}
    fns = compare.task_functions(tasks)
    with fresh_inductor_cache():
        first = {task: wall_time(fns[("compiled", task)], device) for task in compare.TASKS}
    times = timed(fns, device, reps)
    row = {"first_call_s": first, "seconds": {name: {t: times[(name, t)] for t in compare.TASKS} for name in built}}
    row["speedup"] = {t: times[("eager", t)] / times[("compiled", t)] for t in compare.TASKS}
    log("compile: first calls " + ", ".join(f"{t} {s:.0f} s" for t, s in first.items())
        + "; speed-up " + ", ".join(f"{t} {v:.2f}x" for t, v in row["speedup"].items()))
    return row


def run(size: str, device: torch.device, threads: int | None, log: Callable[[str], None] = print) -> dict:
    cfg = SIZES[size]
    rates = gemm_rates(device, solver_table.DTYPES)  # one measurement for the comparison's floor and the table's
    result = {"compare": compare.run(device, cfg["reps"], cfg["shape"], cfg["reference"], log, rates)}
    result["solvers"] = solver_table.run(cfg["solver_n"], cfg["solver_reps"], device, threads, cfg["cold"],
                                         cfg["solver_shapes"], log, rates)
    result["throughput"] = throughput.run(device, cfg["throughput_reps"], cfg["throughput"], log)
    result["compile"] = bench_compile(device, cfg["reps"], cfg["shape"], log) if cfg["compile"] else None
    return result
