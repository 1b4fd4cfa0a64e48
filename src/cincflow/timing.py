"""Wall-clock timing of one call (CUDA-synchronised on both sides so queued kernels are counted) and
the torch CPU thread count for a block, restored afterwards."""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

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


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` intra-op CPU threads (None or 0: leave the current setting), restoring
    the previous count afterwards. One thread avoids the collapse of small-tensor CPU work when the
    cores are shared, and gives steadier timings."""
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(previous)
