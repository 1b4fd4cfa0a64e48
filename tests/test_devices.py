"""The same checks on every device: each test runs on the CPU in the default suite and again on CUDA
with ``make test-gpu`` (marker ``gpu``). Inverting and sampling a model with every solver,
the inverse caches following the module across devices, and on CUDA the benchmark and a training run
end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cincflow import CInCConv, EmergingConv, Glow
from cincflow.layers.solvers import SOLVERS
from cincflow.sampling import sample_with_check, set_solver
from flowcheck import randomize

ROOT = Path(__file__).resolve().parents[1]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-9}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("conv", ["cinc", "emerging"])
@pytest.mark.parametrize("device", DEVICES)
def test_model_inverts_and_samples_with_every_solver(device, conv, dtype):
    torch.manual_seed(0)
    model = Glow(3, 8, 2, 2, 16, conv, "affine").to(dtype)
    x = torch.rand(4, 3, 8, 8, dtype=dtype) - 0.5
    randomize(model, x, scale=0.05)
    model, x = model.to(device), x.to(device)
    noise = [torch.randn(4, *s, dtype=dtype, device=device) for s in model.latent_shapes()]
    samples = {}
    with torch.no_grad():
        zs, _ = model.encode(x)
        for name in SOLVERS:
            set_solver(model, name)
            torch.testing.assert_close(model.decode(zs), x, rtol=0, atol=TOLERANCE[dtype])
            samples[name], report = sample_with_check(model, 4, 1.0, noise)
            assert samples[name].device.type == device and report.residual <= report.bound < 1e-3
    for name in SOLVERS:  # the solvers differ only in rounding
        torch.testing.assert_close(samples[name], samples["wavefront"], rtol=0, atol=TOLERANCE[dtype])


@pytest.mark.parametrize("layer_class", [CInCConv, EmergingConv])
@pytest.mark.parametrize("device", DEVICES)
def test_inverse_caches_follow_the_module_across_devices_and_edits(device, layer_class):
    torch.manual_seed(0)
    layer = layer_class(6).double()
    x = torch.randn(3, 6, 8, 8, dtype=torch.float64)
    randomize(layer, x, scale=0.1)
    for name in SOLVERS:
        layer.solver = name
        with torch.no_grad():
            for target in ("cpu", device, "cpu"):
                layer.to(target)
                xt = x.to(target)
                y, _ = layer(xt)
                torch.testing.assert_close(layer.inverse(y)[0], xt, rtol=0, atol=1e-10)
                for name, p in layer.named_parameters():  # in-place edits: the next inverse must see them
                    if name.endswith("weight"):
                        p.add_(0.01 * torch.randn_like(p))
                y, _ = layer(xt)
                torch.testing.assert_close(layer.inverse(y)[0], xt, rtol=0, atol=1e-10)


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled", "WANDB_DIR": str(tmp_path)}


@pytest.mark.gpu
def test_benchmark_runs_on_cuda(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "src" / "benchmark.py"), "size=tiny", "device=cuda", f"out={out}"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT, env=_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["meta"]["machine"]["device"] == "cuda" and result["meta"]["machine"]["gpu"]
    for m in result["models"]:
        assert m["reconstruction_error"] < 1e-4 and m["peak_memory_bytes"]["sampling"] > 0
        assert m["conv"] == "glow" or 0 < m["sample_residual"] <= m["worst_layer"]["bound"] < 1e-3


@pytest.mark.gpu
def test_training_runs_on_cuda(tmp_path):
    cmd = [sys.executable, str(ROOT / "src" / "train.py"), "experiment=quickstart", "debug=smoke", "trainer=gpu",
           "trainer.accelerator=gpu", "logger=none", "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(cuda), used: True" in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert torch.isfinite(torch.tensor(metrics["test/bpd"])), metrics
