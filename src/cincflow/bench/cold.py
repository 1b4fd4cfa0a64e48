"""The first (cold) inverse of a fresh CInC (or Emerging) layer in this fresh process, and a warm one:

    python -m cincflow.bench.cold <solver> <float32|float64> <n> <channels> <size> [threads] [device] [cinc|emerging]

prints one JSON line ``{"cold_s": ..., "warm_s": ...}``: the time of the first ``layer.inverse`` (which
makes every decision and precomputation: speed probes, plans, the inverse kernel, ``auto``'s accuracy
check) and the best of three calls after it, on n random images of channels x size x size. The
layer's forward pass runs once before (as it would have in training or encoding).
"""
from __future__ import annotations

import json
import sys

import torch

from ..layers.cinc import CInCConv
from ..layers.emerging import EmergingConv
from ..timing import torch_threads, wall_time


LAYERS = {"cinc": CInCConv, "emerging": EmergingConv}


def measure(solver: str, dtype: torch.dtype, n: int, channels: int, size: int, device: str = "cpu", conv: str = "cinc") -> dict:
    dev = torch.device(device)
    torch.manual_seed(0)
    layer = LAYERS[conv](channels, solver=solver).to(dev, dtype)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.003 * torch.randn_like(p))
        y, _ = layer(torch.randn(n, channels, size, size, device=dev, dtype=dtype))
        cold = wall_time(lambda: layer.inverse(y), dev)
        warm = min(wall_time(lambda: layer.inverse(y), dev) for _ in range(3))
    return {"cold_s": cold, "warm_s": warm}


def main(argv: list[str]) -> None:
    solver, dtype, n, channels, size = argv[:5]
    threads = int(argv[5]) if len(argv) > 5 else 1
    device = argv[6] if len(argv) > 6 else "cpu"
    conv = argv[7] if len(argv) > 7 else "cinc"
    with torch_threads(threads):
        print(json.dumps(measure(solver, getattr(torch, dtype), int(n), int(channels), int(size), device, conv)))


if __name__ == "__main__":
    main(sys.argv[1:])
