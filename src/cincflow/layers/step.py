"""One flow step: ActNorm -> invertible convolution -> coupling, all [B, C, H, W] -> same shape.

conv = "glow": 1x1 LU conv; "emerging": 1x1 LU conv then the emerging 3x3 conv; "cinc": the CInC
k x k conv alone (no 1x1 conv, as in the paper). coupling in {"affine", "additive", "quad"}.
"""
from __future__ import annotations

from . import CONVS
from .actnorm import ActNorm
from .cinc import CInCConv
from .coupling import AdditiveCoupling, AffineCoupling
from .emerging import EmergingConv
from .invconv1x1 import InvConv1x1
from .quad import QuadCoupling
from .sequential import FlowSequential

COUPLINGS = {"affine": AffineCoupling, "additive": AdditiveCoupling, "quad": QuadCoupling}


def check_choice(name: str, value: str, choices) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}: choose one of {', '.join(choices)}")


def flow_step(
    channels: int,
    conv: str = "cinc",
    coupling: str = "affine",
    width: int = 512,
    conv_kwargs: dict | None = None,
    conditioner_actnorm: bool = True,
) -> FlowSequential:
    check_choice("conv", conv, CONVS)
    check_choice("coupling", coupling, tuple(COUPLINGS))
    conv_kwargs = dict(conv_kwargs or {})
    layers = [ActNorm(channels)]
    if conv == "cinc":
        layers.append(CInCConv(channels, **conv_kwargs))
    else:
        layers.append(InvConv1x1(channels))
        if conv == "emerging":
            layers.append(EmergingConv(channels, **conv_kwargs))
    layers.append(COUPLINGS[coupling](channels, width, conditioner_actnorm))
    return FlowSequential(layers)
