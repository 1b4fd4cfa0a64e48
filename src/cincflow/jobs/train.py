"""``src/train.py``: fit, then test the best checkpoint; a final sample grid from the best weights,
``metrics.json`` and one summary at the end.

Resume (``ckpt_path=...``): ``resume=full`` (default) continues the run in its own folder (weights,
EMA, optimiser state with the configured settings, schedule, step, best checkpoint and score,
``metrics.json`` history, W&B run); ``resume=weights`` starts a new run from the checkpoint's weights
with a fresh optimiser and schedule. SIGTERM/SIGINT save ``last.ckpt`` and exit 143/130 with one line
saying how to resume; in a submitit job, submitit's preemption signal saves ``last.ckpt`` at that step,
then submitit requeues the job, which resumes from it (:mod:`cincflow.training.stop`)."""
from __future__ import annotations

import json
import os
import shlex
import signal
import time
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Callback, LightningDataModule, Trainer, seed_everything
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig
from torchvision.utils import save_image

from ..config import handoff, validate
from ..config.data import check_data_first, fill_model_from_data, instantiate_data
from ..config.schema import plain
from ..errors import ConfigError, TrainingInterrupted
from ..paths import ensure_writable_dir
from ..runs import check_training_folder, requeued_checkpoint
from ..training.checkpoints import AtomicCheckpointIO, check_state_dict, load_checkpoint_dict, resolve_ckpt_path
from ..training.lit_module import FlowLitModule
from ..training.loading import load_module
from ..training.loggers import finish_wandb, instantiate_loggers
from ..training.metrics_json import truncate_history, update_metrics_json
from ..training.resume import optimizer_changes
from ..training.stop import GracefulStop
from ..viz import sample_grid
from .common import checked, cpu_settings, instantiate_callbacks, instantiate_module, instantiate_trainer, say


def per_process_batch(cfg: DictConfig, trainer: Trainer, datamodule: LightningDataModule) -> int:
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


def train(cfg: DictConfig, extra_callbacks: list[Callback] | None = None) -> dict[str, Any]:
    """Fit, test the best checkpoint, write samples.png and metrics.json; returns the metrics
    (on global rank 0; an empty dict elsewhere). ``extra_callbacks`` are added to the config's."""
    with cpu_settings(cfg):
        return _train(cfg, extra_callbacks)


def training_data(cfg: DictConfig) -> LightningDataModule:
    """The DataModule of ``cfg.data``: the one the launch's checks built (handed over), else built and
    checked here; the model config's data sizes filled in and checked against it."""
    datamodule = handoff.take("data", plain(cfg.data))
    if datamodule is None:
        datamodule = instantiate_data(cfg.data)
        if not checked(cfg):
            check_data_first(datamodule)
    fill_model_from_data(cfg.model, datamodule)
    return datamodule


def _train(cfg: DictConfig, extra_callbacks: list[Callback] | None) -> dict[str, Any]:
    start = time.time()
    if not checked(cfg):  # the Hydra callback checked every input before the folder was made
        validate(cfg, "train")
    if cfg.get("seed") is not None:
        seed_everything(int(cfg.seed), workers=True)
    output_dir = Path(cfg.paths.output_dir)
    resume = str(cfg.get("resume") or "full")  # full | weights (checked by the schema)
    ckpt_path = resolve_ckpt_path(cfg.ckpt_path, cfg, named_dir=output_dir, training=True) if cfg.get("ckpt_path") \
        else requeued_checkpoint(output_dir)  # a requeued SLURM job continues its run
    check_training_folder(output_dir, cfg, ckpt_path)  # the command line checked it before Hydra wrote
    ensure_writable_dir(output_dir)

    datamodule = training_data(cfg)  # before the model is built or a logger starts

    wandb_id = None
    ckpt: dict[str, Any] | None = None
    if ckpt_path:
        ckpt = load_checkpoint_dict(ckpt_path, verify=not checked(cfg))  # the launch checked its CRC
        wandb_id = ckpt.get("wandb_run_id") if resume == "full" else None

    module: FlowLitModule = instantiate_module(cfg.module)
    changes: list[str] = []
    resumed_step = int(ckpt.get("global_step", -1)) if ckpt is not None else None
    if ckpt is not None:
        check_state_dict(module, ckpt, ckpt_path)  # a different architecture: which keys/shapes differ
        if resume == "weights":
            module.load_state_dict(ckpt["state_dict"])  # weights, EMA and ActNorm's initialised flags
        elif cfg.train:
            changes = optimizer_changes(module.configured_optimizer(), ckpt, ckpt_path)
            if rank_zero_only.rank == 0:  # the history continues from the checkpoint's step
                truncate_history(output_dir / "metrics.json", int(ckpt.get("global_step", 0)))
        del ckpt
    stop = GracefulStop()
    callbacks = instantiate_callbacks(cfg.get("callbacks")) + list(extra_callbacks or [])
    callbacks += [stop]
    loggers = instantiate_loggers(plain(cfg.get("logger")), wandb_resume_id=wandb_id)
    plugins = [AtomicCheckpointIO()] if cfg.atomic_checkpoints else None
    trainer = instantiate_trainer(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=plugins)
    batch = per_process_batch(cfg, trainer, datamodule)

    model = module.model
    counts = module.parameter_counts()
    extra = f" + {counts['dequantizer']:,} of the dequantiser" if counts["dequantizer"] else ""
    hparams = {**plain(cfg), "parameters": counts, "effective_batch_size": batch * trainer.world_size}
    for lg in loggers:
        lg.log_hyperparams(hparams)
    say(
        f"{type(model).__name__} conv={model.conv} coupling={model.coupling} L={cfg.model.levels} K={cfg.model.depth} "
        f"width={cfg.model.width}: {counts['total']:,} parameters{extra} | data {type(datamodule).__name__} "
        f"{model.in_channels}x{model.image_size}x{model.image_size}, {model.n_bits} bits | "
        f"batch {batch} per process x {trainer.world_size} process(es) = {batch * trainer.world_size} | "
        f"output {output_dir}"
    )
    if ckpt_path and resume == "weights":
        say(f"New run from the weights of {ckpt_path} (fresh optimizer and schedule, step 0)")
    elif ckpt_path:
        say(f"Resuming from {ckpt_path} at step {resumed_step}" + (f" (W&B run {wandb_id})" if wandb_id else ""))
        if changes:
            say(f"Optimizer settings changed on resume (yours apply): {', '.join(changes)}")

    metrics_path = output_dir / "metrics.json"
    result: dict[str, Any] = {}
    try:
        if cfg.train:
            fit_from = str(ckpt_path) if ckpt_path and resume == "full" else None
            try:
                trainer.fit(module, datamodule=datamodule, ckpt_path=fit_from, weights_only=False)
            except (SystemExit, KeyboardInterrupt) as err:  # Lightning's stop on a signal (and ours on SIGINT)
                if stop.signal_name is None:
                    raise
                _requeue(stop, trainer)
                if not trainer.is_global_zero:  # rank 0 says how to resume
                    raise SystemExit(128 + getattr(signal, stop.signal_name)) from err
                raise _interrupted(stop.signal_name, trainer) from err
            _requeue(stop, trainer)  # the signal came as training ended
            if fit_from and trainer.global_step == resumed_step:
                say(_nothing_trained(trainer))
        best, last = checkpoint_paths(trainer)
        if not cfg.train and ckpt_path:  # train=false ckpt_path=...: test that checkpoint
            best = str(ckpt_path)
        if cfg.test:
            if best:
                trainer.test(module, datamodule=datamodule, ckpt_path=best, weights_only=False)
            else:
                say("No best checkpoint (no validation or checkpointing): testing the current weights")
                trainer.test(module, datamodule=datamodule)
        if trainer.is_global_zero:
            result = _finish(cfg, trainer, module, best, last, metrics_path, time.time() - start)
    finally:
        finish_wandb()
    return result


def _nothing_trained(trainer: Trainer) -> str:
    """The line after a resume that trained no step: the checkpoint already reached the run's length."""
    if trainer.max_steps not in (None, -1) and trainer.global_step >= trainer.max_steps:
        limit, more = f"trainer.max_steps={trainer.max_steps}", f"trainer.max_steps={trainer.max_steps * 2}"
    else:
        epochs = trainer.max_epochs
        limit, more = f"trainer.max_epochs={epochs}", f"trainer.max_epochs={2 * epochs if epochs else 1}"
    return (f"Nothing to train: the checkpoint is at step {trainer.global_step}, epoch {trainer.current_epoch}, "
            f"which already reaches {limit} (training stops at whichever limit comes first): resume with a larger "
            f"one, e.g. {more}")


def _interrupted(name: str, trainer: Trainer) -> TrainingInterrupted:
    """The one line after SIGTERM/SIGINT: where the checkpoint is and the command that resumes."""
    _, last = checkpoint_paths(trainer)
    if not last:
        return TrainingInterrupted(f"{name} at step {trainer.global_step} before any checkpoint was written", getattr(signal, name))
    try:
        from hydra.core.hydra_config import HydraConfig

        given = [o for o in HydraConfig.get().overrides.task if not o.startswith(("ckpt_path=", "resume="))]
    except ValueError:  # not launched by Hydra
        given = ["<the same settings>"]
    launcher = "python"  # the command that started this process (DDP: each rank's launcher)
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        launcher = "torchrun <as before>"
    elif SLURMEnvironment.detect():
        launcher = "srun <as before> python"
    command = " ".join([f"{launcher} src/train.py", *map(shlex.quote, given), shlex.quote(f"ckpt_path={last}")])
    return TrainingInterrupted(
        f"{name} at epoch {trainer.current_epoch}, step {trainer.global_step}: saved {last}; resume with: {command}",
        getattr(signal, name),
    )


def _requeue(stop: GracefulStop, trainer: Trainer) -> None:
    """After fit, when submitit's preemption signal came during it (last.ckpt saved at the step it stopped
    at): one line, then submitit's requeue, which exits on global rank 0."""
    if not stop.requeues:
        return
    _, last = checkpoint_paths(trainer)
    where = f"saved {last}; now submitit's requeue (the requeued job resumes from it)" if last else \
        "no checkpoint written yet; now submitit's requeue (the requeued job starts afresh)"
    say(f"{stop.preempt.name} (submitit: preemption or time limit) at epoch {trainer.current_epoch}, "
        f"step {trainer.global_step}: {where}")
    stop.requeue()


def _finish(cfg, trainer, module, best, last, metrics_path, seconds) -> dict[str, Any]:
    """Rank 0: final sample grid from the best weights, metrics.json, summary lines."""
    output_dir = Path(cfg.paths.output_dir)
    samples_png = None
    scfg = cfg.get("samples") or {}
    if int(scfg.get("n", 0) or 0) > 0:
        final = load_module(best, ckpt=load_checkpoint_dict(best, verify=False)) if best else module.eval()  # written just now
        grid, _ = sample_grid(final.eval_model, int(scfg.n), list(scfg.temperatures), int(scfg.seed))
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
            "conv": module.model.conv,
            "coupling": module.model.coupling,
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
