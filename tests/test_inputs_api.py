"""Every input is checked before work starts (issue #12), the Python API: ValueError/TypeError naming
the expected shape, dtype or range, from Glow and every layer, in both directions."""
from __future__ import annotations

import re

import pytest
import torch

from cincflow import ActNorm, AdditiveCoupling, AffineCoupling, CInCConv, EmergingConv, Glow, InvConv1x1, QuadCoupling
from cincflow import Split, Squeeze


@pytest.fixture(scope="module")
def glow():
    torch.manual_seed(0)
    return Glow(in_channels=1, image_size=8, levels=2, depth=1, width=8, conv="cinc", coupling="affine", n_bits=5)


def test_glow_rejects_integer_images_and_points_to_bits_per_dim(glow):
    images = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    with pytest.raises(TypeError, match=r"floating-point tensor .*torch.uint8.*bits_per_dim"):
        glow.log_prob(images)
    with pytest.raises(TypeError, match="bits_per_dim"):
        glow.encode(images.long())
    assert torch.isfinite(glow.bits_per_dim(images)).all()  # the right call for uint8 images
    with pytest.raises(ValueError, match=r"shape \[B, 1, 8, 8\], got \[2, 3, 8, 8\]"):
        glow.log_prob(torch.randn(2, 3, 8, 8))


def test_glow_names_a_dtype_mismatch_between_images_and_parameters(glow):
    with pytest.raises(TypeError, match=r"Glow's parameters are torch.float32, the images torch.float64: convert the "
                                        r"images with x.to\(torch.float32\) or the model with model.to\(torch.float64\)"):
        glow.log_prob(torch.randn(2, 1, 8, 8, dtype=torch.float64))
    double = Glow(in_channels=1, image_size=8, levels=2, depth=1, width=8, n_bits=5).double()
    assert torch.isfinite(double.log_prob(torch.randn(2, 1, 8, 8, dtype=torch.float64))).all()


@pytest.mark.parametrize("temperature", [-0.5, float("nan"), float("inf"), "0.7", True])
def test_sample_needs_a_finite_non_negative_temperature(glow, temperature):
    with pytest.raises(ValueError, match=r"temperature must be a finite number >= 0"):
        glow.sample(2, temperature)
    assert glow.sample(2, 0).shape == (2, 1, 8, 8)  # 0: the mode of every latent


@pytest.mark.parametrize("n", [0, -1, 2.5, True])
def test_sample_needs_a_positive_integer_count(glow, n):
    with pytest.raises(ValueError, match=rf"n must be an integer >= 1, got {n!r}"):
        glow.sample(n)


def test_noise_and_latents_of_the_wrong_shape_or_count(glow):
    shapes = glow.latent_shapes()
    noise = [torch.randn(3, *s) for s in shapes]
    assert glow.sample(3, noise=noise).shape == (3, 1, 8, 8)
    with pytest.raises(ValueError, match=r"expected 2 tensors \(one per level\)"):
        glow.sample(3, noise=noise[:1])
    with pytest.raises(ValueError, match=r"noise\[0\]: expected shape \[3, 2, 4, 4\].*got \[1, 2, 4, 4\]"):
        glow.sample(3, noise=[torch.randn(1, *shapes[0]), noise[1]])  # used to broadcast
    with pytest.raises(ValueError, match=r"noise\[1\]: expected shape \[3, 8, 2, 2\]"):
        glow.sample(3, noise=[noise[0], torch.randn(3, 8, 2, 1)])
    zs, _ = glow.encode(torch.randn(2, 1, 8, 8))
    torch.testing.assert_close(glow.decode(glow.encode(glow.decode(zs))[0]), glow.decode(zs))
    with pytest.raises(ValueError, match=r"latents: expected 2 tensors"):
        glow.decode(zs[:1])
    with pytest.raises(ValueError, match=r"latents\[1\]: expected shape \[2, 8, 2, 2\].*got \[1, 8, 2, 2\]"):
        glow.decode([zs[0], zs[1][:1]])


LAYERS = [
    ("ActNorm", lambda: ActNorm(4)), ("InvConv1x1", lambda: InvConv1x1(4)), ("CInCConv", lambda: CInCConv(4)),
    ("EmergingConv", lambda: EmergingConv(4)), ("AffineCoupling", lambda: AffineCoupling(4, 8)),
    ("AdditiveCoupling", lambda: AdditiveCoupling(4, 8)), ("QuadCoupling", lambda: QuadCoupling(4, 8)),
]


@pytest.mark.parametrize("name,make", LAYERS, ids=[n for n, _ in LAYERS])
def test_layers_check_channels_and_dtype_in_both_directions(name, make):
    layer = make()
    x = torch.randn(2, 4, 4, 4)
    y, _ = layer(x)
    x_back, _ = layer.inverse(y)
    torch.testing.assert_close(x_back, x, rtol=1e-4, atol=1e-4)
    for call in (layer, layer.inverse):
        with pytest.raises(ValueError, match=rf"{name} expects a tensor of shape \[B, 4, H, W\], got \[2, 6, 4, 4\]"):
            call(torch.randn(2, 6, 4, 4))
        with pytest.raises(ValueError, match=r"shape \[B, 4, H, W\], got \[4, 4, 4\]"):
            call(torch.randn(4, 4, 4))
        with pytest.raises(TypeError, match=rf"{name} expects a floating-point tensor.*torch.int64"):
            call(torch.ones(2, 4, 4, 4, dtype=torch.long))


def test_split_and_squeeze_check_their_inputs():
    split, squeeze = Split(4), Squeeze()
    with pytest.raises(ValueError, match=r"Split expects a tensor of shape \[B, 4, H, W\]"):
        split(torch.randn(2, 6, 4, 4))
    kept = torch.randn(2, 2, 4, 4)
    with pytest.raises(ValueError, match=r"z must have the shape of kept, \[2, 2, 4, 4\], got \[1, 2, 4, 4\]"):
        split.inverse(kept, torch.randn(1, 2, 4, 4))
    with pytest.raises(ValueError, match="eps must have the shape of kept"):
        split.inverse(kept, eps=torch.randn(2, 2, 4, 1))
    with pytest.raises(TypeError, match="Squeeze expects a floating-point tensor"):
        squeeze(torch.zeros(1, 1, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="divisible by 4, got 6"):
        squeeze.inverse(torch.randn(1, 6, 2, 2))


@pytest.mark.parametrize("make,message", [
    (lambda: CInCConv(0), "channels must be an integer >= 1, got 0"),
    (lambda: CInCConv(-3), "channels must be an integer >= 1, got -3"),
    (lambda: CInCConv(4, kernel_size=1), "kernel_size must be an integer >= 2, got 1"),
    (lambda: CInCConv(4, kernel_size=0), "kernel_size must be an integer >= 2, got 0"),
    (lambda: CInCConv(4, kernel_size=2.5), "kernel_size must be an integer >= 2, got 2.5"),
    (lambda: EmergingConv(0), "channels must be an integer >= 1, got 0"),
    (lambda: InvConv1x1(0), "InvConv1x1 channels must be an integer >= 1, got 0"),
    (lambda: ActNorm(0), "ActNorm channels must be an integer >= 1, got 0"),
    (lambda: AffineCoupling(0), "AffineCoupling channels must be an integer >= 1, got 0"),
    (lambda: QuadCoupling(-4), "QuadCoupling channels must be an integer >= 1, got -4"),
])
def test_layer_constructors_reject_impossible_sizes(make, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        make()


@pytest.mark.parametrize("kwargs, fragment", [({"every_n_epochs": 0}, "every_n_epochs must be an integer >= 1, got 0"),
                                              ({"temperatures": []}, "temperatures must be a non-empty list"),
                                              ({"temperatures": [0.5, -1.0]}, "temperatures must be a finite number >= 0"),
                                              ({"n_reconstructions": -1}, "n_reconstructions must be an integer >= 0, got -1")])
def test_sample_grids_refuse_settings_that_would_silently_change(tmp_path, kwargs, fragment):
    from cincflow.training.callbacks import SampleGrids

    with pytest.raises(ValueError, match=re.escape(fragment)):
        SampleGrids(str(tmp_path), **kwargs)
    assert SampleGrids(str(tmp_path), every_n_epochs=3).every_n_epochs == 3
