"""normflows (the most-used PyTorch flow library) as the benchmark's reference: installed on demand
into a temporary folder (``pip install --no-deps --target``; never a project dependency) and its Glow
built at our model's shape.

Its multi-scale Glow (its examples' ``MultiscaleFlow`` of ``GlowBlock``s, unconditional): per level,
K blocks of [affine coupling (conv3x3 -> ReLU -> conv1x1 -> ReLU -> zero conv3x3, sigmoid scale), LU 1x1
conv, ActNorm] and a squeeze, a learned diagonal Gaussian per latent. Its ``log_prob`` runs the blocks'
``inverse`` (data -> latents), its ``sample`` their ``forward``.
"""
from __future__ import annotations

import functools
import importlib
import subprocess
import sys
import tempfile
from collections.abc import Callable

import torch
from torch import nn

VERSION = "1.7.3"


def install(version: str = VERSION, log=print):
    """The ``normflows`` module, installed into a temporary folder by pip (no dependencies), or None
    with the reason logged (no network, pip failure, import failure)."""
    folder = tempfile.mkdtemp(prefix="normflows-")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", folder, f"normflows=={version}"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log(f"normflows {version} not installed ({exc}): its column is skipped")
        return None
    if proc.returncode != 0:
        log(f"normflows {version} not installed (pip: {proc.stderr.strip().splitlines()[-1:]}): its column is skipped")
        return None
    sys.path.insert(0, folder)
    try:
        return importlib.import_module("normflows")
    except Exception as exc:  # noqa: BLE001 - any import failure only skips the column
        log(f"normflows {version} installed but not importable ({type(exc).__name__}: {exc}): its column is skipped")
        return None


def glow(nf, channels: int, image_size: int, levels: int, depth: int, width: int) -> nn.Module:
    """normflows' Glow with our Glow's level shapes: level l (0 = the top) holds channels * 2^(L+1-l)."""
    q0, merges, flows = [], [], []
    for i in range(levels):
        blocks = [nf.flows.GlowBlock(channels * 2 ** (levels + 1 - i), width, split_mode="channel", scale=True)
                  for _ in range(depth)]
        flows.append([*blocks, nf.flows.Squeeze()])
        if i > 0:
            merges.append(nf.flows.Merge())
        side = image_size // 2 ** levels if i == 0 else image_size // 2 ** (levels - i)
        c = channels * 2 ** (levels + 1) if i == 0 else channels * 2 ** (levels - i)
        q0.append(nf.distributions.DiagGaussian((c, side, side)))
    return nf.MultiscaleFlow(q0, flows, merges, class_cond=False)


def free_parameters(model: nn.Module) -> int:
    """Learnable parameters, the masked halves of normflows' stored L and U matrices (LU 1x1 conv) excluded."""
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    for m in model.modules():
        if hasattr(m, "log_S") and hasattr(m, "L") and hasattr(m, "U"):
            c = m.log_S.numel()
            total -= 2 * (c * (c + 1) // 2)  # the diagonal and upper part of L, the diagonal and lower part of U
    return total


class Tasks:
    """The three timed operations of one model on one batch: a train step (forward, backward, an
    optimiser step: ``optimizer(parameters)``, by default Adam at lr 1e-4 with torch's defaults, the
    same for every model compared), log_prob without gradients, sampling ``n_samples`` images."""

    def __init__(self, log_prob, sample, parameters, x: torch.Tensor, n_samples: int,
                 optimizer: Callable = functools.partial(torch.optim.Adam, lr=1e-4)):
        self.log_prob, self.sample, self.x, self.n_samples = log_prob, sample, x, n_samples
        params = list(parameters)
        self.optimizer = optimizer(params) if params else None

    def train_step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        (-self.log_prob(self.x).mean()).backward()
        self.optimizer.step()

    @torch.no_grad()
    def evaluate(self) -> torch.Tensor:
        return self.log_prob(self.x)

    @torch.no_grad()
    def draw(self):
        return self.sample(self.n_samples)


def normflows_tasks(model: nn.Module, x: torch.Tensor, n_samples: int, train: bool) -> Tasks:
    """``model`` (normflows) as :class:`Tasks`; ActNorm's data-dependent init runs on ``x`` first."""
    with torch.no_grad():
        model.log_prob(x, None)
    return Tasks(lambda v: model.log_prob(v, None), lambda n: model.sample(n)[0], model.parameters() if train else (), x, n_samples)
