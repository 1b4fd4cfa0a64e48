"""Exact inverses of the causal convolutions: every solver against a dense linear solve (float64, 1e-10)
and against each other on larger inputs, ``auto``'s per-layer choice, the speed table's rules, the
condition number against the dense matrix's, the accuracy guard and its float64 fallback, the first
call's cost in a fresh process, the cache's invalidation, models whose levels have different sizes,
gradients and CUDA."""
from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
import warnings

import pytest
import torch

from cincflow import CInCConv, EmergingConv, Glow, InverseAccuracyWarning
from cincflow.layers.causal import anticausal_conv, causal_conv, flip
from cincflow.layers.solvers import (
    ACCURACY_TOLERANCE,
    SOLVERS,
    Auto,
    SolveCache,
    condition_number,
    make_solver,
    relative_residual,
)
from cincflow.layers.speed import SpeedTable, exact_inverse_macs
from cincflow.sampling import (
    accuracy_report,
    invertible_convs,
    sample_with_check,
    set_solver,
    tracking_accuracy,
    warn_if_inaccurate,
)
from flowcheck import randomize

CANDIDATES = ("tiled", "wavefront", "kernel")  # auto's
F64 = torch.float64


def causal_weight(c: int, k: int, scale: float = 0.2, seed: int = 0, dtype=F64) -> torch.Tensor:
    """Random causal weight: off-centre taps N(0, scale^2), centre lower-triangular, diag exp(N(0, 0.1^2))."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(c, c, k, k, generator=gen, dtype=F64) * scale
    centre = torch.tril(w[:, :, k - 1, k - 1], -1) + torch.diag(torch.exp(0.1 * torch.randn(c, generator=gen, dtype=F64)))
    w[:, :, k - 1, k - 1] = centre
    return w.to(dtype)


def dense_solve(forward, y: torch.Tensor) -> torch.Tensor:
    """Solve forward(x) = y with forward affine: build its matrix from basis images, torch.linalg.solve."""
    _, c, h, w = y.shape
    n = c * h * w
    basis = torch.eye(n, dtype=y.dtype).view(n, c, h, w)
    offset = forward(torch.zeros(1, c, h, w, dtype=y.dtype))
    matrix = (forward(basis) - offset).reshape(n, n).T
    return torch.linalg.solve(matrix, (y - offset).reshape(len(y), n).T).T.reshape(y.shape)


SHAPES = [(3, 4, 5), (2, 5, 3), (4, 1, 6), (2, 7, 1), (3, 6, 6)]


def solve(name: str, y, weight, bias=None):
    """One uncached, differentiable solve with the named solver."""
    return make_solver(name).solve(y, weight, bias)


@pytest.mark.parametrize("name", SOLVERS)
@pytest.mark.parametrize("k", [2, 3, 4])
def test_every_solver_equals_the_dense_solve(name, k):
    for i, (c, h, w) in enumerate(SHAPES):
        weight = causal_weight(c, k, seed=i)
        bias = torch.randn(c, dtype=F64)
        y = torch.randn(2, c, h, w, dtype=F64)
        expected = dense_solve(lambda x: causal_conv(x, weight, bias), y)
        torch.testing.assert_close(solve(name, y, weight, bias), expected, rtol=0, atol=1e-10)
        solver, cache = make_solver(name), SolveCache()
        with torch.no_grad():
            for _ in range(2):  # the second from the cache
                torch.testing.assert_close(solver.solve(y, weight, bias, cache.entries(weight)), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("tile", [1, 2, 3])
@pytest.mark.parametrize("k", [2, 3, 4])
def test_the_wavefront_reads_no_unset_memory(k, tile, monkeypatch):
    """The skewed buffer is allocated uninitialised and only the slots the taps read beyond the image
    are zeroed: with every new allocation filled with NaN the solution is still exact."""
    from cincflow.layers.causal import wavefront_plan, wavefront_solve

    new_empty = torch.Tensor.new_empty
    monkeypatch.setattr(torch.Tensor, "new_empty", lambda self, *size, **kw: new_empty(self, *size, **kw).fill_(math.nan))
    for i, (c, h, w) in enumerate(SHAPES):
        weight, bias = causal_weight(c, k, seed=i), torch.randn(c, dtype=F64)
        y = torch.randn(2, c, h, w, dtype=F64)
        expected = dense_solve(lambda x: causal_conv(x, weight, bias), y)
        torch.testing.assert_close(wavefront_solve(y, wavefront_plan(weight, tile), bias), expected, rtol=0, atol=1e-10)


LAYERS = {
    "cinc3": lambda solver: CInCConv(3, solver=solver),
    "cinc2": lambda solver: CInCConv(3, kernel_size=2, solver=solver),
    "cinc3_fixed_diag": lambda solver: CInCConv(3, fixed_diagonal=True, solver=solver),
    "emerging": lambda solver: EmergingConv(3, solver=solver),
}


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_inverse_equals_the_dense_solve(name, solver):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 6, dtype=F64)
    layer = randomize(LAYERS[name](solver).double(), x, scale=0.2)
    assert layer.solver.name == solver
    y, logdet = layer(x)
    with torch.no_grad():
        expected = dense_solve(lambda v: layer(v)[0], y)
        x_rec, inv_logdet = layer.inverse(y)
    torch.testing.assert_close(expected, x, rtol=0, atol=1e-10)
    torch.testing.assert_close(x_rec, expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(inv_logdet, -logdet)


@pytest.mark.parametrize("dtype, tol", [(F64, 1e-11), (torch.float32, 2e-5)])
@pytest.mark.parametrize("shape", [pytest.param((12, 16, 16), marks=pytest.mark.slow), (8, 13, 11)])
def test_solvers_agree_on_larger_inputs(shape, dtype, tol):
    c, h, w = shape
    y = torch.randn(3, c, h, w, dtype=F64)
    for k in (2, 3):
        weight = causal_weight(c, k, scale=0.02, seed=k)
        bias = torch.randn(c, dtype=F64)
        reference = solve("wavefront", y, weight, bias)
        assert (causal_conv(reference, weight, bias) - y).abs().max() < 1e-12
        with torch.no_grad():
            for name in SOLVERS:
                x = solve(name, y.to(dtype), weight.to(dtype), bias.to(dtype))
                assert x.dtype == dtype
                torch.testing.assert_close(x.to(F64), reference, rtol=0, atol=tol)


class RankedSpeeds(SpeedTable):
    """A speed table with a given ranking (tiled, wavefront, kernel in ``order``; the kernel by FFT), so
    that which solver is fastest is not left to the machine's load."""

    def __init__(self, order):
        super().__init__()
        self.order = list(order)

    def fastest_first(self, key, y, costs, run):
        return ["fft", "direct"] if key[0] == "kernel" else list(self.order)


ORDERS = [CANDIDATES[i:] + CANDIDATES[:i] for i in range(3)]


@pytest.mark.parametrize("order", ORDERS)
def test_auto_uses_the_solver_its_speed_table_ranks_fastest(order):
    """Every candidate is accurate on a well-conditioned kernel: auto returns exactly the solution of the
    one ranked first, whichever it is, and keeps the decision in the layer's cache entries."""
    weight = causal_weight(4, 3, scale=0.05).float()
    y = torch.randn(2, 4, 9, 7)
    auto, cache = Auto(speeds=RankedSpeeds(order)), SolveCache()
    with torch.no_grad():
        x = auto.solve(y, weight, None, cache.entries(weight))
        assert Auto.choice(y, cache.entries(weight)) == order[0]
        assert torch.equal(x, auto.candidates[order[0]].solve(y, weight))
        assert torch.equal(auto.solve(y, weight, None, cache.entries(weight)), x)  # the cached decision


@pytest.mark.parametrize("scale, seed, case", [(0.02, 1, "bound"), (0.15, 1, "residual"), (0.16, 0, "none")])
def test_auto_takes_the_fastest_accurate_solver(scale, seed, case):
    """Ranked kernel, tiled, wavefront (kernel fastest), float32 at 16x16x12. The rule: the first whose
    forward-error bound cond_inf * residual meets the tolerance, else the first whose residual does, else
    the smallest residual. The three weights cover the three branches (checked from independently
    computed residuals): kernel's FFT fails the residual promise at taps of 0.15, every solver at 0.16."""
    order = ("kernel", "tiled", "wavefront")
    weight = causal_weight(12, 3, scale=scale, seed=seed).float()
    y = torch.randn(4, 12, 16, 16, generator=torch.Generator().manual_seed(seed))
    auto, cache = Auto(speeds=RankedSpeeds(order)), SolveCache()
    residual = {n: relative_residual(causal_conv(auto.candidates[n].solve(y, weight).double(), weight.double()), y) for n in order}
    cond = condition_number(weight, 16, 16)
    tol = ACCURACY_TOLERANCE
    bound_ok = [n for n in order if cond * residual[n] <= tol]
    residual_ok = [n for n in order if residual[n] <= tol]
    assert {"bound": bool(bound_ok), "residual": not bound_ok and residual_ok and residual_ok[0] != "kernel",
            "none": not residual_ok}[case], (cond, residual)
    expected = (bound_ok or residual_ok or [min(residual, key=residual.get)])[0]
    with torch.no_grad():
        x = auto.solve(y, weight, None, cache.entries(weight))
    assert Auto.choice(y, cache.entries(weight)) == expected
    assert torch.equal(x, auto.candidates[expected].solve(y, weight))


def set_taps(layer: CInCConv, scale: float, seed: int) -> CInCConv:
    """Off-centre taps N(0, scale^2), centre the identity (the issue's ill-conditioned layers)."""
    k = layer.kernel.kernel_size
    with torch.no_grad():
        w = torch.randn(layer.kernel.weight.shape, generator=torch.Generator().manual_seed(seed)) * scale
        w[:, :, k - 1, k - 1] = 0
        layer.kernel.weight.copy_(w.to(layer.kernel.weight))
        layer.kernel.log_diag.zero_()
    return layer


def inf_residual(layer, x_hat: torch.Tensor, y: torch.Tensor) -> float:
    """The residual promise's measure: max_b ||f(x_hat) - y||_inf / ||y - bias||_inf, in float64."""
    with torch.no_grad():
        return relative_residual(layer._map(x_hat.double()), y, layer.bias)


def load_weight(layer: CInCConv, weight: torch.Tensor) -> CInCConv:
    """Give ``layer`` the effective weight ``weight`` (centre lower-triangular, positive diagonal)."""
    k = layer.kernel.kernel_size
    with torch.no_grad():
        layer.kernel.weight.copy_(weight * layer.kernel.weight_mask)
        layer.kernel.log_diag.copy_(weight[:, :, k - 1, k - 1].diagonal().log())
    torch.testing.assert_close(layer.kernel(), weight.to(layer.kernel.weight))
    return layer


def test_two_layers_of_one_shape_under_auto_each_meet_the_residual_promise():
    """The issue's reproduction: a well-conditioned 12x16x16 layer picks kernel (ranked fastest); a second
    layer of the same shape with taps of 0.15 must not inherit that choice (kernel's residual there
    exceeds 1e-3), and neither must the first layer once it is given the second one's weights."""
    speeds = RankedSpeeds(("kernel", "tiled", "wavefront"))
    good = load_weight(CInCConv(12, solver=Auto(speeds=speeds)), causal_weight(12, 3, scale=0.02, seed=1).float())
    bad = load_weight(CInCConv(12, solver=Auto(speeds=speeds)), causal_weight(12, 3, scale=0.15, seed=1).float())
    y = torch.randn(4, 12, 16, 16, generator=torch.Generator().manual_seed(1))
    entries = lambda layer: layer.kernel.cache.entries(layer.kernel())  # noqa: E731
    with torch.no_grad():
        assert inf_residual(bad, bad.kernel.solve(y, Auto(speeds=speeds).candidates["kernel"], bad.bias), y) > 1e-3
        for layer in (good, bad):
            assert inf_residual(layer, layer.inverse(y)[0], y) <= 1e-3
        assert Auto.choice(y, entries(good)) == "kernel" and Auto.choice(y, entries(bad)) in ("tiled", "wavefront")
        good.load_state_dict(bad.state_dict())
        assert Auto.choice(y, entries(good)) is None  # new weights: decided again
        assert inf_residual(good, good.inverse(y)[0], y) <= 1e-3
        assert Auto.choice(y, entries(good)) in ("tiled", "wavefront")


def test_speed_table_never_times_a_predicted_loser_probes_slices_and_keeps_its_budget():
    """Rules of the speed table (fake clock: 2 ms + a per-image cost): multiply-add losers never run;
    the others run on 1 image (warm-up), B/4 and B/2 images, fewest multiply-adds first (no close call
    here: the best is 2.4x faster than the next); one already
    slower on B/4 than the best prediction for B is not run on B/2; measured once per key; past the
    budget the rest are predicted from multiply-adds."""
    calls = []
    per_image = {"a": 1e-3, "b": 4e-4, "c": 5e-3, "loser": 1e-5}  # seconds per image the fake clock charges

    def timer(fn, device):
        fn()
        name, images = calls[-1]
        return 0.002 + per_image[name] * images

    def run(name, ys):
        calls.append((name, ys.shape[0]))

    y = torch.zeros(100, 3)
    costs = {"a": 1.0, "c": 1.5, "b": 2.0, "loser": 100.0}  # multiply-adds: "loser" is 100x the cheapest
    table = SpeedTable(budget_s=1.0, threshold=16.0, timer=timer)
    assert table.fastest_first("key", y, costs, run) == ["b", "a", "c", "loser"]  # measured, not by multiply-adds
    assert calls == [("a", 1), ("a", 25), ("a", 50), ("c", 1), ("c", 25), ("b", 1), ("b", 25), ("b", 50)]
    n = len(calls)
    assert table.fastest_first("key", y, costs, run) == ["b", "a", "c", "loser"] and len(calls) == n  # measured once
    calls.clear()
    slow = SpeedTable(budget_s=0.001, threshold=16.0, timer=timer)  # spent after the first option's probes
    assert slow.fastest_first("key", y, costs, run) == ["a", "c", "b", "loser"]  # c, b predicted from multiply-adds
    assert {name for name, _ in calls} == {"a"}


def test_speed_table_decides_a_close_call_on_the_whole_batch():
    """Two options within 1.5x of each other on their slices both run twice on the whole batch,
    alternately, and the better timing of each decides: neither a misleading extrapolation (a's time
    grows faster past B/2, as when a working set outgrows a cache) nor one slow timing (b's first
    whole-batch call) picks the slower option. Never where the four calls would take more than
    ``whole_s`` (predicted): there the slices decide."""
    calls = []

    def timer(fn, device):
        fn()
        name, images = calls[-1]
        t = 0.002 + {"a": 1.0e-4, "b": 1.2e-4}[name] * images + (1e-4 * (images - 50) if name == "a" and images > 50 else 0.0)
        return t + (0.05 if calls[-1] == ("b", 100) and calls.count(("b", 100)) == 1 else 0.0)

    def run(name, ys):
        calls.append((name, ys.shape[0]))

    y, costs = torch.zeros(100, 3), {"a": 1.0, "b": 1.2}
    assert SpeedTable(timer=timer).fastest_first("key", y, costs, run) == ["b", "a"]  # a: 12 ms predicted, 17 measured
    assert calls[-4:] == [("a", 100), ("b", 100), ("a", 100), ("b", 100)]
    calls.clear()
    assert SpeedTable(timer=timer, whole_s=0.05).fastest_first("key", y, costs, run) == ["a", "b"]  # 4 calls: ~52 ms
    assert max(images for _, images in calls) == 50
    calls.clear()
    assert SpeedTable(timer=timer, close=1.1).fastest_first("key", y, costs, run) == ["a", "b"]  # 1.17x apart: not close
    assert max(images for _, images in calls) == 50


@pytest.mark.parametrize("solver", SOLVERS)
def test_cache_follows_every_weight_change(solver):
    """The cached plan / inverse kernel is rebuilt after an optimiser step, load_state_dict, .to() and an
    in-place edit through .data (which does not bump the version counter)."""
    torch.manual_seed(0)
    layer = CInCConv(4, init_std=0.1, solver=solver).double()
    x = torch.randn(2, 4, 6, 5, dtype=F64)

    def assert_exact():
        with torch.no_grad():
            y, _ = layer(x)
            torch.testing.assert_close(layer.inverse(y)[0], x, rtol=0, atol=1e-10)

    assert_exact()
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    layer(x)[0].square().mean().backward()
    opt.step()
    assert_exact()
    other = CInCConv(4, init_std=0.1).double()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    layer.load_state_dict(other.state_dict())
    assert_exact()
    layer.kernel.weight.data.mul_(0.5)
    assert_exact()
    layer.float()
    x = x.float()
    with torch.no_grad():
        y, _ = layer(x)
        assert (layer.inverse(y)[0] - x).abs().max() < 1e-5


@pytest.mark.parametrize("conv", ["cinc", "emerging"])
def test_sample_step_sample_stays_exact(conv):
    """Sample (fills the caches), take an optimiser step, sample again: the inverses are still exact."""
    torch.manual_seed(0)
    model = Glow(3, 8, 2, 2, 8, conv, "affine").double()
    x = torch.rand(4, 3, 8, 8, dtype=F64) - 0.5
    randomize(model, x, scale=0.05)
    set_solver(model, "kernel")
    noise = [torch.randn(2, *s, dtype=F64) for s in model.latent_shapes()]
    before = model.sample(2, 1.0, noise)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    (-model.log_prob(x).mean()).backward()
    opt.step()
    after = model.sample(2, 1.0, noise)
    assert torch.isfinite(after).all() and (after - before).abs().max() > 1e-6, "the step should change the samples"
    with torch.no_grad():
        zs, _ = model.encode(after)
        torch.testing.assert_close(model.decode(zs), after, rtol=0, atol=1e-9)
        zs, _ = model.encode(x)
        torch.testing.assert_close(model.decode(zs), x, rtol=0, atol=1e-9)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("conv", ["cinc", "emerging"])
def test_model_with_different_level_sizes_inverts_exactly(conv, solver):
    """Levels at 8x8x12, 4x4x24 and 2x2x48: one inverse kernel / plan per layer and size."""
    torch.manual_seed(1)
    model = Glow(3, 16, 3, 1, 8, conv, "quad", conv_kwargs={"solver": solver}).double()
    x = torch.rand(3, 3, 16, 16, dtype=F64) - 0.5
    randomize(model, x, scale=0.05)
    sizes = set()
    for layer in invertible_convs(model):
        layer.register_forward_hook(lambda m, inp, out: sizes.add(tuple(inp[0].shape[1:])))
    with torch.no_grad():
        zs, _ = model.encode(x)
        torch.testing.assert_close(model.decode(zs), x, rtol=0, atol=1e-9)
        torch.testing.assert_close(model.decode(zs), x, rtol=0, atol=1e-9)  # cached
    assert sizes == {(12, 8, 8), (24, 4, 4), (48, 2, 2)}


def dense_matrix(fn, c: int, h: int, w: int) -> torch.Tensor:
    """The matrix of the linear map ``fn`` on [1, c, h, w] (columns = images of the basis)."""
    n = c * h * w
    return fn(torch.eye(n, dtype=F64).view(n, c, h, w)).reshape(n, n).T


GRIDS = [(1, 1), (1, 4), (3, 2), (4, 5), (2, 6)]


@pytest.mark.parametrize("k", [2, 3, 4])
def test_condition_number_equals_the_dense_matrix_cond(k):
    for i, (h, w) in enumerate(GRIDS):
        weight = causal_weight(3, k, scale=0.3, seed=i)
        expected = torch.linalg.cond(dense_matrix(lambda x: causal_conv(x, weight), 3, h, w), p=float("inf"))
        assert condition_number(weight, h, w) == pytest.approx(float(expected), rel=1e-8)


@pytest.mark.parametrize("k", [2, 3])
def test_anticausal_conv_is_the_causal_conv_in_flipped_coordinates(k):
    x = torch.randn(2, 3, 5, 4, dtype=F64)
    weight = causal_weight(3, k, seed=k)
    assert torch.allclose(anticausal_conv(x, weight), flip(causal_conv(flip(x), weight)), atol=1e-14, rtol=0)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_exact_inverse_macs_count_the_layers_matrix_entries(k):
    """The benchmark's multiply-add floor of an exact inverse is the number of nonzeros of the layer's matrix."""
    for i, (h, w) in enumerate(GRIDS):
        weight = causal_weight(3, k, scale=0.3, seed=i)
        matrix = dense_matrix(lambda x: causal_conv(x, weight), 3, h, w)
        assert exact_inverse_macs(3, h, w, k) == int(torch.count_nonzero(matrix))


def test_layer_and_factor_condition_numbers_equal_the_dense_matrices_cond():
    """CInC: exact; Emerging: each factor exact (the anti-causal one in the layer's own coordinates),
    the layer's = their product, an upper bound of its matrix's."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5, dtype=F64)
    cinc = randomize(CInCConv(3).double(), x, scale=0.3)
    emerging = randomize(EmergingConv(3).double(), x, scale=0.3)
    cond = lambda fn, h, w: float(torch.linalg.cond(dense_matrix(fn, 3, h, w), p=float("inf")))  # noqa: E731
    with torch.no_grad():
        for h, w in GRIDS:
            assert cinc.condition_number(h, w) == pytest.approx(cond(lambda v: cinc(v)[0] - cinc.bias.view(1, -1, 1, 1), h, w), rel=1e-8)
            causal = cond(lambda v: causal_conv(v, emerging.causal()), h, w)
            anticausal = cond(lambda v: flip(causal_conv(flip(v), emerging.anticausal())), h, w)
            assert emerging.causal.condition_number(h, w) == pytest.approx(causal, rel=1e-8)
            assert emerging.anticausal.condition_number(h, w) == pytest.approx(anticausal, rel=1e-8)
            assert emerging.condition_number(h, w) == pytest.approx(causal * anticausal, rel=1e-12)
            assert emerging.condition_number(h, w) >= cond(lambda v: emerging(v)[0] - emerging.bias.view(1, -1, 1, 1), h, w) * (1 - 1e-8)


def rel_error(x_hat: torch.Tensor, x: torch.Tensor) -> float:
    """max_b ||x_hat - x||_inf / ||x||_inf."""
    d = (x_hat.double() - x.double()).flatten(1).abs().amax(1)
    return float((d / x.double().flatten(1).abs().amax(1)).max())


def checked_inverse(layer: CInCConv, y: torch.Tensor, fallback_tolerance=None):
    """layer.inverse(y) with accuracy tracking, as the sampler runs it; (x_hat, report)."""
    holder = torch.nn.ModuleDict({"conv": layer})
    with torch.no_grad(), tracking_accuracy(holder, fallback_tolerance) as layers:
        x_hat, _ = layer.inverse(y)
    return x_hat, accuracy_report(layers)


@pytest.mark.parametrize("dtype, scale, seed", [(F64, 0.3, 0), (F64, 0.4, 0), (torch.float32, 0.2, 2)])
def test_guard_warns_where_the_residual_looks_fine_but_the_solution_is_wrong(dtype, scale, seed):
    """The issue's three rows: one CInC layer, 8 images of 12x32x32, off-centre taps of scale s. The
    residual passes the old 1e-3 check while the solution is off by more than its own size; the bound
    sees it and the guard warns."""
    layer = set_taps(CInCConv(12).to(dtype), scale, seed=seed)
    x = torch.randn(8, 12, 32, 32, dtype=dtype, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y, _ = layer(x)
    x_hat, report = checked_inverse(layer, y)
    assert report.residual <= 1e-3 and rel_error(x_hat, x) > 1.0
    assert report.layer == "conv" and report.bound > 1e3
    with pytest.warns(InverseAccuracyWarning, match=r"forward-error bound .* \(layer conv\)"):
        warn_if_inaccurate(report)


def test_guard_is_silent_on_a_well_conditioned_layer_and_its_bound_holds():
    layer = set_taps(CInCConv(12), 0.02, seed=0)
    x = torch.randn(8, 12, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y, _ = layer(x)
        exact = layer.kernel.solve(y.double(), make_solver("tiled"), layer.bias)  # float64: cond_inf * 1e-16 accurate
    x_hat, report = checked_inverse(layer, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_inaccurate(report)
    assert rel_error(x_hat, exact) <= report.bound < 1e-4
    acc = layer.last_accuracy
    assert acc.condition == layer.condition_number(32, 32) and acc.estimate == pytest.approx(acc.condition * 2.0**-24)


def test_float64_fallback_turns_a_warning_into_a_correct_sample():
    """Taps of 0.1 in float32: the float32 solution's bound exceeds 1e-3; solved in float64 it meets it,
    the report names the layer, and the returned (float32) solution is within its bound of the exact one."""
    layer = set_taps(CInCConv(12), 0.1, seed=0)
    x = torch.randn(8, 12, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y, _ = layer(x)
        exact = layer.kernel.solve(y.double(), make_solver("tiled"), layer.bias)
    _, plain = checked_inverse(layer, y)
    assert plain.bound > ACCURACY_TOLERANCE and plain.float64_layers == ()
    x_hat, report = checked_inverse(layer, y, fallback_tolerance=ACCURACY_TOLERANCE)
    assert x_hat.dtype == torch.float32 and report.float64_layers == ("conv",) and "solved in float64: conv" in str(report)
    assert rel_error(x_hat, exact) <= report.bound <= ACCURACY_TOLERANCE


def test_sampler_reports_the_worst_layer_and_warns_when_badly_conditioned():
    x = torch.rand(4, 3, 32, 32) - 0.5
    torch.manual_seed(0)
    good = randomize(Glow(3, 32, 1, 2, 8, "cinc", "affine"), x, scale=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        samples, report = sample_with_check(good, 4)
    assert samples.shape == (4, 3, 32, 32) and 0 < report.residual < report.bound < 1e-4
    assert report.layer in {name for name, m in good.named_modules() if isinstance(m, CInCConv)}
    assert all(not layer.track_accuracy for layer in invertible_convs(good))
    worst = good.condition_report()[0]  # the estimate before sampling, on the level's 16x16 grid
    by_name = dict(good.named_modules())
    assert worst[1] == max(by_name[n].condition_number(16, 16) for n, *_ in good.condition_report())
    assert worst[2] == pytest.approx(worst[1] * 2.0**-24)
    torch.manual_seed(0)
    bad = randomize(Glow(3, 32, 1, 1, 8, "cinc", "affine", conv_kwargs={"init_std": 0.2}), x, scale=0.01)
    with pytest.warns(InverseAccuracyWarning, match="badly conditioned"):
        _, report = sample_with_check(bad, 4)
    assert report.bound > ACCURACY_TOLERANCE and report.layer.startswith("levels.0.")


@pytest.mark.parametrize("solver, dtype", [("auto", "float64"), ("kernel", "float64"), ("auto", "float32")])
def test_first_call_in_a_fresh_process_stays_within_budget(solver, dtype):
    """The issue measured the first float64 call at 100 x 12 x 32 x 32 in a fresh process: 134 s for auto,
    115 s for kernel (warm: 0.06-0.4 s). The target is 2 x warm + 0.5 s (the benchmark reports it); this
    test's budget, loose for a loaded machine: 3 x warm + 3 s."""
    cmd = [sys.executable, "-m", "cincflow.bench.cold", solver, dtype, "100", "12", "32", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    call = json.loads(proc.stdout.strip().splitlines()[-1])
    assert call["cold_s"] <= 3 * call["warm_s"] + 3.0, call


def test_layer_accuracy_tracking():
    layer = EmergingConv(4, init_std=0.1)
    y = torch.randn(2, 4, 5, 5)
    layer.inverse(y)
    assert layer.last_accuracy is None  # off by default
    layer.track_accuracy = True
    with torch.no_grad():
        x, _ = layer.inverse(y)
        fx = layer(x.double().float())[0].double()  # independent: the float32 forward, compared in float64
        d = (y.double() - layer.bias.double().view(1, -1, 1, 1)).flatten(1).abs().amax(1)
        expected = ((fx - y.double()).flatten(1).abs().amax(1) / d).max()
    acc = layer.last_accuracy
    assert acc.residual == pytest.approx(float(expected), rel=0.2, abs=1e-7) and acc.residual < 1e-6
    assert acc.condition == pytest.approx(layer.causal.condition_number(5, 5) * layer.anticausal.condition_number(5, 5))
    assert acc.bound == pytest.approx(acc.condition * acc.residual) and not acc.float64_fallback


@pytest.mark.parametrize("name", SOLVERS)
def test_inverse_is_differentiable_in_the_weights(name):
    weight = causal_weight(2, 3, seed=3).requires_grad_()
    bias = torch.randn(2, dtype=F64, requires_grad=True)
    y = torch.randn(1, 2, 3, 4, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w, b, v: solve(name, v, w, b), (weight, bias, y))


def test_cached_inverse_is_a_copy_independent_module_state():
    """deepcopy (e.g. an EMA model) keeps working, and the copy's cache follows its own weights."""
    layer = CInCConv(3, init_std=0.1, solver="kernel").double()
    y = torch.randn(2, 3, 4, 4, dtype=F64)
    with torch.no_grad():
        layer.inverse(y)
        twin = copy.deepcopy(layer)
        twin.kernel.weight.mul_(2.0)
        for m in (layer, twin):
            torch.testing.assert_close(m(m.inverse(y)[0])[0], y, rtol=0, atol=1e-12)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (F64, 1e-10)])
def test_cuda_matches_cpu(dtype, tol):
    weight = causal_weight(12, 3, scale=0.02)
    bias = torch.randn(12, dtype=F64)
    y = torch.randn(4, 12, 16, 16, dtype=F64)
    reference = solve("wavefront", y, weight, bias)
    with torch.no_grad():
        for name in SOLVERS:
            x = solve(name, y.to("cuda", dtype), weight.to("cuda", dtype), bias.to("cuda", dtype))
            torch.testing.assert_close(x.cpu().double(), reference, rtol=0, atol=tol)
