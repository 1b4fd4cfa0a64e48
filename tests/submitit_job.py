"""A submitit job that runs ``src/train.py`` as a user runs it (tests/test_launchers.py): pickled with
:func:`submit`, executed by submitit's own job process (``submitit/core/_submit.py <folder>``, what its
executors start: submitit's signal handlers installed). Like hydra-submitit-launcher's job it can
checkpoint (submitit then requeues it); its ``checkpoint()`` first notes the step of the run's
``last.ckpt`` at that moment in ``<run>/requeued_at_step``. :class:`PreemptAt` sends the job
submitit's preemption signal at a given step, as SLURM does ``signal_delay_s`` before the time limit."""
from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

from lightning.pytorch import Callback

ROOT = Path(__file__).resolve().parents[1]


class TrainJob:
    def __init__(self, args: list[str], run: Path):
        self.args, self.run = list(args), Path(run)

    def __call__(self) -> None:
        sys.argv = ["src/train.py", *self.args, f"hydra.run.dir={self.run}"]
        runpy.run_path(str(ROOT / "src" / "train.py"), run_name="__main__")

    def checkpoint(self):
        import torch
        from submitit.core.utils import DelayedSubmission

        step = torch.load(self.run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]
        (self.run / "requeued_at_step").write_text(str(step))
        return DelayedSubmission(self)  # the same job again, as the launcher's checkpoint() returns


def submit(job: TrainJob, folder: Path, job_id: str, timeout_min: int = 60, max_num_timeout: int = 3) -> Path:
    """Pickle ``job`` where submitit's job process for ``job_id`` loads it; its pickle's path."""
    from submitit.core.utils import DelayedSubmission, JobPaths

    delayed = DelayedSubmission(job)
    delayed.set_timeout(timeout_min, max_num_timeout)
    path = JobPaths(folder, job_id=job_id, task_id=0).submitted_pickle
    path.parent.mkdir(parents=True, exist_ok=True)
    delayed.dump(path)
    return path


class PreemptAt(Callback):
    """Sends this process submitit's preemption signal (SIGUSR2) at the end of the training batch that makes
    ``global_step`` reach ``step``."""

    def __init__(self, step: int):
        self.step = int(step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            from submitit import JobEnvironment

            os.kill(os.getpid(), JobEnvironment._usr_sig())
