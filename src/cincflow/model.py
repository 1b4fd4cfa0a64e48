"""The multi-scale Glow-style model (docs/method.md section 5) with a choice of invertible convolution.

x [B, C, S, S] (model space) -> for each of L levels: squeeze (C, S) -> (4C, S/2), K flow steps,
then (all but the last level) split half the channels off as a latent with a learned Gaussian prior
conditioned on the kept half. The last level's output is the top latent, with a learned per-channel
Gaussian prior. ``encode`` returns the latents (one per level, split-off ones first) and the
log-determinant of x -> latents; ``decode`` is its exact inverse.
"""
from __future__ import annotations

import math
from collections import Counter

import torch
from torch import nn

from .checks import check_images, check_positive_int, check_temperature
from .layers.quarter_plane import QuarterPlaneConv
from .layers.sequential import FlowSequential
from .layers.split import Split, gaussian_log_prob, gaussian_sample
from .layers.squeeze import Squeeze
from .numerics import nonfinite_count
from .layers.step import CONVS, COUPLINGS, ConvFactory, CouplingFactory, conv_factory, coupling_factory, factory_name, flow_step
from .params import count_parameters
from .pixels import bits_per_dim, check_bits, preprocess
from .targets import config_of, path_of


IMAGE_KEYS = ("in_channels", "image_size")


def image_dims(source) -> dict[str, int | None]:
    """``in_channels`` and ``image_size`` of an image batch [B, C, S, S] (size None when the batch is
    not 4-d or not square), or of anything with those attributes (model, DataModule, model config)."""
    if isinstance(source, torch.Tensor):
        square = source.dim() == 4 and source.shape[2] == source.shape[3]
        return {"in_channels": int(source.shape[1]) if source.dim() == 4 else None,
                "image_size": int(source.shape[2]) if square else None}
    return {key: int(getattr(source, key)) for key in IMAGE_KEYS}


def dims_mismatch(expected, found) -> list[str]:
    """The keys of :data:`IMAGE_KEYS` in which ``found`` (images, DataModule, ...) does not fit
    ``expected`` (a model or its config): the one check that images fit a model."""
    want, have = image_dims(expected), image_dims(found)
    return [key for key in IMAGE_KEYS if want[key] != have[key]]


def check_geometry(in_channels: int | None = None, image_size: int | None = None, levels: int | None = None,
                   depth: int | None = None, width: int | None = None, n_bits: int | None = None) -> None:
    """A ValueError unless a :class:`Glow` of these sizes can be built (each level halves the image);
    None: not known yet (the data gives it). ``Glow.check_settings``: the configuration asks it too."""
    for name, value in (("in_channels", in_channels), ("image_size", image_size), ("levels", levels),
                        ("depth", depth), ("width", width)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if image_size is not None and levels is not None and image_size % 2**levels:
        raise ValueError(
            f"image_size {image_size} is not divisible by 2^levels = {2**levels}: "
            "each level halves the image, so choose fewer levels or another image size"
        )
    if n_bits is not None:
        check_bits(n_bits)


class Glow(nn.Module):
    check_settings = staticmethod(check_geometry)

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        levels: int = 3,
        depth: int = 32,
        width: int = 512,
        conv: str | ConvFactory = "cinc",
        coupling: str | CouplingFactory = "affine",
        n_bits: int = 8,
        learn_top: bool = True,
        conv_kwargs: dict | None = None,
        conditioner_actnorm: bool = True,
    ):
        """``conv``: a conv factory (``channels -> layers``, e.g. the ``_partial_`` configs of
        conf/conv) or the name of one, then with ``conv_kwargs``; ``coupling``: a coupling factory
        (``(channels, width=, actnorm=) -> Coupling``, e.g. the ``_partial_`` configs of conf/coupling)
        or the name of one (see :mod:`cincflow.layers.step`). :meth:`config` describes the model."""
        super().__init__()
        make_conv = conv_factory(conv, conv_kwargs)
        make_coupling = coupling_factory(coupling)
        check_geometry(in_channels, image_size, levels, depth, width, n_bits)
        self.in_channels, self.image_size, self.n_bits = in_channels, image_size, n_bits
        self.conv, self.coupling = factory_name(conv, CONVS), factory_name(coupling, COUPLINGS)
        self._config = {"in_channels": in_channels, "image_size": image_size, "levels": levels, "depth": depth,
                        "width": width, "conv": conv, "coupling": coupling, "n_bits": n_bits, "learn_top": learn_top,
                        "conv_kwargs": conv_kwargs, "conditioner_actnorm": conditioner_actnorm}
        self.levels = nn.ModuleList()
        self.splits = nn.ModuleList()
        c, s = in_channels, image_size
        self._latent_shapes = []
        for level in range(levels):
            c, s = 4 * c, s // 2
            steps = [flow_step(c, make_conv, make_coupling, width, conditioner_actnorm=conditioner_actnorm)
                     for _ in range(depth)]
            self.levels.append(FlowSequential([Squeeze(), *steps]))
            if level < levels - 1:
                self.splits.append(Split(c))
                c //= 2
                self._latent_shapes.append((c, s, s))
        self._latent_shapes.append((c, s, s))
        top = torch.zeros(1, 2 * c, 1, 1)  # learn_top=False: a constant (a buffer: never optimised nor counted)
        if learn_top:
            self.top_prior = nn.Parameter(top)
        else:
            self.register_buffer("top_prior", top)

    def config(self) -> dict:
        """The ``_target_`` config this model is built from (factories as ``_partial_`` configs):
        ``cincflow.targets.build(model.config())`` is an untrained copy. Checkpoints keep it, so a
        trained model rebuilds from its file alone (``cincflow.load``)."""
        values = {k: config_of(v) if k in ("conv", "coupling") else v for k, v in self._config.items()}
        return {"_target_": path_of(type(self)), **{k: v for k, v in values.items() if k != "conv_kwargs" or v}}

    @property
    def num_dims(self) -> int:
        return self.in_channels * self.image_size**2

    def latent_shapes(self) -> list[tuple[int, int, int]]:
        """(C, H, W) of each latent, in the order ``encode`` returns them."""
        return list(self._latent_shapes)

    def _top(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        c, h, w = self._latent_shapes[-1]
        mean, log_std = self.top_prior.expand(batch, -1, h, w).chunk(2, dim=1)
        return mean, log_std

    def _check_input(self, x: torch.Tensor) -> None:
        check_images("Glow", x)  # floats: uint8 images go through bits_per_dim
        want = self.top_prior.dtype
        if x.dtype != want:
            raise TypeError(f"Glow's parameters are {want}, the images {x.dtype}: convert the images with "
                            f"x.to({want}) or the model with model.to({x.dtype})")
        if dims_mismatch(self, x):
            expected = (self.in_channels, self.image_size, self.image_size)
            raise ValueError(
                f"the model expects images of shape [B, {expected[0]}, {expected[1]}, {expected[2]}], "
                f"got {list(x.shape)}: check the data's channels and size against the model config"
            )

    @staticmethod
    def _check_finite(x: torch.Tensor) -> None:
        """A ValueError for images with NaN or inf (one reduction; the training path, from uint8, skips it)."""
        bad = nonfinite_count(x) if isinstance(x, torch.Tensor) and x.is_floating_point() else 0
        if bad:
            raise ValueError(f"Glow got images with {bad} non-finite values (NaN or inf): a density is defined "
                             f"for finite images only; find where they came from (preprocess makes finite ones)")

    def _encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        self._check_input(x)
        zs, logdet, log_pz = [], x.new_zeros(x.shape[0]), x.new_zeros(x.shape[0])
        h = x
        for i, flow in enumerate(self.levels):
            h, ld = flow(h)
            logdet = logdet + ld
            if i < len(self.splits):
                h, z, lp = self.splits[i](h)
                zs.append(z)
                log_pz = log_pz + lp
        zs.append(h)
        return zs, logdet, log_pz + gaussian_log_prob(h, *self._top(h.shape[0]))

    def encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """x -> (latents, log|det d latents / dx| [B])."""
        self._check_finite(x)
        zs, logdet, _ = self._encode(x)
        return zs, logdet

    forward = encode

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Continuous log-density of model-space images, in nats, [B] (a ValueError for non-finite images)."""
        self._check_finite(x)
        return self._log_prob(x)

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`log_prob` of images known to be finite (what :func:`cincflow.compiled.compile_flow` compiles)."""
        _, logdet, log_pz = self._encode(x)
        return log_pz + logdet

    def log_weight(
        self, x_uint8: torch.Tensor, dequantizer: nn.Module | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """log p(y) - log q(v | x) [B] (nats) of uint8 images [B, C, H, W] dequantised once: y = (x_b + v) / 2^n - 0.5
        with v from ``dequantizer`` (a :mod:`cincflow.dequant` module; None: uniform noise, log q = 0). Its
        noise comes from ``generator`` when given (see :func:`cincflow.preprocess`)."""
        dtype, x_uint8 = self.top_prior.dtype, x_uint8.to(self.top_prior.device)
        if dequantizer is None:
            return self._log_prob(preprocess(x_uint8, self.n_bits, True, dtype, generator))  # from uint8: finite
        y, log_q = dequantizer(x_uint8, self.n_bits, dtype, generator)
        return self._log_prob(y) - log_q

    def bits_per_dim(
        self, x_uint8: torch.Tensor, dequantize: bool = True, generator: torch.Generator | None = None,
        dequantizer: nn.Module | None = None,
    ) -> torch.Tensor:
        """Bits/dim of uint8 images [B, C, H, W]: preprocess, dequantise, evaluate; [B]. The
        dequantisation noise comes from ``generator`` when given (see :func:`cincflow.preprocess`):
        two models given generators with the same seed score the images on identical noise. With a
        ``dequantizer`` (:mod:`cincflow.dequant`) the variational bound -(log p(y) - log q(v | x)) in bits/dim."""
        if not dequantize:
            x = preprocess(x_uint8.to(self.top_prior.device), self.n_bits, False, self.top_prior.dtype)
            return bits_per_dim(self._log_prob(x), self.num_dims, self.n_bits)
        return bits_per_dim(self.log_weight(x_uint8, dequantizer, generator), self.num_dims, self.n_bits)

    def _check_latents(self, name: str, zs: list[torch.Tensor] | None, batch: int) -> None:
        """``zs`` (latents or noise) must be one tensor [batch, *latent_shapes()[i]] per level."""
        if zs is None:
            return
        shapes = [[batch, *s] for s in self._latent_shapes]
        if len(zs) != len(shapes):
            raise ValueError(f"{name}: expected {len(shapes)} tensors (one per level) of shapes {shapes}, got {len(zs)}")
        for i, (z, want) in enumerate(zip(zs, shapes)):
            if not isinstance(z, torch.Tensor) or list(z.shape) != want:
                got = list(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
                raise ValueError(f"{name}[{i}]: expected shape {want} (latent_shapes()[{i}] with batch {batch}), got {got}")

    def _decode(
        self,
        zs: list[torch.Tensor | None],
        batch: int,
        temperature: float,
        noise: list[torch.Tensor] | None,
    ) -> torch.Tensor:
        def eps(i: int) -> torch.Tensor | None:
            return None if noise is None else noise[i]

        top = len(self.levels) - 1
        h = zs[top] if zs[top] is not None else gaussian_sample(*self._top(batch), temperature, eps(top))
        for i in range(top, -1, -1):
            if i < top:
                h = self.splits[i].inverse(h, zs[i], temperature, eps(i))
            h, _ = self.levels[i].inverse(h)
        return h

    def decode(self, zs: list[torch.Tensor]) -> torch.Tensor:
        """Exact inverse of :meth:`encode`."""
        self._check_latents("decode: latents", zs, zs[0].shape[0] if len(zs) and isinstance(zs[0], torch.Tensor) else 0)
        return self._decode(list(zs), zs[0].shape[0], 1.0, None)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, noise: list[torch.Tensor] | None = None) -> torch.Tensor:
        """n model-space samples; latents = mean + std * temperature * eps, eps ~ N(0, I) or ``noise``
        (one standard-normal tensor per latent, shapes [n, *latent_shapes()[i]]) for fixed grids."""
        check_positive_int("Glow.sample: n", n)
        temperature = check_temperature("Glow.sample: temperature", temperature)
        self._check_latents("Glow.sample: noise", noise, n)
        return self._decode([None] * len(self.levels), n, temperature, noise)

    @torch.no_grad()
    def condition_report(self) -> list[tuple[str, float, float]]:
        """(name, cond_inf on its level's grid, cond_inf * unit round-off of the model's dtype) of every
        CInC / Emerging layer, worst first: the accuracy estimate before sampling
        (:meth:`cincflow.layers.quarter_plane.QuarterPlaneConv.condition_number`)."""
        u = torch.finfo(self.top_prior.dtype).eps / 2
        rows = []
        for i, flow in enumerate(self.levels):
            side = self.image_size >> (i + 1)
            for name, m in flow.named_modules(prefix=f"levels.{i}"):
                if isinstance(m, QuarterPlaneConv):
                    cond = m.condition_number(side, side)
                    rows.append((name, cond, cond * u))
        return sorted(rows, key=lambda row: -math.inf if math.isnan(row[1]) else -row[1])

    def parameter_counts(self) -> dict[str, int]:
        """Learnable parameters (masked entries excluded) per layer type, plus 'total'; the same for
        a frozen copy (e.g. the Polyak average, whose ``requires_grad`` is off)."""
        counts: Counter[str] = Counter()
        for flow in self.levels:
            for step in flow:
                for layer in step if isinstance(step, FlowSequential) else [step]:
                    counts[type(layer).__name__] += count_parameters(layer)
        counts["Split"] += sum(count_parameters(s) for s in self.splits)
        counts["TopPrior"] += self.top_prior.numel() if isinstance(self.top_prior, nn.Parameter) else 0
        counts = Counter({k: v for k, v in counts.items() if k != "Squeeze"})
        counts["total"] = count_parameters(self)
        return dict(counts)
