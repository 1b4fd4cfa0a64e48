"""The training system on the real configs (conf/), in-process, with tiny models on data=digits:
every conv x coupling trains with validation and test, bits/dim falls, resume continues without
re-initialising ActNorm, W&B offline writes a real run folder, the config groups behave."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback
from omegaconf import open_dict

from cincflow.layers.actnorm import ActNorm
from cincflow.layers.solvers import make_solver
from cincflow.layers.step import COUPLINGS
from cincflow.targets import config_of
from flowcheck import choices
from cincflow.training import FlowLitModule
from cincflow.jobs import train

# a few optimiser steps of a tiny model; validation and test on one batch each
TINY = [
    "experiment=quickstart",
    "debug=smoke",  # conf/debug/smoke.yaml: depth 1, width 8, 3 steps, 1 val and 1 test batch, CPU
    "logger=none",
    "trainer.enable_progress_bar=false",
]


class StepRecorder(Callback):
    """Records the training loss of every step and the validation bits/dim of every epoch."""

    def __init__(self):
        self.train_bpd: list[float] = []
        self.val_bpd: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.train_bpd.append(float(outputs["loss"]))

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.val_bpd.append(float(trainer.callback_metrics["val/bpd"]))


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("coupling", choices("coupling"))
@pytest.mark.parametrize("conv", choices("conv"))
def test_every_conv_and_coupling_trains_validates_and_tests(compose_cfg, tmp_path, conv, coupling):
    cfg = compose_cfg("train", [*TINY, f"conv={conv}", f"coupling={coupling}"], tmp_path)
    result = train(cfg)

    assert result["conv"] == conv and result["coupling"] == coupling
    assert result["global_step"] == 3
    for key in ("train/bpd", "val/bpd", "test/bpd"):
        assert math.isfinite(result[key]) and 0 < result[key] < 10, (key, result[key])
    # the model got its dimensions from the data (digits: 1 x 8 x 8, 5 bits)
    assert (cfg.model.in_channels, cfg.model.image_size, cfg.model.n_bits) == (1, 8, 5)
    # checkpoints (best by val/bpd and last), the test ran on the best one
    assert Path(result["best_checkpoint"]).is_file() and Path(result["last_checkpoint"]).name == "last.ckpt"
    # sample grids (fixed noise) and reconstructions with a small error
    assert Path(result["samples_png"]).is_file()
    assert (tmp_path / "samples" / "epoch_000.png").is_file()
    assert (tmp_path / "samples" / "recon_epoch_000.png").is_file()
    assert result["val/recon_err_max"] < 1e-3
    on_disk = _metrics(tmp_path)
    assert on_disk["test/bpd"] == pytest.approx(result["test/bpd"])
    assert len(on_disk["history"]) == 1
    # lr, gradient norm and throughput were logged
    assert result["train/lr"] > 0 and result["train/grad_norm"] > 0 and result["train/images_per_sec"] > 0


def test_bpd_decreases_on_digits(compose_cfg, tmp_path):
    cfg = compose_cfg(
        "train",
        [*TINY, "model.depth=2", "model.width=16", "trainer.max_epochs=3", "trainer.limit_train_batches=15",
         "trainer.limit_val_batches=3", "module.ema_decay=null", "scheduler.warmup_steps=5", "test=false"],
        tmp_path,
    )
    recorder = StepRecorder()
    train(cfg, extra_callbacks=[recorder])
    steps = recorder.train_bpd
    assert len(steps) == 45 and all(math.isfinite(v) for v in steps)
    first, last = sum(steps[:5]) / 5, sum(steps[-5:]) / 5
    assert last < first - 0.3, (first, last)
    assert len(recorder.val_bpd) == 3
    assert recorder.val_bpd[-1] < recorder.val_bpd[0], recorder.val_bpd


def _actnorm_state(module: torch.nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for a in module.modules() if isinstance(a, ActNorm) for t in (a.loc, a.log_scale)]


def test_resume_continues_and_never_reinitialises_actnorm(compose_cfg, tmp_path, monkeypatch):
    calls = []
    original_init = FlowLitModule.initialize_actnorm

    def counting_init(self, images):
        calls.append(images.shape[0])
        return original_init(self, images)

    monkeypatch.setattr(FlowLitModule, "initialize_actnorm", counting_init)
    first = tmp_path / "first"
    cfg = compose_cfg("train", [*TINY, "trainer.limit_train_batches=2", "trainer.max_epochs=2", "test=false"], first)
    result = train(cfg)
    assert calls == [64], "a fresh run initialises ActNorm once, on actnorm_init_images images"
    last = first / "checkpoints" / "last.ckpt"
    assert result["global_step"] == 4 and last.is_file()
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 4

    calls.clear()
    seen = {}

    class Probe(Callback):
        def on_train_start(self, trainer, pl_module):
            seen["start_step"] = trainer.global_step
            seen["actnorm"] = _actnorm_state(pl_module.model)
            seen["ema_updates"] = int(pl_module.ema.num_updates)
            seen["sched_epoch"] = trainer.lr_scheduler_configs[0].scheduler.last_epoch
            seen["adam_steps"] = [int(s["step"]) for s in trainer.optimizers[0].state.values()][:1]
            seen["foreach"] = [g["foreach"] for g in trainer.optimizers[0].param_groups]

    cfg2 = compose_cfg(  # a resume continues in the run's own folder
        "train", [*TINY, "trainer.limit_train_batches=2", "trainer.max_epochs=4", "test=false", f"ckpt_path={last}"],
        first,
    )
    result2 = train(cfg2, extra_callbacks=[Probe()])

    assert calls == [], "ActNorm was re-initialised on resume"
    assert seen["start_step"] == 4 and result2["global_step"] == 8
    assert seen["ema_updates"] == 4 and seen["sched_epoch"] == 4 and seen["adam_steps"] == [4]
    assert seen["foreach"] == [True]  # conf/train.yaml's multi-tensor optimiser step, kept by the resume
    restored = [t for name, t in ckpt["state_dict"].items() if name.startswith("model.") and
                (name.endswith(".loc") or name.endswith(".log_scale"))]
    assert len(restored) == len(seen["actnorm"])
    for a, b in zip(seen["actnorm"], restored):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 8


def test_wandb_offline_writes_a_run_folder_with_metrics_and_images(compose_cfg, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_MODE")  # no credentials, no network: it must go offline by itself
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    cfg = compose_cfg("train", [*TINY, "logger=wandb"], tmp_path)
    train(cfg)
    out = capsys.readouterr().out
    assert out.count("W&B: logging offline") == 1
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((tmp_path / "wandb").iterdir())
    run = runs[0]
    run_files = list(run.glob("run-*.wandb"))
    assert len(run_files) == 1, "no W&B run file"
    images = list((run / "files" / "media" / "images").rglob("*.png"))
    assert images, "no image logged to W&B"
    history, config_keys = {}, set()
    deadline = time.time() + 60  # the W&B service may still be flushing the log after wandb.finish()
    while not any(r.WhichOneof("record_type") == "exit" for r in _wandb_records(run_files[0])):
        assert time.time() < deadline, "the W&B run log was never completed"
        time.sleep(0.5)
    for record in _wandb_records(run_files[0]):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.update({item.key or "/".join(item.nested_key): item.value_json for item in record.history.item})
        elif kind == "config":
            config_keys.update(item.key for item in record.config.update)
    for key in ("train/bpd", "val/bpd", "test/bpd", "train/lr", "train/grad_norm"):
        assert math.isfinite(float(history[key])), key
    assert "val/samples/filenames" in history and "val/reconstructions/filenames" in history
    assert {"model", "optimizer", "scheduler", "data", "trainer"} <= config_keys

    # the run id is in the checkpoint; resuming from it continues the same W&B run
    run_id = run.name.rsplit("-", 1)[-1]
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["wandb_run_id"] == run_id
    train(compose_cfg("train", [*TINY, "logger=wandb", "trainer.max_epochs=2", f"ckpt_path={last}"], tmp_path))
    assert {p.name.rsplit("-", 1)[-1] for p in (tmp_path / "wandb").glob("offline-run-*")} == {run_id}


def _wandb_records(path: Path):
    """The protobuf records of a W&B transaction log (a LevelDB-style log after a 7-byte header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        if pos + 7 + length > len(data):  # still being written
            return
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:  # full
            yield pb.Record.FromString(chunk)
        elif kind == 2:  # first
            pending = chunk
        elif kind == 3:  # middle
            pending += chunk
        elif kind == 4:  # last
            yield pb.Record.FromString(pending + chunk)


def test_unknown_group_value_lists_the_choices(compose_cfg, tmp_path):
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException) as err:
        compose_cfg("train", ["conv=nope"], tmp_path)
    message = str(err.value)
    for choice in ("cinc", "emerging", "glow"):
        assert choice in message


def test_config_groups_compose(compose_cfg, tmp_path):
    cfg = compose_cfg("train", ["conv=emerging", "coupling=quad"], tmp_path)
    assert cfg.model._target_ == "cincflow.Glow"
    assert (cfg.model.conv._target_, cfg.model.coupling._target_) == ("cincflow.layers.step.emerging",
                                                                       "cincflow.layers.quad.QuadCoupling")
    for coupling, cls in COUPLINGS.items():  # each choice is a _partial_ of the class the name stands for
        assert dict(compose_cfg("train", [f"coupling={coupling}"], tmp_path).model.coupling) == config_of(cls)
    make_solver(cfg.model.conv.solver)  # the default solver is a valid one
    assert (cfg.model.levels, cfg.model.depth, cfg.model.width) == (3, 32, 512)  # paper defaults
    assert cfg.optimizer._target_ == "torch.optim.Adamax" and cfg.optimizer.lr == 1e-3 and cfg.scheduler.warmup_epochs == 10
    cinc = dict(compose_cfg("train", ["conv=cinc"], tmp_path).model.conv)
    make_solver(cinc.pop("solver"))
    assert cinc == {"_target_": "cincflow.layers.step.cinc", "_partial_": True, "kernel_size": 3,
                    "fixed_diagonal": False, "init_std": 0.01}
    assert dict(compose_cfg("train", ["conv=glow"], tmp_path).model.conv) == {
        "_target_": "cincflow.layers.step.glow", "_partial_": True}
    ddp = compose_cfg("train", ["trainer=ddp"], tmp_path).trainer
    assert (ddp.accelerator, ddp.devices, ddp.strategy) == ("gpu", -1, "ddp")
    sim = compose_cfg("train", ["trainer=ddp_sim"], tmp_path).trainer
    assert (sim.accelerator, sim.devices, sim.strategy) == ("cpu", 2, "ddp_spawn")
    for logger in ("wandb", "csv", "none", "wandb_csv"):
        compose_cfg("train", [f"logger={logger}"], tmp_path)
    for debug in ("default", "fdr", "limit", "overfit", "smoke"):
        assert compose_cfg("train", [f"debug={debug}"], tmp_path).trainer.accelerator == "cpu"
    for trainer in ("default", "cpu", "gpu"):
        assert compose_cfg("train", [f"trainer={trainer}"], tmp_path).trainer.devices == 1
    paper = compose_cfg("train", ["experiment=cifar10_paper", "coupling=quad"], tmp_path)
    assert paper.model.coupling._target_.endswith("QuadCoupling") and paper.data.batch_size == 64
    assert paper.trainer.devices == 2 and paper.module.scheduler_interval == "step"
    assert compose_cfg("train", ["scheduler=step"], tmp_path).module.scheduler_interval == "epoch"


@pytest.mark.parametrize("conv, option", [("glow", "init_std"), ("cinc", "init_sd"), ("emerging", "kernel_size")])
def test_an_option_the_conv_does_not_have_fails_loudly(compose_cfg, tmp_path, conv, option):
    """Every conv choice is a _partial_ factory config: an option it does not take is an error
    naming the option (Glow's 1x1 conv takes none), never silently dropped."""
    from cincflow.errors import ConfigError
    from cincflow.training.restore import build_model

    cfg = compose_cfg("train", ["experiment=quickstart", "debug=smoke", f"conv={conv}", f"+model.conv.{option}=3"], tmp_path)
    with open_dict(cfg.model):
        cfg.model.update(in_channels=1, image_size=8, n_bits=5)
    with pytest.raises(ConfigError, match=f"invalid model configuration: .*unexpected keyword argument '{option}'"):
        build_model(cfg.model)
    with open_dict(cfg.model):
        del cfg.model.conv[option]
    assert build_model(cfg.model).conv == conv  # the same config without it builds


def test_linear_warmup_over_epochs(compose_cfg, tmp_path):
    """scheduler.warmup_epochs=1 with 3 batches per epoch: lr = base * (step + 1) / 3, then constant."""
    lrs = []

    class LR(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    cfg = compose_cfg(
        "train", [*TINY, "scheduler.warmup_steps=null", "scheduler.warmup_epochs=1", "optimizer.lr=3e-3", "trainer.max_epochs=2",
                  "optimizer._target_=torch.optim.Adam", "test=false"], tmp_path,
    )
    train(cfg, extra_callbacks=[LR()])
    assert lrs == pytest.approx([1e-3, 2e-3, 3e-3, 3e-3, 3e-3, 3e-3])


def test_fast_dev_run_debug_config(compose_cfg, tmp_path):
    cfg = compose_cfg("train", ["experiment=quickstart", "debug=fdr", "model.depth=1", "model.width=8",
                                "trainer.enable_progress_bar=false"], tmp_path)
    assert cfg.trainer.fast_dev_run is True and cfg.trainer.detect_anomaly is True and not cfg.logger
    result = train(cfg)
    assert math.isfinite(result["test/bpd"]) and result["best_checkpoint"] is None


def test_last_checkpoint_follows_training_not_the_best(compose_cfg, tmp_path):
    """last.ckpt is rewritten at every validation even when val/bpd does not improve (here "best"
    means the highest val/bpd, i.e. the first epoch of a run whose val/bpd falls)."""
    cfg = compose_cfg("train", [*TINY, "trainer.max_epochs=3", "callbacks.model_checkpoint.mode=max", "test=false",
                                "optimizer.lr=3e-3"], tmp_path)
    result = train(cfg)
    last = torch.load(result["last_checkpoint"], map_location="cpu", weights_only=False)
    best = torch.load(result["best_checkpoint"], map_location="cpu", weights_only=False)
    assert last["global_step"] == result["global_step"] == 9
    assert best["global_step"] < 9 and Path(result["best_checkpoint"]).name == "epoch_000.ckpt"


def test_csv_logger_appends_columns_from_another_process(tmp_path):
    """ddp_spawn runs fit and test in fresh processes: the second writer must extend the first's
    metrics.csv, not rewrite it with its own columns only."""
    import csv

    from cincflow.training.loggers import CSVLogger

    first = CSVLogger(tmp_path, name="csv", version=0)
    first.log_metrics({"train/bpd": 5.0}, step=0)
    first.save()
    second = CSVLogger(tmp_path, name="csv", version=0)  # as in a newly spawned process
    second.log_metrics({"test/bpd": 4.0}, step=1)
    second.save()
    rows = list(csv.DictReader(open(tmp_path / "csv" / "version_0" / "metrics.csv")))
    assert [(r["train/bpd"], r["test/bpd"]) for r in rows] == [("5.0", ""), ("", "4.0")]
