"""Augmentation of single uint8 images [C, H, W]: random shifts and horizontal flips.

Works on integer tensors directly (no float conversion, no PIL): a shift by (dy, dx)
moves the content down/right by dy/dx pixels, filling the uncovered border either by
replicating the edge pixels (``pad_mode="replicate"``) or with zeros (``"zeros"``).
"""

from __future__ import annotations

import torch

PAD_MODES = ("replicate", "zeros")


def shift_image(img: torch.Tensor, dy: int, dx: int, pad_mode: str = "replicate") -> torch.Tensor:
    """Translate ``img`` ([..., H, W]) so that ``out[..., y, x] = img[..., y - dy, x - dx]``."""
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
    h, w = img.shape[-2:]
    ys = torch.arange(h) - dy
    xs = torch.arange(w) - dx
    out = img[..., ys.clamp(0, h - 1), :][..., xs.clamp(0, w - 1)]
    if pad_mode == "zeros":
        inside = ((ys >= 0) & (ys < h))[:, None] & ((xs >= 0) & (xs < w))[None, :]
        out = out.masked_fill(~inside, 0)
    return out


class RandomShiftFlip:
    """Random translation by up to ``max_shift`` pixels per axis and, if ``flip``, a
    horizontal flip with probability 1/2. Input and output: uint8 [C, H, W].

    Randomness comes from ``generator`` (the global one when None); the DataModules pass a
    seeded one per draw (:class:`cincflow.data.common.UInt8ArrayDataset`), so their augmented
    epochs are reproducible given the data seed.
    """

    def __init__(self, max_shift: int = 2, flip: bool = True, pad_mode: str = "replicate"):
        if max_shift < 0:
            raise ValueError(f"max_shift must be >= 0, got {max_shift}")
        if pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        self.max_shift = int(max_shift)
        self.flip = bool(flip)
        self.pad_mode = pad_mode

    def __call__(self, img: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        s = self.max_shift
        if s > 0:
            dy, dx = torch.randint(-s, s + 1, (2,), generator=generator).tolist()
            img = shift_image(img, dy, dx, self.pad_mode)
        if self.flip and bool(torch.rand((), generator=generator) < 0.5):
            img = img.flip(-1)
        return img

    def __repr__(self) -> str:
        return f"RandomShiftFlip(max_shift={self.max_shift}, flip={self.flip}, pad_mode={self.pad_mode!r})"
