"""PyTorch profiler tables (sorted by self CPU time) of a train step, log_prob and a sampling pass at
normflows' shape (:data:`cincflow.bench.compare.SHAPE`), for glow + affine and cinc + affine:

    python -m cincflow.bench.profile [out_dir] [threads]

writes ``profile_<conv>_<task>.txt`` (default out_dir: results/), one thread by default, after two
warm-up calls, three profiled calls per table, with glibc's freed blocks kept as the jobs and the
benchmark keep them (:mod:`cincflow.allocator`). Each table's header says how much of the self CPU
time the convolutions took (oneDNN's kernels, forward and backward: :func:`conv_share`) and this
core's best matrix-product rate (:func:`~.measure.gemm_rate`), the two numbers that bound what any
change outside the convolution kernels can gain; and the time and page faults per call without and
with the profiler. The profiler's own records take fresh memory, and the operator that first touches
fresh pages is charged for their faults: on a 2-core AMD EPYC a Glow train step faulted 7,300 times
per call under the profiler against 340 without, and ``threshold_backward`` (ReLU's backward) showed
2.9 ms per call on average in the table against 0.06-0.6 ms (by shape) timed inside an unprofiled step.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from ..allocator import keep_freed_memory
from ..timing import torch_threads
from .compare import SHAPE, our_tasks, ours
from .measure import gemm_rate

CONVS = ("glow", "cinc")
# where oneDNN's convolution kernels run (self time): plain, with a ReLU post-op (cincflow.layers.blocked), backward
CONV_OPS = ("aten::mkldnn_convolution", "mkldnn::_convolution_pointwise", "aten::convolution_backward")


def conv_share(averages) -> float:
    """The share of the self CPU time of a profile's ``key_averages()`` spent in convolutions."""
    total = sum(e.self_cpu_time_total for e in averages)
    return sum(e.self_cpu_time_total for e in averages if e.key in CONV_OPS) / total if total else 0.0


def page_faults() -> int:
    """Minor page faults of this process so far (0 where the platform does not count them)."""
    try:
        import resource
    except ImportError:  # not a Unix
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def per_call(fn, calls: int) -> tuple[float, float]:
    """(seconds, page faults) per call of ``fn``, over ``calls`` calls."""
    faults, start = page_faults(), time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls, (page_faults() - faults) / calls


def table(fn, calls: int = 3, rows: int = 40) -> str:
    """The profiler table of ``calls`` calls of ``fn`` (after two warm-up calls), headed by the
    convolutions' share of the time and the time and page faults per call without and with the profiler."""
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    for _ in range(2):
        fn()
    plain = per_call(fn, calls)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        profiled = per_call(fn, calls)
    averages = prof.key_averages()
    share = f"convolutions (forward and backward): {100 * conv_share(averages):.0f}% of the self CPU time"
    cost = (f"per call: {plain[0] * 1e3:.1f} ms and {plain[1]:.0f} page faults unprofiled, "
            f"{profiled[0] * 1e3:.1f} ms and {profiled[1]:.0f} under the profiler (an operator that first "
            f"touches fresh pages is charged for their faults)")
    return (f"{calls} calls; {share}\n{cost}\n"
            + averages.table(sort_by="self_cpu_time_total", row_limit=rows))


def main(argv: list[str]) -> None:
    out = Path(argv[0]) if argv else Path(os.environ.get("PROJECT_ROOT", ".")) / "results"
    out.mkdir(parents=True, exist_ok=True)
    print(keep_freed_memory())
    with torch_threads(int(argv[1]) if len(argv) > 1 else 1):
        torch.manual_seed(0)
        x = torch.rand(SHAPE["batch"], SHAPE["channels"], SHAPE["image_size"], SHAPE["image_size"]) - 0.5
        rate = gemm_rate(torch.float32, torch.device("cpu"), size=1024)
        for conv in CONVS:
            tasks = our_tasks(ours(conv, x, SHAPE), x, SHAPE["samples"], train=True)
            for task, fn in (("train_step", tasks.train_step), ("log_prob", tasks.evaluate), ("sample", tasks.draw)):
                path = out / f"profile_{conv}_{task}.txt"
                path.write_text(f"{conv} + affine, {task}, shape {SHAPE}, torch {torch.__version__}, "
                                f"{torch.get_num_threads()} thread(s); this core's float32 matrix product "
                                f"(1024^3): {rate / 1e9:.1f} G multiply-adds/s\n" + table(fn) + "\n")
                print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
