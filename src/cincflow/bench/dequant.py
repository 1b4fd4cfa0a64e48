"""Issue #20's measurement: uniform against variational dequantisation on the offline photo patches.

    python -m cincflow.bench.dequant [steps=200] [seeds=0,1] [couplings=affine,quad] [jobs=2] [out=results/dequant_photos.json]

For each coupling (with conv=cinc) and seed, three real runs of ``src/train.py`` (each on one thread,
``jobs`` at a time): ``experiment=photos_dequant_variational`` and ``experiment=photos_dequant_uniform``
for ``steps`` optimiser steps (equal steps), then uniform again for as many steps as fit in the
variational run's training time (equal wall-clock). Each is evaluated by ``src/eval.py`` with
``dequant_samples=16`` (the 16-sample importance-weighted bound and the mean over 16 draws) on the
first ``test_batches`` test batches. Writes the JSON (every run) and a Markdown table next to it:
mean ± sd over seeds of the test bound, and the step time (the cost of q).
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..paths import REPO_ROOT

DEFAULTS = {"steps": "200", "seeds": "0,1", "couplings": "affine,quad", "jobs": "2", "test_batches": "8",
            "out": str(REPO_ROOT / "results" / "dequant_photos.json")}
K = 16


def run(script: str, args: list[str]) -> None:
    done = subprocess.run([sys.executable, str(REPO_ROOT / "src" / f"{script}.py"), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{script}.py {' '.join(args)} failed ({done.returncode}): {done.stderr[-1500:]}")


def trained_and_evaluated(kind: str, coupling: str, seed: int, steps: int, folder: Path, test_batches: int,
                          budget: str = "equal steps") -> dict:
    """One training run and its evaluation; the numbers the table needs."""
    name = f"{kind}_{coupling}_seed{seed}_{steps}_{budget.replace(' ', '_')}"
    run("train", [f"experiment=photos_dequant_{kind}", f"coupling={coupling}", f"seed={seed}", f"trainer.max_steps={steps}",
                  "test=false", "trainer.enable_progress_bar=false", f"hydra.run.dir={folder / name}"])
    trained = json.loads((folder / name / "metrics.json").read_text())
    run("eval", [f"ckpt_path={folder / name / 'checkpoints' / 'last.ckpt'}", f"dequant_samples={K}", f"seed={seed}",
                 f"trainer.limit_test_batches={test_batches}", f"hydra.run.dir={folder / name / 'eval'}"])
    metrics = json.loads((folder / name / "eval" / "metrics.json").read_text())
    return {"dequant": kind, "coupling": coupling, "seed": seed, "steps": int(trained["global_step"]),
            "train_seconds": float(trained["train_seconds"]), "step_ms": 1000 * float(trained["train_seconds"]) / steps,
            "test_bpd_iw16": metrics["test/bpd_iw"], "test_bpd_iw16_se": metrics["test/bpd_iw_se"],
            "test_bpd_mean16": metrics["test/bpd"], "test_images": metrics["test/bpd_iw_images"], "budget": budget}


def study(steps: int, seeds: list[int], couplings: list[str], jobs: int, test_batches: int, folder: Path) -> list[dict]:
    pairs = [(c, s) for c in couplings for s in seeds]
    with ThreadPoolExecutor(jobs) as pool:
        first = list(pool.map(lambda cs: [trained_and_evaluated(kind, cs[0], cs[1], steps, folder, test_batches)
                                          for kind in ("variational", "uniform")], pairs))
        equal_time = [max(steps, round(steps * var["train_seconds"] / uni["train_seconds"])) for var, uni in first]
        later = list(pool.map(lambda a: trained_and_evaluated("uniform", a[0][0], a[0][1], a[1], folder, test_batches,
                                                                  "equal wall-clock"),
                              zip(pairs, equal_time)))
    rows = []
    for (var, uni), same_time in zip(first, later):
        rows += [var, uni, same_time]
    return rows


def step_cost(couplings: list[str], reps: int = 15) -> dict[str, dict[str, float]]:
    """Median ms of one training step (bits/dim, backward, Adamax step) of the study's model on a batch of 32
    photos-sized images, uniform against variational, interleaved in this process on one thread: q's cost
    without the load differences between separate runs."""
    import torch

    from ..dequant import VariationalDequantizer
    from ..model import Glow
    from ..timing import torch_threads, wall_time

    x = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = {}
    with torch_threads(1):
        for coupling in couplings:
            torch.manual_seed(0)
            flow = Glow(3, 32, levels=3, depth=2, width=32, conv="cinc", coupling=coupling, n_bits=8)
            q = VariationalDequantizer(3, steps=2, width=16)
            optimizer = torch.optim.Adamax([*flow.parameters(), *q.parameters()], lr=1e-4)

            def step(dequantizer):
                optimizer.zero_grad()
                flow.bits_per_dim(x, dequantizer=dequantizer).mean().backward()
                optimizer.step()

            times = {"uniform": [], "variational": []}
            for _ in range(reps):
                for kind, dequantizer in (("uniform", None), ("variational", q)):
                    times[kind].append(1000 * wall_time(lambda: step(dequantizer), torch.device("cpu")))
            out[coupling] = {k: statistics.median(v[2:]) for k, v in times.items()}
    return out


def markdown(rows: list[dict], meta: dict) -> str:
    def spread(values: list[float]) -> str:
        return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"

    lines = [f"Uniform vs variational dequantisation (issue #20), data=photos, conv=cinc, {meta['steps']} steps, seeds "
             f"{meta['seeds']}, test bits/dim on {rows[0]['test_images']} test images: the 16-sample importance-weighted "
             f"bound (and the mean over 16 draws), mean ± sd over seeds; {meta['machine']}.", "",
             "| coupling | dequantisation | budget | steps | test bpd, IW bound K=16 | test bpd, mean of 16 draws | ms / step |",
             "|---|---|---|---:|---:|---:|---:|"]
    keys = dict.fromkeys((r["coupling"], r["dequant"], r["budget"]) for r in rows)
    for coupling, kind, budget in keys:
        group = [r for r in rows if (r["coupling"], r["dequant"], r["budget"]) == (coupling, kind, budget)]
        lines.append(f"| {coupling} | {kind} | {budget} | {'/'.join(str(r['steps']) for r in group)} | "
                     f"{spread([r['test_bpd_iw16'] for r in group])} | {spread([r['test_bpd_mean16'] for r in group])} | "
                     f"{statistics.mean(r['step_ms'] for r in group):.0f} |")
    cost = meta.get("step_cost")
    if cost:
        lines += ["", "The cost of q, one training step interleaved in one process (median ms, batch 32, 1 thread): "
                  + "; ".join(f"{c}: uniform {t['uniform']:.0f}, variational {t['variational']:.0f} "
                              f"({t['variational'] / t['uniform']:.2f}x)" for c, t in cost.items()) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    args = dict(DEFAULTS)
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in DEFAULTS:
            raise SystemExit(f"error: unknown argument {item!r}: use key=value with key in {', '.join(DEFAULTS)}")
        args[key] = value
    import platform
    import os

    meta = {"steps": int(args["steps"]), "seeds": [int(s) for s in args["seeds"].split(",")],
            "couplings": args["couplings"].split(","), "machine": f"{platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} CPUs, {args['jobs']} runs at a time, 1 thread each"}
    meta["step_cost"] = step_cost(meta["couplings"])
    with tempfile.TemporaryDirectory() as tmp:
        rows = study(meta["steps"], meta["seeds"], meta["couplings"], int(args["jobs"]), int(args["test_batches"]), Path(tmp))
    out = Path(args["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "runs": rows}, indent=2))
    text = markdown(rows, meta)
    out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
