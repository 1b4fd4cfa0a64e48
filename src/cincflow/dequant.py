"""Dequantisers: uint8 images -> continuous model-space images y and the log-density of the noise
(the ``dequant`` config group, ``module.dequant``; docs/method.md section 9).

Every dequantiser maps images x [B, C, H, W] (uint8, reduced to n_bits: bins x_b in {0..2^n - 1}) to

    y = (x_b + v) / 2^n - 0.5,   v in [0, 1)^D,  D = C * H * W,

and returns ``(y, log q(v | x))`` [B] (nats). The variational bound on the discrete likelihood is
log P(x) >= E_q[log p(y) - log q(v | x)] - D n log 2, so the training bits/dim
``bits_per_dim(log p(y) - log q(v | x))`` is the same formula for every dequantiser; with uniform noise
(q = 1, log q = 0) it is the paper's bits/dim.

A new dequantiser is one class with this ``forward`` (and ``config()`` for checkpoints) plus one
file in ``conf/dequant/``. The module builds it as ``dequant(channels=C)`` (a ``_partial_`` config).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .pixels import check_bits, noise, preprocess
from .targets import path_of

LOG_2PI = math.log(2 * math.pi)


class UniformDequantizer(nn.Module):
    """v ~ U[0, 1)^D, log q = 0: the paper's (and Glow's) dequantisation; no parameters."""

    def __init__(self, channels: int | None = None):
        super().__init__()
        self.channels = channels

    def forward(self, x_uint8: torch.Tensor, n_bits: int, dtype: torch.dtype = torch.float32,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        y = preprocess(x_uint8, n_bits, True, dtype, generator)
        return y, y.new_zeros(y.shape[0])

    def config(self) -> dict:
        return {"_target_": path_of(type(self)), "_partial_": True}


def checkerboard(h: int, w: int, parity: int, like: torch.Tensor) -> torch.Tensor:
    """[1, 1, h, w] mask, 1 where (i + j + parity) is even: the pixels a coupling step keeps."""
    i, j = torch.meshgrid(torch.arange(h, device=like.device), torch.arange(w, device=like.device), indexing="ij")
    return ((i + j + parity) % 2 == 0).to(like.dtype)[None, None]


class VariationalDequantizer(nn.Module):
    """q(v | x): a conditional flow from eps ~ N(0, I) [B, C, H, W] to v in (0, 1)^D (Flow++):

        h_0 = eps;  h_k = m h_{k-1} + (1 - m) (h_{k-1} exp(s_k) + t_k),  (s_k, t_k) = NN_k(m h_{k-1}, f(x))
        v = sigmoid(h_steps),  log q(v | x) = log N(eps) - sum_k sum (1 - m) s_k - sum log(sig(h)(1 - sig(h)))

    with m a checkerboard mask of alternating parity (so any channel count works, one channel too), s_k =
    ``scale`` * tanh(.) bounded, and f(x) features of the image (two 3x3 convolutions of x_b / 2^n - 0.5).
    Each v pixel depends on eps and on every image pixel within the conditioners' receptive field.
    The conditioners' last convolutions start at zero (q starts as the logistic-normal sigmoid(eps))."""

    def __init__(self, channels: int, steps: int = 4, width: int = 32, scale: float = 2.0):
        super().__init__()
        for name, value in (("channels", channels), ("steps", steps), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < math.inf:
            raise ValueError(f"scale must be a positive finite number, got {scale!r}")
        self.channels, self.steps, self.width, self.scale = channels, steps, width, float(scale)
        self.features = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.conditioners = nn.ModuleList()
        for _ in range(steps):
            last = nn.Conv2d(width, 2 * channels, 3, padding=1)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            self.conditioners.append(nn.Sequential(nn.Conv2d(channels + width, width, 3, padding=1), nn.ReLU(), last))

    def config(self) -> dict:
        return {"_target_": path_of(type(self)), "_partial_": True, "steps": self.steps, "width": self.width,
                "scale": self.scale}

    def _shift_scale(self, k: int, kept: torch.Tensor, feats: torch.Tensor, mask: torch.Tensor):
        s, t = self.conditioners[k](torch.cat([kept, feats], dim=1)).chunk(2, dim=1)
        return self.scale * torch.tanh(s) * (1 - mask), t * (1 - mask)

    def _features(self, x_uint8: torch.Tensor, n_bits: int, dtype: torch.dtype) -> torch.Tensor:
        return self.features(preprocess(x_uint8, n_bits, False, dtype))

    def flow(self, eps: torch.Tensor, x_uint8: torch.Tensor, n_bits: int) -> tuple[torch.Tensor, torch.Tensor]:
        """eps -> (v, log q(v | x)) [B] (nats)."""
        feats = self._features(x_uint8, n_bits, eps.dtype)
        h, log_q = eps, -0.5 * (eps**2 + LOG_2PI).flatten(1).sum(1)
        for k in range(self.steps):
            mask = checkerboard(h.shape[2], h.shape[3], k % 2, h)
            s, t = self._shift_scale(k, h * mask, feats, mask)
            h = h * mask + (1 - mask) * (h * torch.exp(s) + t)
            log_q = log_q - s.flatten(1).sum(1)
        log_q = log_q - (F.logsigmoid(h) + F.logsigmoid(-h)).flatten(1).sum(1)
        return torch.sigmoid(h), log_q

    def inverse(self, v: torch.Tensor, x_uint8: torch.Tensor, n_bits: int) -> tuple[torch.Tensor, torch.Tensor]:
        """v -> (eps, log q(v | x)): the exact inverse of :meth:`flow`."""
        feats = self._features(x_uint8, n_bits, v.dtype)
        h = torch.logit(v)
        log_q = -(F.logsigmoid(h) + F.logsigmoid(-h)).flatten(1).sum(1)
        for k in reversed(range(self.steps)):
            mask = checkerboard(h.shape[2], h.shape[3], k % 2, h)
            s, t = self._shift_scale(k, h * mask, feats, mask)
            h = h * mask + (1 - mask) * (h - t) * torch.exp(-s)
            log_q = log_q - s.flatten(1).sum(1)
        return h, log_q - 0.5 * (h**2 + LOG_2PI).flatten(1).sum(1)

    def forward(self, x_uint8: torch.Tensor, n_bits: int, dtype: torch.dtype = torch.float32,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        check_bits(n_bits)
        if x_uint8.dtype != torch.uint8 or x_uint8.ndim != 4 or x_uint8.shape[1] != self.channels:
            raise ValueError(f"VariationalDequantizer expects uint8 images [B, {self.channels}, H, W], got "
                             f"{x_uint8.dtype} {list(x_uint8.shape)}")
        base = preprocess(x_uint8, n_bits, False, dtype)
        v, log_q = self.flow(noise(base, generator, normal=True), x_uint8, n_bits)
        return base + v / 2**n_bits, log_q
