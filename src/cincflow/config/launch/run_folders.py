"""The Hydra callback that decides a launch's run (or sweep) folder before Hydra writes anything into
it, by the rules of :mod:`cincflow.runs`; it also resolves ``ckpt_path`` (``last``) once for the job,
checks the checkpoint (eval/sample: everything the job would refuse in it, the dict handed to the
job; training: its archive's CRC) and provides the resolvers ``cincflow.job_dir`` and ``cincflow.hydra_subdir``."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from hydra.experimental.callback import Callback
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from ...errors import ConfigError, report_errors
from ...paths import resolve_path
from ...runs import (check_training_folder, claim_new_folder, hpc_checkpoint, hydra_subdir, is_training_run,
                     job_dir, resume_folder)
from ..search.sweeper import continues_study
from ...training.checkpoints import check_archive, load_checkpoint_dict, resolve_ckpt_path
from .. import handoff
from ..evaluation import check_checkpoint_for


# at import, not in the callback's __init__: a submitit job unpickles the callbacks (no __init__) in a new
# process (a requeued one too), which imports this module before Hydra's run_job resolves hydra.*
OmegaConf.register_new_resolver("cincflow.job_dir", job_dir, replace=True)
OmegaConf.register_new_resolver("cincflow.hydra_subdir", hydra_subdir, replace=True)


def _explicit(config: DictConfig, key: str) -> bool:
    overrides = list(config.hydra.overrides.hydra) + list(config.hydra.overrides.task)
    return any(str(o).lstrip("+~").startswith(f"{key}=") for o in overrides)


def _stamp() -> str:
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


class RunFolders(Callback):
    """Hydra callback: the run (or sweep) folder of this launch, decided before anything is written.
    It provides the resolvers ``cincflow.job_dir`` (:func:`job_dir`), which names a multirun's job folders,
    and ``cincflow.hydra_subdir`` (:func:`hydra_subdir`), where a requeued job's Hydra files go."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        report_errors(self._choose_run_dir, config)  # exit 2 before Hydra writes anything

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        report_errors(self._choose_sweep_dir, config)

    @staticmethod
    def _choose_sweep_dir(config: DictConfig) -> None:
        sweep = resolve_path(str(config.hydra.sweep.dir))
        if _explicit(config, "hydra.sweep.dir"):
            held = [m for m in ("multirun.yaml", "*/.hydra") if next(sweep.glob(m), None) is not None]
            if held and not continues_study(config, sweep):
                raise ConfigError(f"{sweep} already holds a multirun ({'multirun.yaml' if held[0] == 'multirun.yaml' else 'job folders'}): "
                                  f"choose a new hydra.sweep.dir=... (an Optuna search continues its study in its own sweep folder)")
            sweep.mkdir(parents=True, exist_ok=True)  # a study's SQLite file is created in it
            return
        with read_write(config.hydra):
            config.hydra.sweep.dir = str(claim_new_folder(sweep))

    @staticmethod
    def _choose_run_dir(config: DictConfig) -> None:
        explicit = _explicit(config, "hydra.run.dir")
        folder = resolve_path(str(config.hydra.run.dir))
        job = str(config.hydra.job.name)  # Lightning's DDP children: train_ddp_process_<rank>, in rank 0's folder
        training = job == "train" or job.startswith("train_ddp_process_")
        ckpt = None
        if config.get("ckpt_path") and str(config.ckpt_path) != "???":
            named = folder if explicit else None
            ckpt = resolve_ckpt_path(config.ckpt_path, config, named_dir=named, training=training)
            if job in ("eval", "sample"):  # what the job would refuse in it (CRC included), before its folder is made
                read = load_checkpoint_dict(ckpt)
                check_checkpoint_for(config, job, read, ckpt)
                handoff.keep("checkpoint", str(ckpt), read)  # the job's module is built from it
            else:
                check_archive(ckpt)  # a truncated or corrupted file: refused before a resume touches its run
            with open_dict(config):
                config.ckpt_path = str(ckpt)  # the job uses the file chosen (and announced) here
        subdir = None
        continues = resume_folder(config, ckpt) if training else None
        if rank_zero_only.rank != 0:  # DDP (torchrun, srun, Lightning's launcher): rank 0 decides and checks
            folder = continues if continues is not None and not explicit else folder
        elif training:
            if continues is not None and not explicit:
                folder = continues
            if explicit or continues is not None:
                check_training_folder(folder, config, ckpt)
                folder.mkdir(parents=True, exist_ok=True)
                if folder == continues or hpc_checkpoint(folder) is not None:  # a resume, or Lightning's SLURM requeue
                    # (a requeued job that resumes from last.ckpt: hydra.output_subdir's own rule, cincflow.hydra_subdir)
                    subdir = str(claim_new_folder(folder / ".hydra" / f"resume_{_stamp()}").relative_to(folder))
            else:
                folder = claim_new_folder(folder)
        elif explicit and is_training_run(folder):
            own = claim_new_folder(folder / str(config.task_name) / _stamp())
            print(f"{folder} is a training run's folder: this {config.task_name} writes to {own}", flush=True)
            folder = own
        elif explicit:
            folder.mkdir(parents=True, exist_ok=True)
        else:
            folder = claim_new_folder(folder)
        with read_write(config.hydra):
            config.hydra.run.dir = str(folder)
            if subdir is not None:  # this launch's config, overrides and log: a folder of their own
                config.hydra.output_subdir = subdir
                handler = OmegaConf.select(config, "hydra.job_logging.handlers.file")
                if handler is not None and "filename" in handler:
                    handler.filename = str(folder / subdir / f"{config.hydra.job.name}.log")

