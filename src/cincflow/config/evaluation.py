"""The inputs of ``eval.py``'s out-of-distribution evaluation, checked and read before any folder is
made (by the Hydra callbacks, whose DataModules and checkpoints go to the job): the OOD sets named by
``ood_data`` (configs of the data group, each scored on its test split as it defines it), the training
images of the typicality test, the reference model of the likelihood ratio (``ood_reference_ckpt``), and
the typicality batch against the sizes of all of them; and what eval and sample would refuse in a
checkpoint (:func:`check_checkpoint_for`)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from ..errors import ConfigError, DatasetNotFoundError, one_line
from ..paths import CONF_DIR
from .data import check_data_first, check_data_fits, eval_data_config, instantiate_data, uses_data
from .schema import plain



def config_repository():
    """Hydra's config repository of this launch (the conf/ folder and any ``hydra.searchpath`` additions);
    outside a Hydra app (the jobs called from Python), the repository's own conf/."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if not GlobalHydra.instance().is_initialized():
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            return GlobalHydra.instance().config_loader().repository
    return GlobalHydra.instance().config_loader().repository


def data_choices() -> list[str]:
    """The names of the ``data`` group."""
    return sorted(config_repository().get_group_options("data"))


def ood_names(cfg: DictConfig) -> list[str]:
    """``ood_data`` as a list of data names (one name, or a list of them; null: none)."""
    value = plain(cfg.get("ood_data"))
    names = [] if value is None else [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"ood_data must be a data name or a list of them, got {value!r}: set e.g. ood_data=svhn "
                          f"or ood_data=[svhn,digits]")
    return names


def ood_data_configs(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """name -> the plain data config (``conf/data/<name>.yaml``, ``${paths...}`` resolved) of every ``ood_data``
    set; an unknown name is a ConfigError listing the choices."""
    from omegaconf import OmegaConf

    names = ood_names(cfg)
    if not names:
        return {}
    choices = data_choices()
    unknown = [n for n in names if n not in choices]
    if unknown:
        raise ConfigError(f"unknown ood_data {unknown[0]!r}: choose from {', '.join(choices)} (the data group, "
                          f"conf/data/), e.g. ood_data=svhn or ood_data=[svhn,digits]")
    repository = config_repository()
    paths = {}  # what a data config refers to (paths.data_dir); the run folder is not made yet
    for key in cfg.paths:
        try:
            paths[key] = plain(cfg.paths[key])
        except Exception:  # noqa: BLE001 - ${hydra:runtime.output_dir} before Hydra made the folder
            continue
    configs = {}
    for name in names:
        raw = repository.load_config(f"data/{name}").config
        raw = OmegaConf.masked_copy(raw, [k for k in raw if k != "defaults"])
        configs[name] = plain(OmegaConf.create({"paths": paths, "set": raw}).set)
    return configs


def ood_datamodule(name: str, config: dict[str, Any], batch_size: int | None) -> LightningDataModule:
    """The DataModule of the OOD set ``name``, its test split (as its data config defines it) built; a set
    that cannot be read or split is one ConfigError naming it."""
    datamodule = instantiate_data({**config, **({"batch_size": int(batch_size)} if batch_size else {})})
    where = f"the out-of-distribution set {name} ({type(datamodule).__name__})"
    try:
        datamodule.prepare_data()
    except DatasetNotFoundError as err:
        raise DatasetNotFoundError(f"{where}: {one_line(err)}") from err
    try:
        datamodule.setup("test")
    except ValueError as err:
        raise ConfigError(f"{where} cannot be used: {one_line(err)} (an OOD set is scored on its test split as "
                          f"conf/data/{name}.yaml defines it, and its splits must fit: use the complete data set, or "
                          f"a data config of your own with smaller held-out sizes)") from err
    return datamodule


def reference_checkpoint(cfg: DictConfig, model_config: dict[str, Any]) -> tuple[Path, dict[str, Any]] | None:
    """``ood_reference_ckpt`` (path, checkpoint dict), read and checked: its model scores images of the
    shape and bits of ``model_config`` (the evaluated checkpoint's); None without one."""
    from ..training.checkpoints import load_checkpoint_dict, resolve_ckpt_path
    from ..training.lit_module import FlowLitModule
    from ..training.restore import module_arguments

    if not cfg.get("ood_reference_ckpt"):
        return None
    path = resolve_ckpt_path(cfg.ood_reference_ckpt)
    ckpt = load_checkpoint_dict(path)
    reference, _ = module_arguments(ckpt.get("hyper_parameters"), path, FlowLitModule)
    keys = ("in_channels", "image_size", "n_bits")
    if [reference.get(k) for k in keys] != [model_config.get(k) for k in keys]:
        shape = lambda m: "[{}, {s}, {s}] at {} bits".format(m.get("in_channels"), m.get("n_bits"), s=m.get("image_size"))  # noqa: E731
        raise ConfigError(f"ood_reference_ckpt={path} scores images {shape(reference)}, the evaluated model "
                          f"{shape(model_config)}: give a reference model of the same image shape and bits")
    return path, ckpt


def check_typicality_sizes(cfg: DictConfig, sizes: dict[str, int]) -> None:
    """The typicality batch M (``ood_typicality_batch``) fits every set whose size ``sizes`` gives."""
    scores = plain(cfg.get("ood_scores"))
    if scores is not None and "typicality" not in ([scores] if isinstance(scores, str) else scores):
        return
    m = int(cfg.get("ood_typicality_batch") or 1)
    for name, n in sizes.items():
        if m > n:
            raise ConfigError(f"ood_typicality_batch={m} is larger than the {name} set ({n} images): choose "
                              f"ood_typicality_batch<={n}, or drop 'typicality' from ood_scores")


def prepare_ood(cfg: DictConfig, model_config: dict[str, Any], datamodule: LightningDataModule) -> None:
    """Read every OOD input of an eval launch (sets, reference checkpoint) and check the typicality batch
    against the sets' sizes; what was read goes to the job (:mod:`cincflow.config.handoff`)."""
    from . import handoff

    configs = ood_data_configs(cfg)
    if not configs:
        return
    sizes = {}
    for name, config in configs.items():
        ood = ood_datamodule(name, config, cfg.get("batch_size"))
        handoff.keep(f"ood:{name}", config, ood)
        sizes[f"out-of-distribution {name}"] = len(ood.test_set)
    split = cfg.get("split", "test")
    sizes[f"in-distribution {split}"] = len(datamodule.test_set if split == "test" else datamodule.val_set)
    limit = cfg.get("ood_train_images")
    sizes["training"] = min(len(datamodule.train_set), int(limit)) if limit else len(datamodule.train_set)
    if cfg.get("ood_max_images"):
        sizes = {k: min(v, int(cfg.ood_max_images)) for k, v in sizes.items()}
    check_typicality_sizes(cfg, sizes)
    reference = reference_checkpoint(cfg, model_config)
    if reference is not None:
        handoff.keep("reference", str(reference[0]), reference[1])


def check_checkpoint_for(cfg: DictConfig, script: str, ckpt: dict[str, Any], path: Any) -> None:
    """What ``script`` (eval | sample) would refuse in the checkpoint dict ``ckpt`` (hyper-parameters
    this version does not take, no data config where the data is needed, data whose images do not fit
    its model), without building its model; the data it reads is read here (and handed to the job),
    for eval with the out-of-distribution inputs (:func:`prepare_ood`)."""
    from ..training.lit_module import FlowLitModule
    from ..training.restore import module_arguments
    from . import handoff

    model_config, args = module_arguments(ckpt.get("hyper_parameters"), path, FlowLitModule)
    if not uses_data(cfg, script):
        return
    data_cfg = eval_data_config(cfg, args.get("data"))
    datamodule = instantiate_data(data_cfg)
    check_data_fits(SimpleNamespace(**model_config), datamodule)
    if rank_zero_only.rank != 0:
        return
    check_data_first(datamodule)
    handoff.keep("data", data_cfg, datamodule)
    if script == "eval":
        prepare_ood(cfg, model_config, datamodule)
