"""What the jobs share: instantiating trainer, callbacks and loggers from their configs, the
checkpoint and data of eval/sample, rank-0 printing. (The data's checks: :mod:`cincflow.config.data`.)"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from ..allocator import keep_freed_memory
from ..compiled import compile_flow, compile_options
from ..config import handoff
from ..config.data import check_data_fits, eval_data_config, instantiate_data
from ..errors import ConfigError, one_line
from ..training.checkpoints import load_checkpoint_dict, resolve_ckpt_path
from ..training.lit_module import FlowLitModule
from ..timing import torch_threads
from ..training.loading import load_module


@contextlib.contextmanager
def cpu_settings(cfg: DictConfig) -> Iterator[None]:
    """A job's CPU settings: ``keep_freed_memory`` (process-wide, :mod:`cincflow.allocator`) and
    ``num_threads`` for the block."""
    if cfg.get("keep_freed_memory"):
        keep_freed_memory()
    with torch_threads(cfg.get("num_threads")):
        yield


@rank_zero_only
def say(message: str) -> None:
    print(message, flush=True)


def instantiate_callbacks(callbacks_cfg: DictConfig | None) -> list[Callback]:
    """Every entry of the ``callbacks`` group that has a ``_target_`` (a factory may return None: none)."""
    if not callbacks_cfg:
        return []
    built = [instantiate(cb) for cb in callbacks_cfg.values() if isinstance(cb, DictConfig) and "_target_" in cb]
    return [cb for cb in built if cb is not None]


def instantiate_module(module_cfg: DictConfig) -> LightningModule:
    """The LightningModule of the ``module`` config, instantiated whole (the flow, optimiser and schedule
    nested); a constructor's ValueError/TypeError (a setting no check caught) is a one-line ConfigError."""
    try:
        return instantiate(module_cfg)
    except InstantiationException as err:
        cause = err
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, (ValueError, TypeError)) and not isinstance(cause, ConfigError):
            raise ConfigError(f"invalid module configuration: {one_line(cause)} (check the module.* / model.* "
                              f"settings)") from err
        raise


def instantiate_trainer(trainer_cfg: DictConfig, **kwargs: Any) -> Trainer:
    """The Trainer of the ``trainer`` config; an impossible setting (e.g. GPUs on a machine without
    any) becomes a one-line :class:`ConfigError`."""
    try:
        return instantiate(trainer_cfg, **kwargs)
    except Exception as err:
        cause = err.__cause__ or err
        if not isinstance(cause, MisconfigurationException):
            raise
        raise ConfigError(
            f"invalid trainer configuration: {cause} (trainer.accelerator={trainer_cfg.get('accelerator')}, "
            f"trainer.devices={trainer_cfg.get('devices')}; on a machine without a CUDA GPU use trainer=cpu, "
            "or trainer=ddp_sim for DDP on CPU processes)"
        ) from err


def require_checkpoint(cfg: DictConfig, script: str) -> Path:
    """``cfg.ckpt_path`` resolved to an existing file (``last``: the newest last.ckpt of ``ckpt_task``, or of
    the only task that has any; on the command line also the run folder given as ``hydra.run.dir``)."""
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.get("ckpt_path"):
        raise ConfigError(
            f"{script} needs a checkpoint: add ckpt_path=outputs/<task>/<run>/checkpoints/last.ckpt "
            f"(or ckpt_path=last for the newest one)"
        )
    return resolve_ckpt_path(cfg.ckpt_path, cfg)


def datamodule_for(cfg: DictConfig, module: FlowLitModule) -> LightningDataModule:
    """The data of ``cfg.data`` when given, otherwise the data config saved in the checkpoint: the one
    the launch's checks read (handed over), else built and checked here."""
    data_cfg = eval_data_config(cfg, module.hparams.get("data"))
    datamodule = handoff.take("data", data_cfg)
    if datamodule is None:
        datamodule = instantiate_data(data_cfg)
        check_data_fits(module.model, datamodule)
    return datamodule


def checked(cfg: DictConfig) -> bool:
    """Whether the launch's Hydra callbacks already checked ``cfg`` (they set ``_checked_``)."""
    return bool(cfg.get("_checked_"))


def checkpoint_module(cfg: DictConfig, ckpt: Path, device: str) -> FlowLitModule:
    """The module of ``ckpt`` for eval/sample: the checkpoint the launch's checks read (handed over),
    else read here (its CRC checked unless the launch did)."""
    read = handoff.take("checkpoint", str(ckpt)) or load_checkpoint_dict(ckpt, verify=not checked(cfg))
    module = load_module(ckpt, use_ema=bool(cfg.get("use_ema", True)), device=device, ckpt=read)
    if cfg.get("compile"):  # torch.compile the flow it uses (compile=true: inductor, or a backend name)
        compile_flow(module.eval_model, **compile_options(cfg.compile))
    return module
