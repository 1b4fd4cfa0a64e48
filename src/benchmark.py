"""Speed benchmarks: sampling versus forward (issue #4) and issue #22's (normflows comparison, solver
table, training throughput, torch.compile); markdown tables on stdout, JSON + markdown files.

    python src/benchmark.py size=cpu                 # make bench: results/benchmark_cpu.{json,md}
    python src/benchmark.py size=cpu suite=speed     # issue #22's part only: results/speed_cpu.{json,md} (4.5-11 min)
    python src/benchmark.py size=paper device=cuda   # the paper's CIFAR-10 model on a GPU
    python src/benchmark.py size=tiny out=/tmp/b.json threads=all

Arguments (key=value): size = cpu | paper | tiny (default cpu); suite = all | sampling | speed (default
all); device = cpu | cuda (default cpu);
out = JSON path (default results/benchmark_<size>.json, with suite=speed results/speed_<size>.json; the
markdown goes next to it);
threads = torch CPU threads, a number or ``all`` (default 1 on the CPU, as the CInC poster's one-core
timings: on a shared machine single-threaded timings are also far steadier; ``all`` on CUDA).
Bad arguments: one line ``error: ...`` on stderr, exit status 2.
"""
import os
import sys
import tempfile
from pathlib import Path

from _entry import ROOT  # sets up sys.path and PROJECT_ROOT

import datetime  # noqa: E402

import torch  # noqa: E402

from cincflow.allocator import keep_freed_memory  # noqa: E402
from cincflow.bench import SIZES, markdown, run, speed_suite, write  # noqa: E402
from cincflow.bench.measure import machine  # noqa: E402
from cincflow.bench.speed_report import evaluate  # noqa: E402
from cincflow.timing import torch_threads, wall_time  # noqa: E402
from cincflow.config import check_device  # noqa: E402
from cincflow.errors import ConfigError, report_errors  # noqa: E402

KEYS = ("size", "suite", "device", "out", "threads")
SUITES = ("all", "sampling", "speed")


def parse(argv: list[str]) -> dict:
    args = {"size": "cpu", "suite": "all", "device": "cpu", "out": None, "threads": None}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in KEYS:
            raise ConfigError(f"unknown argument {item!r}: use key=value with key in {', '.join(KEYS)}")
        args[key] = value
    if args["size"] not in SIZES:
        raise ConfigError(f"unknown size {args['size']!r}: choose size= one of {', '.join(SIZES)}")
    if args["suite"] not in SUITES:
        raise ConfigError(f"unknown suite {args['suite']!r}: choose suite= one of {', '.join(SUITES)}")
    check_device(args["device"])
    if args["threads"] is None:
        args["threads"] = "1" if args["device"] == "cpu" else "all"
    if args["threads"] != "all" and not (args["threads"].isdigit() and int(args["threads"]) > 0):
        raise ConfigError(f"threads must be a positive number or 'all', got {args['threads']!r}")
    stem = "speed" if args["suite"] == "speed" else "benchmark"  # suite=speed never replaces the sampling suite's file
    args["out"] = args["out"] or str(ROOT / "results" / f"{stem}_{args['size']}.json")
    if not args["out"].endswith(".json"):
        raise ConfigError(f"out={args['out']} must name a .json file (the markdown goes next to it, .md)")
    folder = Path(args["out"]).parent
    try:  # checked before the run, which takes minutes
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        raise ConfigError(f"out={args['out']}: cannot write into {folder}; choose a writable out=<path>.json") from None
    return args


def main(argv: list[str]) -> None:
    args = parse(argv)
    threads = None if args["threads"] == "all" else int(args["threads"])
    allocator = keep_freed_memory()  # as the jobs do (keep_freed_memory: true); normflows runs with it alike
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    dev = torch.device(args["device"])
    result = run(args["size"], args["device"], threads, log=log) if args["suite"] != "speed" else {}
    if args["suite"] != "sampling":
        with torch_threads(threads):
            seconds = wall_time(lambda: result.__setitem__("speed", speed_suite.run(args["size"], dev, threads, log)), dev)
            mach = machine(dev)
        result["speed_targets"] = evaluate(result["speed"], result.get("models"))
        result.setdefault("meta", {"size": args["size"], "machine": mach, "seconds": 0.0,
                                   "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
        result["meta"]["speed_seconds"] = seconds
    result["meta"]["suite"] = args["suite"]
    result["meta"]["machine"]["allocator"] = allocator
    out, md = write(result, args["out"])
    print(markdown(result))
    print(f"wrote {os.path.relpath(out)} and {os.path.relpath(md)}", file=sys.stderr)


if __name__ == "__main__":
    report_errors(main, sys.argv[1:])  # bad arguments: one line `error: ...` on stderr, exit 2
