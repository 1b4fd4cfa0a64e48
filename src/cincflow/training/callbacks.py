"""Callbacks of the training system: checkpoints, sample grids + reconstructions, throughput, W&B id
(the stop on a signal: :mod:`cincflow.training.stop`; the pictures themselves: :mod:`cincflow.viz`;
metrics.json: :mod:`cincflow.training.metrics_json`).

All file outputs go below the run's output folder; everything that writes runs on global rank 0.
"""
from __future__ import annotations

import logging
import math
import time
import warnings
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torchvision.utils import save_image

from ..checks import check_positive_int, check_temperature
from ..sampling import warn_if_inaccurate
from ..viz import reconstruction_grid, sample_grid

log = logging.getLogger(__name__)


def health_warning(name: str, value: float, threshold: float, epoch: int, hint: str) -> None:
    """A RuntimeWarning and a log line when ``value`` exceeds ``threshold`` (NaN always does)."""
    if value <= threshold:
        return
    message = f"epoch {epoch}: {name} = {value:.3g} exceeds its threshold {threshold:g}: {hint}"
    log.warning(message)
    warnings.warn(message, RuntimeWarning, stacklevel=2)


def wandb_loggers(trainer: Trainer) -> list[WandbLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


def _nonfinite(value: Any) -> bool:
    return value is not None and not bool(torch.isfinite(torch.as_tensor(value, dtype=torch.float64)).all())


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint that never saves a non-finite ``finite_metric`` (``val/bpd``): a
    non-finite validation score is never "best", and ``last.ckpt`` stays the last checkpoint with a
    finite score (one line says so). With ``resumable`` (the ``last.ckpt`` one) it also saves when a
    fresh run starts (so a run that diverges before its first validation can be resumed at a lower
    lr), when training ends after the last validation (a run shorter than an epoch, no validation
    data), and on a signal that stops training (:class:`~cincflow.training.stop.GracefulStop`: SIGTERM,
    SIGINT, submitit's preemption signal; under DDP global rank 0 writes it alone): every run that ends
    leaves a resumable checkpoint."""

    def __init__(self, *args: Any, finite_metric: str = "val/bpd", resumable: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.finite_metric = finite_metric
        self.resumable = resumable
        self._refused_step = -1

    def _save_topk_checkpoint(self, trainer: Trainer, monitor_candidates: dict[str, Any]) -> None:
        value = monitor_candidates.get(self.finite_metric)
        if _nonfinite(value):
            if self.monitor is None and trainer.is_global_zero and self._refused_step != trainer.global_step:
                print(f"epoch {trainer.current_epoch}, step {trainer.global_step}: {self.finite_metric} = "
                      f"{float(torch.as_tensor(value).max())} is not finite: no checkpoint written, "
                      f"{self.format_checkpoint_name({})} stays the last good one (the last finite score, or the start of the run)", flush=True)
            self._refused_step = trainer.global_step
            return
        super()._save_topk_checkpoint(trainer, monitor_candidates)

    def _save_now(self, trainer: Trainer) -> None:
        if self.resumable and not self._should_skip_saving_checkpoint(trainer):
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.resumable and trainer.global_step == 0 and not trainer.fast_dev_run:  # a fresh run: its start
            self._save_checkpoint(trainer, self.format_checkpoint_name({}))
            self.best_model_path = self.format_checkpoint_name({})

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._save_now(trainer)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        super().on_exception(trainer, pl_module, exception)
        if not isinstance(exception, (SIGTERMException, KeyboardInterrupt)):
            return
        if trainer.world_size == 1:
            self._save_now(trainer)
        elif self.resumable and trainer.is_global_zero and type(trainer.strategy) is DDPStrategy:  # not DeepSpeed (sharded state)
            self._save_alone(trainer)

    def _save_alone(self, trainer: Trainer) -> None:
        """DDP: global rank 0 writes ``last.ckpt`` by itself. Lightning's save is collective (barriers,
        broadcasts) and the other ranks may stop at another batch; under DDP the weights, optimiser
        and loop state rank 0 holds are the run's."""
        if _nonfinite(self._monitor_candidates(trainer).get(self.finite_metric)):
            return  # the last checkpoint with a finite score stays
        path = self.format_checkpoint_name({})
        trainer.strategy.checkpoint_io.save_checkpoint(trainer._checkpoint_connector.dump_checkpoint(False), path)
        self.last_model_path = path


class SampleGrids(Callback):
    """Each validation epoch (rank 0, not during the sanity check): a PNG grid of samples from a
    FIXED latent noise at several temperatures, and reconstructions x -> z -> x of the first
    validation images with their error (logged as ``val/recon_err_max`` / ``val/recon_err_mean``).
    PNGs go to ``<output_dir>/samples/epoch_XXX.png`` and ``recon_epoch_XXX.png`` and, with a
    WandbLogger, to W&B as images.

    Numerical health, logged with them: ``val/nonfinite_samples`` (share of the grid's samples with a
    NaN/inf value), ``val/inverse_residual_max`` (worst relative residual of the CInC/Emerging
    inverses while sampling) and ``val/inverse_error_bound`` (the worst layer's forward-error bound
    cond_inf * residual, which sees ill-conditioning the residual cannot). A RuntimeWarning and a log
    line when ``val/recon_err_max`` exceeds ``recon_err_warn``, the non-finite share exceeds
    ``nonfinite_warn`` or the residual exceeds ``residual_warn``; an InverseAccuracyWarning naming the
    layer when the bound exceeds ``error_bound_warn``: an ill-conditioned CInC/Emerging kernel makes
    every exact inverse inaccurate."""

    def __init__(
        self,
        output_dir: str,
        n: int = 64,
        temperatures: list[float] | tuple[float, ...] = (0.5, 0.7, 1.0),
        seed: int = 1234,
        n_reconstructions: int = 16,
        every_n_epochs: int = 1,
        recon_err_warn: float = 1e-3,
        nonfinite_warn: float = 0.0,
        residual_warn: float = 1e-3,
        error_bound_warn: float = 1e-3,
    ):
        super().__init__()
        self.check_settings(n, temperatures, n_reconstructions, every_n_epochs)
        self.dir = Path(output_dir) / "samples"
        self.n = int(n)
        self.temperatures = [float(t) for t in temperatures]
        self.seed = int(seed)
        self.n_reconstructions = int(n_reconstructions)
        self.every_n_epochs = int(every_n_epochs)
        self.recon_err_warn = float(recon_err_warn)
        self.nonfinite_warn = float(nonfinite_warn)
        self.residual_warn = float(residual_warn)
        self.error_bound_warn = float(error_bound_warn)
        self._val_images: torch.Tensor | None = None
        self.last_png: str | None = None

    @staticmethod
    def check_settings(n: Any = 0, temperatures: Any = (1.0,), n_reconstructions: Any = 0, every_n_epochs: Any = 1) -> None:
        """The value rules of the options (the constructor and the configuration check call this)."""
        check_positive_int("n", n, minimum=0)
        if isinstance(temperatures, str) or not isinstance(temperatures, Sequence) or not temperatures:
            raise ValueError(f"temperatures must be a non-empty list of finite numbers >= 0, got {temperatures!r}")
        for t in temperatures:
            check_temperature("temperatures", t)
        check_positive_int("n_reconstructions", n_reconstructions, minimum=0)
        check_positive_int("every_n_epochs", every_n_epochs)

    def _active(self, trainer: Trainer) -> bool:
        return not trainer.sanity_checking and (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0 and dataloader_idx == 0 and self._val_images is None:
            if isinstance(batch, torch.Tensor) and self.n_reconstructions > 0:
                self._val_images = batch[: self.n_reconstructions].detach().cpu().clone()

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._active(trainer):
            return
        epoch, step = trainer.current_epoch, trainer.global_step
        if trainer.is_global_zero:
            self.dir.mkdir(parents=True, exist_ok=True)
        if self._val_images is not None:  # every rank (its own first batch), metrics synced
            grid, stats = reconstruction_grid(pl_module.eval_model, self._val_images, self.seed)
            pl_module.log("val/recon_err_max", stats["recon_err_max"], sync_dist=True, reduce_fx="max")
            pl_module.log("val/recon_err_mean", stats["recon_err_mean"], sync_dist=True)
            pl_module.log("val/recon_pixels_exact", stats["recon_pixels_exact"], sync_dist=True)
            if trainer.is_global_zero:
                health_warning("val/recon_err_max (x -> z -> x)", stats["recon_err_max"], self.recon_err_warn, epoch,
                               "the inverse is inaccurate (ill-conditioned invertible convolution)")
            if trainer.is_global_zero:
                path = self.dir / f"recon_epoch_{epoch:03d}.png"
                save_image(grid, path)
                for lg in wandb_loggers(trainer):
                    caption = f"epoch {epoch}: originals | reconstructions, max err {stats['recon_err_max']:.2e}"
                    lg.log_image("val/reconstructions", [str(path)], step=step, caption=[caption])
        if trainer.is_global_zero and self.n > 0 and self.temperatures:  # sampling: rank 0 only
            grid, health = sample_grid(pl_module.eval_model, self.n, self.temperatures, self.seed, tolerance=math.inf)
            health["nonfinite_samples"] /= max(health["samples"], 1)  # logged as a share
            pl_module.log("val/nonfinite_samples", health["nonfinite_samples"], rank_zero_only=True)
            pl_module.log("val/inverse_residual_max", health["inverse_residual_max"], rank_zero_only=True)
            pl_module.log("val/inverse_error_bound", health["inverse_error_bound"], rank_zero_only=True)
            warn_if_inaccurate(health["accuracy"], self.error_bound_warn)
            health_warning("val/nonfinite_samples (share)", health["nonfinite_samples"], self.nonfinite_warn, epoch,
                           "some samples are NaN/inf (shown clamped in the PNG)")
            health_warning("val/inverse_residual_max", health["inverse_residual_max"], self.residual_warn, epoch,
                           "the inverse of an invertible convolution is inaccurate (ill-conditioned kernel)")
            path = self.dir / f"epoch_{epoch:03d}.png"
            save_image(grid, path)
            self.last_png = str(path)
            caption = f"epoch {epoch}, step {step}, T = {', '.join(map(str, self.temperatures))}"
            for lg in wandb_loggers(trainer):
                lg.log_image("val/samples", [str(path)], step=step, caption=[caption])


class Throughput(Callback):
    """Logs ``train/images_per_sec`` (all processes together) at every step, averaged over the last
    ``window`` steps, measured between the ends of consecutive training batches (data loading
    included, validation excluded)."""

    def __init__(self, window: int = 20):
        super().__init__()
        self.window = max(1, int(window))
        self._marks: deque[tuple[float, int]] = deque(maxlen=self.window + 1)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._marks.clear()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        n = int(batch.shape[0]) if isinstance(batch, torch.Tensor) else 0
        self._marks.append((time.perf_counter(), n))
        if len(self._marks) >= 2:
            elapsed = self._marks[-1][0] - self._marks[0][0]
            images = sum(m[1] for m in list(self._marks)[1:])
            rate = images * trainer.world_size / max(elapsed, 1e-9)
            pl_module.log("train/images_per_sec", rate, on_step=True, on_epoch=False)


class WandbRunId(Callback):
    """Stores the W&B run id in every checkpoint (``checkpoint['wandb_run_id']``) so that a run
    resumed with ``ckpt_path=...`` continues the same W&B run."""

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        for lg in wandb_loggers(trainer):
            if lg.version:
                checkpoint["wandb_run_id"] = lg.version
                checkpoint["wandb_project"] = lg.name
