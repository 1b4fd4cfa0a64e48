"""Every flow layer, float64 on tiny inputs with randomised weights: exact inverse, log-determinant
equal to the brute-force Jacobian's, inverse log-determinant = -forward's (:func:`flowcheck.check_layer`).
Every conv and coupling of the config groups is in the list by itself (``conv:cinc[tiled]``,
``coupling:quad``, ...: :func:`flowcheck.config_layers`), each CInC / Emerging with each solver named,
never through ``auto``'s choice; the rest are the layers no config names and some options."""
from __future__ import annotations

import pytest
import torch

from cincflow import ActNorm, AffineCoupling, CInCConv, InvConv1x1, QuadCoupling, Split, Squeeze
from cincflow.layers import blocked
from cincflow.layers.causal import anticausal_conv, causal_conv
from cincflow.layers.conditioner import Conditioner
from cincflow.layers.step import flow_step
from flowcheck import SplitAsFlow, check_layer, config_layers, randomize


pytestmark = pytest.mark.usefixtures("float64")  # tests/conftest.py

B, C, H, W = 2, 4, 4, 4

LAYERS = {
    **config_layers(C),
    "actnorm": (lambda: ActNorm(C), C),
    "invconv1x1": (lambda: InvConv1x1(C), C),
    "cinc2[tiled]": (lambda: CInCConv(C, kernel_size=2, solver="tiled"), C),
    "cinc3_fixed_diag[kernel]": (lambda: CInCConv(C, fixed_diagonal=True, solver="kernel"), C),
    "affine_no_actnorm": (lambda: AffineCoupling(C, width=8, actnorm=False), C),
    "squeeze": (lambda: Squeeze(), C),
    "split": (lambda: SplitAsFlow(Split(C)), C),
    "step_cinc_quad[wavefront]": (lambda: flow_step(C, "cinc", "quad", 8, {"solver": "wavefront"}), C),
    "step_emerging_affine[tiled]": (lambda: flow_step(C, "emerging", "affine", 8, {"solver": "tiled"}), C),
    "step_glow_additive": (lambda: flow_step(C, "glow", "additive", 8), C),
}


def test_every_config_choice_is_in_the_harness():
    names = {n.split("[")[0] for n in LAYERS}
    assert {"conv:cinc", "conv:emerging", "conv:glow", "coupling:affine", "coupling:additive", "coupling:quad"} <= names
    assert {f"conv:cinc[{s}]" for s in ("tiled", "wavefront", "kernel", "sequential")} <= set(LAYERS)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer(name):
    make, channels = LAYERS[name]
    torch.manual_seed(0)
    x = torch.randn(B, channels, H, W) * 0.7 + 0.2
    check_layer(randomize(make().double(), x, scale=0.2), x)


def test_split_log_prob_is_the_standard_normal_of_its_bijection():
    """log p(z | kept) of Split (randomised prior network) = log N(eps; 0, I) + log|det| of
    :class:`flowcheck.SplitAsFlow`, whose Jacobian the shared checks above verify."""
    torch.manual_seed(0)
    x = torch.randn(B, C, H, W)
    split = randomize(Split(C).double(), x, scale=0.2)
    _, _, log_p = split(x)
    y, logdet = SplitAsFlow(split)(x)
    eps = y.chunk(2, dim=1)[1]
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(eps).flatten(1).sum(1) + logdet
    assert logdet.abs().min() > 1e-3, "the randomised prior should not be the standard normal"
    torch.testing.assert_close(log_p, expected, rtol=1e-12, atol=1e-12)


def test_actnorm_initialises_to_zero_mean_unit_variance():
    x = torch.randn(16, 3, 5, 5) * torch.tensor([0.5, 2.0, 7.0]).view(1, 3, 1, 1) + torch.tensor([1.0, -3.0, 0.5]).view(1, 3, 1, 1)
    layer = ActNorm(3).double()
    assert not layer.initialized
    y, _ = layer(x)
    assert layer.initialized
    torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-10, rtol=0)
    torch.testing.assert_close(y.std((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-5, rtol=0)


def test_actnorm_is_not_reinitialised_after_loading(tmp_path):
    layer = ActNorm(3).double()
    layer(torch.randn(8, 3, 4, 4) * 3 + 1)
    path = tmp_path / "actnorm.pt"
    torch.save(layer.state_dict(), path)
    fresh = ActNorm(3).double()
    fresh.load_state_dict(torch.load(path))
    assert fresh.initialized
    other = torch.randn(8, 3, 4, 4) * 10 - 5
    torch.testing.assert_close(fresh(other)[0], layer(other)[0])
    torch.testing.assert_close(fresh.loc, layer.loc)


def test_invconv1x1_is_the_matrix_at_every_pixel_in_any_layout():
    x = torch.randn(B, C, H, W)
    layer = randomize(InvConv1x1(C), x)
    expected = torch.einsum("oc,bchw->bohw", layer.weight(), x)  # the definition, pixel by pixel
    for layout in (torch.contiguous_format, torch.channels_last):
        y, _ = layer(x.contiguous(memory_format=layout))
        torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
        back, _ = layer.inverse(y.contiguous(memory_format=layout))
        torch.testing.assert_close(back, x, rtol=1e-10, atol=1e-10)


@pytest.fixture
def conv_outputs(monkeypatch) -> list[tuple[str, int]]:
    """(kind, output channels) of every convolution from the time it is cleared on: ``F.conv2d`` calls
    as "conv", oneDNN's convolutions with a ReLU post-op (cincflow.layers.blocked) as "conv+relu"."""
    seen: list[tuple[str, int]] = []
    conv2d, fused = torch.nn.functional.conv2d, torch.ops.mkldnn._convolution_pointwise
    monkeypatch.setattr(torch.nn.functional, "conv2d", lambda x, w, *a: seen.append(("conv", w.shape[0])) or conv2d(x, w, *a))
    monkeypatch.setattr(torch.ops.mkldnn, "_convolution_pointwise",
                        lambda x, w, b, *a: seen.append(("conv+relu", w.shape[0])) or fused(x, w, b, *a))
    return seen


def test_conditioner_in_float32_without_autograd_convolves_whole_channel_blocks_and_keeps_the_function(conv_outputs):
    """Evaluation in float32 on the CPU runs the zero conv's 6 outputs as 8 (oneDNN's blocks) and drops
    the appended ones, and each ReLU as its convolution's post-op; the result is the float64
    conditioner's, as it is with autograd (no padding, separate ReLUs) and under autocast."""
    x64 = torch.randn(B, 3, H, W)
    net64 = randomize(Conditioner(3, 6, 12), x64)
    net, x = Conditioner(3, 6, 12).float(), x64.float()
    net.load_state_dict(net64.state_dict())
    with torch.no_grad():
        expected = net64(x64)
        conv_outputs.clear()
        evaluated = net(x)
    assert conv_outputs == [("conv+relu", 16), ("conv+relu", 16), ("conv", 8)]  # width 12, 6 outputs: whole blocks of 8
    conv_outputs.clear()
    trained = net(x)
    assert conv_outputs == [("conv", 12), ("conv", 12), ("conv", 6)] and trained.requires_grad
    conv_outputs.clear()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        net(x)
    assert [kind for kind, _ in conv_outputs] == ["conv"] * 3  # autocast's own convolutions
    assert evaluated.shape == (B, 6, H, W) and evaluated.is_contiguous() and evaluated.dtype == torch.float32
    torch.testing.assert_close(evaluated.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(evaluated, trained.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel, padding", [(3, 1), (1, 0)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_a_convolution_with_its_relu_fused_is_the_convolution_then_the_relu_in_every_layout(conv_outputs, kernel, padding,
                                                                                             with_bias):
    """blocked.conv2d(..., relu=True) without autograd: oneDNN's convolution with a ReLU post-op, on
    standard, channels-last and strided inputs, output channels in whole blocks or not (12: padded)."""
    x = torch.randn(3, 10, 7, 6, dtype=torch.float32)
    bias = torch.randn(12, dtype=torch.float32) if with_bias else None
    weight = torch.randn(12, 5, kernel, kernel, dtype=torch.float32)
    for inp in (x[:, :5], x[:, :5].contiguous(memory_format=torch.channels_last), x[:, ::2]):
        conv_outputs.clear()
        with torch.no_grad():
            fused = blocked.conv2d(inp, weight, bias, 1, padding, relu=True)
        assert conv_outputs == [("conv+relu", 16)]
        bias64 = None if bias is None else bias.double()
        expected = torch.relu(torch.nn.functional.conv2d(inp.double(), weight.double(), bias64, 1, padding))
        assert fused.shape == (3, 12, 7, 6) and (expected == 0).any() and (expected > 0).any()
        torch.testing.assert_close(fused.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("conv", [causal_conv, anticausal_conv])
def test_causal_convs_in_float32_without_autograd_are_the_same_convolutions_in_whole_channel_blocks(conv, conv_outputs):
    x64, w64, b64 = torch.randn(B, 12, H, W), torch.randn(12, 12, 3, 3), torch.randn(12)
    bias = (b64,) if conv is causal_conv else ()
    expected = conv(x64, w64, *bias)
    conv_outputs.clear()
    with torch.no_grad():
        y = conv(x64.float(), w64.float(), *(b.float() for b in bias))
    assert conv_outputs == [("conv", 16)] and y.shape == (B, 12, H, W) and y.is_contiguous()
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-5)


def test_squeeze_layout():
    x = torch.arange(2 * 4 * 4).view(1, 2, 4, 4).double()
    y, _ = Squeeze()(x)
    assert y.shape == (1, 8, 2, 2)
    # output channel c*4 + 2*di + dj at (i, j) holds input channel c at (2i + di, 2j + dj)
    for c in range(2):
        for di in range(2):
            for dj in range(2):
                torch.testing.assert_close(y[0, c * 4 + 2 * di + dj], x[0, c, di::2, dj::2])


def test_layers_refuse_bad_shapes():
    with pytest.raises(ValueError, match="not divisible by 4"):
        QuadCoupling(6, width=8)
    with pytest.raises(ValueError, match="3 is not divisible by 2"):
        AffineCoupling(3, width=8)
    with pytest.raises(ValueError, match="even height and width"):
        Squeeze()(torch.zeros(1, 1, 3, 4))
    with pytest.raises(ValueError, match="unknown solver 'magic': choose one of auto, tiled"):
        CInCConv(4, solver="magic")
    with pytest.raises(ValueError, match="unknown conv 'cnic'"):
        flow_step(4, conv="cnic")
