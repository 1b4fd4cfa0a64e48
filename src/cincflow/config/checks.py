""":func:`validate`: every check of a composed configuration before anything is built or written:
the schema of the job's own keys (:mod:`.schema`), the ``_target_`` nodes (:mod:`.components`),
interpolations that find their keys, devices this machine has, and folders that can be created."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig
from omegaconf.errors import InterpolationKeyError

from ..errors import ConfigError, missing_key
from ..paths import resolve_path
from .components import check_callbacks, check_conv, check_coupling, check_dequant, check_optimizer, check_scheduler, check_target
from .schema import SCHEMAS, check_node

REQUIRED_NODES = {"train": ("data", "model", "optimizer", "trainer", "module"), "eval": ("trainer",), "sample": ()}


def check_device(name: str, key: str = "device") -> None:
    """``name`` must be a torch device this machine has (cpu, or cuda[:index] with that GPU)."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{key}={name} is not a torch device: use {key}=cpu or {key}=cuda[:index]") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index or 0) >= count:
            raise ConfigError(
                f"{key}={name}: torch {torch.__version__} sees {count} CUDA GPU(s) on this machine; "
                f"use {key}=cpu{'' if count == 0 else f' or {key}=cuda:<0..{count - 1}>'}")
    elif device.type != "cpu":
        raise ConfigError(f"{key}={name}: only cpu and cuda devices are supported: use {key}=cpu or {key}=cuda")


def image_extensions() -> list[str]:
    """The file extensions Pillow writes pictures to (what ``save_image`` takes)."""
    from PIL import Image

    Image.init()
    return sorted(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE)


def check_image_file(path: str) -> None:
    """``output=`` must name a picture file Pillow can write (its extension says which format)."""
    suffix = Path(path).suffix.lower()
    allowed = image_extensions()
    if suffix not in allowed:
        common = [e for e in (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp") if e in allowed]
        raise ConfigError(f"output={path}: {suffix or 'no extension'} is not a picture format this machine writes: "
                          f"name a {', '.join(common)} file (e.g. output=<folder>/samples.png)")


def check_creatable(path: str | os.PathLike, name: str, fix: str, is_file: bool = False) -> None:
    """The folder ``path`` (the file ``path`` with ``is_file``) exists as such, or can be created:
    its nearest existing ancestor is a folder a new folder can be made in (tried: a probe folder is
    made and removed again). Leaves nothing behind. ``name`` starts the
    message: ``"data.cache_dir="`` or ``"the output folder "``."""
    path = resolve_path(path)
    if path.exists():
        if path.is_dir() == is_file:
            kind = "a folder" if is_file else "a file"
            raise ConfigError(f"{name}{path} is {kind}, not {'a file' if is_file else 'a folder'}: {fix}")
        return
    ancestor = next(p for p in path.parents if p.exists())
    if not ancestor.is_dir():
        raise ConfigError(f"{name}{path} is not writable (it cannot be created: {ancestor} is a file, not a folder): {fix}")
    try:  # the OS decides (permissions, read-only mounts, /proc, ...; os.access lets root pass everywhere)
        os.rmdir(tempfile.mkdtemp(prefix=".cincflow-write-check-", dir=ancestor))
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ConfigError(f"{name}{path} is not writable (it cannot be created in {ancestor}: {reason}): {fix}") from None


def check_data_folders(data: Any) -> None:
    """A folder the data config would write into (a download, ImageNet's ``.npy`` caches) can be made."""
    if not isinstance(data, DictConfig):
        return
    fix = "choose a writable folder with paths.data_dir=... (or data.cache_dir=...)"
    if data.get("cache_dir"):
        check_creatable(data.cache_dir, "data.cache_dir=", fix)
    elif "cache_dir" in data and data.get("data_dir"):
        check_creatable(Path(data.data_dir) / "cache", "the data cache folder ", fix)
    if data.get("download") and data.get("data_dir"):
        check_creatable(data.data_dir, "data.data_dir=", fix)


def check_references(node: Any, prefix: str = "") -> None:
    """Every ``${key}`` interpolation of ``node`` finds its key (``~samples`` would leave
    ``callbacks.samples.n: ${samples.n}`` dangling); Hydra's own resolvers (``${hydra:...}``,
    set once the run starts) are left to resolve later."""
    keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
    for key in keys:
        if not prefix and key == "hydra":
            continue
        try:
            value = node[key]
        except InterpolationKeyError as err:
            raise missing_key(err) from None
        except Exception:  # noqa: BLE001 - another resolver's business, checked where it resolves
            continue
        if isinstance(value, (DictConfig, ListConfig)):
            check_references(value, f"{prefix}{key}.")


def validate(cfg: DictConfig, script: str, output_dir: str | os.PathLike | None = None) -> None:
    """Check the composed config of ``script`` (train | eval | sample) before any work: the
    schema, the ``_target_`` nodes, devices and folders (``output_dir``: default
    ``cfg.paths.output_dir``). The first problem is a one-sentence :class:`ConfigError`."""
    for key in REQUIRED_NODES[script]:  # each is instantiated: a _target_ and its options
        if not isinstance(cfg.get(key), DictConfig) or "_target_" not in cfg[key]:
            raise ConfigError(f"the configuration has no {key} settings with a _target_, which {script} needs (a ~{key} "
                              f"override removes them): leave them in (defaults: conf/{script}.yaml and its groups)")
    check_references(cfg)
    check_node(cfg, SCHEMAS[script])
    folder_fix = "choose another folder with hydra.run.dir=... or paths.log_dir=..."
    check_creatable(output_dir if output_dir is not None else cfg.paths.output_dir, "the output folder ", folder_fix)
    check_target(cfg.get("data"), "data")
    check_data_folders(cfg.get("data"))
    if script == "train":
        check_optimizer(cfg.get("optimizer"))
        check_scheduler(cfg.get("scheduler"))
        model = cfg.get("model")
        check_target(model, "model")
        check_conv(model.get("conv") if isinstance(model, DictConfig) else None)
        check_coupling(model.get("coupling") if isinstance(model, DictConfig) else None)
        check_target(cfg.get("module"), "module")
        check_dequant(cfg.module.get("dequant") if isinstance(cfg.get("module"), DictConfig) else None)
        check_callbacks(cfg.get("callbacks"))
    if script == "sample":
        if cfg.get("device", "auto") != "auto":
            check_device(str(cfg.device))
        if cfg.get("output"):
            check_creatable(cfg.output, "output=", "choose another file with output=<folder>/<name>.png", is_file=True)
            check_image_file(str(cfg.output))
