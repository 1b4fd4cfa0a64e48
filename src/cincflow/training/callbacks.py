"""Callbacks of the training system: sample grids + reconstructions, throughput, metrics.json, W&B id.

All file outputs go below the run's output folder; everything that writes runs on global rank 0.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from collections import deque
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from torch.utils.data import DataLoader, RandomSampler
from torchvision.utils import make_grid, save_image

from ..preprocess import postprocess
from ..sampling import AccuracyReport, accuracy_report, tracking_accuracy, warn_if_inaccurate

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- images
def to_unit(x_uint8: torch.Tensor) -> torch.Tensor:
    return x_uint8.float().div(255.0)


def grid_of(images_uint8: torch.Tensor, nrow: int | None = None, padding: int = 1, min_size: int = 32) -> torch.Tensor:
    """uint8 [N, C, H, W] -> float grid [3, H', W'] in [0, 1]; images smaller than ``min_size``
    pixels are enlarged by an integer factor (nearest neighbour) so that 8x8 digits stay visible."""
    n = images_uint8.shape[0]
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    x = to_unit(images_uint8.cpu())
    factor = max(1, min_size // x.shape[-1])
    if factor > 1:
        x = x.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
    return make_grid(x, nrow=nrow, padding=padding, pad_value=1.0)


def sample_grid(pl_module, n: int, temperatures: list[float], seed: int) -> torch.Tensor:
    """Samples from FIXED noise (``seed``) at each temperature, one block per temperature, side by side."""
    return sample_grid_with_health(pl_module, n, temperatures, seed)[0]


def sample_grid_with_health(pl_module, n: int, temperatures: list[float], seed: int) -> tuple[torch.Tensor, dict[str, float]]:
    """:func:`sample_grid` plus ``nonfinite_samples`` (share of samples with a NaN/inf value, which
    the PNG can only show clamped), ``inverse_residual_max`` (worst relative residual of the
    CInC/Emerging inverses in these passes; NaN counts as worst), ``inverse_error_bound`` (the worst
    layer's forward-error bound cond_inf * residual, cincflow.sampling) and ``accuracy`` (its report)."""
    blocks, bad, total, report = [], 0, 0, AccuracyReport()
    with tracking_accuracy(pl_module.eval_model) as layers:
        for t in temperatures:
            x = pl_module.sample_fixed(n, float(t), seed)
            bad += int((~torch.isfinite(x.flatten(1))).any(dim=1).sum())
            total += x.shape[0]
            report = report.worst(accuracy_report(layers))
            blocks.append(grid_of(postprocess(x, pl_module.n_bits)))
    grid = make_grid(torch.stack(blocks), nrow=len(blocks), padding=4, pad_value=1.0)
    return grid, {"nonfinite_samples": bad / max(total, 1), "inverse_residual_max": float(report.residual),
                  "inverse_error_bound": float(report.bound), "accuracy": report}


def health_warning(name: str, value: float, threshold: float, epoch: int, hint: str) -> None:
    """A RuntimeWarning and a log line when ``value`` exceeds ``threshold`` (NaN always does)."""
    if value <= threshold:
        return
    message = f"epoch {epoch}: {name} = {value:.3g} exceeds its threshold {threshold:g}: {hint}"
    log.warning(message)
    warnings.warn(message, RuntimeWarning, stacklevel=2)


def reconstruction_grid(pl_module, images_uint8: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, dict[str, float]]:
    """Originals (top rows) over reconstructions x -> z -> x (bottom rows) and the errors."""
    x, x_rec = pl_module.reconstruct(images_uint8, seed)
    err = (x - x_rec).abs().flatten(1)
    rec_uint8 = postprocess(x_rec, pl_module.n_bits).cpu()
    orig_uint8 = postprocess(x, pl_module.n_bits).cpu()
    stats = {
        "recon_err_max": float(err.max().nan_to_num(float("inf"))),
        "recon_err_mean": float(err.mean().nan_to_num(float("inf"))),
        "recon_pixels_exact": float((rec_uint8 == orig_uint8).float().mean()),
    }
    n = images_uint8.shape[0]
    nrow = max(1, int(math.ceil(math.sqrt(n))))
    grid = make_grid(
        torch.stack([grid_of(orig_uint8, nrow), grid_of(rec_uint8, nrow)]), nrow=2, padding=4, pad_value=1.0
    )
    return grid, stats


def wandb_loggers(trainer: Trainer) -> list[WandbLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


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
        self.dir = Path(output_dir) / "samples"
        self.n = int(n)
        self.temperatures = [float(t) for t in temperatures]
        self.seed = int(seed)
        self.n_reconstructions = int(n_reconstructions)
        self.every_n_epochs = max(1, int(every_n_epochs))
        self.recon_err_warn = float(recon_err_warn)
        self.nonfinite_warn = float(nonfinite_warn)
        self.residual_warn = float(residual_warn)
        self.error_bound_warn = float(error_bound_warn)
        self._val_images: torch.Tensor | None = None
        self.last_png: str | None = None

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
            grid, stats = reconstruction_grid(pl_module, self._val_images, self.seed)
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
            grid, health = sample_grid_with_health(pl_module, self.n, self.temperatures, self.seed)
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


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            continue
    return out


def update_metrics_json(path: str | os.PathLike, updates: dict[str, Any], history_entry: dict | None = None) -> dict:
    """Merge ``updates`` into the JSON file at ``path`` (created if missing); append ``history_entry``."""
    path = Path(path)
    record: dict[str, Any] = {}
    if path.exists():
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError:
            record = {}
    record.update(updates)
    if history_entry is not None:
        record.setdefault("history", []).append(history_entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
    tmp.replace(path)
    return record


class MetricsJSON(Callback):
    """Keeps ``<output_dir>/metrics.json`` up to date (rank 0): the latest value of every logged
    metric, a per-validation-epoch ``history``, and the test metrics at the end."""

    def __init__(self, output_dir: str, filename: str = "metrics.json"):
        super().__init__()
        self.path = Path(output_dir) / filename

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        metrics = _floats(trainer.callback_metrics)
        # epoch means of training metrics are computed after validation: not current here
        current = {k: v for k, v in metrics.items() if not k.endswith("_epoch")}
        entry = {"epoch": trainer.current_epoch, "step": trainer.global_step, **current}
        update_metrics_json(self.path, {**metrics, "epoch": trainer.current_epoch, "global_step": trainer.global_step}, entry)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero:
            update_metrics_json(self.path, {**_floats(trainer.callback_metrics), "global_step": trainer.global_step})

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero:
            metrics = {k: v for k, v in _floats(trainer.callback_metrics).items() if k.startswith("test/")}
            update_metrics_json(self.path, metrics)


class WandbRunId(Callback):
    """Stores the W&B run id in every checkpoint (``checkpoint['wandb_run_id']``) so that a run
    resumed with ``ckpt_path=...`` continues the same W&B run."""

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        for lg in wandb_loggers(trainer):
            if lg.version:
                checkpoint["wandb_run_id"] = lg.version
                checkpoint["wandb_project"] = lg.name


# ---------------------------------------------------------------------------- data order
class EpochSeededSampler(RandomSampler):
    """A random permutation that depends only on (``seed``, epoch): the epoch is read from
    ``epoch_fn`` (the trainer's current epoch) when the iteration starts, or set by ``set_epoch``."""

    def __init__(self, data_source, seed: int, epoch_fn=None):
        super().__init__(data_source)
        self.seed = int(seed)
        self.epoch = 0
        self.epoch_fn = epoch_fn

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        epoch = int(self.epoch_fn()) if self.epoch_fn is not None else self.epoch
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        yield from torch.randperm(len(self.data_source), generator=gen).tolist()


class ResumableShuffle(Callback):
    """Makes the shuffled training order a function of (``datamodule.seed``, epoch) only, so that a
    run resumed from an end-of-epoch checkpoint (last.ckpt is written at every validation) sees
    exactly the batches of an uninterrupted run. Replaces the RandomSampler of the DataModule's
    train loader (a seeded DataLoader generator would restart at epoch 0's order after a resume).
    Under DDP Lightning substitutes its DistributedSampler (seeded by seed + epoch) anyway."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        dm = trainer.datamodule
        if stage != "fit" or dm is None or getattr(dm, "_resumable_original", None) is not None:
            return
        original = dm.train_dataloader
        seed = int(getattr(dm, "seed", 0) or 0)

        def train_dataloader():
            dl = original()
            if not isinstance(dl, DataLoader) or type(dl.sampler) is not RandomSampler:
                return dl
            return DataLoader(
                dl.dataset, batch_size=dl.batch_size,
                sampler=EpochSeededSampler(dl.dataset, seed, lambda: trainer.current_epoch),
                drop_last=dl.drop_last, num_workers=dl.num_workers, collate_fn=dl.collate_fn,
                pin_memory=dl.pin_memory, worker_init_fn=dl.worker_init_fn,
                persistent_workers=dl.persistent_workers if dl.num_workers > 0 else False,
            )

        dm._resumable_original = original
        dm.train_dataloader = train_dataloader

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        dm = trainer.datamodule
        original = getattr(dm, "_resumable_original", None) if dm is not None else None
        if original is not None:
            del dm.train_dataloader  # the instance attribute: back to the class's method
            dm._resumable_original = None
