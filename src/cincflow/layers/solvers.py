"""Inverse solvers of the causal convolution, one object per algorithm, and their accuracy measure.

Every solver solves causal_conv(x, weight, bias) = y, [B, C, H, W], exactly up to rounding, with one
interface: ``solver.solve(y, weight, bias, entries)``. ``entries`` is the dict of precomputations a
:class:`SolveCache` keeps for the current weight state (plans, inverse kernels, the condition number,
``auto``'s decision); ``None`` or ``{}`` caches nothing, and the call is then differentiable in y,
weight and bias. The weight and bias are used in y's dtype (a float32 layer can be solved in float64).
- ``tiled``: the tile wavefront on (k-1) x (k-1) tiles (2 x 2 for k = 2) (:mod:`cincflow.layers.causal`);
- ``wavefront``: the same on single pixels, H + W - 1 steps (FInC's Algorithm 1);
- ``kernel``: one convolution with the exact H x W inverse kernel G, by FFT or directly, whichever the
  speed table (:mod:`cincflow.layers.speed`) finds faster for the shape;
- ``sequential``: the published algorithm, raster-order substitution one pixel at a time (a Python loop
  over the H * W pixels; the benchmark's reference);
- ``auto`` (default): the fastest of tiled, wavefront and kernel, ranked by the shared speed table,
  whose solution is accurate: forward-error bound cond_inf * residual <= ``tolerance``, else residual
  <= ``tolerance``, else the smallest residual, measured on the first 16 images of the deciding batch
  (the accuracy is a property of the weights; the sampler's guard checks every image). Decided per
  layer on its first input of each shape, and again whenever its weights change (the decision is one
  of the cached entries).

Accuracy. M, the layer's matrix on an H x W grid, is lower-triangular, and its inverse is the causal
convolution with G, so both infinity norms are exact sums: ||M||_inf = max_o sum_{c,p,q} |W[o, c, p, q]|
(over the taps that reach into the grid), ||M^-1||_inf = max_o sum_{c,p,q} |G[o, c, p, q]|, and
cond_inf = ||M||_inf ||M^-1||_inf (:func:`condition_number`, computed in float64). From
x_hat - x = M^-1 (M x_hat + b - y) and ||y - b|| <= ||M|| ||x||:

    ||x_hat - x||_inf / ||x||_inf  <=  cond_inf * ||M x_hat + b - y||_inf / ||y - b||_inf,

a rigorous bound on the forward error from the measured (float64) relative residual; cond_inf times
the dtype's unit round-off is the estimate before solving.
"""
from __future__ import annotations


import torch

from .causal import apply_inverse_kernel, causal_conv, inverse_kernel_taps, prepare_inverse_kernel, wavefront_plan, wavefront_solve
from ..numerics import nan_as_worst
from .speed import SPEEDS, SpeedTable, kernel_macs, substitution_macs

ACCURACY_TOLERANCE = 1e-3  # the accuracy check of ``auto`` and of the sampler (cincflow.sampling)
DEFAULT_SOLVER = "auto"


def unit_roundoff(dtype: torch.dtype) -> float:
    """u = eps / 2 of a floating dtype (float32: 6.0e-8, float64: 1.1e-16)."""
    return torch.finfo(dtype).eps / 2


def memo(entries: dict, key: tuple, build):
    """entries[key], built on first use."""
    if key not in entries:
        entries[key] = build()
    return entries[key]


def _scratch(entries: dict, weight: torch.Tensor) -> dict:
    """Where probes may cache detached precomputations: a throwaway dict on the differentiable path."""
    return {} if torch.is_grad_enabled() and weight.requires_grad else entries


def inverse_kernel(weight: torch.Tensor, h: int, w: int, entries: dict) -> torch.Tensor:
    """G [C, C, h, w] in float64 (see :func:`cincflow.layers.causal.inverse_kernel_taps`)."""
    b = max(1, weight.shape[-1] - 1)
    plan64 = memo(entries, ("plan", b, torch.float64), lambda: wavefront_plan(weight.to(torch.float64), b))
    return memo(entries, ("taps", h, w), lambda: inverse_kernel_taps(plan64, weight.shape[0], h, w))


@torch.no_grad()
def condition_number(weight: torch.Tensor, h: int, w: int, entries: dict | None = None) -> float:
    """cond_inf = ||M||_inf ||M^-1||_inf of causal_conv(., weight) on an h x w grid (exact, float64)."""
    entries = {} if entries is None else entries
    weight = weight.detach()

    def build() -> float:
        k = weight.shape[-1]
        taps = weight.to(torch.float64)[..., max(0, k - h) :, max(0, k - w) :]
        g = inverse_kernel(weight, h, w, entries)
        return float(taps.abs().sum((1, 2, 3)).max() * g.abs().sum((1, 2, 3)).max())

    return memo(entries, ("cond", h, w), build)


@torch.no_grad()
def relative_residual(fx: torch.Tensor, y: torch.Tensor, bias: torch.Tensor | None = None) -> float:
    """max over the batch of ||fx - y||_inf / ||y - bias||_inf, in float64 (fx: the forward map of the
    solution, ideally computed in float64)."""
    y64 = y.to(torch.float64)
    offset = y64 if bias is None else y64 - bias.to(torch.float64).view(1, -1, 1, 1)
    num = (fx.to(torch.float64) - y64).flatten(1).abs().amax(1)
    den = offset.flatten(1).abs().amax(1).clamp_min(torch.finfo(torch.float64).tiny)
    return float((num / den).max())


class SolveCache:
    """The precomputations of one causal weight, valid for one weight state.

    :meth:`entries` compares the current weight with the copy the entries were built from (value,
    dtype, device: ``torch.equal`` on C * C * k * k numbers per call, so an optimiser step,
    ``load_state_dict``, ``.to()`` or an edit through ``.data`` never leaves a stale entry) and starts
    afresh when it differs. With autograd recording and a weight that requires grad it returns a new
    empty dict: the precomputation must be differentiated too."""

    def __init__(self) -> None:
        self._weight: torch.Tensor | None = None
        self._entries: dict = {}

    def entries(self, weight: torch.Tensor) -> dict:
        if torch.is_grad_enabled() and weight.requires_grad:
            return {}
        weight, cached = weight.detach(), self._weight
        if cached is None or cached.dtype != weight.dtype or cached.device != weight.device or not torch.equal(cached, weight):
            self._weight, self._entries = weight.clone(), {}
        return self._entries


class Solver:
    """The interface: ``solve(y, weight, bias=None, entries=None) -> x`` with causal_conv(x, weight, bias) = y."""

    name = ""

    def solve(self, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, entries: dict | None = None) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _cast(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    return weight.to(y.dtype), None if bias is None else bias.to(y.dtype)


class Tiled(Solver):
    name = "tiled"

    def tile(self, kernel_size: int) -> int:
        """b = k - 1 (a tap reaches the neighbouring tiles only), at least 2."""
        return max(2, kernel_size - 1)

    def solve(self, y, weight, bias=None, entries=None):
        entries = {} if entries is None else entries
        weight, bias = _cast(y, weight, bias)
        b = self.tile(weight.shape[-1])
        return wavefront_solve(y, memo(entries, ("plan", b, y.dtype), lambda: wavefront_plan(weight, b)), bias)


class Wavefront(Tiled):
    name = "wavefront"

    def tile(self, kernel_size: int) -> int:
        return 1


class Kernel(Solver):
    name = "kernel"

    def __init__(self, speeds: SpeedTable | None = None):
        self.speeds = SPEEDS if speeds is None else speeds

    def method(self, y: torch.Tensor, weight: torch.Tensor, entries: dict) -> str:
        """"fft" or "direct", whichever applies G to inputs like ``y`` faster (shared speed table)."""
        c, h, w = y.shape[1:]
        key = ("kernel", tuple(y.shape), y.dtype, y.device)
        scratch = _scratch(entries, weight)
        run = lambda method, ys: self.apply(ys, weight.detach(), None, scratch, method)  # noqa: E731
        return self.speeds.fastest_first(key, y, kernel_macs(c, h, w), run)[0]

    def apply(self, y, weight, bias, entries: dict, method: str) -> torch.Tensor:
        """x = G * (y - bias) with the given method."""
        weight, bias = _cast(y, weight, bias)
        h, w = y.shape[-2:]
        g = inverse_kernel(weight, h, w, entries)
        kernel = memo(entries, (method, h, w, y.dtype), lambda: prepare_inverse_kernel(g, method, y.dtype))
        return apply_inverse_kernel(y, kernel, bias)

    def solve(self, y, weight, bias=None, entries=None):
        entries = {} if entries is None else entries
        return self.apply(y, weight, bias, entries, self.method(y, weight, entries))


class Sequential(Solver):
    """The published CInC / Emerging inverse, for reference:
    x[i, j] = K_c^-1 (y[i, j] - b - sum over the off-centre taps W[p, q] x[i - p, j - q])."""

    name = "sequential"

    def solve(self, y, weight, bias=None, entries=None):
        weight, bias = _cast(y, weight, bias)
        bsz, c, h, w = y.shape
        k = weight.shape[-1]
        centre = weight[:, :, k - 1, k - 1]
        off = weight.clone()
        off[:, :, k - 1, k - 1] = 0
        if bias is not None:
            y = y - bias.view(1, c, 1, 1)
        xp = y.new_zeros(bsz, c, h + k - 1, w + k - 1)
        for i in range(h):
            for j in range(w):
                r = y[:, :, i, j] - torch.einsum("bcpq,ocpq->bo", xp[:, :, i : i + k, j : j + k], off)
                xp[:, :, i + k - 1, j + k - 1] = torch.linalg.solve_triangular(centre, r.T, upper=False).T
        return xp[:, :, k - 1 :, k - 1 :]


class Auto(Solver):
    """The fastest accurate one of tiled, wavefront and kernel (see the module docstring)."""

    name = "auto"

    check_images = 16  # the accuracy check runs on the first images of the deciding batch (float64)

    def __init__(self, tolerance: float = ACCURACY_TOLERANCE, speeds: SpeedTable | None = None):
        self.tolerance = tolerance
        self.speeds = SPEEDS if speeds is None else speeds
        self.candidates = {s.name: s for s in (Tiled(), Wavefront(), Kernel(self.speeds))}

    @staticmethod
    def choice(y: torch.Tensor, entries: dict, tolerance: float = ACCURACY_TOLERANCE) -> str | None:
        """The solver decided for inputs like ``y`` in this weight state (None: not decided yet)."""
        return entries.get(("auto", tuple(y.shape), y.dtype, tolerance))

    def fastest_first(self, y: torch.Tensor, weight: torch.Tensor, entries: dict) -> list[str]:
        """The candidates' names, fastest first for inputs like ``y`` (shared speed table)."""
        (c, h, w), k = y.shape[1:], weight.shape[-1]
        kernel, scratch = self.candidates["kernel"], _scratch(entries, weight)
        method = kernel.method(y, weight, entries)
        costs = {name: substitution_macs(c, h, w, k, s.tile(k)) for name, s in self.candidates.items() if isinstance(s, Tiled)}
        costs["kernel"] = kernel_macs(c, h, w)[method]

        def run(name: str, ys: torch.Tensor) -> torch.Tensor:
            if name == "kernel":
                return kernel.apply(ys, weight.detach(), None, scratch, method)
            return self.candidates[name].solve(ys, weight.detach(), None, scratch)

        return self.speeds.fastest_first(("solver", tuple(y.shape), k, y.dtype, y.device), y, costs, run)

    def solve(self, y, weight, bias=None, entries=None):
        entries = {} if entries is None else entries
        key = ("auto", tuple(y.shape), y.dtype, self.tolerance)
        if key in entries:
            return self.candidates[entries[key]].solve(y, weight, bias, entries)
        order = self.fastest_first(y, weight, entries)
        cond = condition_number(weight, *y.shape[-2:], _scratch(entries, weight))
        w64, b64 = weight.detach().to(torch.float64), None if bias is None else bias.detach().to(torch.float64)
        m = self.check_images
        tried = {}
        for name in order:
            x = self.candidates[name].solve(y, weight, bias, entries)
            tried[name] = (relative_residual(causal_conv(x[:m].detach().to(torch.float64), w64, b64), y[:m], bias), x)
            if cond * tried[name][0] <= self.tolerance:
                break
        passing = [n for n in tried if cond * tried[n][0] <= self.tolerance] or [n for n in tried if tried[n][0] <= self.tolerance]
        entries[key] = passing[0] if passing else min(tried, key=lambda n: nan_as_worst(tried[n][0]))
        return tried[entries[key]][1]


SOLVERS = {cls.name: cls for cls in (Auto, Tiled, Wavefront, Kernel, Sequential)}


def make_solver(solver: str | Solver) -> Solver:
    """A solver object from its name (``auto``, ``tiled``, ``wavefront``, ``kernel``, ``sequential``)
    or the object itself."""
    if isinstance(solver, Solver):
        return solver
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}: choose one of {', '.join(SOLVERS)}")
    return SOLVERS[solver]()
