"""Run folders: every run gets its own, and nothing replaces another run's files.

The rules; :class:`cincflow.config.launch.RunFolders`, a Hydra callback (``conf/hydra/default.yaml``),
applies them: it decides the run folder BEFORE Hydra writes anything into it (Hydra writes ``.hydra/``
and the log file before the task runs):

* a default folder (``outputs/<task>/<date>_<time>``) is created atomically (``os.mkdir``); if it
  exists (two runs started in the same second) ``_1``, ``_2``, ... is appended;
* training into a folder that holds a run (``metrics.json`` or ``checkpoints/``; ``hydra.run.dir=<that
  run>``) is refused (one ``error:`` line, exit 2) unless it is the resume of that very run; a resume
  (``ckpt_path`` in ``<run>/checkpoints/``, ``resume=full``) continues in its run's folder, and Hydra's
  files of the resumed launch (config, overrides, log) go to ``.hydra/resume_<date>_<time>/``: no file
  of the run is replaced or appended to before the job's own checks pass;
* under DDP only global rank 0 decides and checks; the other processes use the folder they are given;
* a job that SLURM requeued (submitit's requeue, hydra/launcher=slurm; or ``sbatch --requeue`` with
  ``hydra.run.dir`` set), :func:`requeued_checkpoint`, resumes from the last.ckpt of its own run folder;
  its Hydra files go to ``.hydra/requeue_<n>/`` (:func:`hydra_subdir`) and its log records are appended
  to the run's log: what the earlier attempts wrote stays;
* under SLURM, a requeued job (``hydra.run.dir=outputs/<task>/$SLURM_JOB_ID``, Lightning's
  ``hpc_ckpt_<n>.ckpt`` in the folder) continues its run there (Lightning restores that checkpoint);
* eval.py / sample.py given a training run's folder write into a folder of their own inside it,
  ``<run>/<task_name>/<date>_<time>/``;
* a multirun's sweep folder is made the same way; an explicit one that holds a sweep is refused; its
  job folders are ``<num>_<overrides>``, cut to a length every file system takes (:func:`job_dir`).

The rules about checkpoints themselves (``ckpt_path=last``) live in :mod:`cincflow.training.checkpoints`.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only

from .errors import ConfigError

RUN_MARKERS = ("metrics.json", "checkpoints")  # what a run produced (a launch that failed its checks left neither)


def run_markers(folder: Path) -> list[str]:
    """The files in ``folder`` that show a run trained there."""
    return [m for m in RUN_MARKERS if (folder / m).exists()]


def is_training_run(folder: Path) -> bool:
    return (folder / "checkpoints").is_dir() or (folder / "train.log").is_file()


def checkpoint_run_folder(ckpt: Path) -> Path | None:
    """The run folder a checkpoint belongs to (``<run>/checkpoints/<file>``), else None."""
    ckpt = Path(ckpt).resolve()
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else None


def claim_new_folder(path: Path) -> Path:
    """Create ``path`` atomically and return it; ``path_1``, ``path_2``, ... when it exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for n in range(10_000):
        candidate = path if n == 0 else path.with_name(f"{path.name}_{n}")
        try:
            os.mkdir(candidate)
            return candidate
        except FileExistsError:
            continue
    raise ConfigError(f"could not create a new run folder next to {path}: choose one with hydra.run.dir=...")


def hpc_checkpoint(folder: Path) -> Path | None:
    """Under SLURM: the newest ``hpc_ckpt_<n>.ckpt`` Lightning's auto-requeue saved in ``folder``."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if not SLURMEnvironment.detect():
        return None
    found = sorted(folder.glob("hpc_ckpt_*.ckpt"), key=lambda p: int(p.stem.rsplit("_", 1)[-1] or 0))
    return found[-1] if found else None


def restart_count() -> int:
    """How many times SLURM restarted this job (``SLURM_RESTART_COUNT``; 0 outside SLURM)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)


def requeued_checkpoint(folder: Path) -> Path | None:
    """A SLURM job requeued into its run folder (``SLURM_RESTART_COUNT`` >= 1: submitit's requeue after a
    preemption or the time limit, hydra/launcher=slurm; or ``sbatch --requeue``): that folder's
    ``checkpoints/last.ckpt``, which the run resumes from; else None."""
    if restart_count() < 1:
        return None
    last = Path(folder) / "checkpoints" / "last.ckpt"
    return last if last.is_file() else None


def hydra_subdir(output_dir: str) -> str:
    """Where in ``output_dir`` Hydra writes this launch's config.yaml, hydra.yaml and overrides.yaml
    (``hydra.output_subdir``, resolver ``cincflow.hydra_subdir``): ``.hydra``, but for a requeued SLURM
    job (restart n >= 1) whose earlier attempt wrote ``.hydra/``, ``.hydra/requeue_<n>``."""
    n = restart_count()
    return f".hydra/requeue_{n}" if n >= 1 and (Path(output_dir) / ".hydra").is_dir() else ".hydra"


def resume_folder(cfg: Any, ckpt: Path | None) -> Path | None:
    """The folder a training run with ``ckpt`` continues in (a full resume of a run), else None."""
    if ckpt is None or not cfg.get("train", True) or str(cfg.get("resume", "full")) != "full":
        return None
    return checkpoint_run_folder(ckpt)


def check_training_folder(folder: Path, cfg: Any, ckpt: Path | None) -> None:
    """A ConfigError unless ``folder`` is new (or empty) or this run continues the run in it (checked by
    global rank 0; the other processes of a DDP run share its folder)."""
    if rank_zero_only.rank != 0:
        return
    folder = folder.resolve()
    continues = resume_folder(cfg, ckpt)
    if continues is not None and continues != folder:
        raise ConfigError(
            f"ckpt_path={ckpt} belongs to the run {continues}: a resume continues that run in its own folder "
            f"(leave out hydra.run.dir/paths.output_dir={folder}), or start a new run from its weights with resume=weights"
        )
    if continues == folder or hpc_checkpoint(folder) is not None or requeued_checkpoint(folder) is not None:
        return
    markers = run_markers(folder)
    if markers:
        raise ConfigError(
            f"{folder} already holds a run ({', '.join(markers)}): a new run never writes into another run's folder; "
            f"choose a new one with hydra.run.dir=..., or resume that run with hydra.run.dir={folder} ckpt_path=last"
        )


JOB_DIR_MAX = 120  # bytes of a multirun job's folder name (file systems allow 255)


def job_dir(num: Any, overrides: Any) -> str:
    """A multirun job's folder name, ``<num>_<overrides>`` (``hydra.sweep.subdir``); a longer one
    than :data:`JOB_DIR_MAX` bytes is cut and ends with ``~<hash of the whole name>`` (the job's full
    overrides are in its ``.hydra/overrides.yaml`` and the sweep's summary)."""
    name = f"{num}_{overrides}"
    raw = name.encode()
    if len(raw) <= JOB_DIR_MAX:
        return name
    return raw[: JOB_DIR_MAX - 9].decode(errors="ignore") + "~" + hashlib.sha1(raw).hexdigest()[:8]
