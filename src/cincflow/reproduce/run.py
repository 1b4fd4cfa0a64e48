"""`make reproduce`: train every paper configuration (one Hydra multirun), evaluate each final
checkpoint, and write the result tables and plots.

Scales:
- ``full``: the experiment configs as they are (GPUs, days; PAPER.md section 5 settings).
- ``smoke``: the CIFAR-10 configurations at depth 2, width 48 on ``data=photos`` (CIFAR-shaped,
  offline), a fixed budget of training steps on the CPU; the whole pipeline in about 20 minutes on
  2 cores. The ImageNet32 configurations differ from the CIFAR-10 ones only in depth and data, so
  at this scale they would repeat the same runs and are left out.
- ``tiny``: every configuration at depth 1, width 8, a few steps (the test suite: no row can rot).
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
from tqdm.auto import tqdm

from ..benchmark import timed
from . import paper
from .report import write_report

ROOT = Path(__file__).resolve().parents[3]

SCALES = {
    "full": {"datasets": ("cifar10", "imagenet32"), "overrides": []},
    "smoke": {
        "datasets": ("cifar10",),
        "overrides": [
            "data=photos", "data.batch_size=32", "trainer=cpu", "trainer.devices=1", "trainer.max_epochs=-1",
            "trainer.max_steps=1000", "+trainer.val_check_interval=100", "trainer.check_val_every_n_epoch=null",
            "trainer.limit_val_batches=4", "trainer.limit_test_batches=8", "model.depth=2", "model.width=48",
            "scheduler.warmup_epochs=0", "scheduler.warmup_steps=50", "ema_decay=0.995", "actnorm_init_images=256",
            "logger=csv", "samples.n=16", "callbacks.samples.every_n_epochs=1000", "num_threads=1",
        ],
    },
    "tiny": {
        "datasets": ("cifar10", "imagenet32"),
        "overrides": [
            "data=photos", "data.batch_size=8", "trainer=cpu", "trainer.devices=1", "trainer.max_epochs=1",
            "trainer.max_steps=4", "trainer.limit_train_batches=4", "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1", "trainer.num_sanity_val_steps=0", "model.levels=2",
            "model.depth=1", "model.width=8", "scheduler.warmup_epochs=0", "scheduler.warmup_steps=2",
            "actnorm_init_images=16", "logger=csv", "samples.n=4", "callbacks.samples.every_n_epochs=1000",
            "num_threads=1",
        ],
    },
}


def experiments(scale: str, only: list[str] | None = None) -> list[str]:
    names = [
        paper.experiment_name(ds, conv, cp)
        for ds in SCALES[scale]["datasets"]
        for conv in paper.CONVS
        for cp in paper.COUPLINGS
    ]
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise ValueError(f"unknown configuration(s) {unknown} at scale {scale}: choose from {names}")
        names = [n for n in names if n in only]
    return names


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA), torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, torch threads: {torch.get_num_threads()}, torch {torch.__version__}"


def launch(names: list[str], overrides: list[str], sweep_dir: Path) -> None:
    """One Hydra multirun over the experiment configs; each job's folder is named by its experiment."""
    cmd = [
        sys.executable, str(ROOT / "src" / "train.py"), "-m",
        "experiment=" + ",".join(f"paper/{n}" for n in names),
        *overrides,
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.sweep.subdir=${task_name}",
    ]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


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
        "experiment": name, "dataset": dataset, "conv": conv, "coupling": coupling,
        "test_bpd": metrics.get("test/bpd"), "sample_seconds": seconds["sample"], "forward_seconds": seconds["forward"],
        "val_curve": curve, "run_dir": str(run_dir.relative_to(ROOT) if run_dir.is_relative_to(ROOT) else run_dir),
        "checkpoint": ckpt, "global_step": metrics.get("global_step"),
    }


def reproduce(scale: str = "full", out: str | Path = "results", only: list[str] | None = None,
              device: str = "auto", reps: int = 3, extra_overrides: list[str] | None = None,
              runs: str | Path | None = None) -> Path:
    """Train (one multirun) and evaluate; with ``runs``, only evaluate the finished runs found in that
    folder (``<runs>/paper_<name>/``, e.g. made by one cluster job per configuration)."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}: choose one of {', '.join(SCALES)}")
    names = experiments(scale, only)
    out_dir = Path(out) / scale
    if not out_dir.is_absolute():
        out_dir = ROOT / out_dir
    start, commit = time.time(), _git_commit()  # the code the runs are made with
    if runs is None:
        sweep_dir = out_dir / "runs" / time.strftime("%Y-%m-%d_%H-%M-%S")
        launch(names, SCALES[scale]["overrides"] + list(extra_overrides or []), sweep_dir)
    else:
        sweep_dir = Path(runs).resolve()
        names = [n for n in names if (sweep_dir / f"paper_{n}" / "metrics.json").is_file()]
        if not names:
            raise FileNotFoundError(f"no finished run (paper_<name>/metrics.json) in {sweep_dir}")
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    threads = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(1)  # the paper timed sampling on one CPU core
    try:
        records = [evaluate(sweep_dir / f"paper_{n}", n, dev, reps) for n in tqdm(names, desc="evaluating", unit="run")]
        hardware = _hardware(dev)
    finally:
        torch.set_num_threads(threads)
    meta = {
        "hardware": hardware,
        "commit": commit,
        "datasets": "CIFAR-10 (torchvision); ImageNet32 = van den Oord et al. 2016 (imagenet32_oord)"
        if scale == "full" else "data=photos (32x32 patches of scikit-image's bundled photographs) for every configuration",
        "data": "photos" if scale != "full" else "cifar10 / imagenet32_oord",
        "sweep_dir": str(sweep_dir),
        "minutes": round((time.time() - start) / 60, 1),
        "overrides": SCALES[scale]["overrides"] + list(extra_overrides or []),
    }
    tables = write_report(records, out_dir, scale, meta)
    print(tables.read_text())
    print(f"Results in {out_dir} ({meta['minutes']} min): tables.md, results.json, val_bpd.png, sampling_time.png")
    return tables
