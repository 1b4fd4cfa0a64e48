"""The LightningModule that trains a :class:`cincflow.Glow` by maximum likelihood (loss = bits/dim).

* A config node of its own (``conf/module/flow.yaml``), instantiated whole by the job: the flow
  (``model``), the optimiser and the schedule (``_partial_``) nested. The flow's :meth:`~cincflow.Glow.config`
  and the DataModule's :meth:`~cincflow.data.base.UInt8ImageDataModule.data_config` are kept in the
  hyper-parameters (``model_config``, ``data``), so :func:`cincflow.training.loading.load_module`
  (and ``FlowLitModule.load_from_checkpoint``) rebuild the module from the file alone, also when it
  was trained outside the jobs.
* ActNorm data-dependent initialisation runs once, in :meth:`on_fit_start`, on the first
  ``actnorm_init_images`` training images (``datamodule.train_images(n)``), under ``no_grad``; under
  DDP every rank computes it and then rank 0's parameters and buffers are broadcast, so all ranks
  start identical. A restored checkpoint has ``initialized = True`` everywhere and is never
  re-initialised.
* Optional Polyak/EMA weights (``ema_decay``) are used for validation, testing and sampling
  (:attr:`eval_model`); they are part of the ``state_dict``, so checkpoints restore them exactly.
* Optimiser and schedule arrive as factories: ``optimizer(parameters)`` and ``scheduler(optimizer=...)``,
  so every ``torch.optim.lr_scheduler`` class works; a scheduler that takes ``steps_per_epoch`` (the
  warm-up, :func:`~cincflow.training.schedule.linear_warmup`) also gets the optimiser steps of one epoch
  (a function). Stepped every ``scheduler_interval`` (``ReduceLROnPlateau`` reads ``scheduler_monitor``), restored on resume.
* Non-finite steps (:mod:`.nonfinite`) update nothing; ``train/skipped_steps`` and
  ``train/consecutive_bad_steps`` are logged; ``max_bad_steps`` consecutive ones stop training.
* ``val/bpd_best`` is the lowest finite validation score of the whole run (restored on resume).
* ``dequant`` (:mod:`cincflow.dequant`): uniform by default; a learned q(v | x) trains with the flow and
  scores its average too (q itself is not averaged: any q gives a valid bound).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import nn
from torchmetrics import MeanMetric

from ..errors import ConfigError
from ..compiled import compile_flow, compile_options
from ..dequant import UniformDequantizer
from ..model import dims_mismatch
from .actnorm_init import actnorm_initialized, actnorm_layers, initialize_actnorm
from .ema import EMA
from .nonfinite import NonFiniteSteps
from .checkpoints import resolve_ckpt_path
from .restore import restore_module
from .resume import apply_optimizer_settings, optimizer_type
from .schedule import steps_per_epoch
from .settings import check_settings, takes


CHECKPOINT_FORMAT = 3  # checkpoint["cincflow_format"]; 2: coupling as a name; 1 (no entry): model/optim configs
class FlowLitModule(LightningModule):
    check_settings = staticmethod(check_settings)

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        *,
        ema_decay: float | None,
        actnorm_init_images: int,
        max_bad_steps: int | None,
        actnorm_init_seed: int | None = 0,
        noise_seed: int | None = None,
        scheduler_interval: str = "step",
        scheduler_monitor: str = "val/bpd",
        compile: bool | str = False,
        data: Mapping[str, Any] | None = None,
        dequant: Callable[..., nn.Module] | None = None,
    ):
        """
        Args:
            model: the flow (a :class:`cincflow.Glow`).
            optimizer: ``optimizer(parameters) -> torch.optim.Optimizer`` (the ``optimizer`` config,
                ``_partial_``); None: the module can evaluate and sample but not train.
            scheduler: ``scheduler(optimizer=...) -> LRScheduler`` (the ``scheduler`` config, ``_partial_``;
                ``steps_per_epoch=`` too when it takes that argument); None: constant lr.
            ema_decay: Polyak averaging decay; ``None`` or 0 disables the averaged copy.
            actnorm_init_images: number of training images for ActNorm's data-dependent init.
            max_bad_steps: stop training after this many consecutive steps with a non-finite loss
                or gradient (each one is skipped); 0 or None: never stop.
            actnorm_init_seed: seed of the dequantisation noise used for that init (None: 0).
            noise_seed: when set, the training noise (the global torch RNG) is re-seeded every epoch from
                (noise_seed, epoch, rank): a resumed run draws exactly the noise of an uninterrupted one.
            scheduler_interval: ``step`` (after every optimiser step) or ``epoch``.
            scheduler_monitor: the metric ``ReduceLROnPlateau`` reads.
            compile: ``torch.compile`` the flow and its average when training starts (a string: the
                backend; ``True``: inductor): :func:`cincflow.compiled.compile_flow`.
            data: the data config of the run (kept in the checkpoint for eval/sample); None: taken
                from the trainer's DataModule when training starts.
            dequant: ``dequant(channels=C)`` makes the dequantiser (``_partial_`` config); None: uniform.
        """
        super().__init__()
        check_settings(ema_decay, actnorm_init_images, max_bad_steps, scheduler_interval)
        self.save_hyperparameters(logger=False, ignore=["model", "optimizer", "scheduler", "dequant"])
        config = getattr(model, "config", None)  # how the flow rebuilds from the checkpoint alone
        self.hparams["model_config"] = config() if callable(config) else None
        self.model = model
        self.dequant = (dequant or UniformDequantizer)(channels=getattr(model, "in_channels", None))
        self.hparams["dequant_config"] = self.dequant.config()
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.ema = EMA(self.model, float(ema_decay)) if ema_decay else None
        self.train_bpd, self.val_bpd, self.test_bpd = MeanMetric(), MeanMetric(), MeanMetric()
        self.best_val_bpd = math.inf  # lowest FINITE val/bpd of the run (kept in checkpoints)
        self.nonfinite = NonFiniteSteps(max_bad_steps)
        self._loss_finite = True
        self._step_skipped = False
        self._compiled = False

    # ------------------------------------------------------------------ helpers
    @property
    def eval_model(self) -> nn.Module:
        """The weights used for validation, testing and sampling: the EMA copy when enabled."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def n_bits(self) -> int:
        return self.model.n_bits

    def parameter_counts(self) -> dict[str, int]:
        """The flow's :meth:`~cincflow.Glow.parameter_counts` and, separately, the dequantiser's (``dequantizer``)."""
        return {**self.model.parameter_counts(), "dequantizer": sum(p.numel() for p in self.dequant.parameters())}

    def bits_per_dim(self, flow: nn.Module, x_uint8: torch.Tensor) -> torch.Tensor:
        """Bits/dim [B] of uint8 images under ``flow`` (the training or averaged weights), dequantised by
        :attr:`dequant` (the variational bound for a learned q)."""
        return flow.bits_per_dim(x_uint8, dequantizer=self.dequant)

    def initialize_actnorm(self, images: torch.Tensor) -> None:
        """Data-dependent ActNorm init on ``images`` (uint8) (:mod:`.actnorm_init`), then the EMA copy."""
        initialize_actnorm(self.model, images, int(self.hparams.actnorm_init_seed or 0))
        if self.ema is not None:
            self.ema.copy_from(self.model)

    # ------------------------------------------------------------------ hooks
    def setup(self, stage: str) -> None:
        """Record the data config of the trainer's DataModule (when it has one and none was given);
        compile the flow (and its average) once when asked to."""
        dm = getattr(self.trainer, "datamodule", None)
        if self.hparams.get("data") is None and callable(getattr(dm, "data_config", None)):
            self.hparams["data"] = dm.data_config()
        backend = self.hparams.get("compile")
        if backend and not self._compiled:
            for flow in {id(m): m for m in (self.model, self.eval_model)}.values():
                compile_flow(flow, **compile_options(backend))
            self._compiled = True

    def on_fit_start(self) -> None:
        if actnorm_initialized(self.model):
            return  # restored from a checkpoint (or already initialised): never re-initialise
        n = int(self.hparams.actnorm_init_images)
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "train_images"):
            if self.trainer.world_size > 1:
                raise RuntimeError("ActNorm initialisation under DDP needs a DataModule with train_images(n) "
                                   "(otherwise every rank would initialise on its own batch)")
            return  # single process: ActNorm initialises itself on the first training batch
        start = time.perf_counter()
        images = dm.train_images(n)
        self.check_images(images, "training images")
        self.initialize_actnorm(images)
        if self.trainer.is_global_zero:
            print(
                f"ActNorm data-dependent init on {n} training images "
                f"({len(actnorm_layers(self.model))} layers, {time.perf_counter() - start:.1f}s)"
            )

    def check_images(self, images: torch.Tensor, what: str = "images") -> None:
        """A clear error when the data's images do not fit the model (channels, size, dtype)."""
        m = self.model
        expected = (int(m.in_channels), int(m.image_size), int(m.image_size))
        if dims_mismatch(m, images) or images.dtype != torch.uint8:
            got = "x".join(map(str, images.shape[1:])) if images.ndim == 4 else str(list(images.shape))
            raise ConfigError(
                f"the {what} are {images.dtype} {got} but the model expects uint8 "
                f"{'x'.join(map(str, expected))} (model.in_channels x model.image_size^2): use data that matches "
                f"or set model.in_channels/model.image_size=null to take them from the data"
            )

    def on_train_epoch_start(self) -> None:
        seed = self.hparams.get("noise_seed")
        if seed is not None:
            epoch, rank = int(self.trainer.current_epoch), int(self.trainer.global_rank)
            torch.manual_seed(((int(seed) * 1_000_003 + epoch) * 1_009 + rank) % 2**63)

    # ------------------------------------------------------------------ steps
    def forward(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """Bits/dim [B] of uint8 images under the training weights (dequantised)."""
        return self.bits_per_dim(self.model, x_uint8)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        bpd = self.bits_per_dim(self.model, batch)
        loss = bpd.mean()
        self._loss_finite = bool(torch.isfinite(loss.detach()))
        if self._loss_finite:
            self.train_bpd(bpd.detach())
        self.log("train/bpd", loss.detach(), on_step=True, on_epoch=False, prog_bar=True)
        self.log("train/bpd_epoch", self.train_bpd, on_step=False, on_epoch=True)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        bpd = self.bits_per_dim(self.eval_model, batch)
        self.val_bpd.update(bpd)
        self.log("val/bpd", self.val_bpd, on_step=False, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        value = float(self.val_bpd.compute())  # synced over ranks: the same everywhere
        if math.isfinite(value):  # a non-finite score is never the best
            self.best_val_bpd = min(self.best_val_bpd, value)
        if math.isfinite(self.best_val_bpd):
            self.log("val/bpd_best", self.best_val_bpd, sync_dist=True)

    def test_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        bpd = self.bits_per_dim(self.eval_model, batch)
        self.test_bpd.update(bpd)
        self.log("test/bpd", self.test_bpd, on_step=False, on_epoch=True, prog_bar=True)

    # ------------------------------------------------------------------ optimisation
    @property
    def skipped_steps(self) -> int:
        """Steps skipped for a non-finite loss or gradient in the whole run (kept in checkpoints)."""
        return self.nonfinite.skipped

    @property
    def consecutive_bad_steps(self) -> int:
        return self.nonfinite.consecutive

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # after backward, before gradient clipping and the optimiser step
        any_rank = self._any_rank if self.trainer.world_size > 1 else None  # every rank takes the same decision
        self._step_skipped, norm = self.nonfinite.check(optimizer, self._loss_finite, any_rank)
        if not self._step_skipped and norm is not None:
            self.log("train/grad_norm", norm, on_step=True, on_epoch=False)
        self.log("train/skipped_steps", float(self.skipped_steps), on_step=True, on_epoch=False)
        self.log("train/consecutive_bad_steps", float(self.consecutive_bad_steps), on_step=True, on_epoch=False)
        if self._step_skipped:
            self.nonfinite.stop_if_too_many(self.trainer.global_step)

    def _any_rank(self, flag: bool) -> bool:
        return bool(self.trainer.strategy.reduce(torch.tensor(float(flag), device=self.device), reduce_op="sum") > 0)

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None and not self._step_skipped:
            self.ema.update(self.model)
        self._step_skipped = False

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["cincflow_format"] = CHECKPOINT_FORMAT
        checkpoint["nonfinite_steps"] = self.nonfinite.state()
        checkpoint["best_val_bpd"] = self.best_val_bpd
        if self._trainer is not None and self.trainer.optimizers:
            checkpoint["optimizer_type"] = optimizer_type(self.trainer.optimizers[0])

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Counters and best score back; a resume starts a fresh run of bad steps (the stop advice is
        to lower the lr and resume) and takes the configured optimiser settings (resume.py)."""
        self.nonfinite.load(checkpoint.get("nonfinite_steps"))
        self.best_val_bpd = float(checkpoint.get("best_val_bpd", math.inf))
        if self.optimizer_factory is not None and checkpoint.get("optimizer_states"):
            apply_optimizer_settings(checkpoint, self.configured_optimizer())

    def configured_optimizer(self) -> torch.optim.Optimizer:
        """A new optimiser of the trainable parameters, with the configured settings."""
        params = [*self.model.parameters(), *self.dequant.parameters()]
        return self.optimizer_factory([p for p in params if p.requires_grad])

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise RuntimeError("this FlowLitModule has no optimizer: pass optimizer=... (e.g. the `optimizer` config) to train it")
        optimizer = self.configured_optimizer()
        if self.scheduler_factory is None:
            return optimizer
        extra = {"steps_per_epoch": lambda: steps_per_epoch(self.trainer)} if takes(self.scheduler_factory, "steps_per_epoch") else {}
        scheduler = self.scheduler_factory(optimizer=optimizer, **extra)
        return {"optimizer": optimizer, "lr_scheduler": {
            "scheduler": scheduler, "interval": self.hparams.get("scheduler_interval", "step"), "frequency": 1,
            "monitor": self.hparams.get("scheduler_monitor", "val/bpd")}}

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, weights_only=None, **kwargs) -> "FlowLitModule":
        """The module of a checkpoint, from the file alone (the flow rebuilt from ``model_config``), in
        eval mode on ``map_location`` (default: the CPU). ``weights_only`` is accepted for Lightning's
        signature: checkpoints are read in full."""
        if kwargs:
            raise TypeError(f"FlowLitModule.load_from_checkpoint takes no {', '.join(kwargs)}: the checkpoint has everything")
        return restore_module(cls, resolve_ckpt_path(checkpoint_path)).to(str(map_location or "cpu"))
