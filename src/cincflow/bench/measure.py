"""Measurements of the benchmark: interleaved median timings, peak memory, sampling with free conv
solves (a lower bound for every solver) and the first (cold) call of a solver in a fresh process."""
from __future__ import annotations

import json
import os
import platform
import random
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from ..layers.solvers import Solver
from ..layers.speed import exact_inverse_macs
from ..sampling import invertible_convs
from ..timing import wall_time

FIRST_CALL_SLACK_S = 0.5  # the first-call target: cold <= 2 warm + this


def first_call_over_budget(call: dict) -> float:
    """cold / (2 warm + 0.5 s): at most 1 meets the first-call target."""
    return call["cold_s"] / (2 * call["warm_s"] + FIRST_CALL_SLACK_S)


def round_times(fns: dict, device: torch.device, reps: int, warmup: int = 1, seed: int = 0) -> dict[object, list[float]]:
    """Wall times (s) of each function in each of ``reps`` rounds after ``warmup`` rounds; every round
    calls all of them once, so that a change of machine load hits them alike (CUDA synchronised), each
    round in its own order (a permutation drawn from ``seed``), so that none always runs right after
    the same other one: a function that runs after one that fills the caches or the allocator with
    other data pays for it (rotating the order would not help: it keeps every function's predecessor).
    """
    for _ in range(warmup):
        for fn in fns.values():
            wall_time(fn, device)
    samples = {key: [] for key in fns}
    keys, rng = list(fns), random.Random(seed)
    for _ in range(reps):
        rng.shuffle(keys)
        for key in keys:
            samples[key].append(wall_time(fns[key], device))
    return samples


def medians(samples: dict[object, list[float]]) -> dict:
    """The median of each key's timings."""
    return {key: statistics.median(values) for key, values in samples.items()}


def timed(fns: dict, device: torch.device, reps: int, warmup: int = 1) -> dict:
    """Median wall time (s) of each function over the rounds of :func:`round_times`."""
    return medians(round_times(fns, device, reps, warmup))


def median_ratio(samples: dict[object, list[float]], key, reference) -> float:
    """The median over rounds of key's time / reference's time in the same round: steadier than the ratio
    of medians when the machine's speed drifts between rounds."""
    return statistics.median(a / b for a, b in zip(samples[key], samples[reference]))


def gemm_rate(dtype: torch.dtype, device: torch.device, size: int = 512, reps: int = 5) -> float:
    """Multiply-adds per second of this device's best case, a size^3 matrix product (fastest of ``reps``)."""
    a = torch.randn(size, size, dtype=dtype, device=device)
    a @ a
    return size ** 3 / min(wall_time(lambda: a @ a, device) for _ in range(reps))


def gemm_rates(device: torch.device, dtypes: tuple[str, ...] = ("float32", "float64")) -> dict[str, float]:
    """{dtype name: :func:`gemm_rate`} for ``dtypes``: one measurement each, to share between tables."""
    return {dtype: gemm_rate(getattr(torch, dtype), device) for dtype in dtypes}


def peak_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes allocated while ``fn`` runs, beyond what was allocated before: the CUDA allocator's
    high-water mark, or on the CPU the running sum of the profiler's allocation and free events."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    # Kineto's own log lines (a CUDA-probe ERROR on machines without a GPU, profiler start/stop) are not the user's
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    changes = sorted(
        (e.time_range.start, e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage)
        for e in prof.events()
    )
    live = peak = 0
    for _, change in changes:
        live += change
        peak = max(peak, live)
    return int(peak)


@contextmanager
def using_solvers(model: nn.Module, solvers: list[Solver] | Solver | str) -> Iterator[None]:
    """Inside the block the CInC / Emerging layers of ``model`` use ``solvers`` (one per layer, in
    :func:`cincflow.sampling.invertible_convs` order, or one for all); their own ones afterwards."""
    layers = invertible_convs(model)
    saved = [layer.solver for layer in layers]
    chosen = solvers if isinstance(solvers, list) else [solvers] * len(layers)
    try:
        for layer, solver in zip(layers, chosen):
            layer.solver = solver
        yield
    finally:
        for layer, solver in zip(layers, saved):
            layer.solver = solver


class Recorder(Solver):
    """Solves with ``inner`` and keeps every solution, in call order, and the least multiply-adds any
    exact solver needs for each (:func:`~cincflow.layers.speed.exact_inverse_macs`)."""

    def __init__(self, inner: Solver):
        self.inner, self.solutions, self.macs = inner, [], []

    def solve(self, y, weight, bias=None, entries=None):
        self.solutions.append(self.inner.solve(y, weight, bias, entries))
        self.macs.append(y.shape[0] * exact_inverse_macs(*y.shape[1:], weight.shape[-1]))
        return self.solutions[-1]


class Replay(Solver):
    """Returns recorded solutions in call order, solving nothing (:meth:`rewind` starts over)."""

    def __init__(self, solutions: list[torch.Tensor]):
        self.solutions = solutions
        self.rewind()

    def rewind(self) -> None:
        self._next = iter(self.solutions)

    def solve(self, y, weight, bias=None, entries=None):
        return next(self._next)


def free_inverse(model: nn.Module, run: Callable[[], object]) -> Callable[[], object]:
    """``run`` (a sampling pass of ``model``) with the invertible convs' solves made free: a first, real
    pass records each layer's solutions; the returned function repeats the pass with every solve a lookup
    of its recorded solution, so it computes the same samples and its time is what sampling would cost if
    the convolutions inverted in no time at all: a lower bound for every solver. Its ``solve_macs``: the
    least multiply-adds the pass's solves need together (any exact solver)."""
    recorders = [Recorder(layer.solver) for layer in invertible_convs(model)]
    with using_solvers(model, list(recorders)):
        run()
    replays = [Replay(r.solutions) for r in recorders]

    def replay():
        for r in replays:
            r.rewind()
        with using_solvers(model, list(replays)):
            return run()

    replay.solve_macs = sum(sum(r.macs) for r in recorders)
    return replay


def cold_call(solver: str, dtype: str, n: int, c: int, size: int, threads: int | None, device: str = "cpu", conv: str = "cinc",
              runs: int = 1) -> dict:
    """The first and a warm inverse of a fresh CInC (or Emerging) layer, n x c x size x size, in a fresh
    Python process (:mod:`cincflow.bench.cold`), ``runs`` processes one after another:
    ``{"cold_s": median first call, "warm_s": best warm call, "cold_runs_s": every first call}`` (one
    first call is one sample: a moment of another process on the core once made one 2.7x its usual)."""
    cmd = [sys.executable, "-m", "cincflow.bench.cold", solver, dtype, str(n), str(c), str(size), str(threads or 0), device, conv]
    calls = []
    for _ in range(runs):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=os.environ.copy())
        if proc.returncode != 0:
            raise RuntimeError(f"cold-call measurement failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
        calls.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    cold = [c["cold_s"] for c in calls]
    return {"cold_s": statistics.median(cold), "warm_s": min(c["warm_s"] for c in calls), "cold_runs_s": cold}


def machine(device: torch.device) -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
    }
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu_model"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
