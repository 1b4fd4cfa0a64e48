"""`make reproduce`: train every paper configuration (Hydra multiruns), evaluate each final
checkpoint, and write the result tables and plots.

Scales:
- ``full``: the 18 experiment configs as they are (GPUs, weeks; docs/method.md section 5 settings),
  each with the seed of its config. The official ImageNet runs had no epoch limit (trained until
  stopped); here they get ``imagenet_epochs`` epochs (default 100) so that every run ends with its test.
- ``smoke``: the CIFAR-10 configurations at depth 2, width 48 on ``data=photos`` (CIFAR-shaped,
  offline), 1000 training steps on the CPU, each with seeds 0 and 1 (``seeds``): the tables show the
  mean and standard deviation over the seeds. The ImageNet configurations differ from the CIFAR-10
  ones in data and size only, so at this scale they would repeat the same runs and are left out.
- ``tiny``: every configuration with its own number of levels, depth 1, width 8, 2 steps on
  ``data=photos`` (the test suite: no row can rot).

Output (``out``, default ``outputs/reproduce/``, ignored by git): ``<out>/<scale>/`` holds tables.md,
results.json, the plots and ``runs/<time>/paper_<name>/seed_<seed>/`` (one Hydra job per run).
``publish`` (e.g. ``results/``) also writes a copy for the repository into ``<publish>/<scale>/``:
the same tables and plots without run folders or other local paths.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from tqdm.auto import tqdm

from ..bench.measure import timed
from ..paths import REPO_ROOT
from ..timing import torch_threads
from . import paper
from .report import write_report

DEFAULT_OUT = "outputs/reproduce"

SCALES = {
    "full": {"datasets": tuple(paper.DATASETS), "seeds": None, "overrides": []},
    "smoke": {
        "datasets": ("cifar10",),
        "seeds": (0, 1),
        "overrides": [
            "data=photos", "data.batch_size=32", "trainer=cpu", "trainer.devices=1", "trainer.max_epochs=-1",
            "trainer.max_steps=1000", "+trainer.val_check_interval=100", "trainer.check_val_every_n_epoch=null",
            "trainer.limit_val_batches=4", "trainer.limit_test_batches=8", "model.depth=2", "model.width=48",
            "scheduler.warmup_epochs=0", "scheduler.warmup_steps=50", "module.ema_decay=0.995", "module.actnorm_init_images=256",
            "logger=csv", "samples.n=16", "callbacks.samples.every_n_epochs=1000", "num_threads=1",
        ],
    },
    "tiny": {
        "datasets": tuple(paper.DATASETS),
        "seeds": None,
        "overrides": [
            "data=photos", "data.scales=[1]", "data.batch_size=8", "trainer=cpu", "trainer.devices=1",
            "trainer.max_epochs=1", "trainer.max_steps=2", "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "trainer.num_sanity_val_steps=0",
            "model.depth=1", "model.width=8", "scheduler.warmup_epochs=0", "scheduler.warmup_steps=2",
            "module.actnorm_init_images=16", "logger=none", "samples.n=0", "callbacks.samples.every_n_epochs=1000",
            "callbacks.samples.n_reconstructions=2", "num_threads=1",
        ],
    },
}
IMAGENET_EPOCHS = 100  # full scale: the length given to the rows trained "until stopped"


def experiments(scale: str, only: list[str] | None = None) -> list[str]:
    """The configurations of a scale, in table order (dataset, conv, coupling); ``only`` picks some."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}: choose one of {', '.join(SCALES)}")
    names = [
        paper.experiment_name(ds, conv, cp)
        for ds in SCALES[scale]["datasets"]
        for conv in paper.CONVS
        for cp in paper.COUPLINGS
    ]
    if only:
        unknown = [n for n in dict.fromkeys(only) if n not in names]
        if unknown:
            elsewhere = [s for s in SCALES if s != scale and set(unknown) <= set(experiments(s))]
            hint = f" ({', '.join(unknown)}: at scale {' or '.join(elsewhere)})" if elsewhere else ""
            raise ValueError(
                f"unknown configuration {', '.join(map(repr, unknown))} for --only at scale {scale}: "
                f"choose from {', '.join(names)}{hint}"
            )
        names = [n for n in names if n in only]
    return names


def run_dirs(sweep_dir: Path, name: str) -> list[Path]:
    """The finished runs of a configuration: ``paper_<name>/seed_*/`` (made by :func:`launch`) or
    ``paper_<name>/`` itself (one job per configuration, e.g. on a cluster), with a metrics.json."""
    folder = Path(sweep_dir) / f"paper_{name}"
    if (folder / "metrics.json").is_file():
        return [folder]
    seeds = [d for d in folder.glob("seed_*") if (d / "metrics.json").is_file()]
    return sorted(seeds, key=lambda d: (len(d.name), d.name))  # seed_2 before seed_10


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT, capture_output=True, text=True)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA), torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, torch threads: {torch.get_num_threads()}, torch {torch.__version__}"


def dataset_overrides(scale: str, dataset: str, imagenet_epochs: int) -> list[str]:
    """Overrides for one dataset's runs: at full scale a finite length for the rows trained until stopped."""
    if scale == "full" and dataset in paper.UNTIL_STOPPED:
        return [f"trainer.max_epochs={int(imagenet_epochs)}"]
    return []


def launch(names: list[str], overrides: list[str], sweep_dir: Path, seeds: list[int] | None) -> None:
    """One Hydra multirun over the experiment configs (x ``seeds``; None: each config's own seed); each
    job's folder is ``<sweep_dir>/<task_name>/seed_<seed>``."""
    cmd = [
        sys.executable, str(REPO_ROOT / "src" / "train.py"), "-m",
        "experiment=" + ",".join(f"paper/{n}" for n in names),
        *([f"seed={','.join(str(int(s)) for s in seeds)}"] if seeds else []),
        *overrides,
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.sweep.subdir=${task_name}/seed_${seed}",
    ]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO_ROOT, check=True)


def _run_seed(run_dir: Path) -> int | None:
    config = run_dir / ".hydra" / "config.yaml"
    seed = (yaml.safe_load(config.read_text()) or {}).get("seed") if config.is_file() else None
    return None if seed is None else int(seed)


def evaluate(run_dir: Path, name: str, device: torch.device, reps: int) -> dict:
    """Test bits/dim (from the run's test of its best checkpoint), validation curve, and the time to
    sample 100 images and to evaluate 100 images, with the benchmark's timing (warm-up, median)."""
    from ..training.loading import load_module

    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{metrics_path} is missing: the run of {name} did not finish")
    metrics = json.loads(metrics_path.read_text())
    ckpt = metrics.get("best_checkpoint") or metrics.get("last_checkpoint")
    model = load_module(ckpt, device=str(device)).eval_model
    x = model.sample(100, temperature=1.0)
    with torch.no_grad():
        seconds = timed({"sample": lambda: model.sample(100), "forward": lambda: model.log_prob(x)}, device, reps)
    dataset, conv, coupling = name.split("_")
    curve = [[h["step"], h["val/bpd"]] for h in metrics.get("history", []) if "val/bpd" in h]
    return {
        "experiment": name, "dataset": dataset, "conv": conv, "coupling": coupling, "seed": _run_seed(run_dir),
        "test_bpd": metrics.get("test/bpd"), "sample_seconds": seconds["sample"], "forward_seconds": seconds["forward"],
        "val_curve": curve, "run_dir": str(run_dir.relative_to(REPO_ROOT) if run_dir.is_relative_to(REPO_ROOT) else run_dir),
        "checkpoint": ckpt, "global_step": metrics.get("global_step"),
    }


def _absolute(path: str | Path) -> Path:
    path = Path(path)
    return path if path.is_absolute() else REPO_ROOT / path


def reproduce(scale: str = "full", out: str | Path = DEFAULT_OUT, only: list[str] | None = None,
              device: str = "auto", reps: int = 3, extra_overrides: list[str] | None = None,
              runs: str | Path | None = None, seeds: list[int] | None = None,
              imagenet_epochs: int | None = None, publish: str | Path | None = None) -> Path:
    """Train (one multirun per set of overrides) and evaluate; with ``runs``, only evaluate the
    finished runs found in that folder (see :func:`run_dirs`). ``seeds`` (default: the scale's)
    repeats every configuration; ``imagenet_epochs`` (default ``IMAGENET_EPOCHS``) is the full-scale
    length of the rows trained until stopped; ``publish`` also writes the path-free copy into ``<publish>/<scale>/``.
    Returns the path of tables.md."""
    names = experiments(scale, only)
    imagenet_epochs = IMAGENET_EPOCHS if imagenet_epochs is None else int(imagenet_epochs)
    if imagenet_epochs < 1:
        raise ValueError(f"--imagenet-epochs must be at least 1, got {imagenet_epochs}")
    seeds = list(SCALES[scale]["seeds"] or []) if seeds is None else [int(s) for s in seeds]
    out_dir = _absolute(out) / scale
    start, commit = time.time(), _git_commit()  # the code the runs are made with
    overrides = SCALES[scale]["overrides"] + list(extra_overrides or [])
    if runs is None:
        sweep_dir = out_dir / "runs" / time.strftime("%Y-%m-%d_%H-%M-%S")
        groups: dict[tuple[str, ...], list[str]] = {}
        for n in names:
            groups.setdefault(tuple(dataset_overrides(scale, n.split("_")[0], imagenet_epochs)), []).append(n)
        for group_overrides, group in groups.items():
            launch(group, overrides + list(group_overrides), sweep_dir, seeds)
    else:
        sweep_dir = Path(runs).resolve()
        names = [n for n in names if run_dirs(sweep_dir, n)]
        if not names:
            raise FileNotFoundError(f"no finished run (paper_<name>/[seed_<seed>/]metrics.json) in {sweep_dir}")
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    with torch_threads(1 if dev.type == "cpu" else None):  # the paper timed sampling on one CPU core
        jobs = [(d, n) for n in names for d in run_dirs(sweep_dir, n)]
        if runs is None and len(jobs) != len(names) * max(len(seeds), 1):
            raise FileNotFoundError(f"only {len(jobs)} of the runs in {sweep_dir} finished (no metrics.json)")
        records = [evaluate(d, n, dev, reps) for d, n in tqdm(jobs, desc="evaluating", unit="run")]
        hardware = _hardware(dev)
    meta = {
        "hardware": hardware,
        "commit": commit,
        "datasets": "CIFAR-10 (torchvision); ImageNet32 / ImageNet64 = van den Oord et al. 2016 (imagenet32_oord, "
        "imagenet64_oord)" if scale == "full" else
        "data=photos (32x32 patches of scikit-image's bundled photographs) for every configuration",
        "data": "photos" if scale != "full" else "cifar10 / imagenet32_oord / imagenet64_oord",
        "seeds": seeds or "each config's own",
        "sweep_dir": str(sweep_dir),
        "minutes": round((time.time() - start) / 60, 1),
        "overrides": overrides,
    }
    if scale == "full":
        meta["imagenet_epochs"] = int(imagenet_epochs)
    tables = write_report(records, out_dir, scale, meta)
    print(tables.read_text())
    print(f"Results in {out_dir} ({meta['minutes']} min): tables.md, results.json, val_bpd.png, sampling_time.png")
    if publish is not None:
        published = write_report(records, _absolute(publish) / scale, scale, meta, published=True)
        print(f"Published copy (no run folders): {published.parent}")
    return tables
