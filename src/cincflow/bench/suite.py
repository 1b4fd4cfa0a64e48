"""The benchmark's measurements: the models (forward, sampling with every solver, their invertible
convs alone, accuracy, memory) and the single CInC layer (every solver warm, and its first call in a
fresh process)."""
from __future__ import annotations

import datetime
import math
from collections.abc import Callable

import torch

from ..layers.step import CONVS
from ..layers.cinc import CInCConv
from ..layers.invconv1x1 import InvConv1x1
from ..layers.solvers import Auto, make_solver
from ..sampling import sample_with_check, set_solver
from ..timing import torch_threads, wall_time
from .measure import cold_call, free_inverse, machine, peak_memory, timed
from .models import build_model, conv_layer_io, perturb
from .report import COUPLINGS, emerging_advantage_bound, evaluate_targets

SIZES = {
    # the paper's CIFAR-10 model (docs/method.md section 5)
    "paper": dict(image_size=32, levels=3, depth=32, width=512, n=100, reps=5, layer_sizes=((12, 16), (12, 32)), cold=True),
    # the same topology, small enough for 2 CPU cores in a few minutes
    "cpu": dict(image_size=32, levels=3, depth=8, width=128, n=100, reps=5, layer_sizes=((12, 16), (12, 32)), cold=True),
    # a smoke test (the test suite): cold calls of ``auto`` only
    "tiny": dict(image_size=8, levels=2, depth=1, width=8, n=4, reps=1, layer_sizes=((12, 4),), cold=False),
}
TIMED = ("auto", "tiled", "wavefront", "kernel")  # the solvers timed in every round
SEQUENTIAL = "sequential"  # the published algorithm (reference only: fewer rounds)
FREE = "free inverse"  # sampling with the conv solves replayed from a recording (a lower bound)
GLOW_INVERSE = "1x1"  # Glow's only inverse: a 1x1 conv with the inverse matrix
COLD_DTYPES = ("float32", "float64")


def solver_names(conv: str) -> tuple[str, ...]:
    """The solvers to time: every one for CInC / Emerging; Glow's 1x1 conv has one inverse."""
    return TIMED if conv != "glow" else (GLOW_INVERSE,)


@torch.no_grad()
def bench_coupling(coupling: str, cfg: dict, device: torch.device) -> list[dict]:
    """The three models with one coupling, timed interleaved: forward, sampling with every solver (and
    the published one), their invertible convs alone; plus accuracy and peak memory."""
    n, reps = cfg["n"], cfg["reps"]
    built = {conv: build_model(conv, coupling, cfg, device) for conv in CONVS}
    noise = {conv: [torch.randn(n, *shape, device=device) for shape in model.latent_shapes()] for conv, (model, _) in built.items()}
    solvers = {name: make_solver(name) for name in (*TIMED, SEQUENTIAL)}  # one object per solver, for all layers

    def sampling(conv: str, name: str) -> Callable[[], object]:
        model = built[conv][0]

        def run():
            if name != GLOW_INVERSE:
                set_solver(model, solvers[name])
            return model.sample(n, 1.0, noise[conv])

        return run

    io = {}  # the invertible convs of each model (1x1 for Glow), with their inputs and outputs
    for conv, (model, x) in built.items():
        io[conv] = [(layer, xi, yi) for layer, xi, yi in conv_layer_io(model, x) if (conv == "glow") == isinstance(layer, InvConv1x1)]

    def conv_pass(conv: str, name: str | None) -> Callable[[], object]:
        layers = io[conv]

        def run():
            if name is None:
                return [layer(x) for layer, x, _ in layers]
            for layer, _, _ in layers:
                if name != GLOW_INVERSE:
                    layer.solver = solvers[name]
            return [layer.inverse(y) for layer, _, y in layers]

        return run

    fns = {(conv, "forward"): (lambda m=model, x=x: m.encode(x)) for conv, (model, x) in built.items()}
    fns |= {(conv, name): sampling(conv, name) for conv in CONVS for name in solver_names(conv)}
    fns |= {(conv, FREE): free_inverse(built[conv][0], sampling(conv, "auto")) for conv in CONVS if conv != "glow"}
    fns |= {(conv, "conv forward"): conv_pass(conv, None) for conv in CONVS}
    fns |= {(conv, f"conv {name}"): conv_pass(conv, name) for conv in CONVS for name in solver_names(conv)}
    times = timed(fns, device, reps)
    published = [conv for conv in CONVS if conv != "glow"]
    slow = timed({(conv, kind): fn(conv, SEQUENTIAL) for conv in published for kind, fn in (("sampling", sampling), ("conv", conv_pass))},
                 device, max(1, reps // 2))

    rows = []
    for conv, (model, x) in built.items():
        set_solver(model, "auto")
        names = solver_names(conv)
        row = {"conv": conv, "coupling": coupling, "parameters": model.parameter_counts()["total"]}
        row["forward_s"] = times[(conv, "forward")]
        row["sampling_s"] = {name: times[(conv, name)] for name in names}
        row["best_solver"] = min(names, key=row["sampling_s"].get)
        row["sampling_best_s"] = row["sampling_s"][row["best_solver"]]
        row["sampling_over_forward"] = row["sampling_best_s"] / row["forward_s"]
        conv_fwd = times[(conv, "conv forward")]
        inverse = {name: times[(conv, f"conv {name}")] for name in names}
        if conv in published:
            row["sampling_free_inverse_s"] = times[(conv, FREE)]
            row["sampling_s"][SEQUENTIAL] = slow[(conv, "sampling")]
            inverse[SEQUENTIAL] = slow[(conv, "conv")]
        row["conv_layers"] = {
            "count": len(io[conv]),
            "forward_s": conv_fwd,
            "inverse_s": inverse,
            "inverse_over_forward": {name: t / conv_fwd for name, t in inverse.items()},
        }
        zs, _ = model.encode(x)
        row["reconstruction_error"] = float((model.decode(zs) - x).abs().max())
        report = sample_with_check(model, n, 1.0, noise[conv])[1]
        finite = math.isfinite(report.residual)
        row["sample_residual"] = report.residual if finite else None  # None: the samples overflowed
        row["worst_layer"] = {"name": report.layer, "bound": report.bound if finite else None,
                              "estimate": max((e for _, _, e in model.condition_report()), default=0.0)}
        row["peak_memory_bytes"] = {
            "forward": peak_memory(lambda: model.encode(x), device),
            "sampling": peak_memory(lambda: model.sample(n, 1.0, noise[conv]), device),
        }
        rows.append(row)
    best = {row["conv"]: row["sampling_best_s"] for row in rows}
    for row in rows:
        row["sampling_over_glow"] = row["sampling_best_s"] / best["glow"]
        row["sampling_over_emerging"] = row["sampling_best_s"] / best["emerging"]
    return rows


@torch.no_grad()
def bench_layer(channels: int, size: int, cfg: dict, device: torch.device, cold: bool) -> dict:
    """One CInC layer, ``n`` images of size x size x channels: forward, every solver, the published one;
    with ``cold``, the first call of every solver in a fresh process (else of ``auto``), float32 and float64."""
    torch.manual_seed(0)
    layer = CInCConv(channels).to(device)
    perturb(layer)
    x = torch.randn(cfg["n"], channels, size, size, device=device)
    y, _ = layer(x)
    solvers = {name: make_solver(name) for name in (*TIMED, SEQUENTIAL)}

    def inverse(name: str) -> Callable[[], torch.Tensor]:
        def run():
            layer.solver = solvers[name]
            return layer.inverse(y)[0]

        return run

    times = timed({"forward": lambda: layer(x)} | {name: inverse(name) for name in TIMED}, device, cfg["reps"])
    times |= timed({SEQUENTIAL: inverse(SEQUENTIAL)}, device, 1, warmup=0)
    row = {"shape": [channels, size, size], "images": cfg["n"], "forward_s": times.pop("forward"), "inverse_s": times}
    row["error"] = {name: float((inverse(name)() - x).abs().max()) for name in solvers}
    row["auto_picks"] = Auto.choice(y, layer.kernel.cache.entries(layer.kernel()))
    row["condition_number"] = layer.condition_number(size, size)
    row["peak_memory_bytes"] = {"forward": peak_memory(lambda: layer(x), device)}
    row["peak_memory_bytes"] |= {name: peak_memory(inverse(name), device) for name in TIMED}
    row["best_solver"] = min(TIMED[1:], key=row["inverse_s"].get)
    row["inverse_over_forward"] = {name: t / row["forward_s"] for name, t in row["inverse_s"].items()}
    threads = torch.get_num_threads()
    row["first_call"] = {
        dtype: {name: cold_call(name, dtype, cfg["n"], channels, size, threads, str(device)) for name in (TIMED if cold else ("auto",))}
        for dtype in COLD_DTYPES
    }
    return row


def run(size: str = "cpu", device: str = "cpu", threads: int | None = None, log: Callable[[str], None] = print) -> dict:
    """Run the benchmark at ``size`` (``paper``, ``cpu`` or ``tiny``); returns the JSON-able result."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}: choose one of {', '.join(SIZES)}")
    cfg = dict(SIZES[size])
    dev = torch.device(device)
    models, layers = [], []

    def measure() -> None:
        for coupling in COUPLINGS:
            models.extend(bench_coupling(coupling, cfg, dev))
            for m in models[-len(CONVS) :]:
                log(f"{m['conv']:9s}{coupling:7s} forward {m['forward_s']:.3f}s sampling {m['sampling_best_s']:.3f}s ({m['best_solver']})")
        for i, (channels, side) in enumerate(cfg["layer_sizes"]):
            layers.append(bench_layer(channels, side, cfg, dev, cfg["cold"] and i == len(cfg["layer_sizes"]) - 1))
            log(f"CInC layer {channels}x{side}x{side}: " + ", ".join(f"{k} {v:.4f}s" for k, v in layers[-1]["inverse_s"].items()))

    with torch_threads(threads):
        seconds = wall_time(measure, dev)
        mach = machine(dev)
    for key in ("layer_sizes", "cold"):
        cfg.pop(key)
    return {
        "meta": {
            "size": size,
            "config": cfg,
            "dtype": "float32",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": mach,
            "seconds": seconds,
        },
        "models": models,
        "layers": layers,
        "targets": evaluate_targets(models, layers),
        "emerging_over_cinc_bound": emerging_advantage_bound(models),
    }
