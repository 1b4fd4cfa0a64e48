"""Convolutions as oneDNN runs them fastest: float32 on the CPU, without autograd.

- Whole channel blocks. oneDNN's float32 CPU kernels work on channels-last activations in blocks of 8
  channels. A convolution whose output channels are not a multiple of 8 (the zero conv's 12 or 6
  outputs, CInC's and Emerging's 12 channels at the first level) runs faster with zero output
  channels appended, dropped afterwards, on a channels-last input. Measured on a 2-core AMD EPYC, one
  thread: the zero conv 64 -> 12 at 64 x 16 x 16, 10.8 -> 7.9 ms; the causal 3 x 3 conv 12 -> 12 at
  100 x 32 x 32, 25 -> 14 ms; the benchmark's glow and cinc models, log_prob 4-7% and sampling 7-10%
  faster (on an AVX-512 host within 3%). The kept channels are the same sums (in another blocking,
  so equal up to rounding).
- A convolution followed by a ReLU (the conditioner's first two) runs as one oneDNN convolution with
  the ReLU as its post-op (``mkldnn._convolution_pointwise``, the kernel TorchInductor's CPU fusion
  calls): the same sums, clamped as they are written, instead of a second pass over the width-channel
  activations. On a 2-core AMD EPYC with AVX2, one thread: up to 10% per convolution at the benchmark's
  shapes (the larger ones; within 2% at 4 x 4), the benchmark's glow log_prob 0-4% and sampling 1.5-6%
  faster, cinc log_prob 3% and sampling 0-3% (interleaved A/Bs); the results are bitwise those of the
  separate ReLU there.
With autograd the backward of appended channels costs more than the forward saves (a Glow train step
1.5-3% slower), and the fused op has no backward: both are used only when no graph is recorded (nor
under autocast, which the fused op would bypass); on CUDA, and in float64 and bfloat16 (where the
padding measured slower), convolutions run as given, a ReLU after them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

CHANNEL_BLOCK = 8


def _oneDNN_inference(x: torch.Tensor) -> bool:
    """Whether a convolution of ``x`` may take oneDNN's float32 inference paths here."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu"))


def block_padding(x: torch.Tensor, out_channels: int) -> int:
    """How many zero output channels a convolution of ``x`` gets appended (0: it runs as given)."""
    return -out_channels % CHANNEL_BLOCK if _oneDNN_inference(x) else 0


def fuses_relu(x: torch.Tensor) -> bool:
    """Whether a convolution of ``x`` followed by a ReLU runs as one oneDNN convolution (not while
    ``torch.compile`` traces: TorchInductor fuses on its own)."""
    return (not torch.compiler.is_compiling() and _oneDNN_inference(x) and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled and hasattr(torch.ops.mkldnn, "_convolution_pointwise"))


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1, padding=0,
           relu: bool = False) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride, padding)``, then a ReLU where ``relu``; where :func:`block_padding`
    says so, computed with the output channels padded to whole blocks on a channels-last ``x``, the kept
    channels returned contiguous (NCHW: a view of them would be dense in neither layout, and element-wise
    work on such views is slow, e.g. ``randn_like`` of a split prior's mean 6x slower); the ReLU as the
    convolution's post-op where :func:`fuses_relu` says so."""
    extra = block_padding(x, weight.shape[0])
    if extra:
        weight = F.pad(weight, (0, 0, 0, 0, 0, 0, 0, extra))
        bias = None if bias is None else F.pad(bias, (0, extra))
        x = x.contiguous(memory_format=torch.channels_last)
    if relu and fuses_relu(x) and weight.dtype == x.dtype:  # (else F.conv2d says what does not match)
        out = torch.ops.mkldnn._convolution_pointwise(x, weight, bias, list(_pair(padding)), list(_pair(stride)),
                                                      [1, 1], 1, "relu", [], "")
    else:
        out = F.conv2d(x, weight, bias, stride, padding)
        out = F.relu(out, inplace=True) if relu else out
    return out[:, : out.shape[1] - extra].contiguous() if extra else out
