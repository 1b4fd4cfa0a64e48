"""Stopping training on a signal at a batch boundary (:class:`GracefulStop`): SIGTERM, SIGINT and, in a
job submitit started (hydra/launcher=slurm|local), submitit's preemption signal, after which the job goes
to submitit's requeue with ``last.ckpt`` saved at the step it stopped at."""
from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.exceptions import SIGTERMException


def preemption_signal() -> signal.Signals | None:
    """In a job submitit started (``SUBMITIT_EXECUTOR`` set): the signal SLURM sends ``signal_delay_s``
    before the time limit and on preemption, on which submitit requeues the job (SIGUSR2, or
    ``SUBMITIT_PREEMPT_SIGNAL``); else None."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    from submitit import JobEnvironment

    return signal.Signals(JobEnvironment._usr_sig())


class GracefulStop(Callback):
    """SIGTERM and SIGINT (Ctrl-C) during training stop at a batch boundary (Lightning's
    SIGTERMException, so no optimiser step is left half done); ``signal_name`` then says which signal
    stopped the run (None: none did). A second Ctrl-C interrupts at once.

    In a submitit job, submitit's preemption signal (:func:`preemption_signal`) stops training the same
    way (``last.ckpt`` saved at that step, as on SIGTERM); submitit's own handler of it, which would requeue
    the job and exit wherever the signal lands (the requeued job then repeats every step since the last
    validation), runs afterwards, when the job calls :meth:`requeue`.

    The handlers only take note (and pass the signal on to the processes Lightning launched). A
    single process stops after the current batch. Under DDP every rank must stop after the SAME
    batch: the ranks agree at the end of each batch (an all-reduce of "a signal arrived here"), because
    the signal reaches them at different moments, and a rank that stops alone leaves the others in a
    collective with a closed peer. (Lightning's own SIGTERM handler broadcasts from inside the
    handler, wherever the signal lands, and each rank also stops on its own flag: under torchrun
    that deadlocked or crashed the ranks.)"""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._noticed: str | None = None  # a signal this process received, not yet agreed on
        self.preempt: signal.Signals | None = None  # submitit's preemption signal, in a submitit job
        self._submitit_handler: Callable[..., Any] | None = None  # submitit's handler of it

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.signal_name = self._noticed = None
        if threading.current_thread() is not threading.main_thread():
            return
        connector = trainer._signal_connector

        def notice(name: str, signum: int) -> None:
            if self._noticed is None and trainer.strategy.launcher is not None:
                trainer.strategy.launcher.kill(signum)  # the processes Lightning started stop too
            self._noticed = self._noticed or name
            if trainer.world_size == 1:
                self.signal_name = self.signal_name or name
                connector.received_sigterm = True  # the loops stop after this batch

        def on_sigint(signum, frame) -> None:
            notice("SIGINT", signum)
            signal.signal(signal.SIGINT, signal.default_int_handler)

        signal.signal(signal.SIGTERM, lambda signum, frame: notice("SIGTERM", signum))
        signal.signal(signal.SIGINT, on_sigint)  # Lightning's teardown restores the previous handlers
        self.preempt = preempt = preemption_signal()
        if preempt is not None:
            handler = signal.getsignal(preempt)
            self._submitit_handler = handler if callable(handler) else None
            signal.signal(preempt, lambda signum, frame: notice(preempt.name, signum))

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.world_size == 1 or not torch.distributed.is_initialized():
            return
        preempted = self.preempt is not None and self._noticed == self.preempt.name
        flags = torch.tensor([preempted, self._noticed == "SIGTERM", self._noticed == "SIGINT"], dtype=torch.int32,
                             device=trainer.strategy.root_device)
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        if flags.any():  # every rank stops after this batch
            self.signal_name = self.preempt.name if flags[0] else "SIGTERM" if flags[1] else "SIGINT"
            trainer._signal_connector.received_sigterm = True

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.signal_name = "SIGINT"
        elif isinstance(exception, SIGTERMException) and self.signal_name is None:
            self.signal_name = "SIGTERM"

    @property
    def requeues(self) -> bool:
        """Whether submitit's preemption signal came during training (it stopped training, or training ended
        first) and submitit's handler of it waits for :meth:`requeue`."""
        return (self.preempt is not None and self._submitit_handler is not None
                and self.preempt.name in (self.signal_name, self._noticed))

    def requeue(self) -> None:
        """Once training has stopped and ``last.ckpt`` is saved: submitit's handler of its preemption signal,
        as if the signal arrived now. On global rank 0 it resubmits the job (the launcher's ``checkpoint()``:
        the same job, counting down ``max_num_timeout`` after a time limit), requeues it and exits (status
        255; submitit's local executor: 144); on the other ranks it returns."""
        if self.requeues:
            self._submitit_handler(self.preempt, None)
