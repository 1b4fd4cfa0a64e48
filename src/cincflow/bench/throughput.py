"""Training throughput (images/s) of every conv x coupling at the quickstart size (digits 1x8x8,
L = 2, K = 8, width 64) and at the benchmark's ``cpu`` size (32x32x3, L = 3, K = 8, width 128), batch
64: one train step as the training job runs it (bits/dim of uint8 images, backward, a step of the job's
optimiser as ``conf/train.yaml`` sets it: Adamax, multi-tensor), interleaved rounds, medians. What a
step costs before launching a run."""
from __future__ import annotations

import torch

from ..config.components import default_optimizer
from ..layers.step import COUPLINGS, CONVS
from ..model import Glow
from .measure import timed
from .normflows import Tasks

SIZES = {
    "quickstart": dict(channels=1, image_size=8, levels=2, depth=8, width=64, n_bits=5, batch=64),
    "cpu": dict(channels=3, image_size=32, levels=3, depth=8, width=128, n_bits=8, batch=64),
}


def train_tasks(conv: str, coupling: str, size: dict, device: torch.device, optimizer) -> Tasks:
    """A model at ``size`` (ActNorm initialised on its batch) and its train step on random uint8 images,
    stepping ``optimizer(parameters)`` (the job's: :func:`~cincflow.config.components.default_optimizer`)."""
    torch.manual_seed(0)
    model = Glow(size["channels"], size["image_size"], size["levels"], size["depth"], size["width"], conv, coupling,
                 n_bits=size["n_bits"]).to(device)
    images = torch.randint(0, 256, (size["batch"], size["channels"], size["image_size"], size["image_size"]), dtype=torch.uint8)
    images = images.to(device)
    with torch.no_grad():
        model.bits_per_dim(images)
    return Tasks(lambda v: -model.bits_per_dim(v), model.sample, model.parameters(), images, 1, optimizer)


def run(device: torch.device, reps: int, sizes: dict = SIZES, log=print) -> list[dict]:
    rows, optimizer = [], default_optimizer()
    for size_name, size in sizes.items():
        tasks = {(conv, coupling): train_tasks(conv, coupling, size, device, optimizer) for conv in CONVS for coupling in COUPLINGS}
        times = timed({key: t.train_step for key, t in tasks.items()}, device, reps)
        for (conv, coupling), seconds in times.items():
            rows.append({"size": size_name, "conv": conv, "coupling": coupling, "batch": size["batch"],
                         "step_s": seconds, "images_per_s": size["batch"] / seconds})
        log(f"throughput {size_name}: " + ", ".join(f"{c}+{k} {size['batch'] / s:.0f}/s" for (c, k), s in times.items()))
    return rows
