"""A chain of flow layers: forward applies them in order and sums the log-determinants; inverse
applies the inverses in reverse order."""
from __future__ import annotations

import torch
from torch import nn


class FlowSequential(nn.ModuleList):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = x.new_zeros(x.shape[0])
        for layer in self:
            x, ld = layer(x)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = y.new_zeros(y.shape[0])
        for layer in reversed(self):
            y, ld = layer.inverse(y)
            logdet = logdet + ld
        return y, logdet
