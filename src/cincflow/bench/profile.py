"""PyTorch profiler tables (sorted by self CPU time) of a train step, log_prob and a sampling pass at
normflows' shape (:data:`cincflow.bench.compare.SHAPE`), for glow + affine and cinc + affine:

    python -m cincflow.bench.profile [out_dir] [threads]

writes ``profile_<conv>_<task>.txt`` (default out_dir: results/), one thread by default, after two
warm-up calls, three profiled calls per table. Each table's header says how much of the self CPU time
the convolutions took (oneDNN's kernels, forward and backward: :func:`conv_share`) and this core's
best matrix-product rate (:func:`~.measure.gemm_rate`), the two numbers that bound what any change
outside the convolution kernels can gain.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from ..timing import torch_threads
from .compare import SHAPE, our_tasks, ours
from .measure import gemm_rate

CONVS = ("glow", "cinc")
CONV_OPS = ("aten::mkldnn_convolution", "aten::convolution_backward")  # where oneDNN's kernels run (self time)


def conv_share(averages) -> float:
    """The share of the self CPU time of a profile's ``key_averages()`` spent in convolutions."""
    total = sum(e.self_cpu_time_total for e in averages)
    return sum(e.self_cpu_time_total for e in averages if e.key in CONV_OPS) / total if total else 0.0


def table(fn, calls: int = 3, rows: int = 40) -> str:
    """The profiler table of ``calls`` calls of ``fn`` (after two warm-up calls), headed by the
    convolutions' share of the time."""
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    for _ in range(2):
        fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            fn()
    averages = prof.key_averages()
    share = f"convolutions (forward and backward): {100 * conv_share(averages):.0f}% of the self CPU time"
    return (f"{calls} calls; {share}\n"
            + averages.table(sort_by="self_cpu_time_total", row_limit=rows))


def main(argv: list[str]) -> None:
    out = Path(argv[0]) if argv else Path(os.environ.get("PROJECT_ROOT", ".")) / "results"
    out.mkdir(parents=True, exist_ok=True)
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
