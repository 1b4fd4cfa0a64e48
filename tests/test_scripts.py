"""The command-line entry points as a user runs them (each in a child process, tests/cli.py): a 2 x 2 multirun of
src/train.py, then src/eval.py and src/sample.py on one of its checkpoints."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
from torchvision.io import read_image

from cli import launch_env, run_cases

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["experiment=quickstart", "debug=smoke", "trainer.enable_progress_bar=false"]


def run_script(script: str, *args: str, timeout: int = 300) -> SimpleNamespace:
    """``python src/<script> args`` (in a child process, tests/cli.py), tracebacks on."""
    (result,) = run_cases([(script, list(args))], timeout=timeout, env=launch_env(HYDRA_FULL_ERROR="1"))
    return SimpleNamespace(returncode=result["code"], stdout=result["stdout"], stderr=result["stderr"])


def ok(proc: SimpleNamespace) -> SimpleNamespace:
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


def test_multirun_ends_with_a_summary_of_every_job(multirun):
    sweep, proc = multirun
    with open(sweep / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["job"] for r in rows] == ["0", "1", "2", "3"]
    for row in rows:
        job = Path(row["run folder"])
        metrics = json.loads((job / "metrics.json").read_text())
        # the job's own overrides (the swept ones); the common ones are listed once
        assert row["overrides"] == f"coupling={metrics['coupling']} conv={metrics['conv']}"
        assert row["all overrides"].startswith("experiment=quickstart debug=smoke trainer.enable_progress_bar=False")
        assert float(row["test bits/dim"]) == pytest.approx(metrics["test/bpd"], abs=5e-5)
        assert float(row["best val bits/dim"]) == pytest.approx(metrics["val/bpd_best"], abs=5e-5)
        assert int(row["steps"]) == metrics["global_step"] == 3
        assert float(row["time (s)"]) == pytest.approx(metrics["train_seconds"], abs=0.05)
        assert job.parent == sweep and job.name.startswith(row["job"] + "_")
    table = (sweep / "summary.md").read_text()
    assert "Common overrides: experiment=quickstart debug=smoke trainer.enable_progress_bar=False logger=wandb_csv" in table
    assert "| job | overrides | tags | test bits/dim | best val bits/dim | steps | time (s) | run folder |" in table
    for row in rows:
        assert row["tags"] == "quickstart digits cinc quad"  # experiment=quickstart's
        cells = [row[c] for c in ("job", "overrides", "tags", "test bits/dim", "best val bits/dim", "steps", "time (s)")]
        assert "| " + " | ".join(cells) + f" | {Path(row['run folder']).name} |" in table
    assert table.strip() in proc.stdout  # printed at the end


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
    # 2 labelled blocks of 3 x 3 digits (enlarged to 32 px, 1 px apart) side by side, 4 px apart
    assert grid.shape[0] == 3 and grid.shape[2] == 4 + 2 * (3 * 33 + 1 + 4) and grid.shape[1] > 3 * 33 + 1 + 8
    assert read_image(record["reconstructions_png"]).numel() > 0
    assert read_image(record["interpolations_png"]).numel() > 0
    assert record["recon_err_max"] < 1e-3 and record["temperatures"] == [0.5, 1.0]
    # sampling clamps nothing silently: the non-finite count and the worst inverse residual are reported
    assert record["nonfinite_samples"] == 0 and record["inverse_residual_max"] < 1e-3
    assert "non-finite samples: 0 of 18" in proc.stdout


def test_unknown_choice_on_the_command_line_lists_the_available_ones(tmp_path):
    proc = run_script("train.py", "coupling=cubic", f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last == "error: unknown coupling option 'cubic': choose one of additive, affine, quad (conf/coupling/)"
    assert not (tmp_path / ".hydra").exists()


def test_mixed_precision_trains_on_the_cpu_and_says_only_what_concerns_the_user(tmp_path):
    """trainer.precision=16-mixed (allowed by the schema) on a CPU: Lightning's switch to bf16 is shown, the
    model summary's note about its MB estimate is not; the run trains and tests to a finite bits/dim."""
    proc = ok(run_script("train.py", *SMOKE, "logger=none", "trainer.precision=16-mixed", f"hydra.run.dir={tmp_path}"))
    output = proc.stdout + proc.stderr
    assert "Using `precision='bf16-mixed'` instead" in output and "not supported by the model summary" not in output
    assert math.isfinite(json.loads((tmp_path / "metrics.json").read_text())["test/bpd"])
