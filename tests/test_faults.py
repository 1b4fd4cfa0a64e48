"""Reliability (issue #6): faults during training, numerical health and determinism.

* a non-finite loss or gradient skips the step (no parameter, optimiser-state or EMA update) and
  is counted; ``max_bad_steps`` consecutive ones stop training, the last checkpoint intact;
* checkpoints are written atomically: a failed write (ENOSPC) leaves the previous file and no
  temporary file; an unwritable output folder is a clear error;
* a ``src/train.py`` process killed with SIGKILL resumes with ``ckpt_path=last`` and ends with
  exactly the weights and optimiser state of an uninterrupted run (same steps, same data order);
* validation logs the share of non-finite samples and the inverse residual, and warns above the
  thresholds; ``src/sample.py`` reports non-finite samples;
* the same seed and config give the same bits/dim on the CPU;
* a few hundred steps (~10 s) at a high learning rate never make a CInC layer singular.
"""
from __future__ import annotations

import errno
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback

from cincflow import InverseAccuracyWarning
from cincflow.errors import CheckpointWriteError, ConfigError, NonFiniteTrainingError
from cincflow.training import FlowLitModule
from cincflow.jobs import sample as sample_job
from cincflow.jobs import train

ROOT = Path(__file__).resolve().parents[1]
TINY = ["experiment=quickstart", "debug=smoke", "logger=none", "trainer.enable_progress_bar=false"]


class StepLog(Callback):
    """train/bpd of every step, parameters / optimiser state / EMA count around chosen steps."""

    def __init__(self, watch: set[int] = frozenset()):
        self.bpd: list[float] = []
        self.watch = set(watch)
        self.before: dict[int, tuple] = {}
        self.after: dict[int, tuple] = {}

    @staticmethod
    def _state(trainer, pl_module) -> tuple:
        params = [p.detach().clone() for p in pl_module.model.parameters()]
        opt = trainer.optimizers[0].state
        steps = sorted(float(s["step"]) for s in opt.values()) if opt else []
        ema = int(pl_module.ema.num_updates) if pl_module.ema is not None else None
        return params, steps, ema

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step in self.watch:
            self.before[trainer.global_step] = self._state(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.bpd.append(float(outputs["loss"]))
        step = trainer.global_step - 1  # the step that just ran
        if step in self.watch:
            self.after[step] = self._state(trainer, pl_module)


def _inject(monkeypatch, nan_loss_steps: set[int], nan_grad_steps: set[int]) -> None:
    """NaN loss (through the flow's output) at some global steps, a NaN gradient at others."""
    original = FlowLitModule.training_step

    def training_step(self, batch, batch_idx):
        if self.trainer.global_step in nan_loss_steps:
            model = self.model
            real = model.bits_per_dim
            model.bits_per_dim = lambda x, **kw: real(x, **kw) * float("nan")
            try:
                return original(self, batch, batch_idx)
            finally:
                del model.bits_per_dim
        return original(self, batch, batch_idx)

    def on_after_backward(self):
        if self.trainer.global_step in nan_grad_steps:
            self.model.top_prior.grad[0, 0] = float("inf")

    monkeypatch.setattr(FlowLitModule, "training_step", training_step)
    monkeypatch.setattr(FlowLitModule, "on_after_backward", on_after_backward, raising=False)


def test_nonfinite_steps_are_skipped_and_counted(compose_cfg, tmp_path, monkeypatch):
    _inject(monkeypatch, nan_loss_steps={2}, nan_grad_steps={4})
    log = StepLog(watch={1, 2, 4})
    cfg = compose_cfg("train", [*TINY, "trainer.limit_train_batches=3", "trainer.max_epochs=2", "test=false"], tmp_path)
    result = train(cfg, extra_callbacks=[log])
    assert result["global_step"] == 6 and math.isnan(log.bpd[2]) and math.isfinite(log.bpd[4])
    for step in (2, 4):  # skipped: no parameter, optimiser-state or EMA update
        (p0, s0, e0), (p1, s1, e1) = log.before[step], log.after[step]
        assert all(torch.equal(a, b) for a, b in zip(p0, p1)), f"parameters changed in skipped step {step}"
        assert s0 == s1 and e0 == e1, (step, s0, s1, e0, e1)
    (p0, s0, e0), (p1, s1, e1) = log.before[1], log.after[1]  # a good step does update
    assert not all(torch.equal(a, b) for a, b in zip(p0, p1)) and s1[0] == s0[0] + 1 and e1 == e0 + 1
    assert result["train/skipped_steps"] == 2 and result["train/consecutive_bad_steps"] == 0
    assert math.isfinite(result["val/bpd"])
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["nonfinite_steps"] == {"skipped": 2, "consecutive": 0}
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_consecutive_bad_steps_stop_training_and_keep_the_checkpoint(compose_cfg, tmp_path, monkeypatch):
    _inject(monkeypatch, nan_loss_steps=set(range(3, 100)), nan_grad_steps=set())
    last = tmp_path / "checkpoints" / "last.ckpt"
    saved = {}

    class Snapshot(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if last.is_file():
                saved["bytes"] = last.read_bytes()

    cfg = compose_cfg("train", [*TINY, "trainer.limit_train_batches=3", "trainer.max_epochs=5", "module.max_bad_steps=3",
                                "test=false"], tmp_path)
    with pytest.raises(NonFiniteTrainingError, match="3 consecutive steps had a non-finite loss or gradient"):
        train(cfg, extra_callbacks=[Snapshot()])
    assert saved["bytes"] == last.read_bytes(), "the last good checkpoint was rewritten"
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_failed_checkpoint_write_keeps_the_previous_one(compose_cfg, tmp_path, monkeypatch):
    """ENOSPC in the middle of writing last.ckpt: a clear error, the previous last.ckpt intact and
    loadable, no temporary file left."""
    real_save = torch.save
    calls = {"last": 0}

    def failing_save(obj, f, *args, **kwargs):
        name = os.path.basename(getattr(f, "name", str(f)))
        if name.startswith(".last.ckpt."):
            calls["last"] += 1
            if calls["last"] >= 3:  # the run's start, epoch 0, then epoch 1 fails
                f.write(b"PK\x03\x04 partial")
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    cfg = compose_cfg("train", [*TINY, "trainer.max_epochs=3", "test=false"], tmp_path)
    with pytest.raises(CheckpointWriteError, match="No space left on device.*previous checkpoint there is unchanged"):
        train(cfg)
    ckpt_dir = tmp_path / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.iterdir() if p.name.startswith(".")) == []
    ckpt = torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 3


def test_unwritable_output_folder_is_a_clear_error(compose_cfg, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    cfg = compose_cfg("train", TINY, blocker / "run")
    with pytest.raises(ConfigError, match="output folder .* is not writable"):
        train(cfg)
    assert blocker.read_text() == "x"


# ---------------------------------------------------------------------------- SIGKILL + resume
KILL_ARGS = ["experiment=quickstart", "debug=smoke", "logger=none", "trainer.enable_progress_bar=false",
             "task_name=killtest", "trainer.limit_train_batches=4", "samples.n=0", "test=false",
             "module.ema_decay=0.9", "scheduler.warmup_steps=3", "optimizer.lr=3e-3"]


def _last_epoch(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"])
    except FileNotFoundError:
        return -1


@pytest.mark.slow  # long: `make test-slow`
def test_sigkill_then_resume_with_ckpt_path_last_matches_an_uninterrupted_run(compose_cfg, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    killed_dir = tmp_path / "outputs" / "killtest" / "a"
    cmd = [sys.executable, str(ROOT / "src" / "train.py"), *KILL_ARGS, f"paths.log_dir={tmp_path}"]
    proc = subprocess.Popen([*cmd, "trainer.max_epochs=100000", f"hydra.run.dir={killed_dir}"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = killed_dir / "checkpoints" / "last.ckpt"
    try:
        deadline = time.time() + 180
        while _last_epoch(last) < 1:  # every read of last.ckpt must succeed: it is replaced atomically
            assert proc.poll() is None and time.time() < deadline, "training did not reach epoch 2"
            time.sleep(0.05)
        time.sleep(0.15)  # most likely in the middle of an epoch now
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    ckpt = torch.load(last, map_location="cpu", weights_only=False)  # complete, never half-written
    epoch, step = int(ckpt["epoch"]), int(ckpt["global_step"])
    assert step == 4 * (epoch + 1)
    final_epochs = epoch + 3

    # the resume continues in the killed run's folder
    res = subprocess.run([*cmd, "ckpt_path=last", f"trainer.max_epochs={final_epochs}"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"Resuming from {last}" in res.stdout
    resumed = torch.load(last, map_location="cpu", weights_only=False)
    assert resumed["global_step"] == 4 * final_epochs

    straight_dir = tmp_path / "straight"
    cfg = compose_cfg("train", [*KILL_ARGS, f"trainer.max_epochs={final_epochs}"], straight_dir)
    train(cfg)
    straight = torch.load(straight_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert straight["global_step"] == resumed["global_step"]
    assert straight["state_dict"].keys() == resumed["state_dict"].keys()
    for key, value in straight["state_dict"].items():  # weights and EMA: same steps, same data order
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=1e-6, msg=key)
    opt_a, opt_b = straight["optimizer_states"][0]["state"], resumed["optimizer_states"][0]["state"]
    assert opt_a.keys() == opt_b.keys()
    for idx in opt_a:
        for name, value in opt_a[idx].items():
            torch.testing.assert_close(opt_b[idx][name], value, rtol=0, atol=1e-6, msg=f"{idx}.{name}")


# ---------------------------------------------------------------------------- numerical health
def test_validation_logs_numerical_health_and_warns_over_thresholds(compose_cfg, tmp_path):
    cfg = compose_cfg("train", [*TINY, "test=false", "callbacks.samples.recon_err_warn=-1",
                                "callbacks.samples.residual_warn=-1", "callbacks.samples.error_bound_warn=-1"], tmp_path)
    with pytest.warns(RuntimeWarning, match="val/recon_err_max .* exceeds its threshold") as record:
        result = train(cfg)
    assert any("val/inverse_residual_max" in str(w.message) for w in record)
    assert any(w.category is InverseAccuracyWarning and "(layer levels." in str(w.message) for w in record)
    assert result["val/nonfinite_samples"] == 0.0
    assert 0 <= result["val/inverse_residual_max"] <= result["val/inverse_error_bound"] < 1e-3
    assert result["val/recon_err_max"] < 1e-3


def test_sample_script_reports_nonfinite_samples(compose_cfg, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    train(compose_cfg("train", [*TINY, "test=false", "samples.n=0"], run))
    import cincflow.viz as viz  # the sampling loop of the jobs and callbacks

    real = viz.sample_with_check

    def with_a_nan(model, n, *args, **kwargs):
        x, report = real(model, n, *args, **kwargs)
        x = x.clone()
        x[0, 0, 0, 0] = float("nan")
        return x, report

    monkeypatch.setattr(viz, "sample_with_check", with_a_nan)
    cfg = compose_cfg("sample", [f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "n=5", "temperature=[0.5,1.0]",
                                 "device=cpu", "num_threads=1"], tmp_path / "s")
    with warnings.catch_warnings():
        warnings.simplefilter("error", InverseAccuracyWarning)  # a trained model's inverses are accurate
        record = sample_job(cfg)
    assert record["nonfinite_samples"] == 2 and record["nonfinite_share"] == pytest.approx(0.2)
    assert record["inverse_residual_max"] <= record["inverse_error_bound"] < 1e-3 and record["float64_layers"] == []
    assert record["inverse_error_bound_layer"].startswith("levels.")
    assert "non-finite samples: 2 of 10" in capsys.readouterr().out


# ---------------------------------------------------------------------------- determinism
def test_same_seed_same_bits_per_dim(compose_cfg, tmp_path):
    runs = []
    for name in ("a", "b"):
        log = StepLog()
        cfg = compose_cfg("train", [*TINY, "trainer.limit_train_batches=4", "trainer.max_epochs=2", "samples.n=0"],
                          tmp_path / name)
        result = train(cfg, extra_callbacks=[log])
        runs.append((log.bpd, result["val/bpd"], result["test/bpd"]))
    (bpd_a, val_a, test_a), (bpd_b, val_b, test_b) = runs
    assert len(bpd_a) == 8
    assert bpd_a == pytest.approx(bpd_b, abs=1e-6, rel=0)
    assert val_a == pytest.approx(val_b, abs=1e-6, rel=0) and test_a == pytest.approx(test_b, abs=1e-6, rel=0)


# ---------------------------------------------------------------------------- long run (~300 steps)
@pytest.mark.slow  # long: `make test-slow`
def test_long_run_at_high_lr_keeps_every_cinc_layer_invertible(compose_cfg, tmp_path):
    from cincflow.layers.causal_weight import CausalWeight

    cfg = compose_cfg("train", [*TINY, "model.depth=2", "model.width=16", "optimizer.lr=1e-2", "scheduler.warmup_steps=10",
                                "trainer.limit_train_batches=null", "trainer.max_epochs=14", "samples.n=0",
                                "trainer.limit_val_batches=2", "module.max_bad_steps=1"], tmp_path)
    log = StepLog()
    result = train(cfg, extra_callbacks=[log])
    assert result["global_step"] >= 300 and all(math.isfinite(v) for v in log.bpd)
    assert result["train/skipped_steps"] == 0
    module = FlowLitModule.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    for model in (module.model, module.ema.module):
        layers = [m for m in model.modules() if isinstance(m, CausalWeight)]
        assert layers
        for layer in layers:
            diag = layer.log_diag.exp()
            assert torch.isfinite(diag).all() and (diag > 0).all()
    images = next(iter(_val_loader(cfg)))
    for model in (module.model, module.ema.module):
        model.eval()
        x = torch.rand(images.shape) * 0.5 - 0.25
        with torch.no_grad():
            zs, logdet = model.encode(x)
            assert torch.isfinite(logdet).all()
            assert (model.decode(zs) - x).abs().max() < 1e-3
    assert result["val/recon_err_max"] < 1e-3


def _val_loader(cfg):
    from hydra.utils import instantiate

    dm = instantiate(cfg.data)
    dm.setup("fit")
    return dm.val_dataloader()
