"""ActNorm (Glow): per-channel affine y = (x + loc) * exp(log_scale), [B, C, H, W].

Data-dependent initialisation: the first batch it sees (or :meth:`initialize`) sets loc and
log_scale so that the output has zero mean and unit variance per channel. ``initialized`` is a
buffer, so a loaded checkpoint is never re-initialised; :meth:`is_initialized` reads it only when
the buffer changed (no tensor-to-bool, a device synchronisation on a GPU, per call).
log|det| = H * W * sum(log_scale). The map is computed as y = x * s + loc * s, s = exp(log_scale):
one pass over x (``addcmul``), keeping no intermediate for the backward.
"""
from __future__ import annotations

import torch
from torch import nn

from ..checks import check_images, check_positive_int


class ActNorm(nn.Module):
    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        check_positive_int("ActNorm channels", channels)
        self.eps = eps
        self.loc = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))
        self._seen: tuple[torch.Tensor, int, bool] | None = None  # (the flag tensor, its version, its value)

    def is_initialized(self) -> bool:
        """``bool(self.initialized)``, re-read only when the buffer is another tensor or its version
        counter moved (``fill_``, ``copy_``, ``load_state_dict``, ``.to()``); an edit through ``.data``
        is not seen. (An inference-mode flag has no version counter: read every time.) Inside a
        compiled graph the last value read is used (:func:`cincflow.compiled.compile_flow` reads
        every flag before each compiled call), so that reading it breaks no graph."""
        flag, seen = self.initialized, self._seen
        if torch.compiler.is_compiling() and seen is not None:
            return seen[2]
        if flag.is_inference():
            return bool(flag)
        if seen is None or seen[0] is not flag or seen[1] != flag._version:
            seen = self._seen = (flag, flag._version, bool(flag))
        return seen[2]

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Set loc = -mean and log_scale = -log(std) of ``x`` per channel."""
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
        self.loc.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + self.eps))
        self.initialized.fill_(True)

    def _logdet(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return (h * w * self.log_scale.sum()).expand(x.shape[0])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_images("ActNorm", x, self.loc.shape[1])
        if not self.is_initialized():
            self.initialize(x)
        scale = self.log_scale.exp()
        return torch.addcmul(self.loc * scale, x, scale), self._logdet(x)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_images("ActNorm", y, self.loc.shape[1])
        return torch.addcmul(-self.loc, y, torch.exp(-self.log_scale)), -self._logdet(y)


class ActNormFeatures(ActNorm):
    """ActNorm as a plain normalisation layer inside a conditioner network (no log-determinant)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x)[0]
