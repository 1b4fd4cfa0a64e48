"""Convolutions in oneDNN's channel blocks: float32 on the CPU, without autograd.

oneDNN's float32 CPU kernels work on channels-last activations in blocks of 8 channels. A convolution
whose output channels are not a multiple of 8 (the zero conv's 12 or 6 outputs, CInC's and
Emerging's 12 channels at the first level) runs faster with zero output channels appended, dropped
afterwards, on a channels-last input. Measured on a 2-core AMD EPYC, one thread: the zero conv
64 -> 12 at 64 x 16 x 16, 10.8 -> 7.9 ms; the causal 3 x 3 conv 12 -> 12 at 100 x 32 x 32, 25 -> 14 ms;
the benchmark's glow and cinc models, log_prob 4-7% and sampling 7-10% faster. The kept channels are
the same sums (in another blocking, so equal up to rounding). With autograd the backward of the
appended channels costs more than the forward saves (a Glow train step 2-3% slower), so the padding is
used only when no graph is recorded; on CUDA, and in float64 and bfloat16 (where it measured slower),
convolutions run as given.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

CHANNEL_BLOCK = 8


def block_padding(x: torch.Tensor, out_channels: int) -> int:
    """How many zero output channels a convolution of ``x`` gets appended (0: it runs as given)."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or torch.is_grad_enabled():
        return 0
    return -out_channels % CHANNEL_BLOCK


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1, padding=0) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride, padding)``; where :func:`block_padding` says so, computed with
    the output channels padded to whole blocks on a channels-last ``x``, the kept channels returned
    contiguous (NCHW: a view of them would be dense in neither layout, and element-wise work on such
    views is slow, e.g. ``randn_like`` of a split prior's mean 6x slower)."""
    extra = block_padding(x, weight.shape[0])
    if not extra:
        return F.conv2d(x, weight, bias, stride, padding)
    weight = F.pad(weight, (0, 0, 0, 0, 0, 0, 0, extra))
    bias = None if bias is None else F.pad(bias, (0, extra))
    out = F.conv2d(x.contiguous(memory_format=torch.channels_last), weight, bias, stride, padding)
    return out[:, : out.shape[1] - extra].contiguous()
