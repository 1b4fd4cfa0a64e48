"""Exact inverses of the causal convolutions (issue #4): every algorithm against a dense linear solve
(float64, 1e-10) and against each other on larger inputs, the cache's invalidation, models whose
levels have different sizes, the residual check, gradients and CUDA."""
from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch

from cincflow import CInCConv, EmergingConv, Glow
from cincflow.layers.causal import (
    ALGORITHMS,
    INVERSE_MODES,
    RESIDUAL_TOLERANCE,
    CausalInverse,
    auto_choice,
    causal_conv,
    causal_conv_inverse,
    relative_residual,
)
from cincflow.sampling import invertible_convs, sample_with_check, set_inverse_mode
from flowcheck import randomize

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


@pytest.mark.parametrize("mode", ALGORITHMS)
@pytest.mark.parametrize("k", [2, 3, 4])
def test_every_algorithm_equals_the_dense_solve(mode, k):
    for i, (c, h, w) in enumerate(SHAPES):
        weight = causal_weight(c, k, seed=i)
        bias = torch.randn(c, dtype=F64)
        y = torch.randn(2, c, h, w, dtype=F64)
        expected = dense_solve(lambda x: causal_conv(x, weight, bias), y)
        torch.testing.assert_close(causal_conv_inverse(y, weight, bias, mode), expected, rtol=0, atol=1e-10)
        cached = CausalInverse()
        with torch.no_grad():
            torch.testing.assert_close(cached(y, weight, bias, mode), expected, rtol=0, atol=1e-10)
            torch.testing.assert_close(cached(y, weight, bias, mode), expected, rtol=0, atol=1e-10)  # from the cache


LAYERS = {
    "cinc3": lambda mode: CInCConv(3, inverse=mode),
    "cinc2": lambda mode: CInCConv(3, kernel_size=2, inverse=mode),
    "cinc3_fixed_diag": lambda mode: CInCConv(3, fixed_diagonal=True, inverse=mode),
    "emerging": lambda mode: EmergingConv(3, inverse=mode),
}


@pytest.mark.parametrize("mode", INVERSE_MODES)
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_inverse_equals_the_dense_solve(name, mode):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 6, dtype=F64)
    layer = randomize(LAYERS[name](mode).double(), x, scale=0.2)
    assert layer.inverse_mode == mode
    y, logdet = layer(x)
    with torch.no_grad():
        expected = dense_solve(lambda v: layer(v)[0], y)
        x_rec, inv_logdet = layer.inverse(y)
    torch.testing.assert_close(expected, x, rtol=0, atol=1e-10)
    torch.testing.assert_close(x_rec, expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(inv_logdet, -logdet)


@pytest.mark.parametrize("dtype, tol", [(F64, 1e-11), (torch.float32, 2e-5)])
@pytest.mark.parametrize("shape", [(12, 16, 16), (8, 13, 11)])
def test_algorithms_agree_on_larger_inputs(shape, dtype, tol):
    c, h, w = shape
    y = torch.randn(3, c, h, w, dtype=F64)
    for k in (2, 3):
        weight = causal_weight(c, k, scale=0.02, seed=k)
        bias = torch.randn(c, dtype=F64)
        reference = causal_conv_inverse(y, weight, bias, "wavefront")
        assert (causal_conv(reference, weight, bias) - y).abs().max() < 1e-12
        with torch.no_grad():
            for mode in INVERSE_MODES:
                x = CausalInverse()(y.to(dtype), weight.to(dtype), bias.to(dtype), mode)
                assert x.dtype == dtype
                torch.testing.assert_close(x.to(F64), reference, rtol=0, atol=tol)


def test_auto_times_the_algorithms_once_per_shape_and_uses_the_fastest():
    weight = causal_weight(4, 3, scale=0.05)
    y = torch.randn(2, 4, 9, 7, dtype=F64)
    with torch.no_grad():
        x = CausalInverse()(y, weight, None, "auto")
    assert auto_choice(y, 3) in ALGORITHMS
    torch.testing.assert_close(x, causal_conv_inverse(y, weight, None, auto_choice(y, 3)), rtol=0, atol=1e-12)


def test_auto_picks_the_fastest_algorithm_that_meets_the_accuracy_check(monkeypatch):
    """``kernel`` is made to time fastest. On a well-conditioned kernel auto picks it; on a badly
    conditioned one (float32, off-centre taps 0.15 at 16x16x12) its FFT leaves a residual above 1e-3
    where the substitutions stay below, and auto picks a substitution; when every algorithm fails the
    check, auto picks the most accurate."""
    from cincflow.layers import causal

    ran_kernel = []
    apply = causal.apply_inverse_kernel
    monkeypatch.setattr(causal, "apply_inverse_kernel", lambda *a, **k: ran_kernel.append(1) or apply(*a, **k))

    def best_time(fn, device):  # 0 s when the call applied an inverse kernel, else 1 s
        ran_kernel.clear()
        fn()
        return 0.0 if ran_kernel else 1.0

    monkeypatch.setattr(causal, "_best_time", best_time)
    for scale, seed, expected in ((0.02, 1, "kernel"), (0.15, 1, "accurate"), (0.16, 0, "most accurate")):
        monkeypatch.setattr(causal, "_FASTEST", {})
        weight = causal_weight(12, 3, scale=scale, seed=seed).float()
        y = torch.randn(4, 12, 16, 16, generator=torch.Generator().manual_seed(seed))
        residual = {m: relative_residual(causal_conv(causal_conv_inverse(y, weight, None, m), weight), y) for m in ALGORITHMS}
        with torch.no_grad():
            x = CausalInverse()(y, weight, None, "auto")
        picked = auto_choice(y, 3)
        assert torch.equal(x, causal_conv_inverse(y, weight, None, picked))
        if expected == "kernel":
            assert max(residual.values()) < RESIDUAL_TOLERANCE and picked == "kernel"
        elif expected == "accurate":
            assert residual["kernel"] > RESIDUAL_TOLERANCE >= max(residual["tiled"], residual["wavefront"]), residual
            assert picked in ("tiled", "wavefront")
        else:
            assert min(residual.values()) > RESIDUAL_TOLERANCE, residual
            assert picked == min(residual, key=residual.get) != "kernel"


@pytest.mark.parametrize("mode", ALGORITHMS)
def test_cache_follows_every_weight_change(mode):
    """The cached plan / inverse kernel is rebuilt after an optimiser step, load_state_dict, .to() and an
    in-place edit through .data (which does not bump the version counter)."""
    torch.manual_seed(0)
    layer = CInCConv(4, init_std=0.1, inverse=mode).double()
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
    set_inverse_mode(model, "kernel")
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


@pytest.mark.parametrize("mode", INVERSE_MODES)
@pytest.mark.parametrize("conv", ["cinc", "emerging"])
def test_model_with_different_level_sizes_inverts_exactly(conv, mode):
    """Levels at 8x8x12, 4x4x24 and 2x2x48: one inverse kernel / plan per layer and size."""
    torch.manual_seed(1)
    model = Glow(3, 16, 3, 1, 8, conv, "quad", conv_kwargs={"inverse": mode}).double()
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


def test_residual_is_recorded_and_the_sampler_warns_when_badly_conditioned():
    x = torch.rand(4, 3, 32, 32) - 0.5
    torch.manual_seed(0)
    good = randomize(Glow(3, 32, 1, 2, 8, "cinc", "affine"), x, scale=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        samples, residual = sample_with_check(good, 4)
    assert samples.shape == (4, 3, 32, 32) and 0 < residual < 1e-5
    assert all(not layer.track_residual for layer in invertible_convs(good))
    # off-centre taps of scale 0.2 at 16 x 16 x 12: G grows geometrically, float32 loses the solution
    torch.manual_seed(0)
    bad = randomize(Glow(3, 32, 1, 1, 8, "cinc", "affine", conv_kwargs={"init_std": 0.2}), x, scale=0.01)
    with pytest.warns(RuntimeWarning, match="badly conditioned"):
        _, residual = sample_with_check(bad, 4)
    assert 1e-3 < residual < math.inf


def test_layer_residual_tracking():
    layer = EmergingConv(4, init_std=0.1)
    y = torch.randn(2, 4, 5, 5)
    assert layer.last_residual is None
    layer.inverse(y)
    assert layer.last_residual is None
    layer.track_residual = True
    with torch.no_grad():
        x, _ = layer.inverse(y)
        expected = ((layer(x)[0] - y).flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1)).max()
    assert layer.last_residual == pytest.approx(float(expected))
    assert layer.last_residual < 1e-5


@pytest.mark.parametrize("mode", ALGORITHMS)
def test_inverse_is_differentiable_in_the_weights(mode):
    weight = causal_weight(2, 3, seed=3).requires_grad_()
    bias = torch.randn(2, dtype=F64, requires_grad=True)
    y = torch.randn(1, 2, 3, 4, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w, b, v: causal_conv_inverse(v, w, b, mode), (weight, bias, y))


def test_cached_inverse_is_a_copy_independent_module_state():
    """deepcopy (e.g. an EMA model) keeps working, and the copy's cache follows its own weights."""
    layer = CInCConv(3, init_std=0.1, inverse="kernel").double()
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
    reference = causal_conv_inverse(y, weight, bias, "wavefront")
    with torch.no_grad():
        for mode in INVERSE_MODES:
            x = CausalInverse()(y.to("cuda", dtype), weight.to("cuda", dtype), bias.to("cuda", dtype), mode)
            torch.testing.assert_close(x.cpu().double(), reference, rtol=0, atol=tol)
