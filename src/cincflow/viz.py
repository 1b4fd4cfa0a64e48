"""Pictures of a flow: sample grids (the one sampling loop of the training stack), reconstructions
x -> z -> x and latent interpolations, as float image grids [3, H, W] in [0, 1] for ``save_image``.
Each picture says what it shows: a text strip above every block (the temperature of each sample
block, "data" / "x -> z -> x", the interpolation's endpoints).

Every function takes the flow itself (a :class:`cincflow.Glow`, e.g. ``FlowLitModule.eval_model``)
and works on its device and dtype.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import nn
from torchvision.utils import make_grid
from tqdm.auto import tqdm

from .pixels import dequantized, postprocess
from .sampling import AccuracyReport, sample_with_check


INTERPOLATION_TITLE = "latent interpolation, each row:\ndecode((1-t) z_a + t z_b), t = 0 -> 1"


def to_unit(x_uint8: torch.Tensor) -> torch.Tensor:
    return x_uint8.float().div(255.0)


def grid_of(images_uint8: torch.Tensor, nrow: int | None = None, padding: int = 1, min_size: int = 32) -> torch.Tensor:
    """uint8 [N, C, H, W] -> float grid [3, H', W'] in [0, 1]; images smaller than ``min_size``
    pixels are enlarged by an integer factor (nearest neighbour) so that 8x8 digits stay visible."""
    n = images_uint8.shape[0]
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    x = to_unit(images_uint8.cpu())
    factor = max(1, min_size // x.shape[-1])
    if factor > 1:
        x = x.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
    return make_grid(x, nrow=nrow, padding=padding, pad_value=1.0)


def side_by_side(blocks: list[torch.Tensor]) -> torch.Tensor:
    """Grids [3, H, W] next to each other, 4 white pixels apart, top-aligned: a smaller block (fewer
    images, or a label strip in a smaller font) is padded with white to the largest's size."""
    if len(blocks) == 1:
        return blocks[0]
    height, width = max(b.shape[-2] for b in blocks), max(b.shape[-1] for b in blocks)
    padded = [F.pad(b, (0, width - b.shape[-1], 0, height - b.shape[-2]), value=1.0) for b in blocks]
    return make_grid(torch.stack(padded), nrow=len(blocks), padding=4, pad_value=1.0)


def labelled(grid: torch.Tensor, text: str, size: int = 12) -> torch.Tensor:
    """``grid`` [C, H, W] with a white strip above it holding ``text`` (lines split at newlines) in
    black, PIL's bundled font shrunk down to 7 px until every line fits the width: [C, H + strip, W]."""
    width, lines = grid.shape[-1], text.split("\n")
    font = ImageFont.load_default(size=size)
    while size > 7 and max(font.getlength(line) for line in lines) > width - 4:
        size -= 1
        font = ImageFont.load_default(size=size)
    strip = Image.new("L", (width, len(lines) * (size + 2) + 4), 255)
    ImageDraw.Draw(strip).multiline_text((2, 2), text, fill=0, font=font, spacing=2)
    header = torch.from_numpy(np.asarray(strip).copy()).to(grid.dtype) / 255.0  # black on white
    return torch.cat([header.expand(grid.shape[0], -1, -1), grid], dim=1)


def fixed_noise(latent_shapes: list[tuple[int, ...]], n: int, seed: int) -> list[torch.Tensor]:
    """Standard-normal latents [n, *shape] from a private generator: identical for the same
    (shapes, n, seed) on every call, every epoch, every rank and after a resume."""
    gen = torch.Generator().manual_seed(int(seed))
    return [torch.randn((n, *shape), generator=gen) for shape in latent_shapes]


@torch.no_grad()
def sample_grid(
    model: nn.Module,
    n: int,
    temperatures: list[float],
    seed: int,
    batch_size: int | None = None,
    nrow: int | None = None,
    tolerance: float | None = None,
    float64_fallback: bool = False,
    progress: bool = False,
) -> tuple[torch.Tensor, dict]:
    """``n`` samples per temperature from FIXED noise, one grid block per temperature, side by side.

    The noise of batch i (``batch_size`` samples, default all ``n``) is ``fixed_noise(shapes, m,
    seed + i)``, so a grid is the same on every call. Each batch is drawn with
    :func:`cincflow.sampling.sample_with_check` (``tolerance``: its warning threshold, default its
    own; ``float64_fallback``: solve inaccurate layers again in float64). Returns the grid and
    ``nonfinite_samples`` (count of samples with a NaN/inf value, which the PNG can only show
    clamped), ``samples`` (total), ``inverse_residual_max`` (worst relative residual of the
    CInC/Emerging inverses), ``inverse_error_bound`` (the worst layer's forward-error bound
    cond_inf * residual) and ``accuracy`` (the whole :class:`~cincflow.sampling.AccuracyReport`)."""
    p = next(model.parameters())
    batch = max(1, int(batch_size or n))
    chunks = math.ceil(n / batch)
    check = {} if tolerance is None else {"tolerance": tolerance}
    blocks, bad, report = [], 0, AccuracyReport()
    with tqdm(total=len(temperatures) * chunks, desc="sampling", unit="batch", disable=not progress) as bar:
        for t in temperatures:
            images = []
            for i in range(chunks):
                m = min(batch, n - i * batch)
                noise = [z.to(p.device, p.dtype) for z in fixed_noise(model.latent_shapes(), m, seed + i)]
                x, batch_report = sample_with_check(model, m, temperature=float(t), noise=noise,
                                                    float64_fallback=float64_fallback, **check)
                report = report.worst(batch_report)
                bad += int((~torch.isfinite(x.flatten(1))).any(dim=1).sum())
                images.append(postprocess(x, model.n_bits, nonfinite="clamp").cpu())
                bar.update(1)
            blocks.append(labelled(grid_of(torch.cat(images), nrow=nrow), f"T = {float(t):g}"))
    stats = {"nonfinite_samples": bad, "samples": n * len(temperatures), "inverse_residual_max": float(report.residual),
             "inverse_error_bound": float(report.bound), "accuracy": report}
    return side_by_side(blocks), stats


@torch.no_grad()
def reconstruction_grid(model: nn.Module, images_uint8: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, dict[str, float]]:
    """Originals ("data", left block) next to their reconstructions ("x -> z -> x", right), and the errors
    ``recon_err_max`` / ``recon_err_mean`` (model space; NaN counts as inf) and ``recon_pixels_exact``."""
    x = dequantized(images_uint8, model.n_bits, seed, like=next(model.parameters()))
    zs, _ = model.encode(x)
    x_rec = model.decode(zs)
    err = (x - x_rec).abs().flatten(1)
    rec_uint8 = postprocess(x_rec, model.n_bits, nonfinite="clamp").cpu()
    orig_uint8 = postprocess(x, model.n_bits).cpu()
    stats = {
        "recon_err_max": float(err.max().nan_to_num(float("inf"))),
        "recon_err_mean": float(err.mean().nan_to_num(float("inf"))),
        "recon_pixels_exact": float((rec_uint8 == orig_uint8).float().mean()),
    }
    nrow = max(1, int(math.ceil(math.sqrt(images_uint8.shape[0]))))
    blocks = [labelled(grid_of(orig_uint8, nrow), "data"), labelled(grid_of(rec_uint8, nrow), "x -> z -> x")]
    return side_by_side(blocks), stats


@torch.no_grad()
def interpolation_grid(model: nn.Module, images_uint8: torch.Tensor, steps: int, seed: int) -> torch.Tensor:
    """One row per consecutive image pair (a, b): decode((1 - t) z_a + t z_b) for ``steps`` values of t
    from 0 (left, a's reconstruction) to 1 (right, b's), under a title saying so."""
    x = dequantized(images_uint8, model.n_bits, seed, like=next(model.parameters()))
    zs, _ = model.encode(x)
    alphas = torch.linspace(0, 1, steps, device=x.device, dtype=x.dtype)
    rows = []
    for p in range(images_uint8.shape[0] // 2):
        mixed = [torch.stack([(1 - a) * z[2 * p] + a * z[2 * p + 1] for a in alphas]) for z in zs]
        rows.append(postprocess(model.decode(mixed), model.n_bits, nonfinite="clamp").cpu())
    return labelled(grid_of(torch.cat(rows), nrow=steps), INTERPOLATION_TITLE)
