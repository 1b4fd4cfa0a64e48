"""Issue #22's solver table: one CInC and one Emerging layer at each benchmarked shape and dtype, its
forward pass, every exact solver (``tiled``, ``wavefront``, ``kernel``, the published ``sequential``
raster scan) and ``auto`` (with the solver it chose, per factor for Emerging), warm and interleaved,
and auto's first call in a fresh process (the median of :data:`COLD_RUNS` processes).

Per row: each solver's speed-up over ``sequential`` (target: the layer's inverse, ``auto``, >= 20x),
the best inverse / forward (target <= 1.3 at 12x32x32 float32), auto / best (target <= 1.1; both ratios
are medians of the ratio within each round, steadier than a ratio of medians on a host whose speed drifts) and
auto's first call against 2 warm calls + 0.5 s (target <= 1). And the multiply-add floor: the least
multiply-adds of any exact inverse (:func:`~cincflow.layers.speed.exact_inverse_macs`, every factor) at
this device's best matrix-product rate (:func:`~.measure.gemm_rate`), so the largest speed-up over
``sequential`` that any solver could reach here (where it is under 20x, the target cannot be met on this
device at this thread count).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..layers.cinc import CInCConv
from ..layers.emerging import EmergingConv
from ..layers.solvers import Auto, make_solver
from ..layers.speed import exact_inverse_macs
from .measure import cold_call, gemm_rates, median_ratio, medians, round_times, timed
from .models import perturb

CONVS = {"cinc": CInCConv, "emerging": EmergingConv}
SHAPES = ((12, 16), (12, 32), (48, 16))  # (channels, side)
DTYPES = ("float32", "float64")
EXACT = ("tiled", "wavefront", "kernel")  # auto's candidates, each exact
SEQUENTIAL = "sequential"
COLD_RUNS = 3  # fresh processes per first-call measurement (the median counts)


def choices(layer, y: torch.Tensor) -> str:
    """The solver ``auto`` decided for each factor of ``layer`` on inputs like ``y`` ("tiled" or, for
    Emerging's two factors, "anticausal/causal")."""
    names = [Auto.choice(y, f.cache.entries(f())) or "?" for f in layer.factors()]
    return "/".join(dict.fromkeys(names)) if len(set(names)) == 1 else "/".join(names)


@torch.no_grad()
def bench_row(conv: str, channels: int, side: int, dtype: str, n: int, reps: int, device: torch.device,
              threads: int | None, cold: bool, rate: float) -> dict:
    """One layer at one shape and dtype (see the module docstring); ``rate``: the device's best
    multiply-adds per second in this dtype (:func:`~.measure.gemm_rate`)."""
    torch.manual_seed(0)
    dt = getattr(torch, dtype)
    layer = CONVS[conv](channels).to(device, dt)
    perturb(layer)
    x = torch.randn(n, channels, side, side, device=device, dtype=dt)
    y, _ = layer(x)
    solvers = {name: make_solver(name) for name in ("auto", *EXACT, SEQUENTIAL)}

    def inverse(name: str) -> Callable[[], torch.Tensor]:
        def run():
            layer.solver = solvers[name]
            return layer.inverse(y)[0]

        return run

    samples = round_times({"forward": lambda: layer(x)} | {name: inverse(name) for name in ("auto", *EXACT)}, device, reps)
    times = medians(samples)
    times |= timed({SEQUENTIAL: inverse(SEQUENTIAL)}, device, max(1, reps // 4), warmup=0)
    forward = times.pop("forward")
    best = min(EXACT, key=times.get)
    macs = n * sum(exact_inverse_macs(channels, side, side, f.kernel_size) for f in layer.factors())
    floor = macs / rate
    row = {
        "conv": conv, "shape": [channels, side, side], "dtype": dtype, "images": n, "forward_s": forward, "inverse_s": times,
        "auto_picks": choices(layer, y), "best_solver": best,
        "error": {name: float((inverse(name)() - x).abs().max()) for name in solvers},
        "over_sequential": {name: times[SEQUENTIAL] / times[name] for name in ("auto", *EXACT)},
        "best_inverse_over_forward": median_ratio(samples, best, "forward"),
        "auto_over_best": median_ratio(samples, "auto", best),
        "floor_s": floor, "ceiling_over_sequential": times[SEQUENTIAL] / floor,
    }
    if cold:
        row["auto_first_call"] = cold_call("auto", dtype, n, channels, side, threads, str(device), conv, runs=COLD_RUNS)
    return row


def run(n: int, reps: int, device: torch.device, threads: int | None, cold: bool = True,
        shapes=SHAPES, log: Callable[[str], None] = print, rates: dict[str, float] | None = None) -> list[dict]:
    """The table's rows; ``rates``: :func:`~.measure.gemm_rates` of :data:`DTYPES`, measured here unless given."""
    rows, rates = [], rates or gemm_rates(device, DTYPES)
    for conv in CONVS:
        for channels, side in shapes:
            for dtype in DTYPES:
                rows.append(bench_row(conv, channels, side, dtype, n, reps, device, threads, cold, rates[dtype]))
                r = rows[-1]
                log(f"{conv:9s}{channels}x{side}x{side} {dtype}: forward {r['forward_s'] * 1e3:.1f} ms, "
                    + ", ".join(f"{k} {v * 1e3:.1f}" for k, v in r["inverse_s"].items()) + f" ms; auto picks {r['auto_picks']}")
    return rows
