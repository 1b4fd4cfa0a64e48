"""The README's "Extending cinc-flow": a coupling, a conv, a dataset and a schedule, each one Python file
and one YAML in a package of the user's own (written here into a temporary folder, found through
``hydra.searchpath`` and PYTHONPATH, no file of the repository edited), pass the shared layer harness
and train from the command line with their own options overridden; stock torch schedulers train too."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

from cli import run_cases
from flowcheck import CONF, check_layer, config_layers, randomize
from test_reliability import assert_one_line_error

ROOT = Path(__file__).resolve().parents[1]

COUPLING = '''
"""A monotone piecewise-linear coupling: on [-bound, bound], ``bins`` equal-width bins whose slopes come
from the conditioner (at least 1/4, summing to bins: the map covers [-bound, bound], the identity outside)."""
import torch
from cincflow.layers.coupling import Coupling


class PiecewiseLinearCoupling(Coupling):
    def __init__(self, channels, width=512, actnorm=True, *, bins: int = 4, bound: float = 3.0):
        if bins < 2:
            raise ValueError(f"bins must be an integer >= 2, got {bins}")
        super().__init__(channels, width, actnorm, params=bins)
        self.bins, self.bound = bins, bound

    def _knots(self, h):  # slopes [B, q, H, W, bins] and the y of each bin's left edge [..., bins + 1]
        b, _, height, width = h.shape
        shares = torch.softmax(h.view(b, -1, self.bins, height, width).movedim(2, -1), dim=-1)
        slopes = 0.25 + 0.75 * self.bins * shares
        step = 2 * self.bound / self.bins
        y_edges = torch.cat([torch.zeros_like(slopes[..., :1]), torch.cumsum(slopes * step, -1)], -1) - self.bound
        return slopes, y_edges, step

    def update(self, x, h):
        slopes, y_edges, step = self._knots(h)
        k = ((x + self.bound) / step).floor().clamp(0, self.bins - 1).long().unsqueeze(-1)
        s = slopes.gather(-1, k).squeeze(-1)
        y = y_edges.gather(-1, k).squeeze(-1) + s * (x + self.bound - k.squeeze(-1) * step)
        inside = x.abs() < self.bound
        return torch.where(inside, y, x), torch.where(inside, s.log(), 0 * x).flatten(1).sum(1)

    def update_inverse(self, y, h):
        slopes, y_edges, step = self._knots(h)
        k = (torch.searchsorted(y_edges.contiguous(), y.unsqueeze(-1).contiguous()) - 1).clamp(0, self.bins - 1)
        s = slopes.gather(-1, k).squeeze(-1)
        x = (y - y_edges.gather(-1, k).squeeze(-1)) / s + k.squeeze(-1) * step - self.bound
        inside = y.abs() < self.bound
        return torch.where(inside, x, y), torch.where(inside, -s.log(), 0 * y).flatten(1).sum(1)
'''
CONV = '''
"""A channel rotation by ``shift`` places (a permutation: log|det| = 0), as a conv factory."""
import torch
from torch import nn


class ChannelShift(nn.Module):
    def __init__(self, shift: int = 1):
        super().__init__()
        self.shift = shift

    def forward(self, x):
        return torch.roll(x, self.shift, dims=1), x.new_zeros(x.shape[0])

    def inverse(self, y):
        return torch.roll(y, -self.shift, dims=1), y.new_zeros(y.shape[0])


def shift(channels: int, *, shift: int = 1) -> list[nn.Module]:
    if shift % channels == 0:
        raise ValueError(f"shift must not be a multiple of the {channels} channels, got {shift}")
    return [ChannelShift(shift)]
'''
DATA = '''
"""Seeded noise images, 1 x 8 x 8, 8 bits: ``count`` of them, ``test_size`` held out for testing."""
import numpy as np
from cincflow.data.base import UInt8ImageDataModule
from cincflow.data.common import UInt8ArrayDataset


class NoiseDataModule(UInt8ImageDataModule):
    in_channels, image_size, n_bits = 1, 8, 8

    def __init__(self, count: int = 200, test_size: int = 40, val_size: int = 40, **common):
        super().__init__(val_size=val_size, **common)
        self.count, self.test_size = count, test_size

    def _build_datasets(self):
        images = np.random.default_rng(self.split_seed).integers(0, 256, (self.count, 1, 8, 8), dtype=np.uint8)
        train, val, test = self.holdout(self.count, [self.test_size])
        return UInt8ArrayDataset(images, train), UInt8ArrayDataset(images, val), UInt8ArrayDataset(images, test)
'''
SCHEDULE = '''
"""Halve the learning rate every ``every`` optimiser steps."""
import torch


def halving(optimizer, *, every: int = 10):
    if every < 1:
        raise ValueError(f"every must be a positive integer, got {every}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 ** (step // every))
'''
CONFIGS = {
    "coupling/pwlinear.yaml": "# @package model\ncoupling:\n  _target_: myflows.coupling.PiecewiseLinearCoupling\n"
                              "  _partial_: true\n  bins: 4\n",
    "conv/shift.yaml": "# @package model\nconv:\n  _target_: myflows.conv.shift\n  _partial_: true\n  shift: 1\n",
    "data/noise.yaml": "_target_: myflows.data.NoiseDataModule\nbatch_size: 16\ncount: 200\n",
    "scheduler/halving.yaml": "_target_: myflows.schedule.halving\n_partial_: true\nevery: 10\n",
}


@pytest.fixture(scope="module")
def user_package(tmp_path_factory):
    """A user's own package (one Python file each) and its config folder (one YAML each)."""
    root = tmp_path_factory.mktemp("extension")
    package = root / "myflows"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name, text in (("coupling", COUPLING), ("conv", CONV), ("data", DATA), ("schedule", SCHEDULE)):
        (package / f"{name}.py").write_text(textwrap.dedent(text))
    for name, text in CONFIGS.items():
        (root / "conf" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "conf" / name).write_text(text)
    return root


def test_a_new_coupling_and_conv_pass_the_shared_harness(user_package, monkeypatch, float64):
    monkeypatch.syspath_prepend(str(user_package))
    layers = config_layers(4, conf_dirs=(CONF, user_package / "conf"))
    assert {"coupling:pwlinear", "conv:shift", "coupling:quad", "conv:cinc[tiled]"} <= set(layers)
    for name in ("coupling:pwlinear", "conv:shift"):
        make, channels = layers[name]
        torch.manual_seed(0)
        x = torch.randn(2, channels, 4, 4) * 0.7 + 0.2
        check_layer(randomize(make().double(), x, scale=0.2), x)


def test_the_extension_trains_from_the_command_line_with_its_options(user_package, tmp_path):
    """One real launch: the four new pieces chosen by name, each with an option of its own overridden;
    a bad option value of each is one line before any folder."""
    common = ["experiment=quickstart", "debug=smoke", "logger=none", f"hydra.searchpath=[file://{user_package / 'conf'}]",
              "coupling=pwlinear", "conv=shift", "data=noise", "scheduler=halving", "trainer.max_steps=2"]
    run = tmp_path / "run"
    bad = [("model.coupling.bins=1", "bins must be an integer >= 2, got 1"),
           ("model.conv.shift=4", "shift must not be a multiple of the 4 channels"),
           ("data.count=20", "do not fit the 20 images"),
           ("scheduler.every=0", "every must be a positive integer, got 0"),
           ("+model.coupling.bnis=3", "unexpected keyword argument 'bnis'")]
    cases = [("train", [*common, "model.coupling.bins=6", "model.conv.shift=3", "data.count=120", "scheduler.every=1",
                        f"hydra.run.dir={run}"])]
    cases += [("train", [*common, override, f"hydra.run.dir={tmp_path / 'no'}"]) for override, _ in bad]
    done, *refused = run_cases(cases, paths=[str(user_package)])
    assert done["code"] == 0, done["stderr"][-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 2 and metrics["coupling"] == "PiecewiseLinearCoupling" and metrics["conv"] == "shift"
    ckpt = torch.load(metrics["last_checkpoint"], map_location="cpu", weights_only=False)
    model = ckpt["hyper_parameters"]["model_config"]
    assert model["coupling"]["bins"] == 6 and model["conv"]["shift"] == 3
    assert ckpt["hyper_parameters"]["data"]["count"] == 120
    assert ckpt["lr_schedulers"][0]["base_lrs"] == [1e-3] and ckpt["lr_schedulers"][0]["_last_lr"] == [2.5e-4]
    for (override, fragment), result in zip(bad, refused):
        assert_one_line_error(result, fragment)
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("scheduler, options, last_lr", [
    ("step", ["scheduler.step_size=1", "scheduler.gamma=0.5"], 5e-4),  # one epoch: one decay
    ("cosine", ["scheduler.T_max=2"], 5e-4),  # (1 + cos(pi / 2)) / 2 of the base after one of two epochs
    ("exponential", ["scheduler.gamma=0.9"], 9e-4),
])
def test_stock_torch_schedulers_train_from_the_command_line(tmp_path, scheduler, options, last_lr):
    run = tmp_path / "run"
    (result,) = run_cases([("train", ["experiment=quickstart", "debug=smoke", "logger=none", f"scheduler={scheduler}",
                                      *options, f"hydra.run.dir={run}"])])
    assert result["code"] == 0, result["stderr"][-3000:]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["lr_schedulers"][0]["_last_lr"][0] == pytest.approx(last_lr)
