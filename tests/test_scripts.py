"""The command-line entry points as a user runs them (subprocesses): a 2 x 2 multirun of
src/train.py, then src/eval.py and src/sample.py on one of its checkpoints."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from torchvision.io import read_image

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["experiment=quickstart", "debug=smoke", "trainer.enable_progress_bar=false"]


def run_script(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "src" / script), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )
    return proc


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-4000:]}\nSTDERR:\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def multirun(tmp_path_factory):
    """python src/train.py -m coupling=affine,quad conv=cinc,emerging (tiny settings; W&B offline + CSV)."""
    sweep = tmp_path_factory.mktemp("multirun")
    proc = ok(run_script("train.py", "-m", *SMOKE, "logger=wandb_csv", "coupling=affine,quad", "conv=cinc,emerging",
                         f"hydra.sweep.dir={sweep}"))
    return sweep, proc


def test_multirun_four_jobs_four_folders(multirun):
    sweep, proc = multirun
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and (p / "metrics.json").exists())
    assert len(jobs) == 4, [p.name for p in sweep.iterdir()]
    seen, run_ids = set(), set()
    for job in jobs:
        metrics = json.loads((job / "metrics.json").read_text())
        seen.add((metrics["conv"], metrics["coupling"]))
        # the folder name shows the job's own overrides
        assert f"conv:{metrics['conv']}" in job.name and f"coupling:{metrics['coupling']}" in job.name
        assert math.isfinite(metrics["test/bpd"])
        assert Path(metrics["best_checkpoint"]).is_file() and Path(metrics["samples_png"]).is_file()
        assert (job / "csv" / "version_0" / "metrics.csv").is_file()
        runs = list((job / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, runs  # each job its own W&B run
        run_ids.add(runs[0].name.rsplit("-", 1)[-1])
    assert len(run_ids) == 4
    assert proc.stdout.count("W&B: logging offline") == 1
    assert seen == {("cinc", "affine"), ("cinc", "quad"), ("emerging", "affine"), ("emerging", "quad")}
    assert proc.stdout.count("test bits/dim:") == 4
    # a user sees what concerns them: not Lightning's litlogger tip nor torch's LeafSpec deprecation
    assert "litlogger" not in proc.stdout + proc.stderr and "LeafSpec" not in proc.stdout + proc.stderr


def _one_job(sweep: Path, conv: str = "cinc", coupling: str = "quad") -> tuple[Path, dict]:
    for job in sweep.iterdir():
        if (job / "metrics.json").exists():
            metrics = json.loads((job / "metrics.json").read_text())
            if (metrics["conv"], metrics["coupling"]) == (conv, coupling):
                return job, metrics
    raise AssertionError(f"no {conv}+{coupling} job in {sweep}")


def test_eval_script_writes_metrics_json(multirun, tmp_path):
    job, train_metrics = _one_job(multirun[0])
    out = tmp_path / "eval"
    proc = ok(run_script("eval.py", f"ckpt_path={train_metrics['best_checkpoint']}", "trainer.accelerator=cpu",
                         "trainer.enable_progress_bar=false", "trainer.limit_test_batches=1", f"hydra.run.dir={out}"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["checkpoint"] == train_metrics["best_checkpoint"] and metrics["split"] == "test"
    assert metrics["ema"] is True and metrics["data"] == "DigitsDataModule"
    # same weights, same test batch: only the dequantisation noise differs
    assert abs(metrics["test/bpd"] - train_metrics["test/bpd"]) < 0.1
    assert "test bits/dim:" in proc.stdout


def test_sample_script_writes_pngs(multirun, tmp_path):
    job, train_metrics = _one_job(multirun[0])
    out = tmp_path / "sample"
    proc = ok(run_script("sample.py", f"ckpt_path={job / 'checkpoints' / 'last.ckpt'}", "n=9", "temperature=[0.5,1.0]",
                  "reconstructions=4", "interpolations=2", "interpolation_steps=5", "device=cpu",
                  f"hydra.run.dir={out}"))
    record = json.loads((out / "sample.json").read_text())
    grid = read_image(record["samples_png"])
    assert grid.shape[0] == 3 and grid.shape[1] > 32 and grid.shape[2] > 2 * grid.shape[1] - 40  # 2 blocks side by side
    assert read_image(record["reconstructions_png"]).numel() > 0
    assert read_image(record["interpolations_png"]).numel() > 0
    assert record["recon_err_max"] < 1e-3 and record["temperatures"] == [0.5, 1.0]
    # sampling clamps nothing silently: the non-finite count and the worst inverse residual are reported
    assert record["nonfinite_samples"] == 0 and record["inverse_residual_max"] < 1e-3
    assert "non-finite samples: 0 of 18" in proc.stdout


def test_unknown_choice_on_the_command_line_lists_the_available_ones(tmp_path):
    proc = run_script("train.py", "coupling=cubic", f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0
    err = proc.stderr + proc.stdout
    assert "coupling/cubic" in err and "Available options" in err
    for choice in ("affine", "additive", "quad"):
        assert choice in err
