"""The structure the paper's claims rest on: CInC's quarter-plane causality and characterisation,
invertibility for every parameter value, the Emerging factors' opposite causality, the quad
coupling's Feistel order, and parameter counts that exclude masked weights."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cincflow import CInCConv, EmergingConv, Glow, InvConv1x1, QuadCoupling, count_parameters
from cincflow.layers.causal import causal_conv, flip
from cincflow.viz import reconstruction_grid
from flowcheck import jacobian_matrix, randomize, raster_jacobian


pytestmark = pytest.mark.usefixtures("float64")  # tests/conftest.py

C, H, W = 3, 4, 5


def _pixel(p: int) -> tuple[int, int]:
    return divmod(p, W)


def assert_quarter_plane_causal(jac: torch.Tensor, centre: torch.Tensor, anti: bool = False) -> None:
    """Raster-order Jacobian: block (p, q) is zero unless q's pixel is above-left of p's (below-right
    when ``anti``); diagonal blocks all equal ``centre``."""
    blocks = jac.view(H * W, C, H * W, C)
    for p in range(H * W):
        i, j = _pixel(p)
        for q in range(H * W):
            i2, j2 = _pixel(q)
            reachable = (i2 >= i and j2 >= j) if anti else (i2 <= i and j2 <= j)
            if not reachable:
                assert torch.count_nonzero(blocks[p, :, q]) == 0, f"output pixel {(i, j)} depends on {(i2, j2)}"
        torch.testing.assert_close(blocks[p, :, p], centre, rtol=0, atol=1e-14)


@pytest.fixture
def cinc():
    torch.manual_seed(1)
    return randomize(CInCConv(C).double(), torch.randn(2, C, H, W), scale=0.5)


def test_cinc_jacobian_is_block_lower_triangular_quarter_plane(cinc):
    jac = raster_jacobian(lambda v: cinc(v)[0], torch.randn(C, H, W))
    centre = cinc.kernel()[:, :, -1, -1]
    assert torch.count_nonzero(torch.triu(centre, diagonal=1)) == 0
    assert torch.count_nonzero(torch.tril(jac, diagonal=-1)) > 0, "off-diagonal taps should be non-trivial"
    assert torch.count_nonzero(torch.triu(jac, diagonal=1)) == 0  # lower-triangular in raster order
    assert_quarter_plane_causal(jac, centre)


def test_cinc_characterisation_det_is_centre_det_power_hw(cinc):
    jac = jacobian_matrix(lambda v: cinc(v)[0], torch.randn(C, H, W))
    centre = cinc.kernel()[:, :, -1, -1]
    _, logabs = torch.linalg.slogdet(jac)
    expected = H * W * torch.linalg.slogdet(centre)[1]
    torch.testing.assert_close(logabs, expected, rtol=1e-10, atol=1e-10)


@settings(max_examples=40, deadline=None)
@given(
    log_diag=st.lists(st.floats(-30, 30), min_size=C, max_size=C),
    tap_scale=st.floats(0, 1e3),
    bias_scale=st.floats(0, 1e3),
    seed=st.integers(0, 2**16),
    fixed=st.booleans(),
)
def test_cinc_is_never_singular(log_diag, tap_scale, bias_scale, seed, fixed):
    """For ANY parameter values (huge taps, diagonals near 0 or huge) the Jacobian is triangular in
    raster order with a strictly positive diagonal, and the reported logdet is finite and exact."""
    gen = torch.Generator().manual_seed(seed)
    layer = CInCConv(C, fixed_diagonal=fixed).double()
    with torch.no_grad():
        layer.kernel.weight.copy_(torch.randn(layer.kernel.weight.shape, generator=gen) * tap_scale)
        layer.bias.copy_(torch.randn(C, generator=gen) * bias_scale)
        if not fixed:
            layer.kernel.log_diag.copy_(torch.tensor(log_diag))
    x = torch.randn(1, C, H, W, generator=gen)
    jac = raster_jacobian(lambda v: layer(v)[0], x[0])
    assert torch.count_nonzero(torch.triu(jac, diagonal=1)) == 0
    diag = torch.diagonal(jac)
    assert torch.all(diag > 0)
    _, logdet = layer(x)
    assert torch.isfinite(logdet).all()
    torch.testing.assert_close(logdet[0], diag.log().sum(), rtol=1e-10, atol=1e-9)
    if fixed:
        assert logdet[0] == 0


def test_emerging_factors_have_opposite_quarter_plane_causality():
    torch.manual_seed(2)
    layer = randomize(EmergingConv(C).double(), torch.randn(2, C, H, W), scale=0.5)
    x = torch.randn(C, H, W)
    causal_w, anti_w = layer.causal(), layer.anticausal()
    jac_causal = raster_jacobian(lambda v: causal_conv(v, causal_w), x)
    assert_quarter_plane_causal(jac_causal, causal_w[:, :, -1, -1])
    jac_anti = raster_jacobian(lambda v: flip(causal_conv(flip(v), anti_w)), x)
    # in unflipped coordinates the anti-causal centre (top-left tap) is upper-triangular
    anti_centre = anti_w.flip(0, 1, 2, 3)[:, :, 0, 0]
    assert torch.count_nonzero(torch.tril(anti_centre, diagonal=-1)) == 0
    assert torch.count_nonzero(torch.tril(jac_anti, diagonal=-1)) == 0  # upper-triangular in raster order
    assert_quarter_plane_causal(jac_anti, anti_centre, anti=True)
    # together: a 3 x 3 receptive field centred on the pixel
    jac = raster_jacobian(lambda v: layer(v)[0], x).view(H * W, C, H * W, C)
    p = 2 * W + 2  # pixel (2, 2)
    deps = {_pixel(q) for q in range(H * W) if torch.count_nonzero(jac[p, :, q])}
    assert deps == {(i, j) for i in (1, 2, 3) for j in (1, 2, 3)}


def _randomized_quad(channels: int = 8):
    torch.manual_seed(3)
    return randomize(QuadCoupling(channels, width=16).double(), torch.randn(2, channels, 4, 4), scale=0.1)


def test_quad_coupling_feistel_structure():
    layer = _randomized_quad()
    x = torch.randn(2, 8, 4, 4)
    seen = {}
    hooks = [
        getattr(layer, f).register_forward_pre_hook(lambda m, args, f=f: seen.__setitem__(f, args[0].clone()))
        for f in ("f1", "f2", "f3")
    ]
    y, _ = layer(x)
    for h in hooks:
        h.remove()
    x1, x2, x3, x4 = x.chunk(4, dim=1)
    # every conditioner reads INPUT blocks only (independent in the forward pass)
    torch.testing.assert_close(seen["f1"], x4, rtol=0, atol=0)
    torch.testing.assert_close(seen["f2"], torch.cat([x3, x4], 1), rtol=0, atol=0)
    torch.testing.assert_close(seen["f3"], torch.cat([x2, x3, x4], 1), rtol=0, atol=0)
    y1, y2, y3, y4 = y.chunk(4, dim=1)
    torch.testing.assert_close(y4, x4, rtol=0, atol=0)  # pass-through
    for yb, xb in ((y1, x1), (y2, x2), (y3, x3)):
        assert (yb - xb).abs().max() > 1e-2


def test_the_round_trip_check_catches_the_published_reverse_pass_defect(monkeypatch):
    """The published reverse pass read the pass-through block from the wrong end (docs/method.md
    section 4). This repository's quad coupling run in that block order (its own inverse on the
    blocks read from the other end) must make the repository's round-trip check, the x -> z -> x
    reconstruction error that validation logs and warns about, flag a whole Glow as broken; in its
    own order the same check finds it exact."""
    torch.manual_seed(3)
    images = torch.randint(0, 256, (4, 4, 8, 8), dtype=torch.uint8)
    model = Glow(4, 8, levels=1, depth=2, width=16, conv="glow", coupling="quad").double()
    randomize(model, torch.rand(4, 4, 8, 8) - 0.5, scale=0.1)
    _, exact = reconstruction_grid(model, images)
    assert exact["recon_err_max"] < 1e-10

    own_inverse = QuadCoupling.inverse

    def published_block_order(self, y):
        def from_the_other_end(t):
            return torch.cat(t.chunk(4, dim=1)[::-1], dim=1)

        x, logdet = own_inverse(self, from_the_other_end(y))
        return from_the_other_end(x), logdet

    monkeypatch.setattr(QuadCoupling, "inverse", published_block_order)
    _, broken = reconstruction_grid(model, images)
    assert broken["recon_err_max"] > 0.1 and broken["recon_pixels_exact"] < 0.5


def test_quad_refuses_channels_not_divisible_by_four():
    with pytest.raises(ValueError, match=r"10 is not divisible by 4.*coupling=affine"):
        QuadCoupling(10)


@pytest.mark.parametrize("channels", [1, 4, 12])
def test_parameter_counts_exclude_masked_weights(channels):
    c = channels
    assert count_parameters(CInCConv(c)) == 9 * c * c - c * (c - 1) // 2 + c  # + bias
    assert count_parameters(CInCConv(c, fixed_diagonal=True)) == 9 * c * c - c * (c - 1) // 2 - c + c
    assert count_parameters(CInCConv(c, kernel_size=2)) == 4 * c * c - c * (c - 1) // 2 + c
    assert count_parameters(InvConv1x1(c)) == c * c
    assert count_parameters(EmergingConv(c)) == 2 * (4 * c * c - c * (c - 1) // 2) + c
    # the stored tensors are larger than the free parameter count
    assert sum(p.numel() for p in CInCConv(c).parameters()) > count_parameters(CInCConv(c)) or c == 1


def test_cinc_masked_entries_never_matter():
    """Gradients and values of masked centre entries have no effect on the layer."""
    layer = CInCConv(C).double()
    x = torch.randn(2, C, H, W)
    y0 = layer(x)[0]
    with torch.no_grad():
        centre = layer.kernel.weight[:, :, -1, -1]
        centre += torch.triu(torch.full((C, C), 123.0))  # upper triangle incl. diagonal: masked
    torch.testing.assert_close(layer(x)[0], y0, rtol=0, atol=0)
    assert math.isclose(float(layer(x)[1][0].detach()), 0.0, abs_tol=1e-15)
