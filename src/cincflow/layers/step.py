"""One flow step: ActNorm -> invertible convolution -> coupling, all [B, C, H, W] -> same shape.

The convolution comes from a *conv factory*: ``factory(channels) -> list of layers`` spliced into
the step. The three of the paper (``conf/conv/*.yaml`` are ``_partial_`` configs of them, so an
option a conv does not have fails loudly):

* :func:`cinc`: the CInC k x k conv alone (no 1x1 conv, as in the paper);
* :func:`emerging`: Glow's 1x1 LU conv, then the emerging 3x3 conv;
* :func:`glow`: the 1x1 LU conv alone (no options).

A name (``"cinc"``, ``"emerging"``, ``"glow"``) with ``conv_kwargs`` is shorthand for
``functools.partial(factory, **conv_kwargs)``. coupling in {"affine", "additive", "quad"}.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

from torch import nn

from .actnorm import ActNorm
from .cinc import CInCConv
from .coupling import AdditiveCoupling, AffineCoupling
from .emerging import EmergingConv
from .invconv1x1 import InvConv1x1
from .quad import QuadCoupling
from .sequential import FlowSequential

ConvFactory = Callable[[int], list[nn.Module]]


def cinc(channels: int, **options) -> list[nn.Module]:
    """[CInCConv(channels, **options)]."""
    return [CInCConv(channels, **options)]


def emerging(channels: int, **options) -> list[nn.Module]:
    """[InvConv1x1(channels), EmergingConv(channels, **options)]."""
    return [InvConv1x1(channels), EmergingConv(channels, **options)]


def glow(channels: int) -> list[nn.Module]:
    """[InvConv1x1(channels)]."""
    return [InvConv1x1(channels)]


CONVS: dict[str, ConvFactory] = {"glow": glow, "emerging": emerging, "cinc": cinc}  # the `conv` choices, in table order
CONV_LAYERS: dict[ConvFactory, type] = {cinc: CInCConv, emerging: EmergingConv}  # the layer each one's options go to
COUPLINGS = {"affine": AffineCoupling, "additive": AdditiveCoupling, "quad": QuadCoupling}


def check_choice(name: str, value: str, choices) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}: choose one of {', '.join(choices)}")


def conv_factory(conv: str | ConvFactory, conv_kwargs: dict | None = None) -> ConvFactory:
    """The factory of ``conv``: a factory as given, or the named one with ``conv_kwargs`` bound."""
    if callable(conv):
        if conv_kwargs:
            raise ValueError("conv_kwargs go with a conv name only: bind the options into the conv factory instead")
        return conv
    check_choice("conv", conv, CONVS)
    return functools.partial(CONVS[conv], **dict(conv_kwargs or {}))


def conv_name(conv: str | ConvFactory) -> str:
    """``"cinc"`` for ``"cinc"``, ``cinc`` or ``functools.partial(cinc, ...)``; else the callable's name."""
    if isinstance(conv, str):
        return conv
    while isinstance(conv, functools.partial):
        conv = conv.func
    return getattr(conv, "__name__", type(conv).__name__)


def flow_step(
    channels: int,
    conv: str | ConvFactory = "cinc",
    coupling: str = "affine",
    width: int = 512,
    conv_kwargs: dict | None = None,
    conditioner_actnorm: bool = True,
) -> FlowSequential:
    make_conv = conv_factory(conv, conv_kwargs)
    check_choice("coupling", coupling, tuple(COUPLINGS))
    return FlowSequential([ActNorm(channels), *make_conv(channels), COUPLINGS[coupling](channels, width, conditioner_actnorm)])
