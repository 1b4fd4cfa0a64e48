"""Issue #22's comparison with normflows 1.7.3 at one Glow shape (L = 3, K = 4, width 64, 32x32x3,
batch 64, 100 samples; :mod:`.normflows`): a train step (forward, backward, Adam step), log_prob
without gradients and sampling, for our glow, cinc and emerging convs with the affine coupling and
for normflows' Glow, all timed interleaved in one process (each round runs every one of them once),
medians; a time / normflows' is the median over rounds of the two times' ratio in the same round. A
second copy of each model, never trained, is the one evaluated and sampled (a train step changes the
weights, and CInC's solvers decide again for new weights). CInC's sampling is also timed
with its conv solves free (:func:`~cincflow.bench.measure.free_inverse`): the least any solver could
make it cost; and the multiply-add floor of those solves (their least multiply-adds at this core's
best matrix-product rate): free sampling + floor bounds what any solver could reach here.
"""
from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from ..model import Glow
from . import normflows as nf_ref
from .measure import free_inverse, gemm_rates, median_ratio, medians, round_times

SHAPE = dict(channels=3, image_size=32, levels=3, depth=4, width=64, batch=64, samples=100)
CONVS = ("glow", "cinc", "emerging")
TASKS = ("train_step", "log_prob", "sample")
REFERENCE = "normflows"


def ours(conv: str, x: torch.Tensor, shape: dict, seed: int = 0) -> Glow:
    """Our Glow with ``conv`` and the affine coupling at ``shape``, ActNorm initialised on ``x``."""
    torch.manual_seed(seed)
    model = Glow(shape["channels"], shape["image_size"], shape["levels"], shape["depth"], shape["width"], conv, "affine")
    with torch.no_grad():
        model.log_prob(x)
    return model


def our_tasks(model: Glow, x: torch.Tensor, n_samples: int, train: bool) -> nf_ref.Tasks:
    return nf_ref.Tasks(model.log_prob, model.sample, model.parameters() if train else (), x, n_samples)


def task_functions(tasks: dict[str, tuple[nf_ref.Tasks, nf_ref.Tasks]]) -> dict[tuple[str, str], Callable]:
    """{(model, task): fn} from {model: (training copy's Tasks, evaluated copy's Tasks)}."""
    fns = {}
    for name, (train, frozen) in tasks.items():
        fns[(name, "train_step")] = train.train_step
        fns[(name, "log_prob")] = frozen.evaluate
        fns[(name, "sample")] = frozen.draw
    return fns


def run(device: torch.device, reps: int, shape: dict = SHAPE, reference: bool = True, log=print,
        rates: dict[str, float] | None = None) -> dict:
    """The comparison: per model, parameters and the median seconds of each task, and each task's time
    over normflows' (None without normflows: ``reference`` False or not installable). ``rates``:
    :func:`~.measure.gemm_rates` (float32 is the solves' floor), measured here unless given."""
    torch.manual_seed(0)
    x = (torch.rand(shape["batch"], shape["channels"], shape["image_size"], shape["image_size"]) - 0.5).to(device)
    n = shape["samples"]
    tasks, params = {}, {}
    nf = nf_ref.install(log=log) if reference else None
    if nf is not None:
        torch.manual_seed(0)
        model = nf_ref.glow(nf, shape["channels"], shape["image_size"], shape["levels"], shape["depth"], shape["width"]).to(device)
        tasks[REFERENCE] = (nf_ref.normflows_tasks(model, x, n, True), nf_ref.normflows_tasks(copy.deepcopy(model), x, n, False))
        params[REFERENCE] = {"free": nf_ref.free_parameters(model), "stored": sum(p.numel() for p in model.parameters())}
    extra = {}
    for conv in CONVS:
        model = ours(conv, x, shape).to(device)
        frozen = copy.deepcopy(model)
        tasks[conv] = (our_tasks(model, x, n, True), our_tasks(frozen, x, n, False))
        params[conv] = {"free": model.parameter_counts()["total"], "stored": sum(p.numel() for p in model.parameters())}
        if conv == "cinc":
            extra[(conv, "sample_free_solves")] = free_inverse(frozen, tasks[conv][1].draw)
    samples = round_times({**task_functions(tasks), **extra}, device, reps)
    times = medians(samples)
    rows = []
    for name in tasks:
        row = {"model": name, "parameters": params[name], "seconds": {t: times[(name, t)] for t in TASKS}}
        if (name, "sample_free_solves") in times:
            row["seconds"]["sample_free_solves"] = times[(name, "sample_free_solves")]
            free = extra[(name, "sample_free_solves")]
            row["seconds"]["sample_solves_floor"] = free.solve_macs / (rates or gemm_rates(device, ("float32",)))["float32"]
        row["over_normflows"] = ({t: median_ratio(samples, (name, t), (REFERENCE, t)) for t in TASKS}
                                 if nf is not None else None)
        rows.append(row)
        log(f"{name:10s} " + ", ".join(f"{t} {times[(name, t)] * 1e3:.1f} ms" for t in TASKS))
    return {"shape": dict(shape), "normflows": None if nf is None else nf_ref.VERSION, "rows": rows}
