"""PyTorch profiler tables (sorted by self CPU time) of a train step and a sampling pass at normflows'
shape (:data:`cincflow.bench.compare.SHAPE`), for glow + affine and cinc + affine:

    python -m cincflow.bench.profile [out_dir] [threads]

writes ``profile_<conv>_<task>.txt`` (default out_dir: results/), one thread by default, after two
warm-up calls, three profiled calls per table.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from ..timing import torch_threads
from .compare import SHAPE, our_tasks, ours

CONVS = ("glow", "cinc")


def table(fn, calls: int = 3, rows: int = 40) -> str:
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    for _ in range(2):
        fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            fn()
    return f"{calls} calls\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main(argv: list[str]) -> None:
    out = Path(argv[0]) if argv else Path(os.environ.get("PROJECT_ROOT", ".")) / "results"
    out.mkdir(parents=True, exist_ok=True)
    with torch_threads(int(argv[1]) if len(argv) > 1 else 1):
        torch.manual_seed(0)
        x = torch.rand(SHAPE["batch"], SHAPE["channels"], SHAPE["image_size"], SHAPE["image_size"]) - 0.5
        for conv in CONVS:
            tasks = our_tasks(ours(conv, x, SHAPE), x, SHAPE["samples"], train=True)
            for task, fn in (("train_step", tasks.train_step), ("sample", tasks.draw)):
                path = out / f"profile_{conv}_{task}.txt"
                path.write_text(f"{conv} + affine, {task}, shape {SHAPE}, torch {torch.__version__}, "
                                f"{torch.get_num_threads()} thread(s)\n" + table(fn) + "\n")
                print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
