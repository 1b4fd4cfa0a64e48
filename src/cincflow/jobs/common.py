"""What the jobs share: instantiating data, trainer and callbacks from their configs, fitting the
model config to the data, CPU threads, rank-0 printing."""
from __future__ import annotations

import inspect
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Callback, LightningDataModule, Trainer
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from ..config.schema import plain
from ..data.errors import DatasetNotFoundError
from ..errors import ConfigError, one_line
from ..model import Glow, check_geometry, dims_mismatch
from ..training.checkpoints import load_checkpoint_dict, resolve_ckpt_path
from ..training.lit_module import FlowLitModule
from ..training.loading import module_arguments

DATA_KEYS = ("in_channels", "image_size", "n_bits")


@rank_zero_only
def say(message: str) -> None:
    print(message, flush=True)


def fill_model_from_data(model_cfg: DictConfig, datamodule: LightningDataModule) -> None:
    """Set ``in_channels``, ``image_size`` and ``n_bits`` of the model config from the DataModule
    when they are null; explicit values must agree with the data (n_bits may differ: a model can
    be trained on fewer bits than the data has)."""
    with open_dict(model_cfg):
        for key in DATA_KEYS:
            data_value = getattr(datamodule, key, None)
            if data_value is None:
                raise AttributeError(f"{type(datamodule).__name__} has no attribute {key!r} (DataModule contract)")
            if model_cfg.get(key) is None:
                model_cfg[key] = int(data_value)
    mismatch = dims_mismatch(model_cfg, datamodule)
    if mismatch:
        key = mismatch[0]
        raise ConfigError(
            f"model.{key}={model_cfg[key]} but the data ({type(datamodule).__name__}) has {key}={getattr(datamodule, key)}; "
            f"leave model.{key}=null to take it from the data"
        )
    model_class = get_object(str(model_cfg.get("_target_", "builtins.object")))
    if isinstance(model_class, type) and issubclass(model_class, Glow):
        signature = inspect.signature(check_geometry).parameters
        defaults = inspect.signature(model_class).parameters  # for sizes the config leaves out
        sizes = {k: model_cfg[k] if model_cfg.get(k) is not None else defaults[k].default for k in signature}
        try:  # the model's sizes against the data's images, before anything is built
            check_geometry(**{k: int(v) for k, v in sizes.items()})
        except ValueError as err:
            raise ConfigError(f"invalid model configuration: {err} (check the model.* settings)") from None


def prepared_data(cfg: DictConfig) -> LightningDataModule:
    """The DataModule of a training config, checked (:func:`check_data_first`), with the model
    config's data sizes filled in and checked against it (:func:`fill_model_from_data`)."""
    datamodule = instantiate_data(cfg.data)
    check_data_first(datamodule)
    fill_model_from_data(cfg.model, datamodule)
    return datamodule


def instantiate_callbacks(callbacks_cfg: DictConfig | None) -> list[Callback]:
    """Every entry of the ``callbacks`` group that has a ``_target_``."""
    if not callbacks_cfg:
        return []
    return [instantiate(cb) for cb in callbacks_cfg.values() if isinstance(cb, DictConfig) and "_target_" in cb]


def instantiate_data(data_cfg: Any) -> LightningDataModule:
    """The DataModule of ``data_cfg``; a bad argument becomes a one-sentence ConfigError (the data
    layer's DatasetNotFoundError/CorruptDataError pass through, wrapped by Hydra as their cause)."""
    try:
        return instantiate(data_cfg, _convert_="all")
    except InstantiationException as err:
        if isinstance(err.__cause__, (ValueError, TypeError)) and not isinstance(err.__cause__, ConfigError):
            raise ConfigError(f"invalid data configuration: {err.__cause__} (check the data.* settings)") from err
        raise


OFFLINE_DATA = ("train offline instead with experiment=quickstart (8x8 digits, a CPU, minutes) or data=photos "
                "(32x32 photo patches, CIFAR-10-shaped)")


def check_data_first(datamodule: LightningDataModule) -> None:
    """Make sure the data is there and splits as configured (``prepare_data`` and ``setup``: on
    global rank 0, downloading where the DataModule may) before anything is built or started; a
    missing dataset's one-line error then also names the offline alternatives."""
    if rank_zero_only.rank != 0:
        return  # the other processes find the files rank 0 made sure of (Lightning's barrier)
    try:
        datamodule.prepare_data()
    except DatasetNotFoundError as err:
        raise DatasetNotFoundError(f"{one_line(err)} Or {OFFLINE_DATA}.") from err
    try:
        datamodule.setup("fit")  # the splits (e.g. a hold-out larger than the dataset), before the model is built
    except ValueError as err:
        raise ConfigError(f"invalid data configuration: {one_line(err)}") from err


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


NO_DATA = "the checkpoint has no data config: choose one with data=<name>"


def uses_data(cfg: DictConfig, script: str) -> bool:
    """Whether ``script`` (eval | sample) with ``cfg`` reads images (eval always; sample for
    reconstructions or interpolations)."""
    return script == "eval" or bool(int(cfg.get("reconstructions") or 0) or int(cfg.get("interpolations") or 0))


def check_checkpoint_for(cfg: DictConfig, script: str, ckpt: Path) -> None:
    """What ``script`` would refuse in the checkpoint ``ckpt`` (unreadable, weights only, hyper-parameters
    this version does not take, no data config where the data is needed), without building its model."""
    args = module_arguments(load_checkpoint_dict(ckpt).get("hyper_parameters"), ckpt)
    if not uses_data(cfg, script):
        return
    if not cfg.get("data") and not args.get("data"):
        raise ConfigError(NO_DATA)
    if cfg.get("data"):  # other data than the checkpoint's: its images must fit the model
        check_data_fits(SimpleNamespace(**args["model_config"]), instantiate_data(plain(cfg.data)))


def datamodule_for(cfg: DictConfig, module: FlowLitModule) -> LightningDataModule:
    """The data of ``cfg.data`` when given, otherwise the data config saved in the checkpoint."""
    data_cfg = cfg.get("data")
    if data_cfg:
        data_cfg = plain(data_cfg)
    else:
        data_cfg = dict(module.hparams.get("data") or {})
        if not data_cfg:
            raise ConfigError(NO_DATA)
    if cfg.get("batch_size"):
        data_cfg["batch_size"] = int(cfg.batch_size)
    dm = instantiate_data(data_cfg)
    check_data_fits(module.model, dm)
    return dm


def check_data_fits(model: Any, dm: LightningDataModule) -> None:
    """A ConfigError unless the images of ``dm`` fit the checkpoint's ``model`` (or its config)."""
    mismatch = dims_mismatch(model, dm)
    if mismatch:
        key = mismatch[0]
        raise ConfigError(
            f"data {key}={getattr(dm, key)} ({type(dm).__name__}) does not match the checkpoint's model "
            f"({key}={getattr(model, key)}): choose the data it was trained on with data=<name> or leave data unset"
        )
