"""The data of a configuration: the DataModule instantiated and checked (there, readable, large enough
for its splits), the model's sizes taken from it or checked against it, and the checkpoint-side checks
of eval/sample (the data must fit the checkpoint's model). Run by the Hydra callbacks before any folder
is made, and by the jobs when they were not launched through them."""
from __future__ import annotations

import inspect
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, open_dict

from ..errors import ConfigError, DatasetNotFoundError, one_line
from ..model import Glow, check_geometry, dims_mismatch
from .schema import plain

DATA_KEYS = ("in_channels", "image_size", "n_bits")
OFFLINE_DATA = ("train offline instead with experiment=quickstart (8x8 digits, a CPU, minutes) or data=photos "
                "(32x32 photo patches, CIFAR-10-shaped)")
NO_DATA = "the checkpoint has no data config: choose one with data=<name>"


def instantiate_data(data_cfg: Any) -> LightningDataModule:
    """The DataModule of ``data_cfg``; a bad argument becomes a one-sentence ConfigError (the data
    layer's DatasetNotFoundError/CorruptDataError pass through, wrapped by Hydra as their cause)."""
    try:
        return instantiate(data_cfg, _convert_="all")
    except InstantiationException as err:
        if isinstance(err.__cause__, (ValueError, TypeError)) and not isinstance(err.__cause__, ConfigError):
            raise ConfigError(f"invalid data configuration: {err.__cause__} (check the data.* settings)") from err
        raise


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


def fill_model_from_data(model_cfg: DictConfig, datamodule: LightningDataModule) -> None:
    """Set ``in_channels``, ``image_size`` and ``n_bits`` of the model config from the DataModule
    when they are null; explicit values must agree with the data (n_bits may differ: a model can
    be trained on fewer bits than the data has), and a Glow's sizes must fit the images."""
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


def uses_data(cfg: DictConfig, script: str) -> bool:
    """Whether ``script`` (eval | sample) with ``cfg`` reads images (eval always; sample for
    reconstructions or interpolations)."""
    return script == "eval" or bool(int(cfg.get("reconstructions") or 0) or int(cfg.get("interpolations") or 0))


def check_data_fits(model: Any, dm: LightningDataModule) -> None:
    """A ConfigError unless the images of ``dm`` fit the checkpoint's ``model`` (or its config)."""
    mismatch = dims_mismatch(model, dm)
    if mismatch:
        key = mismatch[0]
        raise ConfigError(
            f"data {key}={getattr(dm, key)} ({type(dm).__name__}) does not match the checkpoint's model "
            f"({key}={getattr(model, key)}): choose the data it was trained on with data=<name> or leave data unset"
        )


def eval_data_config(cfg: DictConfig, saved: Any) -> dict[str, Any]:
    """The data config eval/sample read: ``cfg.data`` when given, else the checkpoint's (``saved``),
    with ``cfg.batch_size`` when set."""
    data_cfg = plain(cfg.data) if cfg.get("data") else dict(saved or {})
    if not data_cfg:
        raise ConfigError(NO_DATA)
    if cfg.get("batch_size"):
        data_cfg["batch_size"] = int(cfg.batch_size)
    return data_cfg
