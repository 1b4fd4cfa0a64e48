"""Sampling-versus-forward speed benchmark (issue #4): markdown table on stdout, JSON + markdown files.

    python src/benchmark.py size=cpu                 # make bench: results/benchmark_cpu.{json,md}
    python src/benchmark.py size=paper device=cuda   # the paper's CIFAR-10 model on a GPU
    python src/benchmark.py size=tiny out=/tmp/b.json threads=all

Arguments (key=value): size = cpu | paper | tiny (default cpu); device = cpu | cuda (default cpu);
out = JSON path (default results/benchmark_<size>.json, the markdown goes next to it);
threads = torch CPU threads, a number or ``all`` (default 1 on the CPU, as the CInC poster's one-core
timings: on a shared machine single-threaded timings are also far steadier; ``all`` on CUDA).
"""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # also works without `pip install -e .`
    sys.path.insert(0, str(ROOT / "src"))

from cincflow.benchmark import markdown, run, write  # noqa: E402

KEYS = ("size", "device", "out", "threads")


def parse(argv: list[str]) -> dict:
    args = {"size": "cpu", "device": "cpu", "out": None, "threads": None}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in KEYS:
            raise SystemExit(f"unknown argument {item!r}: use key=value with key in {', '.join(KEYS)}")
        args[key] = value
    if args["threads"] is None:
        args["threads"] = "1" if args["device"] == "cpu" else "all"
    if args["threads"] != "all" and not args["threads"].isdigit():
        raise SystemExit(f"threads must be a number or 'all', got {args['threads']!r}")
    args["out"] = args["out"] or str(ROOT / "results" / f"benchmark_{args['size']}.json")
    return args


def main(argv: list[str]) -> None:
    args = parse(argv)
    threads = None if args["threads"] == "all" else int(args["threads"])
    result = run(args["size"], args["device"], threads, log=lambda line: print(line, file=sys.stderr, flush=True))
    out, md = write(result, args["out"])
    print(markdown(result))
    print(f"wrote {os.path.relpath(out)} and {os.path.relpath(md)}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
