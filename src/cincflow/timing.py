"""Wall-clock timing of one call, CUDA-synchronised on both sides so queued kernels are counted."""
from __future__ import annotations

import time
from typing import Callable

import torch


def wall_time(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds taken by ``fn()`` on ``device``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start
