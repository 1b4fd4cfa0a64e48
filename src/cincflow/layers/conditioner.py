"""The coupling conditioner network (Glow): conv3x3 -> ActNorm -> ReLU -> conv1x1 -> ActNorm ->
ReLU -> zero-initialised conv3x3, [B, C_in, H, W] -> [B, C_out, H, W] ("same" padding).

Evaluated as three convolutions and two ReLUs: an ActNorm after a convolution is folded into its
weights, ActNorm(conv(x; W, b)) = conv(x; s W, s (b + loc)) with s = exp(log_scale) per output
channel, and so is the zero conv's output scale, conv(x; W, b) * e = conv(x; e W, e b) with
e = exp(3 logs): the same function of the same parameters (the state dict is unchanged), without the
elementwise passes over the width-channel activations and their backward. Inside, the activations are
channels-last (NHWC), oneDNN's native CPU layout (about 2x faster convolutions than NCHW at width 64
here); the output comes back in the standard layout and in the input's dtype (under bf16 autocast
the network computes in bf16, the coupling's update and log-determinant in the flow's float32).
Without autograd, in float32 on the CPU, the folded convolutions run in oneDNN's whole channel
blocks and each ReLU as its convolution's post-op (:mod:`cincflow.layers.blocked`: the zero conv's 12
or 6 outputs as 16 or 8).
"""
from __future__ import annotations

import torch
from torch import nn

from . import blocked
from .actnorm import ActNormFeatures


def scaled_conv(x: torch.Tensor, conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor | None = None,
                relu: bool = False) -> torch.Tensor:
    """conv(x) * scale + shift * scale (per output channel, [C_out]) as one convolution, then a ReLU
    where ``relu`` (:func:`cincflow.layers.blocked.conv2d`: in whole channel blocks, the ReLU as its
    post-op, where oneDNN's inference paths apply)."""
    bias = conv.bias if shift is None else (shift if conv.bias is None else conv.bias + shift)
    weight = conv.weight * scale.view(-1, 1, 1, 1)
    return blocked.conv2d(x, weight, None if bias is None else bias * scale, conv.stride, conv.padding, relu)


class ZeroConv2d(nn.Module):
    """3x3 conv initialised to zero, output scaled by exp(3 * logs) per channel (Glow's conv2d_zeros)."""

    def __init__(self, in_channels: int, out_channels: int, logscale_factor: float = 3.0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.logs = nn.Parameter(torch.zeros(1, out_channels, 1, 1))
        self.logscale_factor = logscale_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """In x's dtype (under autocast too: a split prior's mean and log-std stay float32)."""
        return scaled_conv(x, self.conv, torch.exp(self.logs.view(-1) * self.logscale_factor)).to(x.dtype)


def conv_norm_relu(x: torch.Tensor, conv: nn.Conv2d, norm: nn.Module) -> torch.Tensor:
    """relu(norm(conv(x))) for an ActNormFeatures (folded into the convolution) or an Identity ``norm``;
    the ActNorm's data-dependent initialisation on its first batch as in :class:`ActNorm`."""
    if not isinstance(norm, ActNormFeatures):
        return blocked.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, relu=True)
    if not norm.is_initialized():
        norm.initialize(conv(x))
    return scaled_conv(x, conv, norm.log_scale.view(-1).exp(), norm.loc.view(-1), relu=True)


class Conditioner(nn.Sequential):
    """``channels_last``: NHWC activations inside (default); False keeps the input's layout."""

    def __init__(self, in_channels: int, out_channels: int, width: int, actnorm: bool = True, channels_last: bool = True):
        def norm():
            return ActNormFeatures(width) if actnorm else nn.Identity()

        super().__init__(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=not actnorm),
            norm(),
            nn.ReLU(),
            nn.Conv2d(width, width, 1, bias=not actnorm),
            norm(),
            nn.ReLU(),
            ZeroConv2d(width, out_channels),
        )
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv1, norm1, _, conv2, norm2, _, out = self
        h = x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        h = conv_norm_relu(h, conv1, norm1)
        h = conv_norm_relu(h, conv2, norm2)
        return out(h).to(dtype=x.dtype, memory_format=torch.contiguous_format)
