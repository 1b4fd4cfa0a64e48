"""The K-sample importance-weighted bound on the discrete likelihood (``src/eval.py``, docs/method.md
section 9). For an image x and K dequantisations y_k = (x_b + v_k) / 2^n - 0.5, v_k ~ q(v | x),

    log P(x) >= log (1/K) sum_k exp(w_k) - D n log 2,   w_k = log p(y_k) - log q(v_k | x),

in bits/dim  -(logsumexp_k w_k - log K - D n log 2) / (D log 2). K = 1 is the variational bound (for
uniform noise, q = 1: the paper's bits/dim); its expectation never increases with K and tends to
-log2 P(x) / D (Burda et al. 2016). The log-sum-exp runs in float64.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from .pixels import bits_per_dim


@torch.no_grad()
def importance_weighted_bpd(model: nn.Module, dequantizer: nn.Module | None, batches: Iterable[torch.Tensor],
                            samples: int, seed: int = 0, progress: bool = False) -> torch.Tensor:
    """The K = ``samples`` bound in bits/dim of every image of ``batches`` (uint8 [B, C, H, W]), [N]
    float64, under ``model`` (a :class:`cincflow.Glow`) and ``dequantizer`` (None: uniform noise). The
    noise comes from one CPU generator seeded with ``seed``: per batch, draw 1, ..., K in turn."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive integer, got {samples!r}")
    generator = torch.Generator().manual_seed(int(seed))
    values = []
    for batch in tqdm(batches, desc=f"{samples}-sample bound", unit="batch", disable=not progress):
        w = torch.stack([model.log_weight(batch, dequantizer, generator).double() for _ in range(samples)])
        values.append(bits_per_dim(torch.logsumexp(w, dim=0) - math.log(samples), model.num_dims, model.n_bits))
    return torch.cat(values).cpu()
