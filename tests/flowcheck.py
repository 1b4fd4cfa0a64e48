"""Shared checks for flow layers: randomised weights, brute-force Jacobians (float64), and the adapter
that lets :class:`~cincflow.layers.split.Split` run through the same checks."""
from __future__ import annotations

from pathlib import Path

import torch
from torch.autograd.functional import jacobian


@torch.no_grad()
def randomize(module: torch.nn.Module, x: torch.Tensor, scale: float = 0.1, seed: int = 0) -> torch.nn.Module:
    """Initialise every ActNorm on ``x`` (one forward), then perturb every parameter by N(0, scale^2),
    so that zero-initialised layers (conditioner outputs, priors, biases) do real work."""
    module(x)
    gen = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)
    return module


class SplitAsFlow(torch.nn.Module):
    """Split in the layers' interface, as the bijection its prior defines: x = (kept, z) ->
    (kept, eps) with eps = (z - mean(kept)) / std(kept), log|det| = -sum log std; the inverse is
    ``split.inverse(kept, eps=eps)``, the sampling path. So log p(z | kept) = log N(eps; 0, I) + log|det|."""

    def __init__(self, split: torch.nn.Module):
        super().__init__()
        self.split = split

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kept, z, _ = self.split(x)
        mean, log_std = self.split.prior(kept).chunk(2, dim=1)
        return torch.cat([kept, (z - mean) * torch.exp(-log_std)], dim=1), -log_std.flatten(1).sum(1)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kept, eps = y.chunk(2, dim=1)
        _, log_std = self.split.prior(kept).chunk(2, dim=1)
        return self.split.inverse(kept, None, 1.0, eps), log_std.flatten(1).sum(1)


def jacobian_matrix(fn, x: torch.Tensor) -> torch.Tensor:
    """Jacobian of a single example: fn maps [1, *shape] -> tensor; returns [out_dim, in_dim]."""
    shape = x.shape
    return jacobian(lambda v: fn(v.view(1, *shape)).flatten(), x.flatten(), vectorize=True)


def brute_force_logdet(layer, x: torch.Tensor) -> torch.Tensor:
    """log|det d layer(x)[0] / dx| per example, [B], from the dense Jacobian and slogdet."""
    out = []
    for xb in x:
        sign, logabs = torch.linalg.slogdet(jacobian_matrix(lambda v: layer(v)[0], xb))
        assert sign != 0, "the Jacobian is singular"
        out.append(logabs)
    return torch.stack(out)


def raster_jacobian(fn, x: torch.Tensor) -> torch.Tensor:
    """Jacobian of one example [C, H, W] with pixels in raster order and channels inside each pixel."""
    c, h, w = x.shape
    perm = torch.arange(c * h * w).view(c, h, w).permute(1, 2, 0).flatten()  # raster index -> CHW index
    return jacobian_matrix(fn, x)[perm][:, perm]


# ---------------------------------------------------------------------------- the layers of the configs
CONF = Path(__file__).resolve().parents[1] / "conf"


def choices(group: str, conf_dirs: tuple[Path, ...] = (CONF,)) -> list[str]:
    """The options of config group ``group`` in ``conf_dirs`` (the repository's conf/ and, in a test,
    the folders a ``hydra.searchpath`` would add): a new conv or coupling file is tested without editing a list."""
    return sorted({p.stem for d in conf_dirs for p in (Path(d) / group).glob("*.yaml")})


def factory(group: str, name: str, conf_dirs: tuple[Path, ...] = (CONF,)):
    """The factory of ``<group>/<name>.yaml`` (``conv`` or ``coupling``, both ``@package model``): the
    ``_partial_`` config built as the job builds it."""
    from omegaconf import OmegaConf

    from cincflow.targets import build

    path = next(Path(d) / group / f"{name}.yaml" for d in reversed(conf_dirs) if (Path(d) / group / f"{name}.yaml").is_file())
    return build(OmegaConf.to_container(OmegaConf.load(path)[group]))


class ConvAsFlow(torch.nn.Module):
    """The layers a conv factory returns, as one flow layer."""

    def __init__(self, layers: list[torch.nn.Module]):
        super().__init__()
        from cincflow.layers.sequential import FlowSequential

        self.flow = FlowSequential(layers)

    def forward(self, x):
        return self.flow(x)

    def inverse(self, y):
        return self.flow.inverse(y)


def config_layers(channels: int, width: int = 8, conf_dirs: tuple[Path, ...] = (CONF,)) -> dict:
    """name -> a maker of every conv (with each solver its layers take, named ``conv:<name>[<solver>]``)
    and every coupling (``coupling:<name>``) of the config groups, at ``channels`` (a coupling of more
    blocks than divide it gets the smallest multiple of its block count)."""
    import functools

    from cincflow.layers.solvers import SOLVERS

    makers = {}
    for name in choices("conv", conf_dirs):
        make = factory("conv", name, conf_dirs)
        takes_solver = "solver" in getattr(make, "keywords", {})
        for solver in (s for s in SOLVERS if s != "auto") if takes_solver else [None]:
            bound = functools.partial(make, solver=solver) if solver else make
            label = f"conv:{name}" + (f"[{solver}]" if solver else "")
            makers[label] = (lambda bound=bound: ConvAsFlow(bound(channels)), channels)
    for name in choices("coupling", conf_dirs):
        make = factory("coupling", name, conf_dirs)
        blocks = getattr(getattr(make, "func", make), "blocks", 2)
        c = channels if channels % blocks == 0 else 2 * blocks
        makers[f"coupling:{name}"] = (lambda make=make, c=c: make(c, width=width, actnorm=True), c)
    return makers


def check_layer(layer: torch.nn.Module, x: torch.Tensor) -> None:
    """The shared checks of a flow layer (float64, randomised weights): exact inverse, log|det| equal to
    the brute-force Jacobian's, the inverse's log|det| = minus the forward's (and its own brute force)."""
    y, logdet = layer(x)
    x_rec, inv_logdet = layer.inverse(y)
    if y.shape == x.shape:
        assert not torch.allclose(y, x), "the layer should do real work with randomised weights"
    torch.testing.assert_close(x_rec, x, rtol=0, atol=1e-10)
    assert logdet.shape == (x.shape[0],) and inv_logdet.shape == (x.shape[0],)
    torch.testing.assert_close(logdet, brute_force_logdet(layer, x), rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(inv_logdet, -logdet, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(inv_logdet, brute_force_logdet(lambda v: layer.inverse(v), y), rtol=1e-8, atol=1e-12)
