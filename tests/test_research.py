"""What a researcher reaches for from Python and when reading results: ``cincflow.load``, parameter
counts of the averaged copy, seeded dequantisation and augmentation, evaluation over several
dequantisation draws, the out-of-distribution check, labelled pictures."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

import cincflow
from cincflow.jobs import train
from cincflow.training.loading import load_module

ROOT = Path(__file__).resolve().parents[1]
# a tiny CInC + quad model on the offline photo patches (3 x 32 x 32), 3 steps, Polyak averaging on
PHOTOS = ["experiment=quickstart", "debug=smoke", "data=photos", "logger=none", "trainer.enable_progress_bar=false",
          "model.levels=2", "callbacks=none", "samples.n=0"]


def composed(config_name: str, overrides: list[str], output_dir: Path):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        del cfg.hydra
    return cfg


@pytest.fixture(scope="module")
def photos_run(tmp_path_factory):
    """A real training run (src/train.py's job, in-process) on data=photos: its metrics.json."""
    out = tmp_path_factory.mktemp("photos_run")
    return train(composed("train", PHOTOS, out))


# ----------------------------------------------------------------------------- cincflow.load
def test_load_returns_the_averaged_flow_in_eval_mode(photos_run):
    path = photos_run["last_checkpoint"]
    flow = cincflow.load(path)
    module = load_module(path, device="cpu")
    assert isinstance(flow, cincflow.Glow) and not flow.training
    assert next(flow.parameters()).device.type == "cpu"
    # the Polyak average, not the training weights (after 3 steps the two differ)
    for (name, p), q in zip(flow.named_parameters(), module.ema.module.parameters()):
        assert torch.equal(p, q), name
    raw = cincflow.load(path, ema=False)
    assert any(not torch.equal(p, q) for p, q in zip(flow.parameters(), raw.parameters()))
    for p, q in zip(raw.parameters(), module.model.parameters()):
        assert torch.equal(p, q)
    # ready for sample, encode and bits_per_dim
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert flow.sample(2, 0.7).shape == (2, 3, 32, 32)
    zs, logdet = flow.encode(cincflow.preprocess(images))
    assert torch.isfinite(logdet).all() and torch.isfinite(flow.bits_per_dim(images)).all()


def test_load_warns_when_the_run_had_no_average(tmp_path):
    result = train(composed("train", [*PHOTOS, "data=digits", "ema_decay=null"], tmp_path))
    with pytest.warns(UserWarning, match="no Polyak-averaged weights"):
        flow = cincflow.load(result["last_checkpoint"])
    assert isinstance(flow, cincflow.Glow)


# ----------------------------------------------------------------------------- parameter counts
def test_parameter_counts_of_the_averaged_copy_equal_the_model(photos_run):
    module = load_module(photos_run["last_checkpoint"], device="cpu")
    live, averaged = module.model.parameter_counts(), module.ema.module.parameter_counts()
    assert not any(p.requires_grad for p in module.ema.module.parameters())
    assert averaged == live and averaged["total"] > 0 and all(v > 0 for v in averaged.values())
    # the total is every free (unmasked) entry: an independent count over the parameter tensors
    m = module.ema.module
    masked_out = sum(int((getattr(o, f"{n}_mask") == 0).sum()) for o in m.modules()
                     for n, _ in o.named_parameters(recurse=False) if hasattr(o, f"{n}_mask"))
    assert averaged["total"] == sum(p.numel() for p in m.parameters()) - masked_out


def test_a_fixed_top_prior_is_a_constant_not_a_parameter():
    learned = cincflow.Glow(3, 8, levels=2, depth=1, width=8)
    fixed = cincflow.Glow(3, 8, levels=2, depth=1, width=8, learn_top=False)
    assert fixed.parameter_counts()["TopPrior"] == 0
    assert learned.parameter_counts()["TopPrior"] == learned.top_prior.numel()
    assert learned.parameter_counts()["total"] - fixed.parameter_counts()["total"] == learned.top_prior.numel()
    assert set(learned.state_dict()) == set(fixed.state_dict())  # checkpoints keep their keys


# ----------------------------------------------------------------------------- seeded noise
def test_preprocess_and_bits_per_dim_are_deterministic_given_a_generator():
    torch.manual_seed(0)
    model = cincflow.Glow(3, 8, levels=2, depth=1, width=8).eval()
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)

    def gen(seed):
        return torch.Generator().manual_seed(seed)

    a, b, c = (cincflow.preprocess(images, 8, generator=gen(s)) for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(123)
    assert torch.equal(cincflow.preprocess(images, 8, generator=gen(1)), a)  # the global RNG plays no part
    with torch.no_grad():
        s1, s2, s3 = (model.bits_per_dim(images, generator=gen(s)) for s in (7, 7, 8))
    assert torch.equal(s1, s2) and not torch.equal(s1, s3)
    # bits_per_dim dequantises exactly like preprocess with the same generator
    with torch.no_grad():
        direct = cincflow.bits_per_dim(model.log_prob(cincflow.preprocess(images, 8, generator=gen(7))), model.num_dims)
    torch.testing.assert_close(s1, direct, rtol=0, atol=0)


def test_two_models_scored_on_identical_noise():
    """With one seed two models see the same dequantised images: the difference of their scores is
    the difference of their densities at the same points (no noise in between)."""
    torch.manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    m1, m2 = (cincflow.Glow(3, 8, levels=2, depth=1, width=8, conv=c).eval() for c in ("cinc", "glow"))
    x = cincflow.preprocess(images, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        for m in (m1, m2):
            expected = cincflow.bits_per_dim(m.log_prob(x), m.num_dims)
            got = m.bits_per_dim(images, generator=torch.Generator().manual_seed(5))
            torch.testing.assert_close(got, expected, rtol=0, atol=0)


# ----------------------------------------------------------------------------- labelled pictures
def test_pictures_say_what_they_show():
    from cincflow.viz import INTERPOLATION_TITLE, grid_of, interpolation_grid, labelled, reconstruction_grid, sample_grid

    torch.manual_seed(0)
    model = cincflow.Glow(1, 8, levels=2, depth=1, width=8, n_bits=5).eval()
    block = grid_of(torch.zeros(9, 1, 8, 8, dtype=torch.uint8))
    # the text is drawn (dark pixels in the strip), differs with the text, and the grid is kept below it
    a, b = labelled(block, "T = 0.5"), labelled(block, "T = 1")
    strip = a.shape[1] - block.shape[1]
    assert 10 < strip < 30 and (a[:, :strip] < 0.5).any() and not torch.equal(a[:, :strip], b[:, :strip])
    assert torch.equal(a[:, strip:], block)
    # sample grids: one label per temperature block
    grid, _ = sample_grid(model, 4, [0.5, 1.0], seed=0)
    single = [sample_grid(model, 4, [t], seed=0)[0] for t in (0.5, 1.0)]
    for t, g in zip((0.5, 1.0), single):
        assert torch.equal(g[:, :strip], labelled(block[:, :g.shape[1] - strip, :g.shape[2]], f"T = {t:g}")[:, :strip])
    assert not torch.equal(single[0][:, :strip], single[1][:, :strip])
    assert grid.shape[2] == 2 * single[0].shape[2] + 3 * 4  # side by side, each block with its own label
    # reconstructions: "data" | "x -> z -> x"; interpolations: a title naming what each row is
    images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    rec, _ = reconstruction_grid(model, images)
    half = (rec.shape[2] - 12) // 2
    assert torch.equal(rec[:, 4:4 + strip, 4:4 + half], labelled(torch.ones(3, 1, half), "data")[:, :strip])
    assert torch.equal(rec[:, 4:4 + strip, 8 + half:8 + 2 * half],
                       labelled(torch.ones(3, 1, half), "x -> z -> x")[:, :strip])
    inter = interpolation_grid(model, images, steps=8, seed=0)
    title = labelled(torch.ones(3, 0, inter.shape[2]), INTERPOLATION_TITLE)
    assert "interpolation" in INTERPOLATION_TITLE and title.shape[1] > strip  # two lines
    assert torch.equal(inter[:, :title.shape[1]], title) and (title < 0.5).any()
