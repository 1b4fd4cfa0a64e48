"""The multi-scale model: exact decode(encode(x)), total log-determinant against the brute-force
Jacobian, log_prob / bits-per-dim against an analytic case, sampling, preprocessing, bad input."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from cincflow import Glow, postprocess, preprocess
from flowcheck import choices, factory, randomize

COMBOS = list(itertools.product(choices("conv"), choices("coupling")))  # every pair of the config groups


def _model(conv, coupling, dtype, size=8, channels=3, depth=2, seed=0):
    torch.manual_seed(seed)
    model = Glow(channels, size, levels=2, depth=depth, width=8, conv=factory("conv", conv),
                 coupling=factory("coupling", coupling)).to(dtype)
    x = torch.rand(4, channels, size, size, dtype=dtype) - 0.5
    return randomize(model, x, scale=0.05, seed=seed), x


@pytest.mark.parametrize("conv,coupling", COMBOS)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float64, 1e-9)])
def test_decode_inverts_encode(conv, coupling, dtype, tol):
    model, x = _model(conv, coupling, dtype)
    zs, logdet = model.encode(x)
    assert [tuple(z.shape[1:]) for z in zs] == model.latent_shapes() == [(6, 4, 4), (24, 2, 2)]
    assert logdet.shape == (4,) and torch.isfinite(logdet).all()
    torch.testing.assert_close(model.decode(zs), x, rtol=0, atol=tol)


@pytest.mark.parametrize("conv,coupling", COMBOS)
def test_total_logdet_matches_brute_force_jacobian(conv, coupling):
    model, x = _model(conv, coupling, torch.float64, size=4, channels=1, depth=1)

    def flat_latents(v):
        zs, _ = model.encode(v.view(1, 1, 4, 4))
        return torch.cat([z.flatten() for z in zs])

    jac = torch.autograd.functional.jacobian(flat_latents, x[0].flatten(), vectorize=True)
    sign, expected = torch.linalg.slogdet(jac)
    assert sign != 0
    _, logdet = model.encode(x[:1])
    torch.testing.assert_close(logdet[0], expected, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("conv", ["cinc", "glow"])
def test_log_prob_and_bpd_of_an_orthogonal_flow_with_standard_normal_base(conv):
    """Untrained CInC with zero taps and additive coupling is the identity; Glow's 1x1 conv starts as
    a random rotation. Either way log p(x) = log N(x; 0, I) exactly (priors start at N(0, 1))."""
    model = Glow(3, 8, levels=2, depth=2, width=8, conv=conv, coupling="additive").double()
    for m in model.modules():
        if hasattr(m, "initialized"):
            m.initialized.fill_(True)  # keep ActNorm at the identity
    if conv == "cinc":
        for layer in model.modules():
            if hasattr(layer, "kernel"):
                layer.kernel.weight.data.zero_()
    x = torch.randn(5, 3, 8, 8, dtype=torch.float64)
    d = 3 * 8 * 8
    expected = -0.5 * (x**2).flatten(1).sum(1) - 0.5 * d * math.log(2 * math.pi)
    # the 1x1 rotation is stored in float32 at construction, so it is orthogonal to about 1e-7 only
    rtol = 1e-10 if conv == "cinc" else 1e-6
    torch.testing.assert_close(model.log_prob(x), expected, rtol=rtol, atol=1e-10)

    x_uint8 = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    torch.manual_seed(7)
    bpd = model.bits_per_dim(x_uint8)
    torch.manual_seed(7)
    xq = preprocess(x_uint8, 8, dequantize=True, dtype=torch.float64)
    log_p = -0.5 * (xq**2).flatten(1).sum(1) - 0.5 * d * math.log(2 * math.pi)
    expected_bpd = -(log_p - d * math.log(256)) / (d * math.log(2))
    torch.testing.assert_close(bpd, expected_bpd, rtol=rtol, atol=1e-10)
    # the standard normal on [-0.5, 0.5) in 256 bins costs about 8 + log2(sqrt(2 pi)) - small bits/dim
    assert 8.0 < float(bpd.mean().detach()) < 8.0 + 0.5 * math.log2(2 * math.pi) + 0.1


@pytest.mark.parametrize("conv,coupling", COMBOS)
def test_samples_are_finite(conv, coupling):
    model, _ = _model(conv, coupling, torch.float32)
    for t in (0.0, 0.7, 1.0):
        s = model.sample(3, temperature=t)
        assert s.shape == (3, 3, 8, 8) and torch.isfinite(s).all()


def test_sampling_with_fixed_noise_is_reproducible_and_temperature_zero_is_the_mode():
    model, _ = _model("cinc", "quad", torch.float64)
    noise = [torch.randn(2, *shape, dtype=torch.float64) for shape in model.latent_shapes()]
    torch.testing.assert_close(model.sample(2, 0.7, noise), model.sample(2, 0.7, noise), rtol=0, atol=0)
    a, b = model.sample(2, 0.0), model.sample(2, 0.0)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(model.sample(2, 1.0, noise), a)


def test_parameter_counts_per_layer_type():
    model = Glow(3, 8, levels=2, depth=2, width=8, conv="cinc", coupling="quad")
    counts = model.parameter_counts()
    assert set(counts) == {"ActNorm", "CInCConv", "QuadCoupling", "Split", "TopPrior", "total"}
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")
    c1, c2 = 12, 24  # channels at level 1 and 2
    assert counts["CInCConv"] == 2 * sum(9 * c * c - c * (c - 1) // 2 + c for c in (c1, c2))
    assert counts["ActNorm"] == 2 * 2 * (c1 + c2)


@pytest.mark.parametrize("n_bits", [5, 8])
def test_preprocess_postprocess_round_trip(n_bits):
    x = torch.randint(0, 256, (4, 3, 6, 6), dtype=torch.uint8)
    xf = preprocess(x, n_bits, dequantize=True)
    assert xf.min() >= -0.5 and xf.max() < 0.5
    reduced = (x // 2 ** (8 - n_bits)) * 2 ** (8 - n_bits)
    assert torch.equal(postprocess(xf, n_bits), reduced)
    assert torch.equal(postprocess(preprocess(x, n_bits, dequantize=False), n_bits), reduced)


def test_bad_input_gives_clear_errors():
    with pytest.raises(TypeError, match="expects uint8"):
        preprocess(torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError, match="not divisible by 2\\^levels = 8"):
        Glow(3, 12, levels=3, depth=1, width=4)
    with pytest.raises(ValueError, match="depth must be a positive integer"):
        Glow(3, 8, levels=2, depth=0, width=4)
    with pytest.raises(ValueError, match="width must be a positive integer"):
        Glow(3, 8, levels=2, depth=1, width=-1)
    with pytest.raises(ValueError, match="unknown coupling 'quadd'"):
        Glow(3, 8, levels=2, depth=1, width=4, coupling="quadd")
    model = Glow(3, 8, levels=2, depth=1, width=4)
    with pytest.raises(ValueError, match=r"expects images of shape \[B, 3, 8, 8\], got \[2, 1, 8, 8\]"):
        model.log_prob(torch.zeros(2, 1, 8, 8))
