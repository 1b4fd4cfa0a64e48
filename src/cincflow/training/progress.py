"""Training progress a cluster job's log can read (#19). ``callbacks.progress`` (conf/callbacks/default.yaml)
chooses when the trainer is built: on an interactive terminal Lightning's bar (carriage returns), when
stdout is not a terminal (a SLURM log, ``make train > log``) :class:`LineProgress`, plain lines: one every
``every_n_steps`` optimiser steps and one per epoch, each with the step, bits/dim, images/s and the ETA.
``trainer.enable_progress_bar=false`` turns both off."""
from __future__ import annotations

import sys
import time
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ProgressBar


def progress_bar(every_n_steps: int = 50, enabled: bool = True) -> ProgressBar | None:
    """The progress callback for this process's stdout: None (Lightning's own bar, or none when ``enabled``
    is false) on a terminal, else :class:`LineProgress`."""
    if not enabled or sys.stdout.isatty():
        return None
    return LineProgress(every_n_steps)


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


class LineProgress(ProgressBar):
    """Plain progress lines (rank 0), for logs that are not terminals."""

    def __init__(self, every_n_steps: int = 50) -> None:
        super().__init__()
        self.every_n_steps = max(1, int(every_n_steps))
        self._enabled = True
        self._start: float | None = None
        self._start_step = 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _line(self, trainer: Trainer, head: str, keys: tuple[str, ...]) -> str:
        metrics = trainer.callback_metrics
        parts = [head]
        names = {"train/bpd": "train bits/dim", "val/bpd": "val bits/dim", "train/images_per_sec": "images/s"}
        for key in keys:
            if key in metrics:
                value = float(metrics[key])
                parts.append(f"{names[key]} {value:.0f}" if key.endswith("per_sec") else f"{names[key]} {value:.4f}")
        total = trainer.estimated_stepping_batches
        done = trainer.global_step - self._start_step
        if self._start is not None and done > 0 and total not in (None, float("inf")):
            rate = (time.perf_counter() - self._start) / done
            parts.append(f"ETA {_duration(rate * (int(total) - trainer.global_step))}")
        return " | ".join(parts)

    def _say(self, trainer: Trainer, text: str) -> None:
        if self._enabled and trainer.is_global_zero:
            print(text, flush=True)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start, self._start_step = time.perf_counter(), trainer.global_step

    def _where(self, trainer: Trainer) -> str:
        epochs = trainer.max_epochs if trainer.max_epochs not in (None, -1) else "?"
        steps = trainer.max_steps if trainer.max_steps not in (None, -1) else int(trainer.estimated_stepping_batches)
        return f"epoch {trainer.current_epoch + 1}/{epochs} step {trainer.global_step}/{steps}"

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step % self.every_n_steps == 0 and trainer.global_step > self._start_step:
            self._say(trainer, self._line(trainer, self._where(trainer), ("train/bpd", "train/images_per_sec")))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._say(trainer, self._line(trainer, f"{self._where(trainer)} (epoch end)",
                                          ("train/bpd", "val/bpd", "train/images_per_sec")))
