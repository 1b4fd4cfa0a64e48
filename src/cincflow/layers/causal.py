"""Quarter-plane causal convolutions and their exact inverses.

A causal k x k convolution pads its input with k-1 zero rows on the top and k-1 zero columns on the
left (nothing bottom/right), so output pixel (i, j) reads only input pixels (i', j') with i' <= i and
j' <= j. With weight W of shape [C, C, k, k] the tap W[:, :, k-1, k-1] (the "centre", C x C)
multiplies x[:, :, i, j] itself. If the centre is lower-triangular, the convolution matrix in raster
order (channels inside pixels) is lower-triangular with the centre on every diagonal block, so
det = det(centre) ** (H * W).

The anti-causal convolution (padding bottom/right, centre = top-left tap, upper-triangular) is the
causal one conjugated by a flip of rows, columns and channels: flip(anticausal(x, W)) =
causal_conv(flip(x), W.flip(0, 1, 2, 3)).

The exact inverses, as operators (the solver objects that use them, and choose among them, are in
:mod:`cincflow.layers.solvers`), all vectorised over the batch, the pixels of a step and the channels:
- the tile wavefront (:func:`wavefront_plan`, :func:`wavefront_solve`): substitution on b x b tiles.
  Grouping b x b pixels into one "tile pixel" of b*b*C channels turns the k x k causal conv into a
  causal conv on the tile grid with a triangular centre; the tile wavefront takes H/b + W/b - 1
  steps. b = 1 is FInC's Algorithm 1 (anti-diagonals i + j = d, H + W - 1 steps);
- the inverse kernel (:func:`inverse_kernel_taps`, :func:`apply_inverse_kernel`): the inverse is
  itself a causal convolution with an H x W kernel G, the truncated 2-D power-series inverse of W
  (the truncation of the inverse on the quarter plane is exact, docs/method.md section 1):
  x = G * (y - b). G is the response to C impulse images; it is applied in one pass, by FFT or as a
  direct H x W convolution.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F

from . import blocked


def causal_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = conv(pad_top_left(x), weight) + bias; [B, C, H, W] -> [B, C, H, W] (kernel kh x kw), in
    whole channel blocks where :func:`cincflow.layers.blocked.block_padding` says so."""
    kh, kw = weight.shape[-2:]
    return blocked.conv2d(F.pad(x, (kw - 1, 0, kh - 1, 0)), weight, bias)


def anticausal_conv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """flip(causal_conv(flip(x), weight)) without flipping the images: the convolution of x padded
    bottom/right with ``weight.flip(0, 1, 2, 3)`` (the flip of the small weight instead of two of x)."""
    kh, kw = weight.shape[-2:]
    return blocked.conv2d(F.pad(x, (0, kw - 1, 0, kh - 1)), weight.flip(0, 1, 2, 3))


def flip(x: torch.Tensor) -> torch.Tensor:
    """Reverse channels, rows and columns of [B, C, H, W] (an involution)."""
    return x.flip(1, 2, 3)


# --- tile wavefront -------------------------------------------------------------------------------


class WavefrontPlan(NamedTuple):
    """Precomputed operators of the tile wavefront (row-vector convention, tile vectors ordered
    (row, column, channel) inside the b x b tile, n = b * b * C entries).

    On the tile grid the layer is y_t = sum_{(P, Q)} x_{t - (P, Q)} M[P, Q], (P, Q) in [0, kt)^2 with
    kt = ceil((k - 1) / b) + 1, and M[0, 0] = A upper-triangular (raster order). Hence
    x_t = u_t + sum_{(P, Q) != 0} x_{t - (P, Q)} (-M[P, Q] A^-1),  u_t = (y - bias)_t A^-1.
    Only the entries of the neighbour tile t - (P, Q) within k - 1 pixels of tile t reach it (the
    others' rows of M[P, Q] are zero by the kernel's support): ``rows`` keeps, per tap, the range
    [lo, hi) of entries that holds them, and ``halo`` those rows only (b = 2, k = 2: 24, 36 and 12
    of 48 rows for the taps (1, 0), (0, 1), (1, 1); with b = k - 1 every entry reaches).
    """

    tile: int
    taps: tuple[tuple[int, int], ...]  # the (P, Q) != (0, 0)
    rows: tuple[tuple[int, int], ...]  # per tap: [lo, hi) of the neighbour's entries that reach the tile
    unpack: torch.Tensor  # [n, C, b, b], channels-last: conv2d(y, unpack, stride=b) = tiles(y) A^-1
    halo: tuple[torch.Tensor, ...]  # per tap: (-M[P, Q] A^-1)[lo:hi], [hi - lo, n]


def _offsets(k: int, b: int, device) -> tuple[torch.Tensor, int]:
    """off[P, r, r'] = P b + r' - r, the pixel offset from entry row r of tile row t - P to entry
    row r' of tile row t (the same for columns), and kt."""
    kt = -(-(k - 1) // b) + 1
    rows = torch.arange(b, device=device)
    return torch.arange(kt, device=device)[:, None, None] * b + rows[None, None, :] - rows[None, :, None], kt


def tile_matrices(weight: torch.Tensor, tile: int) -> torch.Tensor:
    """M [kt, kt, n, n] of the causal conv ``weight`` [C, C, k, k] on b x b tiles, read off the taps:
    input entry (r, c, i) of tile t - (P, Q) reaches output entry (r', c', o) of tile t at the pixel
    offset (dy, dx) = (P b + r' - r, Q b + c' - c), through W[o, i, k-1-dy, k-1-dx] if 0 <= dy, dx < k."""
    k, b = weight.shape[-1], tile
    off, kt = _offsets(k, b, weight.device)
    dy, dx = off[:, None, :, None, :, None], off[None, :, None, :, None, :]  # -> [P, Q, r, c, r', c']
    inside = ((dy >= 0) & (dy < k) & (dx >= 0) & (dx < k)).to(weight.dtype)
    taps = weight[:, :, (k - 1 - dy).clamp(0, k - 1), (k - 1 - dx).clamp(0, k - 1)] * inside  # [o, i, P, Q, r, c, r', c']
    n = b * b * weight.shape[0]
    return taps.permute(2, 3, 4, 5, 1, 6, 7, 0).reshape(kt, kt, n, n)


def reach_rows(k: int, tile: int, channels: int, p: int, q: int) -> tuple[int, int]:
    """[lo, hi): the smallest range of entries of tile t - (p, q) holding every entry that reaches
    tile t (some 0 <= offset < k in both directions, see :func:`tile_matrices`)."""
    off, _ = _offsets(k, tile, None)
    reach = ((off >= 0) & (off < k)).any(2)  # [P, r]: row r of tile row t - P reaches tile row t
    used = (reach[p][:, None] & reach[q][None, :]).repeat_interleave(channels, 1).flatten().nonzero()
    return int(used[0]), int(used[-1]) + 1


def wavefront_plan(weight: torch.Tensor, tile: int) -> WavefrontPlan:
    """Build the plan for the causal conv ``weight`` [C, C, k, k] on b x b tiles, in float64 (cast to
    the weight's dtype), from :func:`tile_matrices`."""
    c, k = weight.shape[0], weight.shape[-1]
    b, kt = tile, -(-(k - 1) // tile) + 1
    n = b * b * c
    w64 = weight.to(torch.float64)
    m = tile_matrices(w64, b)  # m[P, Q][input entry, output entry]
    eye = torch.eye(n, dtype=w64.dtype, device=w64.device)
    a_inv = torch.linalg.solve_triangular(m[0, 0], eye, upper=True)
    taps = tuple((p, q) for p in range(kt) for q in range(kt) if (p, q) != (0, 0))
    rows = tuple(reach_rows(k, b, c, p, q) for p, q in taps)
    halo = tuple((-m[p, q][lo:hi] @ a_inv).to(weight.dtype) for (p, q), (lo, hi) in zip(taps, rows))
    unpack = a_inv.T.reshape(n, b, b, c).permute(0, 3, 1, 2)
    return WavefrontPlan(b, taps, rows, unpack.to(weight.dtype).contiguous(memory_format=torch.channels_last), halo)


@functools.lru_cache(maxsize=256)
def _halo_slots(ht: int, wt: int, taps: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int, int], ...]:
    """The slots of the skewed buffer that the taps read but no tile fills (beyond the image's edges),
    as runs (diagonal, first row, end row) of tile coordinates: the only ones that must hold zeros."""
    empty: set[tuple[int, int]] = set()
    for d in range(ht + wt - 1):
        i0, i1 = max(0, d - wt + 1), min(d, ht - 1)
        for p, q in taps:
            dd = d - p - q
            empty |= {(dd, r) for r in range(i0 - p, i1 - p + 1) if not (0 <= r < ht and 0 <= dd - r < wt)}
    runs: list[list[int]] = []
    for dd, r in sorted(empty):
        if runs and runs[-1][0] == dd and runs[-1][2] == r:
            runs[-1][2] = r + 1
        else:
            runs.append([dd, r, r + 1])
    return tuple(map(tuple, runs))


def wavefront_solve(y: torch.Tensor, plan: WavefrontPlan, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Solve causal_conv(x, weight, bias) = y with the plan of ``weight``; [B, C, H, W].

    Tiles live in a skewed buffer z[diagonal, tile row, image, n] (tile (i, j) at diagonal i + j,
    row i), so the tiles of one anti-diagonal, and each of their neighbours (P, Q), form a contiguous
    [rows * B, n] matrix (of which a tap reads the columns [lo, hi)): a step is one in-place matrix
    product-accumulate per tap, no gathers. Of the slots that hold no tile only those the taps read
    (beyond the image's edges) are zeroed. The image is padded bottom/right to whole tiles, which
    cannot change the solution (causality). Copies in and out of z move whole tile vectors: u comes
    channels-last from the convolution (its weight is), x is read out channels-last, then returned
    contiguous (channels-last if y is not contiguous).
    """
    bsz, c, h, w = y.shape
    b, n = plan.tile, plan.unpack.shape[0]
    ht, wt = -(-h // b), -(-w // b)
    if (ht * b, wt * b) != (h, w):
        y = F.pad(y, (0, wt * b - w, 0, ht * b - h))
    shift = -(plan.unpack.sum((2, 3)) @ bias) if bias is not None else None
    u = F.conv2d(y, plan.unpack, shift, stride=b)  # [B, n, ht, wt], channels-last
    e = max((p for p, _ in plan.taps), default=0)  # tile rows reached back (= columns)
    z = y.new_empty(ht + wt - 1 + 2 * e, ht + e, bsz, n)  # u fills the tiles' slots, zeros the halo's
    for dd, r0, r1 in _halo_slots(ht, wt, plan.taps):
        z[dd + 2 * e, r0 + e : r1 + e].zero_()
    sd, sr, sb, _ = z.stride()
    base = z.storage_offset() + 2 * e * sd + e * sr  # tile (0, 0)
    z.as_strided((bsz, n, ht, wt), (sb, 1, sd + sr, sd), base).copy_(u)
    copy_operands = torch.is_grad_enabled() and (u.requires_grad or any(t.requires_grad for t in plan.halo))  # z changes in place

    def block(diagonal: int, row: int, rows: int, lo: int, hi: int) -> torch.Tensor:
        """z[diagonal, row : row + rows, :, lo:hi] as a [rows * B, hi - lo] matrix (2e, e: the margins)."""
        return z.as_strided((rows * bsz, hi - lo), (n, 1), base + diagonal * sd + row * sr + lo)

    for d in range(ht + wt - 1) if plan.taps else ():
        i0 = max(0, d - wt + 1)
        rows = min(d, ht - 1) - i0 + 1
        out = block(d, i0, rows, 0, n)
        for (p, q), (lo, hi), halo in zip(plan.taps, plan.rows, plan.halo):
            src = block(d - p - q, i0 - p, rows, lo, hi)
            out.addmm_(src.clone() if copy_operands else src, halo)
    x = y.new_empty(bsz, ht * b, wt * b, c)  # [B, H, W, C]
    x.view(bsz, ht, b, wt, b, c).copy_(z.as_strided((bsz, ht, b, wt, b, c), (sb, sd + sr, b * c, sd, c, 1), base))
    layout = torch.contiguous_format if y.is_contiguous() else torch.channels_last
    return x[:, :h, :w].permute(0, 3, 1, 2).contiguous(memory_format=layout)


# --- inverse kernel --------------------------------------------------------------------------------


class InverseKernel(NamedTuple):
    """G of one image size, ready to apply: ``method`` "direct" holds G flipped as an H x W causal conv
    weight, "fft" holds rfft2(G) on the (2H, 2W) grid (large enough that the circular product equals the
    linear one on the image), laid out [frequencies, C_out, C_in]."""

    method: str
    weight: torch.Tensor


def inverse_kernel_taps(plan64: WavefrontPlan, channels: int, h: int, w: int) -> torch.Tensor:
    """G [C_out, C_in, H, W]: x[:, :, i, j] = sum_{p <= i, q <= j} G[:, :, p, q] (y - bias)[:, :, i - p, j - q].
    Column c of G is the solution for an impulse in channel c at pixel (0, 0)."""
    impulses = plan64.unpack.new_zeros(channels, channels, h, w)
    impulses[:, :, 0, 0] = torch.eye(channels, dtype=impulses.dtype, device=impulses.device)
    return wavefront_solve(impulses, plan64).transpose(0, 1)


def prepare_inverse_kernel(g: torch.Tensor, method: str, dtype: torch.dtype) -> InverseKernel:
    h, w = g.shape[-2:]
    if method == "direct":
        return InverseKernel(method, g.flip(2, 3).to(dtype))
    gf = torch.fft.rfft2(g, s=(2 * h, 2 * w))  # [C_out, C_in, 2H, W + 1]
    return InverseKernel(method, gf.permute(2, 3, 0, 1).reshape(-1, *g.shape[:2]).to(dtype.to_complex()))


def apply_inverse_kernel(y: torch.Tensor, kernel: InverseKernel, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x = G * (y - bias) in one pass; [B, C, H, W]."""
    if bias is not None:
        y = y - bias.view(1, -1, 1, 1)
    if kernel.method == "direct":
        return causal_conv(y, kernel.weight)
    bsz, c, h, w = y.shape
    yf = torch.fft.rfft2(y, s=(2 * h, 2 * w))  # [B, C, 2H, W + 1]
    xf = torch.bmm(kernel.weight, yf.permute(2, 3, 1, 0).reshape(-1, c, bsz))  # [F, C, B]
    xf = xf.view(2 * h, w + 1, c, bsz).permute(3, 2, 0, 1)
    return torch.fft.irfft2(xf, s=(2 * h, 2 * w))[..., :h, :w].contiguous()
