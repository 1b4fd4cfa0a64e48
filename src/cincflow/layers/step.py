"""One flow step: ActNorm -> invertible convolution -> coupling, all [B, C, H, W] -> same shape.

The convolution comes from a *conv factory*: ``factory(channels) -> list of layers`` spliced into
the step. The three of the paper (``conf/conv/*.yaml`` are ``_partial_`` configs of them, so an
option a conv does not have fails loudly):

* :func:`cinc`: the CInC k x k conv alone (no 1x1 conv, as in the paper);
* :func:`emerging`: Glow's 1x1 LU conv, then the emerging 3x3 conv;
* :func:`glow`: the 1x1 LU conv alone (no options).

A name (``"cinc"``, ``"emerging"``, ``"glow"``) with ``conv_kwargs`` is shorthand for
``functools.partial(factory, **conv_kwargs)``.

The coupling comes from a *coupling factory*: ``factory(channels, width=..., actnorm=...) ->``
:class:`~cincflow.layers.coupling.Coupling` (``conf/coupling/*.yaml``: ``_partial_`` configs of the
classes, with the coupling's own options); a name of :data:`COUPLINGS` stands for its class.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

from torch import nn

from .actnorm import ActNorm
from .cinc import CInCConv
from .coupling import AdditiveCoupling, AffineCoupling, Coupling
from .emerging import EmergingConv
from .invconv1x1 import InvConv1x1
from .quad import QuadCoupling
from .sequential import FlowSequential

ConvFactory = Callable[[int], list[nn.Module]]
CouplingFactory = Callable[..., Coupling]  # factory(channels, width=..., actnorm=...)


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
COUPLINGS: dict[str, type[Coupling]] = {"affine": AffineCoupling, "additive": AdditiveCoupling, "quad": QuadCoupling}


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


def coupling_factory(coupling: str | CouplingFactory) -> CouplingFactory:
    """The factory of ``coupling``: a factory as given, or the class of a :data:`COUPLINGS` name."""
    if callable(coupling):
        return coupling
    check_choice("coupling", coupling, COUPLINGS)
    return COUPLINGS[coupling]


def factory_name(factory: str | Callable, registry: dict[str, Callable]) -> str:
    """The registry name of ``factory`` (a name, an entry or a ``functools.partial`` of one), else the
    callable's own name: ``"cinc"`` for ``partial(cinc, ...)``, ``"quad"`` for ``QuadCoupling``."""
    if isinstance(factory, str):
        return factory
    while isinstance(factory, functools.partial):
        factory = factory.func
    names = {id(entry): name for name, entry in registry.items()}
    return names.get(id(factory), getattr(factory, "__name__", type(factory).__name__))


def flow_step(
    channels: int,
    conv: str | ConvFactory = "cinc",
    coupling: str | CouplingFactory = "affine",
    width: int = 512,
    conv_kwargs: dict | None = None,
    conditioner_actnorm: bool = True,
) -> FlowSequential:
    make_conv = conv_factory(conv, conv_kwargs)
    make_coupling = coupling_factory(coupling)
    return FlowSequential([ActNorm(channels), *make_conv(channels),
                           make_coupling(channels, width=width, actnorm=conditioner_actnorm)])
