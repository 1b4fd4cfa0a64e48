"""The three jobs behind the entry scripts, each taking the composed Hydra config.

* :func:`train` (``src/train.py``): fit, then test with the best checkpoint; final sample PNG,
  ``metrics.json``, one summary at the end.
* :func:`evaluate` (``src/eval.py``): bits/dim of a checkpoint on the test (or val) split.
* :func:`sample` (``src/sample.py``): N samples at temperature(s) T into a PNG grid, optional
  reconstructions and latent interpolations.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Callback, LightningDataModule, Trainer, seed_everything
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict
from torchvision.utils import make_grid, save_image
from tqdm.auto import tqdm

from ..errors import CheckpointError, ConfigError
from ..preprocess import postprocess, preprocess
from ..sampling import AccuracyReport, sample_with_check
from .callbacks import ResumableShuffle, grid_of, reconstruction_grid, sample_grid, update_metrics_json
from .checkpoints import AtomicCheckpointIO, check_state_dict, load_checkpoint_dict, resolve_ckpt_path
from .lit_module import FlowLitModule, fixed_noise
from .loggers import finish_wandb, instantiate_loggers

DATA_KEYS = ("in_channels", "image_size", "n_bits")


@rank_zero_only
def say(message: str) -> None:
    print(message, flush=True)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op CPU threads (None: leave PyTorch's default), restored afterwards.
    One thread avoids the collapse of small-tensor CPU training when the cores are shared."""
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _container(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def resolve_path(path: str | os.PathLike) -> Path:
    """An absolute path; relative ones are taken from the directory the command was run in."""
    p = Path(os.path.expanduser(str(path)))
    return p if p.is_absolute() else (Path.cwd() / p).resolve()


def fill_model_from_data(model_cfg: DictConfig, datamodule: LightningDataModule) -> None:
    """Set ``in_channels``, ``image_size`` and ``n_bits`` of the model config from the DataModule
    when they are null; explicit values must agree with the data (n_bits may differ: a model can
    be trained on fewer bits than the data has)."""
    with open_dict(model_cfg):
        for key in DATA_KEYS:
            data_value = getattr(datamodule, key, None)
            if data_value is None:
                raise AttributeError(f"{type(datamodule).__name__} has no attribute {key!r} (DataModule contract)")
            value = model_cfg.get(key)
            if value is None:
                model_cfg[key] = int(data_value)
            elif key != "n_bits" and int(value) != int(data_value):
                raise ConfigError(
                    f"model.{key}={value} but the data ({type(datamodule).__name__}) has {key}={data_value}; "
                    f"leave model.{key}=null to take it from the data"
                )


def instantiate_callbacks(callbacks_cfg: DictConfig | None) -> list[Callback]:
    callbacks: list[Callback] = []
    if not callbacks_cfg:
        return callbacks
    for _, cb_cfg in callbacks_cfg.items():
        if isinstance(cb_cfg, DictConfig) and "_target_" in cb_cfg:
            callbacks.append(instantiate(cb_cfg))
    return callbacks


def instantiate_data(data_cfg: Any) -> LightningDataModule:
    """The DataModule of ``data_cfg``; a bad argument becomes a one-sentence ConfigError (the data
    layer's DatasetNotFoundError/CorruptDataError pass through, wrapped by Hydra as their cause)."""
    from hydra.errors import InstantiationException

    try:
        return instantiate(data_cfg, _convert_="all")
    except InstantiationException as err:
        if isinstance(err.__cause__, (ValueError, TypeError)) and not isinstance(err.__cause__, ConfigError):
            raise ConfigError(f"invalid data configuration: {err.__cause__} (check the data.* settings)") from err
        raise


def ensure_writable_dir(path: Path) -> None:
    """Create ``path`` and make sure files can be written there (a clear error otherwise)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_test_"):
            pass
    except OSError as err:
        raise ConfigError(
            f"the output folder {path} is not writable ({err.strerror or err}): choose another one with "
            f"hydra.run.dir=... or paths.log_dir=..."
        ) from err


def read_checkpoint_meta(ckpt_path: Path) -> dict[str, Any]:
    """Small entries of a Lightning checkpoint (memory-mapped, tensors not read)."""
    ckpt = load_checkpoint_dict(ckpt_path)
    return {k: ckpt.get(k) for k in ("wandb_run_id", "wandb_project", "global_step", "epoch", "hyper_parameters")}


def _device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_module(ckpt_path: str | os.PathLike, use_ema: bool = True, device: str = "auto") -> FlowLitModule:
    """A trained FlowLitModule from a checkpoint, in eval mode; ``use_ema=False`` drops the
    Polyak average so the raw training weights are used. Clear errors (CheckpointError and
    subclasses) for a missing, unreadable or inconsistent file."""
    path = resolve_ckpt_path(ckpt_path, None, same_task=False)  # a path here: `last` is resolved by the scripts
    ckpt = load_checkpoint_dict(path)
    hparams = ckpt.get("hyper_parameters")
    if not isinstance(hparams, dict) or "model" not in hparams:
        raise CheckpointError(f"ckpt_path={path} has no model hyper-parameters: pass a .ckpt file written by src/train.py")
    module = FlowLitModule(**hparams)
    check_state_dict(module, ckpt, path)
    module.load_state_dict(ckpt["state_dict"])
    module.on_load_checkpoint(ckpt)
    del ckpt
    if not use_ema:
        module.ema = None
    module.eval()
    return module.to(_device(device))


def datamodule_for(cfg: DictConfig, module: FlowLitModule) -> LightningDataModule:
    """The data of ``cfg.data`` when given, otherwise the data config saved in the checkpoint."""
    data_cfg = cfg.get("data")
    if data_cfg:
        data_cfg = _container(data_cfg)
    else:
        data_cfg = dict(module.hparams.get("data") or {})
        if not data_cfg:
            raise ValueError("the checkpoint has no data config: choose one with data=<name>")
    if cfg.get("batch_size"):
        data_cfg["batch_size"] = int(cfg.batch_size)
    dm = instantiate_data(data_cfg)
    for key in ("in_channels", "image_size"):
        if int(getattr(dm, key)) != int(getattr(module.model, key)):
            raise ConfigError(
                f"data {key}={getattr(dm, key)} ({type(dm).__name__}) does not match the checkpoint's model "
                f"({key}={getattr(module.model, key)}): choose the data it was trained on with data=<name> or leave data unset"
            )
    return dm


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


def _world_size_batch(cfg: DictConfig, trainer: Trainer, datamodule: LightningDataModule) -> int:
    """Per-process batch size: ``data.batch_size`` unless ``global_batch_size`` is set, which is
    then split evenly over all processes (devices x nodes)."""
    global_bs = cfg.get("global_batch_size")
    if global_bs:
        ws = trainer.world_size
        if int(global_bs) % ws:
            raise ConfigError(f"global_batch_size={global_bs} is not divisible by the {ws} processes: choose a multiple of {ws}")
        datamodule.batch_size = int(global_bs) // ws
    return int(datamodule.batch_size)


def checkpoint_paths(trainer: Trainer) -> tuple[str, str]:
    """(best checkpoint by the monitored metric, last checkpoint); "" when there is none. The last
    one is the file of a ModelCheckpoint without ``monitor`` (conf/callbacks: last_checkpoint)."""
    best = last = ""
    for cb in trainer.checkpoint_callbacks:
        if cb.monitor:
            best = best or cb.best_model_path or ""
        else:
            path = cb.best_model_path or (cb.format_checkpoint_name({}) if cb.dirpath else "")
            last = last or (path if path and os.path.isfile(path) else "")
        last = last or cb.last_model_path or ""
    return best, last


# ============================================================================ train
def train(cfg: DictConfig, extra_callbacks: list[Callback] | None = None) -> dict[str, Any]:
    """Fit, test the best checkpoint, write samples.png and metrics.json; returns the metrics
    (on global rank 0; an empty dict elsewhere). ``extra_callbacks`` are added to the config's."""
    with torch_threads(cfg.get("num_threads")):
        return _train(cfg, extra_callbacks)


def _train(cfg: DictConfig, extra_callbacks: list[Callback] | None) -> dict[str, Any]:
    start = time.time()
    if cfg.get("seed") is not None:
        seed_everything(int(cfg.seed), workers=True)
    output_dir = Path(cfg.paths.output_dir)
    ensure_writable_dir(output_dir)

    datamodule: LightningDataModule = instantiate_data(cfg.data)
    fill_model_from_data(cfg.model, datamodule)

    ckpt_path = cfg.get("ckpt_path")
    wandb_id = None
    ckpt: dict[str, Any] | None = None
    if ckpt_path:
        ckpt_path = resolve_ckpt_path(ckpt_path, cfg, same_task=True)
        ckpt = load_checkpoint_dict(ckpt_path)
        wandb_id = ckpt.get("wandb_run_id")

    module = FlowLitModule(
        model=_container(cfg.model),
        optim=_container(cfg.optim),
        ema_decay=cfg.get("ema_decay"),
        actnorm_init_images=int(cfg.get("actnorm_init_images", 512)),
        actnorm_init_seed=int(cfg.get("seed") or 0),
        data=_container(cfg.data),
        max_bad_steps=int(cfg.get("max_bad_steps") or 0),
        noise_seed=int(cfg.seed) if cfg.get("seed") is not None else None,
    )
    if ckpt is not None:
        check_state_dict(module, ckpt, ckpt_path)  # a different architecture: which keys/shapes differ
        del ckpt
    callbacks = instantiate_callbacks(cfg.get("callbacks")) + list(extra_callbacks or [])
    callbacks.append(ResumableShuffle())  # training data order = f(data.seed, epoch): same after a resume
    loggers = instantiate_loggers(cfg.get("logger"), wandb_resume_id=wandb_id)
    plugins = [AtomicCheckpointIO()] if cfg.get("atomic_checkpoints", True) else None
    trainer = instantiate_trainer(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=plugins)
    batch = _world_size_batch(cfg, trainer, datamodule)

    counts = module.model.parameter_counts()
    hparams = {**_container(cfg), "parameters": counts, "effective_batch_size": batch * trainer.world_size}
    for lg in loggers:
        lg.log_hyperparams(hparams)
    say(
        f"Glow conv={cfg.model.conv} coupling={cfg.model.coupling} L={cfg.model.levels} K={cfg.model.depth} "
        f"width={cfg.model.width}: {counts['total']:,} parameters | data {type(datamodule).__name__} "
        f"{cfg.model.in_channels}x{cfg.model.image_size}x{cfg.model.image_size}, {cfg.model.n_bits} bits | "
        f"batch {batch} per process x {trainer.world_size} process(es) = {batch * trainer.world_size} | "
        f"output {output_dir}"
    )
    if ckpt_path:
        say(f"Resuming from {ckpt_path}" + (f" (W&B run {wandb_id})" if wandb_id else ""))

    metrics_path = output_dir / "metrics.json"
    result: dict[str, Any] = {}
    try:
        if cfg.get("train", True):
            trainer.fit(
                module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None, weights_only=False
            )
        best, last = checkpoint_paths(trainer)
        if not cfg.get("train", True) and ckpt_path:  # train=false ckpt_path=...: test that checkpoint
            best = str(ckpt_path)
        if cfg.get("test", True):
            if best:
                trainer.test(module, datamodule=datamodule, ckpt_path=best, weights_only=False)
            else:
                say("No best checkpoint (no validation or checkpointing): testing the current weights")
                trainer.test(module, datamodule=datamodule)
        if trainer.is_global_zero:
            result = _finish_train(cfg, trainer, module, best, last, metrics_path, time.time() - start)
    finally:
        finish_wandb()
    return result


def _finish_train(cfg, trainer, module, best, last, metrics_path, seconds) -> dict[str, Any]:
    """Rank 0: final sample grid from the best weights, metrics.json, summary lines."""
    output_dir = Path(cfg.paths.output_dir)
    samples_png = None
    scfg = cfg.get("samples") or {}
    if int(scfg.get("n", 0) or 0) > 0:
        final = load_module(best, use_ema=True) if best else module.eval()
        grid = sample_grid(final, int(scfg.n), list(scfg.temperatures), int(scfg.seed))
        samples_png = str(output_dir / "samples.png")
        save_image(grid, samples_png)
    metrics = {
        k: float(v) for k, v in trainer.callback_metrics.items()
        if isinstance(v, (int, float, torch.Tensor)) and torch.as_tensor(v).numel() == 1
    }
    # under ddp_spawn the training ran in child processes: their metrics.json knows the step count
    before = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    record = update_metrics_json(
        metrics_path,
        {
            **metrics,
            "best_checkpoint": best or None,
            "last_checkpoint": last or None,
            "samples_png": samples_png,
            "output_dir": str(output_dir),
            "global_step": max(trainer.global_step, int(before.get("global_step", 0))),
            "epoch": max(trainer.current_epoch, int(before.get("epoch", 0))),
            "train_seconds": round(seconds, 1),
            "conv": cfg.model.conv,
            "coupling": cfg.model.coupling,
        },
    )
    lines = ["", f"Done in {seconds / 60:.1f} min, {record['global_step']} steps."]
    if "test/bpd" in record:
        lines.append(f"test bits/dim: {record['test/bpd']:.4f}" + (" (best checkpoint)" if best else ""))
    if record.get("val/bpd_best") is not None:
        lines.append(f"best val bits/dim: {record['val/bpd_best']:.4f}")
    if best:
        lines.append(f"checkpoint: {best}")
    if last and last != best:
        lines.append(f"last checkpoint: {last}")
    if samples_png:
        lines.append(f"samples: {samples_png}")
    lines.append(f"metrics: {metrics_path}")
    print("\n".join(lines), flush=True)
    return record


# ============================================================================ eval
def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Bits/dim of a checkpoint on the test split (``split=val`` for validation); metrics.json."""
    with torch_threads(cfg.get("num_threads")):
        return _evaluate(cfg)


def require_checkpoint(cfg: DictConfig, script: str) -> Path:
    """``cfg.ckpt_path`` resolved to an existing file (``last``: newest last.ckpt of any task)."""
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.get("ckpt_path"):
        raise ConfigError(
            f"{script} needs a checkpoint: add ckpt_path=outputs/<task>/<run>/checkpoints/last.ckpt "
            f"(or ckpt_path=last for the newest one)"
        )
    return resolve_ckpt_path(cfg.ckpt_path, cfg, same_task=False)


def _evaluate(cfg: DictConfig) -> dict[str, Any]:
    ckpt = require_checkpoint(cfg, "src/eval.py")
    if cfg.get("seed") is not None:
        seed_everything(int(cfg.seed), workers=True)
    output_dir = Path(cfg.paths.output_dir)
    ensure_writable_dir(output_dir)
    module = load_module(ckpt, use_ema=bool(cfg.get("use_ema", True)), device="cpu")
    datamodule = datamodule_for(cfg, module)
    trainer = instantiate_trainer(cfg.trainer, logger=False, callbacks=[])
    split = cfg.get("split", "test")
    if split == "test":
        out = trainer.test(module, datamodule=datamodule)
    elif split == "val":
        out = trainer.validate(module, datamodule=datamodule)
    else:
        raise ConfigError(f"split must be 'test' or 'val', got {split!r}")
    metrics = {k: float(v) for k, v in (out[0] if out else {}).items() if not k.endswith("_best")}
    record = {
        **metrics,
        "split": split,
        "checkpoint": str(ckpt),
        "ema": module.ema is not None,
        "data": type(datamodule).__name__,
    }
    if trainer.is_global_zero:
        path = output_dir / "metrics.json"
        path.write_text(json.dumps(record, indent=2, sort_keys=True))
        key = f"{split}/bpd"
        print(f"{split} bits/dim: {record.get(key, float('nan')):.4f} ({ckpt})\nmetrics: {path}", flush=True)
    return record


# ============================================================================ sample
def _interpolate(module: FlowLitModule, images: torch.Tensor, steps: int, seed: int) -> torch.Tensor:
    """Rows of decoded linear interpolations between the latents of consecutive image pairs."""
    model = module.eval_model
    gen = torch.Generator().manual_seed(int(seed))
    x = preprocess(images.cpu(), module.n_bits, dequantize=False)
    x = (x + torch.rand(x.shape, generator=gen) / 2**module.n_bits).to(module.device)
    with torch.no_grad():
        zs, _ = model.encode(x)
        pairs = images.shape[0] // 2
        alphas = torch.linspace(0, 1, steps, device=x.device)
        rows = []
        for p in range(pairs):
            za = [z[2 * p] for z in zs]
            zb = [z[2 * p + 1] for z in zs]
            mixed = [torch.stack([(1 - a) * u + a * v for a in alphas]) for u, v in zip(za, zb)]
            rows.append(postprocess(model.decode(mixed), module.n_bits).cpu())
    return grid_of(torch.cat(rows), nrow=steps)


def _first_images(datamodule: LightningDataModule, n: int, split: str = "test") -> torch.Tensor:
    datamodule.setup("test" if split == "test" else "fit")
    loader = datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader()
    chunks, have = [], 0
    for batch in loader:
        chunks.append(batch)
        have += batch.shape[0]
        if have >= n:
            break
    return torch.cat(chunks)[:n]


def sample(cfg: DictConfig) -> dict[str, Any]:
    """N samples at temperature(s) T from a checkpoint into a PNG grid (+ optional extras)."""
    with torch_threads(cfg.get("num_threads")):
        return _sample(cfg)


def _sample(cfg: DictConfig) -> dict[str, Any]:
    ckpt = require_checkpoint(cfg, "src/sample.py")
    seed = int(cfg.get("seed") or 0)
    seed_everything(seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    ensure_writable_dir(output_dir)
    module = load_module(ckpt, use_ema=bool(cfg.get("use_ema", True)), device=cfg.get("device", "auto"))
    temps = cfg.temperature
    temps = [float(t) for t in temps] if isinstance(temps, (list, tuple)) or OmegaConf.is_list(temps) else [float(temps)]
    n, bs = int(cfg.n), max(1, int(cfg.get("batch_size") or cfg.n))
    blocks = []
    chunks = math.ceil(n / bs)
    nonfinite, accuracy = 0, AccuracyReport()
    fallback = bool(cfg.get("float64_fallback", True))
    with tqdm(total=len(temps) * chunks, desc="sampling", unit="batch") as bar:
        for t in temps:
            images = []
            for i in range(chunks):
                m = min(bs, n - i * bs)
                model = module.eval_model
                noise = [z.to(module.device) for z in fixed_noise(model.latent_shapes(), m, seed + i)]
                x, report = sample_with_check(model, m, temperature=t, noise=noise, float64_fallback=fallback)  # warns above 1e-3
                accuracy = accuracy.worst(report)
                nonfinite += int((~torch.isfinite(x.flatten(1))).any(dim=1).sum())
                images.append(postprocess(x, module.n_bits).cpu())
                bar.update(1)
            blocks.append(grid_of(torch.cat(images), nrow=cfg.get("nrow")))
    grid = blocks[0] if len(blocks) == 1 else make_grid(torch.stack(blocks), nrow=len(blocks), padding=4, pad_value=1.0)
    out_png = resolve_path(cfg.get("output") or output_dir / "samples.png")
    out_png.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, out_png)
    total = n * len(temps)
    record: dict[str, Any] = {
        "checkpoint": str(ckpt), "samples_png": str(out_png), "n": n, "temperatures": temps,
        "nonfinite_samples": nonfinite, "nonfinite_share": nonfinite / max(total, 1), "inverse_residual_max": accuracy.residual,
        "inverse_error_bound": accuracy.bound, "inverse_error_bound_layer": accuracy.layer,
        "float64_layers": list(accuracy.float64_layers),
    }
    lines = [
        f"samples ({n} per temperature, T = {', '.join(map(str, temps))}): {out_png}",
        f"non-finite samples: {nonfinite} of {total} (shown clamped to the pixel range in the PNG); "
        f"inverses of the invertible convolutions: {accuracy}"
        + ("" if accuracy.float64_layers else " (float32 was accurate enough everywhere)" if fallback else ""),
    ]
    if nonfinite:
        logging.getLogger(__name__).warning("%d of %d samples are non-finite", nonfinite, total)

    n_rec = int(cfg.get("reconstructions") or 0)
    n_int = int(cfg.get("interpolations") or 0)
    if n_rec or n_int:
        dm = datamodule_for(cfg, module)
        images = _first_images(dm, max(n_rec, 2 * n_int), cfg.get("split", "test"))
        if n_rec:
            rgrid, stats = reconstruction_grid(module, images[:n_rec], seed)
            path = out_png.with_name(out_png.stem + "_reconstructions.png")
            save_image(rgrid, path)
            record.update({"reconstructions_png": str(path), **stats})
            lines.append(f"reconstructions (max |x - x'| = {stats['recon_err_max']:.2e}): {path}")
        if n_int:
            igrid = _interpolate(module, images[: 2 * n_int], int(cfg.get("interpolation_steps", 8)), seed)
            path = out_png.with_name(out_png.stem + "_interpolations.png")
            save_image(igrid, path)
            record["interpolations_png"] = str(path)
            lines.append(f"interpolations: {path}")
    (output_dir / "sample.json").write_text(json.dumps(record, indent=2))
    print("\n".join(lines), flush=True)
    return record
