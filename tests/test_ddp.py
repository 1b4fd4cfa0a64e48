"""trainer=ddp_sim debug=smoke: two CPU processes (gloo, ddp_spawn) train two steps on the real configs; the
ActNorm initialisation and every weight end identical on both ranks, the per-process batch is
global_batch_size / 2. Under torchrun, SIGTERM leaves last.ckpt at the step the ranks stopped at."""
from __future__ import annotations

import math
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback

from cincflow.jobs import train
from cli import ROOT, launch_env


class RankDump(Callback):
    """Each rank writes its state after the ActNorm init and after training. To prove the init is
    synchronised (not merely computed identically), every rank dequantises its init images with a
    different seed."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.batch_sizes: list[int] = []

    def on_fit_start(self, trainer, pl_module):  # runs before the module's own on_fit_start
        pl_module.hparams.actnorm_init_seed = 1000 + trainer.global_rank

    def _dump(self, trainer, pl_module, tag):
        state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        torch.save(
            {"state": state, "step": trainer.global_step, "world_size": trainer.world_size,
             "batch_sizes": list(self.batch_sizes)},
            Path(self.out_dir) / f"{tag}_rank{trainer.global_rank}.pt",
        )

    def on_train_start(self, trainer, pl_module):
        self._dump(trainer, pl_module, "start")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batch_sizes.append(int(batch.shape[0]))

    def on_train_end(self, trainer, pl_module):
        self._dump(trainer, pl_module, "end")


@pytest.mark.parametrize("dequant", ["uniform", pytest.param("variational", marks=pytest.mark.slow)])
def test_ddp_sim_two_processes_identical_weights(dequant, compose_cfg, tmp_path):
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    cfg = compose_cfg(
        "train",
        [
            # the README's command (python src/train.py trainer=ddp_sim experiment=quickstart debug=smoke):
            # debug=smoke (depth 1, width 8, 1 epoch, 1 val batch, no sanity check) keeps the 2 processes
            "trainer=ddp_sim", "experiment=quickstart", "debug=smoke", "logger=none", "trainer.limit_train_batches=2",
            "trainer.enable_progress_bar=false", "global_batch_size=32", "test=false", f"dequant={dequant}",
        ],
        tmp_path / "run",
    )
    result = train(cfg, extra_callbacks=[RankDump(str(dumps))])

    assert result["global_step"] == 2 and math.isfinite(result["val/bpd"])
    for tag in ("start", "end"):
        r0 = torch.load(dumps / f"{tag}_rank0.pt", weights_only=False)
        r1 = torch.load(dumps / f"{tag}_rank1.pt", weights_only=False)
        assert r0["world_size"] == r1["world_size"] == 2
        assert r0["state"].keys() == r1["state"].keys()
        actnorm = [k for k in r0["state"] if k.endswith((".loc", ".log_scale", ".initialized"))]
        assert len(actnorm) > 10
        for key in r0["state"]:
            torch.testing.assert_close(r0["state"][key], r1["state"][key], rtol=0, atol=0, msg=f"{tag}: {key} differs")
        assert all(bool(r0["state"][k]) for k in actnorm if k.endswith(".initialized"))
    end = torch.load(dumps / "end_rank0.pt", weights_only=False)
    start = torch.load(dumps / "start_rank0.pt", weights_only=False)
    assert end["step"] == 2
    assert end["batch_sizes"] == [16, 16]  # global batch 32 kept: 16 per process x 2
    moved = [k for k in start["state"] if k.startswith("model.") and not torch.equal(start["state"][k], end["state"][k])]
    assert moved, "the weights did not change during training"
    q = [k for k in start["state"] if k.startswith("dequant.")]
    assert bool(q) == (dequant == "variational")  # q trains on both ranks (identical above) and learns
    assert not q or any(not torch.equal(start["state"][k], end["state"][k]) for k in q)


@pytest.mark.slow  # long: `make test-slow`
def test_sigterm_under_torchrun_saves_the_interrupted_step(tmp_path):
    """``timeout``/Kubernetes send SIGTERM to the launcher, torchrun forwards it to every rank, at slightly
    different moments: the ranks agree to stop after the same batch, global rank 0 writes last.ckpt at that
    step (Lightning's collective save could hang), and one line says so and how to resume. (Before, one
    run in four crashed a rank on its peer's closed connection, or both hung in a collective.)"""
    run = tmp_path / "run"
    cmd = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node=2", str(ROOT / "src" / "train.py"),
           "experiment=quickstart", "debug=smoke", "logger=none", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
           "test=false", "trainer.limit_train_batches=4", "trainer.max_epochs=100000", "trainer.enable_progress_bar=false",
           f"hydra.run.dir={run}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (run / "metrics.json").exists():  # the first validation is written: training is under way
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.05)
        time.sleep(0.5)  # (usually) past the validation checkpoint's step
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    lines = [ln for ln in err.splitlines() if ln.startswith("interrupted:")]
    assert len(lines) == 1, err[-3000:]  # rank 0's
    # the ranks stopped after the same batch: none crashed on a peer that left (torchrun's own
    # SignalException traceback, on being signalled, is torchrun's)
    assert "Error executing job" not in err and "RuntimeError" not in err and "Connection closed" not in err, err[-3000:]
    last = run / "checkpoints" / "last.ckpt"
    match = re.fullmatch(rf"interrupted: SIGTERM at epoch \d+, step (\d+): saved {last}; resume with: torchrun "
                         rf"<as before> src/train.py .*trainer=ddp.* ckpt_path={last}", lines[0])
    assert match, lines[0]
    step = int(match.group(1))
    saved = torch.load(last, map_location="cpu", weights_only=False)
    validated = [torch.load(p, map_location="cpu", weights_only=False)["global_step"]
                 for p in (run / "checkpoints").glob("epoch_*.ckpt")]
    assert saved["global_step"] == step >= max(validated), (step, validated)  # the step the line names, not an older one
