"""Sampling-versus-forward speed benchmark (``make bench``; entry point ``src/benchmark.py``).

Models: conv in {glow, emerging, cinc} x coupling in {affine, quad}, CIFAR-10 shape 32 x 32 x 3, with
random weights perturbed away from their zero initialisation (ActNorm initialised on random images,
then every parameter + N(0, 0.003^2), the centres' log-diagonals + N(0, 0.1^2); the invertible convs'
off-centre taps keep their N(0, 0.01^2) initialisation), so every layer does real work; no dataset
needed. (Larger perturbations of the coupling networks make random models' samples overflow, with
every inverse algorithm alike.) For each: the forward pass x -> z and a sampling pass z -> x for
``n`` images with every inverse algorithm and with the published sequential algorithm for
reference; the inverse/forward time of the model's invertible convolutions alone; the reconstruction
error; the sampling pass's worst inverse residual; peak memory. Plus a single CInC layer at
16 x 16 x 12 and 32 x 32 x 12. Timing: the measurements of one table are interleaved (each round runs
every one of them once, so that a change of machine load hits them alike), one warm-up round, then
the median of ``reps`` rounds; CUDA synchronised.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from .layers.causal import ALGORITHMS, DEFAULT_INVERSE, INVERSE_MODES, CausalInverse, auto_choice
from .layers.cinc import CInCConv
from .layers.invconv1x1 import InvConv1x1
from .model import Glow
from .sampling import invertible_convs, sample_with_check, set_inverse_mode
from .timing import wall_time

SIZES = {
    # the paper's CIFAR-10 model (PAPER.md section 5)
    "paper": dict(image_size=32, levels=3, depth=32, width=512, n=100, reps=5, layer_sizes=((12, 16), (12, 32))),
    # the same topology, small enough for 2 CPU cores in a few minutes
    "cpu": dict(image_size=32, levels=3, depth=8, width=128, n=100, reps=5, layer_sizes=((12, 16), (12, 32))),
    # a smoke test (the test suite)
    "tiny": dict(image_size=8, levels=2, depth=1, width=8, n=4, reps=1, layer_sizes=((12, 4),)),
}
CONVS = ("glow", "emerging", "cinc")
COUPLINGS = ("affine", "quad")
SEQUENTIAL = "sequential"  # the published algorithm (reference only)
FREE = "free inverse"  # sampling with the conv solves replayed from a recording (a lower bound)
GLOW_INVERSE = "1x1"  # Glow's only inverse: a 1x1 conv with the inverse matrix
TARGETS = {
    "cinc_sampling_over_forward": ("<=", 1.5),
    "cinc_sampling_over_glow": ("<=", 1.3),
    "emerging_over_cinc_sampling": (">=", 1.9),
    "layer_32x32x12_best_inverse_over_forward": ("<=", 3.0),
}


# --- measurement -----------------------------------------------------------------------------------


def timed(fns: dict, device: torch.device, reps: int, warmup: int = 1) -> dict:
    """Median wall time (s) of each function over ``reps`` rounds after ``warmup`` rounds; every round
    calls all of them once, in turn, so that a change of machine load hits them alike (CUDA synchronised)."""

    def once(fn: Callable[[], object]) -> float:
        return wall_time(fn, device)

    for _ in range(warmup):
        for fn in fns.values():
            once(fn)
    samples = {key: [] for key in fns}
    for _ in range(reps):
        for key, fn in fns.items():
            samples[key].append(once(fn))
    return {key: statistics.median(values) for key, values in samples.items()}


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


# --- the published algorithm, for reference --------------------------------------------------------


def sequential_inverse(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """The published CInC / Emerging inverse: raster-order substitution one pixel at a time (a Python
    loop over the H * W pixels, batched over the images):
    x[i, j] = K_c^-1 (y[i, j] - b - sum over the off-centre taps W[p, q] x[i - p, j - q])."""
    bsz, c, h, w = y.shape
    k = weight.shape[-1]
    centre = weight[:, :, k - 1, k - 1]
    off = weight.clone()
    off[:, :, k - 1, k - 1] = 0
    if bias is not None:
        y = y - bias.view(1, c, 1, 1)
    xp = y.new_zeros(bsz, c, h + k - 1, w + k - 1)
    for i in range(h):
        for j in range(w):
            r = y[:, :, i, j] - torch.einsum("bcpq,ocpq->bo", xp[:, :, i : i + k, j : j + k], off)
            xp[:, :, i + k - 1, j + k - 1] = torch.linalg.solve_triangular(centre, r.T, upper=False).T
    return xp[:, :, k - 1 :, k - 1 :]


@contextmanager
def published_inverse(model: nn.Module) -> Iterator[None]:
    """Inside the block every CInC / Emerging layer of ``model`` inverts with :func:`sequential_inverse`."""

    def solve(y, weight, bias=None, mode=None):
        return sequential_inverse(y, weight, bias)

    swapped = []
    for layer in invertible_convs(model):
        for name, value in list(vars(layer).items()):
            if isinstance(value, CausalInverse):
                swapped.append((layer, name, value))
                setattr(layer, name, solve)
    try:
        yield
    finally:
        for layer, name, value in swapped:
            setattr(layer, name, value)


@contextmanager
def replaced_solves(model: nn.Module, make_solve: Callable[[nn.Module], Callable]) -> Iterator[None]:
    """Inside the block every CInC / Emerging layer's whole inverse solve is ``make_solve(layer)``."""
    layers = invertible_convs(model)
    for layer in layers:
        layer._solve = make_solve(layer)  # an instance attribute shadows the method
    try:
        yield
    finally:
        for layer in layers:
            del layer._solve


def free_inverse(model: nn.Module, run: Callable[[], object]) -> Callable[[], object]:
    """``run`` (a sampling pass of ``model``) with the invertible convs' solves made free: a first, real
    pass records each layer's solutions; the returned function repeats the pass with every solve a lookup
    of its recorded solution, so it computes the same samples and its time is what sampling would cost if
    the convolutions inverted in no time at all: a lower bound for every inverse algorithm."""
    records = {layer: [] for layer in invertible_convs(model)}

    def recording(layer: nn.Module) -> Callable:
        solve = layer._solve

        def record(y):
            records[layer].append(solve(y))
            return records[layer][-1]

        return record

    with replaced_solves(model, recording):
        run()

    def replay():
        cursors = {layer: iter(xs) for layer, xs in records.items()}
        with replaced_solves(model, lambda layer: lambda y: next(cursors[layer])):
            return run()

    return replay


# --- models ----------------------------------------------------------------------------------------


@torch.no_grad()
def perturb(module: nn.Module, seed: int = 0, scale: float = 0.003, log_diag_std: float = 0.1) -> None:
    """Every parameter + N(0, scale^2); the invertible convs' centre log-diagonals + N(0, log_diag_std^2)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        std = log_diag_std if name.endswith("log_diag") else scale
        p.add_((torch.randn(p.shape, generator=gen) * std).to(p))


def build_model(conv: str, coupling: str, cfg: dict, device: torch.device, seed: int = 0) -> tuple[Glow, torch.Tensor]:
    """The model with perturbed random weights, in eval mode, and the random images it was initialised on."""
    torch.manual_seed(seed)
    model = Glow(3, cfg["image_size"], cfg["levels"], cfg["depth"], cfg["width"], conv, coupling).to(device).eval()
    x = torch.rand(cfg["n"], 3, cfg["image_size"], cfg["image_size"], device=device) - 0.5
    with torch.no_grad():
        model.encode(x)  # data-dependent ActNorm initialisation
    perturb(model, seed)
    return model, x


@torch.no_grad()
def conv_layer_io(model: Glow, x: torch.Tensor) -> list[tuple[nn.Module, torch.Tensor, torch.Tensor]]:
    """(layer, input, output) of every invertible convolution (CInC, Emerging, 1x1) in one forward pass."""
    layers = invertible_convs(model) + [m for m in model.modules() if isinstance(m, InvConv1x1)]
    records, hooks = {}, []
    for layer in layers:
        hooks.append(layer.register_forward_hook(lambda m, inp, out: records.__setitem__(m, (inp[0], out[0]))))
    model.encode(x)
    for hook in hooks:
        hook.remove()
    return [(layer, *records[layer]) for layer in layers]


def algorithms(conv: str) -> tuple[str, ...]:
    """The inverse algorithms to time: every mode for CInC / Emerging; Glow's 1x1 conv has one."""
    return INVERSE_MODES if conv != "glow" else (GLOW_INVERSE,)


@torch.no_grad()
def bench_coupling(coupling: str, cfg: dict, device: torch.device) -> list[dict]:
    """The three models with one coupling, timed interleaved: forward, sampling with every algorithm
    (and the published one), their invertible convs alone; plus accuracy and peak memory."""
    n, reps = cfg["n"], cfg["reps"]
    built = {conv: build_model(conv, coupling, cfg, device) for conv in CONVS}
    noise = {conv: [torch.randn(n, *shape, device=device) for shape in model.latent_shapes()] for conv, (model, _) in built.items()}

    def sampling(conv: str, mode: str) -> Callable[[], object]:
        model = built[conv][0]

        def run():
            if mode != GLOW_INVERSE:
                set_inverse_mode(model, mode)
            return model.sample(n, 1.0, noise[conv])

        return run

    io = {}  # the invertible convs of each model (1x1 for Glow), with their inputs and outputs
    for conv, (model, x) in built.items():
        io[conv] = [(layer, xi, yi) for layer, xi, yi in conv_layer_io(model, x) if (conv == "glow") == isinstance(layer, InvConv1x1)]

    def conv_pass(conv: str, mode: str | None) -> Callable[[], object]:
        layers = io[conv]

        def run():
            if mode is None:
                return [layer(x) for layer, x, _ in layers]
            for layer, _, _ in layers:
                if mode != GLOW_INVERSE:
                    layer.inverse_mode = mode
            return [layer.inverse(y) for layer, _, y in layers]

        return run

    fns = {(conv, "forward"): (lambda m=model, x=x: m.encode(x)) for conv, (model, x) in built.items()}
    fns |= {(conv, mode): sampling(conv, mode) for conv in CONVS for mode in algorithms(conv)}
    fns |= {(conv, FREE): free_inverse(built[conv][0], sampling(conv, DEFAULT_INVERSE)) for conv in CONVS if conv != "glow"}
    fns |= {(conv, "conv forward"): conv_pass(conv, None) for conv in CONVS}
    fns |= {(conv, f"conv {mode}"): conv_pass(conv, mode) for conv in CONVS for mode in algorithms(conv)}
    times = timed(fns, device, reps)
    published = [conv for conv in CONVS if conv != "glow"]
    slow = {}
    for conv in published:
        with published_inverse(built[conv][0]):
            slow |= timed({conv: sampling(conv, "auto"), f"conv {conv}": conv_pass(conv, "auto")}, device, max(1, reps // 2))

    rows = []
    for conv, (model, x) in built.items():
        set_inverse_mode(model, DEFAULT_INVERSE)
        modes = algorithms(conv)
        row = {"conv": conv, "coupling": coupling, "parameters": model.parameter_counts()["total"]}
        row["forward_s"] = times[(conv, "forward")]
        row["sampling_s"] = {mode: times[(conv, mode)] for mode in modes}
        row["best_mode"] = min(modes, key=row["sampling_s"].get)
        row["sampling_best_s"] = row["sampling_s"][row["best_mode"]]
        row["sampling_over_forward"] = row["sampling_best_s"] / row["forward_s"]
        conv_fwd = times[(conv, "conv forward")]
        inverse = {mode: times[(conv, f"conv {mode}")] for mode in modes}
        if conv in published:
            row["sampling_free_inverse_s"] = times[(conv, FREE)]
            row["sampling_s"][SEQUENTIAL] = slow[conv]
            inverse[SEQUENTIAL] = slow[f"conv {conv}"]
        row["conv_layers"] = {
            "count": len(io[conv]),
            "forward_s": conv_fwd,
            "inverse_s": inverse,
            "inverse_over_forward": {mode: t / conv_fwd for mode, t in inverse.items()},
        }
        zs, _ = model.encode(x)
        row["reconstruction_error"] = float((model.decode(zs) - x).abs().max())
        residual = sample_with_check(model, n, 1.0, noise[conv])[1]
        row["sample_residual"] = residual if math.isfinite(residual) else None  # None: the samples overflowed
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
def bench_layer(channels: int, size: int, cfg: dict, device: torch.device) -> dict:
    """One CInC layer, ``n`` images of size x size x channels: forward, every inverse, the published one."""
    torch.manual_seed(0)
    layer = CInCConv(channels).to(device)
    perturb(layer)
    x = torch.randn(cfg["n"], channels, size, size, device=device)
    y, _ = layer(x)
    weight, bias = layer.kernel(), layer.bias

    def inverse(mode: str) -> Callable[[], torch.Tensor]:
        def run():
            layer.inverse_mode = mode
            return layer.inverse(y)[0]

        return run

    fns = {"forward": lambda: layer(x)} | {mode: inverse(mode) for mode in INVERSE_MODES}
    times = timed(fns, device, cfg["reps"])
    times |= timed({SEQUENTIAL: lambda: sequential_inverse(y, weight, bias)}, device, 1, warmup=0)
    row = {"shape": [channels, size, size], "images": cfg["n"], "forward_s": times.pop("forward"), "inverse_s": times}
    row["error"] = {mode: float((inverse(mode)() - x).abs().max()) for mode in INVERSE_MODES}
    row["error"][SEQUENTIAL] = float((sequential_inverse(y, weight, bias) - x).abs().max())
    row["auto_picks"] = auto_choice(y, layer.kernel.kernel_size)
    row["peak_memory_bytes"] = {"forward": peak_memory(lambda: layer(x), device)}
    row["peak_memory_bytes"] |= {mode: peak_memory(inverse(mode), device) for mode in INVERSE_MODES}
    row["best_mode"] = min(ALGORITHMS, key=row["inverse_s"].get)
    row["inverse_over_forward"] = {m: t / row["forward_s"] for m, t in row["inverse_s"].items()}
    return row


def evaluate_targets(models: list[dict], layers: list[dict]) -> list[dict]:
    """The issue's four speed targets, from this run's measurements."""
    by = {(m["conv"], m["coupling"]): m for m in models}
    rows = []

    def add(name: str, value: float, detail: str) -> None:
        op, limit = TARGETS[name]
        met = value <= limit if op == "<=" else value >= limit
        rows.append({"target": name, "detail": detail, "value": value, "limit": f"{op} {limit}", "met": bool(met)})

    for coupling in COUPLINGS:
        cinc, glow, emerging = (by.get((conv, coupling)) for conv in ("cinc", "glow", "emerging"))
        if cinc:
            add("cinc_sampling_over_forward", cinc["sampling_over_forward"], coupling)
        if cinc and glow:
            add("cinc_sampling_over_glow", cinc["sampling_best_s"] / glow["sampling_best_s"], coupling)
        if cinc and emerging:
            add("emerging_over_cinc_sampling", emerging["sampling_best_s"] / cinc["sampling_best_s"], coupling)
    for layer in layers:
        if layer["shape"] == [12, 32, 32]:
            add("layer_32x32x12_best_inverse_over_forward", layer["inverse_over_forward"][layer["best_mode"]], layer["best_mode"])
    return rows


def emerging_advantage_bound(models: list[dict]) -> list[dict]:
    """What the Emerging / CInC sampling target needs, per coupling, from the free-inverse passes:
    ``ceiling`` = Emerging's best sampling time / CInC's sampling time with free conv solves (the ratio
    no CInC inverse algorithm can exceed); ``emerging_conv_inverse_needed_s`` = how long Emerging's conv
    solves would have to take in its sampling pass for the target ratio against the measured CInC time,
    next to how long they take (``emerging_conv_inverse_s`` = best sampling - free-inverse sampling)."""
    by = {(m["conv"], m["coupling"]): m for m in models}
    target = TARGETS["emerging_over_cinc_sampling"][1]
    rows = []
    for coupling in COUPLINGS:
        em, ci = by.get(("emerging", coupling)), by.get(("cinc", coupling))
        if not (em and ci):
            continue
        em_conv = em["sampling_best_s"] - em["sampling_free_inverse_s"]
        needed = target * ci["sampling_best_s"] - em["sampling_free_inverse_s"]
        rows.append({
            "coupling": coupling,
            "measured": em["sampling_best_s"] / ci["sampling_best_s"],
            "ceiling": em["sampling_best_s"] / ci["sampling_free_inverse_s"],
            "cinc_conv_inverse_share": 1 - ci["sampling_free_inverse_s"] / ci["sampling_best_s"],
            "emerging_conv_inverse_share": em_conv / em["sampling_best_s"],
            "emerging_conv_inverse_s": em_conv,
            "emerging_conv_inverse_needed_s": needed,
            "needed_over_measured": needed / em_conv if em_conv > 0 else None,
        })
    return rows


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


def run(size: str = "cpu", device: str = "cpu", threads: int | None = None, log: Callable[[str], None] = print) -> dict:
    """Run the benchmark at ``size`` (``paper``, ``cpu`` or ``tiny``); returns the JSON-able result."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}: choose one of {', '.join(SIZES)}")
    cfg = dict(SIZES[size])
    dev = torch.device(device)
    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    models = []
    for coupling in COUPLINGS:
        models += bench_coupling(coupling, cfg, dev)
        for m in models[-len(CONVS) :]:
            log(f"{m['conv']:9s}{coupling:7s} forward {m['forward_s']:.3f}s sampling {m['sampling_best_s']:.3f}s ({m['best_mode']})")
    layers = []
    for channels, side in cfg["layer_sizes"]:
        layers.append(bench_layer(channels, side, cfg, dev))
        log(f"CInC layer {channels}x{side}x{side}: " + ", ".join(f"{k} {v:.4f}s" for k, v in layers[-1]["inverse_s"].items()))
    cfg.pop("layer_sizes")
    return {
        "meta": {
            "size": size,
            "config": cfg,
            "dtype": "float32",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(dev),
            "seconds": time.perf_counter() - started,
        },
        "models": models,
        "layers": layers,
        "targets": evaluate_targets(models, layers),
        "emerging_over_cinc_bound": emerging_advantage_bound(models),
    }


# --- report ----------------------------------------------------------------------------------------


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def markdown(result: dict) -> str:
    """The result as markdown tables (models, conv layers, single layer, targets, the papers' numbers)."""
    meta, cfg, mach = result["meta"], result["meta"]["config"], result["meta"]["machine"]
    where = mach.get("gpu") or mach.get("cpu_model") or mach["processor"]
    lines = [
        f"Benchmark `{meta['size']}`: {cfg['n']} images of {cfg['image_size']}x{cfg['image_size']}x3, L={cfg['levels']}, "
        f"K={cfg['depth']}, width {cfg['width']}, {meta['dtype']}, median of {cfg['reps']} interleaved rounds after a warm-up round. "
        f"Machine: {where}, {mach['cpu_count']} CPUs, {mach['torch_threads']} torch thread(s), device {mach['device']}, "
        f"torch {mach['torch']}{' (glibc keeps freed memory)' if mach.get('malloc_keeps_freed_memory') else ''}; "
        f"{meta['date']}; took {meta['seconds']:.0f} s.",
        "",
        "Models (sampling with the fastest inverse algorithm; `sequential` = the published per-pixel raster scan):",
        "",
        "| conv | coupling | params | forward s | sampling s (algorithm) | sampling / forward | vs Glow | vs Emerging "
        "| sequential sampling s | recon. error | sample residual | peak MiB fwd / sample |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in result["models"]:
        seq = m["sampling_s"].get(SEQUENTIAL)
        lines.append(
            f"| {m['conv']} | {m['coupling']} | {m['parameters'] / 1e6:.2f} M | {m['forward_s']:.3f} | "
            f"{m['sampling_best_s']:.3f} ({m['best_mode']}) | {m['sampling_over_forward']:.2f} | "
            f"{m['sampling_over_glow']:.2f} | {m['sampling_over_emerging']:.2f} | "
            f"{'-' if seq is None else f'{seq:.3f}'} | {m['reconstruction_error']:.1e} | "
            f"{'overflow' if m['sample_residual'] is None else format(m['sample_residual'], '.1e')} | "
            f"{_mib(m['peak_memory_bytes']['forward'])} / {_mib(m['peak_memory_bytes']['sampling'])} |"
        )
    modes = [*INVERSE_MODES, SEQUENTIAL]
    lines += [
        "",
        "Invertible convolutions of each model alone (all layers, on their own inputs): inverse time / forward time,",
        "and the model's sampling time with each algorithm (s):",
        "",
        "| conv | coupling | layers | " + " | ".join(f"{m} inv/fwd" for m in modes) + " | "
        + " | ".join(f"{m} sampling" for m in modes) + " |",
        "|---|---|---:|" + "---:|" * (2 * len(modes)),
    ]
    for m in result["models"]:
        if m["conv"] == "glow":
            continue
        ratios = m["conv_layers"]["inverse_over_forward"]
        lines.append(
            f"| {m['conv']} | {m['coupling']} | {m['conv_layers']['count']} | "
            + " | ".join(f"{ratios[k]:.2f}" for k in modes) + " | "
            + " | ".join(f"{m['sampling_s'][k]:.3f}" for k in modes) + " |"
        )
    by = {(m["conv"], m["coupling"]): m["conv_layers"]["inverse_s"] for m in result["models"]}
    for coupling in COUPLINGS:
        if ("emerging", coupling) in by and ("cinc", coupling) in by:
            em, ci = by[("emerging", coupling)], by[("cinc", coupling)]
            lines.append(
                f"\n{coupling}: Emerging / CInC time of the conv layers' inverses = "
                f"{min(em[k] for k in ALGORITHMS) / min(ci[k] for k in ALGORITHMS):.2f} with the best algorithms, "
                f"{em[SEQUENTIAL] / ci[SEQUENTIAL]:.2f} with the published sequential one."
            )
    lines += [
        "",
        "One CInC 3x3 layer, forward and inverse (`auto` = the algorithm it picks; `kernel` = one FFT or "
        "direct convolution with the H x W inverse kernel; `sequential` = Python loop over pixels, one "
        "batched C x C triangular solve each, the published algorithm):",
        "",
        "| C x H x W | images | forward ms | " + " | ".join(f"{k} ms (x fwd)" for k in modes)
        + " | max error | peak MiB forward / " + " / ".join(INVERSE_MODES) + " |",
        "|---|---:|---:|" + "---:|" * len(modes) + "---:|---:|",
    ]
    for layer in result["layers"]:
        c, h, w = layer["shape"]
        cells = [f"{layer['inverse_s'][k] * 1e3:.2f} ({layer['inverse_over_forward'][k]:.1f})" for k in modes]
        cells[0] += f" [{layer['auto_picks']}]"
        lines.append(
            f"| {c}x{h}x{w} | {layer['images']} | {layer['forward_s'] * 1e3:.2f} | " + " | ".join(cells)
            + f" | {max(layer['error'].values()):.1e} | "
            + " / ".join(_mib(layer["peak_memory_bytes"][k]) for k in ("forward", *INVERSE_MODES)) + " |"
        )
    lines += ["", "Targets (issue #4), measured in this run:", "", "| target | case | value | limit | met |", "|---|---|---:|---:|---|"]
    for t in result["targets"]:
        lines.append(f"| {t['target']} | {t['detail']} | {t['value']:.2f} | {t['limit']} | {'yes' if t['met'] else 'NO'} |")
    target = TARGETS["emerging_over_cinc_sampling"][1]
    for b in result["emerging_over_cinc_bound"]:
        factor = "" if b["needed_over_measured"] is None else f" ({b['needed_over_measured']:.1f}x their measured time)"
        lines.append(
            f"\nEmerging / CInC sampling, {b['coupling']}: {b['measured']:.2f}. The conv solves take "
            f"{100 * b['cinc_conv_inverse_share']:.0f}% of CInC's sampling pass and "
            f"{100 * b['emerging_conv_inverse_share']:.0f}% of Emerging's (sampling again with every solve "
            f"replayed from a recording, i.e. free). Even with free solves CInC could reach at most "
            f"{b['ceiling']:.2f}; for {target} Emerging's solves would have to take "
            f"{b['emerging_conv_inverse_needed_s']:.3f} s instead of {b['emerging_conv_inverse_s']:.3f} s{factor}."
        )
    lines += [
        "",
        "The papers' numbers (PAPER.md section 6), 100 images: CInC poster, sampling on one CPU core (published "
        "Cython sequential inverse): CIFAR-10 Emerging 2.45 s, CInC 1.31 s (Emerging / CInC = 1.87). FInC paper, "
        "GPU, forward FT / sampling ST: Emerging 0.49 / 17.19 s (35x), CInC 0.42 / 7.91 s (19x), FInC 0.37 / 0.41 s (1.1x).",
    ]
    return "\n".join(lines) + "\n"


def write(result: dict, out: str | Path) -> tuple[Path, Path]:
    """Write ``out`` (JSON) and the markdown next to it (same name, ``.md``)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    md = out.with_suffix(".md")
    md.write_text(markdown(result))
    return out, md
