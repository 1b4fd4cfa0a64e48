"""Dequantisation (issue #20): the variational q(v | x) is an exact invertible map with the log-density
of a brute-force Jacobian, the training objective is the Flow++ bound, the K-sample importance-weighted
bound equals today's bits/dim for uniform noise at K = 1 and tightens with K, a variational run resumes
exactly, and bad settings are one line before any folder."""
from __future__ import annotations

import math

import pytest
import torch

import cincflow
from cli import run_cases
from test_inputs import tree_hashes
from test_reliability import assert_one_line_error
from test_runs import TINY

from cincflow.dequant import UniformDequantizer, VariationalDequantizer
from cincflow.jobs import train
from cincflow.likelihood import importance_weighted_bpd
from cincflow.pixels import bits_per_dim
from cincflow.training import FlowLitModule


def randomised(module: torch.nn.Module, scale: float = 0.3) -> torch.nn.Module:
    """Every parameter drawn at random (the zero-initialised last convolutions would hide the couplings)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, scale)
    return module


def images(n: int, c: int = 1, size: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("channels", [1, 3])
def test_variational_q_round_trip_and_log_density_against_the_brute_force_jacobian(channels):
    q = randomised(VariationalDequantizer(channels, steps=3, width=4), scale=0.15).double()
    x = images(2, channels, 4)
    eps = torch.randn(2, channels, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    v, log_q = q.flow(eps, x, 5)
    assert ((v > 0) & (v < 1)).all()
    back, log_q_inv = q.inverse(v, x, 5)
    assert torch.allclose(back, eps, atol=1e-10) and torch.allclose(log_q_inv, log_q, atol=1e-10)
    for i in range(2):  # log q(v) = log N(eps) - log |det dv/deps| for each image
        def f(e, i=i):
            return q.flow(e.reshape(1, channels, 4, 4), x[i:i + 1], 5)[0].flatten()
        jac = torch.autograd.functional.jacobian(f, eps[i].flatten())
        log_normal = -0.5 * (eps[i] ** 2 + math.log(2 * math.pi)).sum()
        assert torch.allclose(log_q[i], log_normal - torch.linalg.slogdet(jac)[1], atol=1e-8)
    varied = x.clone()
    varied[0, 0, 0, 0] ^= 0x80
    assert not torch.allclose(q.flow(eps, varied, 5)[0][0], v[0])  # q reads the image


def test_dequantisers_land_in_the_bin_of_each_pixel():
    x = images(3, 3, 8)
    for q in (UniformDequantizer(3), randomised(VariationalDequantizer(3, steps=2, width=4), scale=0.15).double()):
        y, log_q = q(x, 5, torch.float64, torch.Generator().manual_seed(0))
        assert y.dtype == torch.float64 and log_q.shape == (3,)
        assert torch.equal(cincflow.postprocess(y, 5), (x // 8) * 8)  # y in [x_b, x_b + 1) / 2^n - 0.5
    assert torch.equal(UniformDequantizer()(x, 5)[1], torch.zeros(3))


def tiny_flow() -> cincflow.Glow:
    torch.manual_seed(0)
    return cincflow.Glow(1, 8, levels=2, depth=1, width=8, conv="cinc", coupling="affine", n_bits=5).double().eval()


def test_training_objective_is_the_variational_bound():
    model, q = tiny_flow(), randomised(VariationalDequantizer(1, steps=2, width=4)).double()
    x = images(4, 1, 8)
    bpd = model.bits_per_dim(x, generator=torch.Generator().manual_seed(3), dequantizer=q)
    y, log_q = q(x, 5, torch.float64, torch.Generator().manual_seed(3))
    assert torch.allclose(bpd, bits_per_dim(model.log_prob(y) - log_q, 64, 5), atol=1e-12)
    module = FlowLitModule(model, ema_decay=None, actnorm_init_images=1, max_bad_steps=None,
                           dequant=lambda channels: q)
    assert module.parameter_counts()["dequantizer"] == sum(p.numel() for p in q.parameters()) > 0
    assert module.parameter_counts()["total"] == model.parameter_counts()["total"]


def test_importance_weighted_bound_equals_bits_per_dim_at_k1_and_tightens_with_k():
    model = tiny_flow()
    batches = list(images(96, 1, 8, seed=4).split(32))
    generator = torch.Generator().manual_seed(7)  # the same draws, batch by batch, as the bound's
    today = torch.cat([model.bits_per_dim(b, generator=generator) for b in batches])
    k1 = importance_weighted_bpd(model, None, batches, 1, seed=7)
    assert k1.shape == (96,) and torch.allclose(k1, today, atol=1e-10)
    q = randomised(VariationalDequantizer(1, steps=2, width=4), scale=0.2).double()
    for dequantizer in (None, q):
        means = [float(importance_weighted_bpd(model, dequantizer, batches, k, seed=5).mean()) for k in (1, 4, 16)]
        assert means[0] > means[1] > means[2], (dequantizer, means)
    with pytest.raises(ValueError, match="samples must be a positive integer"):
        importance_weighted_bpd(model, None, batches, 0)


VARIATIONAL = [*TINY, "dequant=variational", "module.dequant.width=4", "module.dequant.steps=2", "test=false",
               "trainer.limit_train_batches=2"]


def test_a_variational_run_resumes_exactly(compose_cfg, tmp_path):
    """2 epochs in one go against 1 epoch then a resume to 2: the same flow and the same q."""
    whole = tmp_path / "whole"
    train(compose_cfg("train", [*VARIATIONAL, "trainer.max_epochs=2"], whole))
    part = tmp_path / "part"
    train(compose_cfg("train", [*VARIATIONAL, "trainer.max_epochs=1"], part))
    train(compose_cfg("train", [*VARIATIONAL, "trainer.max_epochs=2", f"ckpt_path={part}/checkpoints/last.ckpt"], part))
    a = FlowLitModule.load_from_checkpoint(whole / "checkpoints" / "last.ckpt")
    b = FlowLitModule.load_from_checkpoint(part / "checkpoints" / "last.ckpt")
    assert isinstance(a.dequant, VariationalDequantizer) and (a.dequant.steps, a.dequant.width) == (2, 4)
    fresh = VariationalDequantizer(1, steps=2, width=4)
    assert not torch.allclose(a.dequant.conditioners[0][2].weight, fresh.conditioners[0][2].weight)  # q learned
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(p.float(), q.float(), atol=1e-6), name


@pytest.mark.slow  # long: `make test-slow`
def test_variational_runs_evaluate_with_the_bound_and_sample_from_the_command_line(tmp_path):
    run = tmp_path / "run"
    ck = f"ckpt_path={run}/checkpoints/last.ckpt"
    results = run_cases([
        ("train", [*VARIATIONAL, f"hydra.run.dir={run}"]),
        ("eval", [ck, "dequant_samples=3", f"hydra.run.dir={tmp_path}/eval"]),
        ("sample", [ck, "n=2", f"hydra.run.dir={tmp_path}/sample"]),
    ])
    assert [r["code"] for r in results] == [0, 0, 0], [r["stderr"][-800:] for r in results]
    assert "of the dequantiser" in results[0]["stdout"]
    assert "3-sample importance-weighted bound" in results[1]["stdout"]
    metrics = __import__("json").loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["dequant_samples"] == 3 and metrics["test/bpd_iw_se"] > 0 and metrics["test/bpd_iw_images"] > 0
    assert metrics["test/bpd_iw"] < metrics["test/bpd"] + 3 * metrics["test/bpd_iw_se"]
    assert (tmp_path / "sample" / "samples.png").is_file()


def test_bad_dequantisation_settings_are_one_line_before_any_folder(tmp_path):
    before = tree_hashes(tmp_path)
    cases = {
        ("train", "dequant=foo"): "unknown dequant option 'foo': choose one of uniform, variational",
        ("train", "module.dequant.steps=0"): "steps must be a positive integer, got 0",
        ("train", "+module.dequant.bins=3"): "VariationalDequantizer got an unexpected keyword argument 'bins'",
        ("eval", "dequant_samples=0"): "dequant_samples must be a positive integer",
    }
    results = run_cases([(script, [*TINY[:2], "dequant=variational", arg, f"hydra.run.dir={tmp_path}/out"]
                          if script == "train" else ["ckpt_path=/nonexistent.ckpt", arg, f"hydra.run.dir={tmp_path}/out"])
                         for (script, arg) in cases])
    for (key, message), result in zip(cases.items(), results):
        assert_one_line_error(result, message)
    assert tree_hashes(tmp_path) == before


def test_the_study_table_gives_mean_and_sd_over_seeds_per_budget():
    from cincflow.bench.dequant import markdown

    def row(kind, seed, bound, budget="equal steps", steps=200):
        return {"dequant": kind, "coupling": "affine", "seed": seed, "steps": steps, "train_seconds": 2.0 * steps / 100,
                "step_ms": 20.0, "test_bpd_iw16": bound, "test_bpd_iw16_se": 0.01, "test_bpd_mean16": bound + 0.01,
                "test_images": 256, "budget": budget}

    rows = [row("variational", 0, 6.0), row("variational", 1, 6.2), row("uniform", 0, 6.1), row("uniform", 1, 6.3),
            row("uniform", 0, 5.9, "equal wall-clock", 600), row("uniform", 1, 6.1, "equal wall-clock", 610)]
    text = markdown(rows, {"steps": 200, "seeds": [0, 1], "machine": "test"})
    assert "| affine | variational | equal steps | 200/200 | 6.1000 ± 0.1414 | 6.1100 ± 0.1414 | 20 |" in text
    assert "| affine | uniform | equal wall-clock | 600/610 | 6.0000 ± 0.1414 |" in text
    assert "256 test images" in text
