"""The benchmark's models: random weights perturbed away from their zero initialisation, so that every
layer does real work, and the inputs and outputs of their invertible convolutions."""
from __future__ import annotations

import torch
from torch import nn

from ..layers.invconv1x1 import InvConv1x1
from ..model import Glow
from ..sampling import invertible_convs


@torch.no_grad()
def perturb(module: nn.Module, seed: int = 0, scale: float = 0.003, log_diag_std: float = 0.1) -> None:
    """Every parameter + N(0, scale^2); the invertible convs' centre log-diagonals + N(0, log_diag_std^2)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        std = log_diag_std if name.endswith("log_diag") else scale
        p.add_((torch.randn(p.shape, generator=gen) * std).to(p))


def build_model(conv: str, coupling: str, cfg: dict, device: torch.device, seed: int = 0) -> tuple[Glow, torch.Tensor]:
    """The model with perturbed random weights, in eval mode, and the random images it was initialised on."""
    torch.manual_seed(seed)
    model = Glow(3, cfg["image_size"], cfg["levels"], cfg["depth"], cfg["width"], conv, coupling).to(device).eval()
    x = torch.rand(cfg["n"], 3, cfg["image_size"], cfg["image_size"], device=device) - 0.5
    with torch.no_grad():
        model.encode(x)  # data-dependent ActNorm initialisation
    perturb(model, seed)
    return model, x


@torch.no_grad()
def conv_layer_io(model: Glow, x: torch.Tensor) -> list[tuple[nn.Module, torch.Tensor, torch.Tensor]]:
    """(layer, input, output) of every invertible convolution (CInC, Emerging, 1x1) in one forward pass."""
    layers = invertible_convs(model) + [m for m in model.modules() if isinstance(m, InvConv1x1)]
    records, hooks = {}, []
    for layer in layers:
        hooks.append(layer.register_forward_hook(lambda m, inp, out: records.__setitem__(m, (inp[0], out[0]))))
    model.encode(x)
    for hook in hooks:
        hook.remove()
    return [(layer, *records[layer]) for layer in layers]
