"""Cluster launching (#19) through hydra-submitit-launcher: the SLURM launcher's composed settings become the
sbatch script submitit would submit (no cluster needed); a real sweep through submitit's local executor
(real processes); a requeued SLURM job resumes its own run, from the step where submitit's preemption signal
stopped it, and keeps the files its first attempt wrote."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import submitit
import torch
from hydra import compose, initialize_config_dir

from cli import launch_env, run_cases
from submitit_job import TrainJob, submit

ROOT = Path(__file__).resolve().parents[1]
SUBMIT = str(Path(submitit.__file__).parent / "core" / "_submit.py")  # submitit's job process
TINY = ["experiment=quickstart", "debug=smoke", "logger=none", "samples.n=0"]


def sbatch_script(launcher: dict, folder: Path, monkeypatch) -> str:
    """The sbatch file submitit writes for ``launcher`` (hydra.launcher), built as the plugin builds its executor
    (submitit's check for an ``srun`` on this machine answered as on a cluster's login node)."""
    import submitit
    from submitit.slurm.slurm import SlurmExecutor
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    base = set(OmegaConf.structured(BaseQueueConf).keys())
    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=launcher["max_num_timeout"])
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in launcher.items()
                                  if k not in ("_target_", "submitit_folder", "max_num_timeout")})
    return executor._executor._make_submission_file_text("python -u -m submitit.core._submit x", "uid")


def test_the_slurm_launcher_composes_into_the_sbatch_settings_a_user_sets(tmp_path, monkeypatch):
    """experiment=cifar10_paper on 2 nodes x 4 GPUs: one task per GPU (tasks_per_node follows gpus_per_node),
    the partition, time, CPUs, memory, extra sbatch options and the USR2 signal before the time limit."""
    from omegaconf import OmegaConf

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[
            "experiment=cifar10_paper", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
            "hydra.launcher.nodes=2", "hydra.launcher.gpus_per_node=4", "hydra.launcher.timeout_min=2880",
            "+hydra.launcher.additional_parameters.mail-type=END", "trainer=ddp", "trainer.num_nodes=2",
            "trainer.devices=4"], return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    launcher["tasks_per_node"] = cfg.hydra.launcher.tasks_per_node  # the interpolation, resolved
    launcher["name"] = "train"
    assert launcher["_target_"].endswith("SlurmLauncher") and launcher["tasks_per_node"] == 4
    assert cfg.trainer.num_nodes == launcher["nodes"] and cfg.trainer.devices == launcher["gpus_per_node"]
    text = sbatch_script(launcher, tmp_path, monkeypatch)
    for line in ("#SBATCH --partition=gpu", "#SBATCH --nodes=2", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --ntasks-per-node=4", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=64GB",
                 "#SBATCH --time=2880", "#SBATCH --mail-type=END", "#SBATCH --signal=USR2@120", "#SBATCH --open-mode=append"):
        assert line in text, (line, text)


def test_a_requeued_slurm_job_resumes_from_its_run_folder(tmp_path, monkeypatch):
    """submitit requeues a preempted job with the same config (the same run folder): with SLURM_RESTART_COUNT set
    it continues from that folder's last.ckpt instead of being refused as another run's folder (also when the
    command line names no checkpoint), and its Hydra files go to .hydra/requeue_<n> once .hydra/ exists."""
    from cincflow.runs import check_training_folder, hydra_subdir, requeued_checkpoint

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    assert requeued_checkpoint(tmp_path) is None
    (tmp_path / ".hydra").mkdir()
    assert hydra_subdir(str(tmp_path)) == ".hydra"
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    last = requeued_checkpoint(tmp_path)
    assert last == tmp_path / "checkpoints" / "last.ckpt"
    for ckpt in (last, None):  # train.py's, and the launch's (RunFolders) before any ckpt_path is chosen
        check_training_folder(tmp_path, {"train": True, "resume": "full"}, ckpt)  # its own run: no refusal
    assert requeued_checkpoint(tmp_path / "new") is None
    assert hydra_subdir(str(tmp_path)) == ".hydra/requeue_2" and hydra_subdir(str(tmp_path / "new")) == ".hydra"


@pytest.mark.slow
def test_a_sweep_through_submitit_local_runs_each_job_in_its_own_process(tmp_path):
    """2 jobs through submitit's local executor (real processes) complete, each in its own run folder, the
    summary lists both; a job that fails at run time (diverges: lr 1e30) fails alone, with its error in its log
    and in the summary."""
    sweep = tmp_path / "sweep"
    (result,) = run_cases([("train", ["-m", "hydra/launcher=local", "experiment=quickstart", "debug=smoke", "logger=none",
                                      "samples.n=0", "module.max_bad_steps=1", "coupling=affine,quad",
                                      "optimizer.lr=1e-3,1e30", f"hydra.sweep.dir={sweep}"])], timeout=600)
    assert result["code"] == 0, (result["stderr"][-3000:], result["stdout"][-2000:])
    with open(sweep / "summary.csv", newline="") as f:
        rows = {r["overrides"]: r for r in csv.DictReader(f)}
    assert len(rows) == 4 and len(list((sweep / ".submitit").glob("*/*_log.out"))) == 4
    for coupling in ("affine", "quad"):
        good, bad = rows[f"coupling={coupling} optimizer.lr=0.001"], rows[f"coupling={coupling} optimizer.lr=1e+30"]
        folder = Path(good["run folder"])
        assert json.loads((folder / "metrics.json").read_text())["coupling"] == coupling
        assert bad["test bits/dim"].startswith("failed (error: ") and "non-finite" in bad["test bits/dim"]
        assert "non-finite" in (Path(bad["run folder"]) / "train.log").read_text()
    assert len({r["run folder"] for r in rows.values()}) == 4


def submitit_env(job_id: str, **extra: str) -> dict[str, str]:
    """The environment submitit's local executor gives the task of job ``job_id`` (one task)."""
    return launch_env(SUBMITIT_EXECUTOR="local", SUBMITIT_LOCAL_JOB_ID=job_id, SUBMITIT_LOCAL_GLOBALID="0",
                      SUBMITIT_LOCAL_LOCALID="0", SUBMITIT_LOCAL_NTASKS="1", SUBMITIT_LOCAL_NODEID="0",
                      SUBMITIT_LOCAL_JOB_NUM_NODES="1", **extra)


def kept_files(run: Path) -> dict[str, bytes]:
    """What a requeued attempt must leave as it was: the first attempt's Hydra files and log."""
    return {str(p.relative_to(run)): p.read_bytes() for p in [*(run / ".hydra").glob("*.yaml"), run / "train.log"]}


def test_submitits_preemption_signal_saves_at_that_step_then_requeues_and_the_requeued_job_resumes_there(tmp_path):
    """submitit's job process (its own USR2 handler installed) trains, validating every 100 steps; USR2 arrives after
    step 105: training stops at that batch, last.ckpt is saved there, THEN submitit's handler checkpoints the job (it
    finds last.ckpt at step 105) and requeues it (its local executor's exit status 144). The requeued attempt (the
    resubmitted pickle, SLURM_RESTART_COUNT=1) continues from step 105 in the same folder, and the first attempt's
    .hydra files and log lines stay: its own Hydra files go to .hydra/requeue_1/, its log is appended."""
    from submitit.core.utils import DelayedSubmission
    from submitit.local.local import LOCAL_REQUEUE_RETURN_CODE

    run, folder, tests = tmp_path / "run", tmp_path / "submitit", [str(ROOT / "tests")]
    args = [*TINY, "test=false", "trainer.limit_train_batches=null", "trainer.max_epochs=-1", "trainer.max_steps=120",
            "+trainer.val_check_interval=100", "trainer.check_val_every_n_epoch=null",
            "+callbacks.preempt._target_=submitit_job.PreemptAt", "+callbacks.preempt.step=105"]
    pickle = submit(TrainJob(args, run), folder, "7")
    submitted = pickle.stat().st_mtime_ns
    (first,) = run_cases([(SUBMIT, [folder])], env=submitit_env("7"), paths=tests)
    assert first["code"] == LOCAL_REQUEUE_RETURN_CODE, (first["stderr"][-3000:], first["stdout"][-2000:])
    last = run / "checkpoints" / "last.ckpt"
    assert (f"SIGUSR2 (submitit: preemption or time limit) at epoch 4, step 105: saved {last}; now submitit's requeue "
            "(the requeued job resumes from it)") in first["stdout"].splitlines()
    assert [h["step"] for h in json.loads((run / "metrics.json").read_text())["history"]] == [100]  # the last validation
    assert torch.load(last, weights_only=False)["global_step"] == 105 == int((run / "requeued_at_step").read_text())
    assert "Caught signal SIGUSR2 on " in first["stdout"] + first["stderr"]  # submitit's handler, called after the save
    assert pickle.stat().st_mtime_ns > submitted and DelayedSubmission.load(pickle)._timeout_countdown == 3  # resubmitted
    kept = kept_files(run)
    assert {".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "train.log"} <= set(kept)

    (second,) = run_cases([(SUBMIT, [folder])], env=submitit_env("7", SLURM_RESTART_COUNT="1"), paths=tests)
    assert second["code"] == 0, (second["stderr"][-3000:], second["stdout"][-2000:])
    assert f"Resuming from {last} at step 105" in second["stdout"] and "Done in 0.0 min, 120 steps." in second["stdout"]
    now = kept_files(run)
    assert {k: v for k, v in now.items() if k != "train.log"} == {k: v for k, v in kept.items() if k != "train.log"}
    assert now["train.log"].startswith(kept["train.log"]) and len(now["train.log"]) > len(kept["train.log"])
    assert sorted(p.name for p in (run / ".hydra" / "requeue_1").iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]


@pytest.mark.slow
def test_a_job_of_a_local_submitit_sweep_preempted_mid_training_is_requeued_and_finishes_from_that_step(tmp_path):
    """The real chain through hydra-submitit-launcher (hydra/launcher=local): the job gets USR2 after step 105,
    saves last.ckpt there, submitit checkpoints the launcher's job and its executor starts it again; the requeued
    attempt (SLURM_RESTART_COUNT=1 in the jobs' environment, as SLURM sets it) resumes at step 105 in the same job
    folder, writes its Hydra files to .hydra/requeue_1/ and appends to the job's log; the sweep completes."""
    import os

    sweep = tmp_path / "sweep"
    path = os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])  # the jobs import PreemptAt
    (result,) = run_cases([("train", ["-m", "hydra/launcher=local", *TINY, "test=false", "trainer.limit_train_batches=null",
                                      "trainer.max_epochs=-1", "trainer.max_steps=120", "+trainer.val_check_interval=100",
                                      "trainer.check_val_every_n_epoch=null", "+callbacks.preempt._target_=submitit_job.PreemptAt",
                                      "+callbacks.preempt.step=105", "seed=3", f"hydra.sweep.dir={sweep}"])],
                          timeout=600, env=launch_env(SLURM_RESTART_COUNT="1", PYTHONPATH=path))
    assert result["code"] == 0, (result["stderr"][-3000:], result["stdout"][-2000:])
    (job,) = [p.parent for p in sweep.glob("*/metrics.json")]
    (log,) = sweep.glob(".submitit/*/*_0_log.out")  # both attempts' stdout, appended
    last = job / "checkpoints" / "last.ckpt"
    text = log.read_text()
    assert f"at epoch 4, step 105: saved {last}; now submitit's requeue" in text and f"Resuming from {last} at step 105" in text
    assert json.loads((job / "metrics.json").read_text())["global_step"] == 120
    first, again = job / ".hydra", job / ".hydra" / "requeue_1"
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):  # the first attempt's, written before the requeue's
        assert (first / name).stat().st_mtime_ns < (again / name).stat().st_mtime_ns
    lines = (job / "train.log").read_text()  # the first attempt's records (submitit's, at the requeue), then the second's
    assert lines.index("Caught signal SIGUSR2") < lines.index("Requeued job") < lines.index("Job completed successfully")
    with open(sweep / "summary.csv", newline="") as f:
        (row,) = csv.DictReader(f)
    assert row["steps"] == "120", row
