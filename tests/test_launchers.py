"""Cluster launching (#19) through hydra-submitit-launcher: the SLURM launcher's composed settings become the
sbatch script submitit would submit (no cluster needed); a real sweep through submitit's local executor
(real processes); a requeued SLURM job resumes its own run."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from cli import run_cases

ROOT = Path(__file__).resolve().parents[1]


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
    it continues from that folder's last.ckpt instead of being refused as another run's folder."""
    from cincflow.runs import check_training_folder, requeued_checkpoint

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    assert requeued_checkpoint(tmp_path) is None
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    last = requeued_checkpoint(tmp_path)
    assert last == tmp_path / "checkpoints" / "last.ckpt"
    check_training_folder(tmp_path, {"train": True, "resume": "full"}, last)  # its own run: no refusal
    assert requeued_checkpoint(tmp_path / "new") is None


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
