"""What a researcher reaches for from Python and when reading results: ``cincflow.load``, parameter
counts of the averaged copy, seeded dequantisation and augmentation, evaluation over several
dequantisation draws, the out-of-distribution check, labelled pictures."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import cincflow
from cincflow.jobs import train
from cincflow.training.loading import load_module
from cli import run_cases
from conftest import compose_config as composed
from test_reliability import assert_one_line_error, tiny_checkpoint  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[1]
# a tiny CInC + quad model on the offline photo patches (3 x 32 x 32), 3 steps, Polyak averaging on
PHOTOS = ["experiment=quickstart", "debug=smoke", "data=photos", "logger=none", "trainer.enable_progress_bar=false",
          "model.levels=2", "callbacks=none", "samples.n=0"]


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
    result = train(composed("train", [*PHOTOS, "data=digits", "module.ema_decay=null"], tmp_path))
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


def test_checkpoints_keep_the_augmentation_draws(photos_run):
    """3 training steps of 64 photo patches with flips: 192 draws, in the checkpoint for a resume
    (restoring them: tests/test_data.py::test_cifar10_augmentation_is_deterministic_given_the_seed)."""
    ckpt = torch.load(photos_run["last_checkpoint"], map_location="cpu", weights_only=False)
    draws = ckpt["PhotosDataModule"]["augment_draws"]
    assert draws.shape == (3497,) and int(draws.sum()) == 3 * 64 and int(draws.max()) == 1


def test_a_resumed_run_on_augmented_data_matches_an_uninterrupted_one(tmp_path):
    """photos with flips, 2 epochs of 2 steps: straight through, or 1 epoch then a resume from its
    checkpoint (data order, dequantisation noise and the augmentation draws all restored)."""
    # the default callbacks: last.ckpt at every validation (the resume contract of tests/test_faults.py)
    two = [*(o for o in PHOTOS if o != "callbacks=none"), "trainer.limit_train_batches=2", "trainer.max_epochs=2",
           "test=false"]
    straight = train(composed("train", two, tmp_path / "straight"))
    first = train(composed("train", [*two, "trainer.max_epochs=1"], tmp_path / "first"))
    # a resume continues the run in its own folder (tests/test_runs.py)
    resumed = train(composed("train", [*two, f"ckpt_path='{first['last_checkpoint']}'"], tmp_path / "first"))
    a, b = (torch.load(r["last_checkpoint"], map_location="cpu", weights_only=False) for r in (straight, resumed))
    assert a["global_step"] == b["global_step"] == 4
    assert torch.equal(a["PhotosDataModule"]["augment_draws"], b["PhotosDataModule"]["augment_draws"])
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


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


# ----------------------------------------------------------------------------- evaluation
EVAL = ["trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "num_threads=1"]


def test_eval_reports_the_mean_over_dequantisation_draws_with_its_standard_error(photos_run, tmp_path):
    import statistics

    from cincflow.jobs import evaluate

    ckpt = photos_run["last_checkpoint"]
    many = evaluate(composed("eval", [f"ckpt_path='{ckpt}'", *EVAL, "dequant_samples=3", "seed=4"], tmp_path / "k3"))
    one = evaluate(composed("eval", [f"ckpt_path='{ckpt}'", *EVAL, "seed=5"], tmp_path / "k1"))
    draws = many["test/bpd_draws"]
    assert len(draws) == 3 and len(set(draws)) == 3  # three different dequantisations
    assert many["test/bpd"] == pytest.approx(statistics.mean(draws), abs=1e-12)
    assert many["test/bpd_se"] == pytest.approx(statistics.stdev(draws) / 3**0.5, rel=1e-9)
    assert 0 < many["test/bpd_se"] < 0.05  # the noise moves the mean of 617 images a little
    # draw k uses the noise of seed + k: the second draw of seed 4 is the only draw of seed 5
    assert one["test/bpd_draws"] == [draws[1]] and one["test/bpd_se"] is None and one["dequant_samples"] == 1
    on_disk = json.loads((tmp_path / "k3" / "metrics.json").read_text())
    assert on_disk["test/bpd"] == many["test/bpd"] and on_disk["test/bpd_draws"] == draws


def test_eval_rejects_a_bad_number_of_draws(photos_run, tmp_path):
    from cincflow.errors import ConfigError
    from cincflow.jobs import evaluate

    cfg = composed("eval", [f"ckpt_path='{photos_run['last_checkpoint']}'", *EVAL, "dequant_samples=0"], tmp_path)
    with pytest.raises(ConfigError, match="dequant_samples must be a positive integer"):
        evaluate(cfg)
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.slow  # long: `make test-slow`
def test_ood_evaluation_of_a_photos_model_on_digits_through_the_job(photos_run, tmp_path, capsys):
    """eval.py ood_data=[...]: every score of every set in one table and one picture; the in-distribution
    row is the test set scored the same way by the model."""
    from cincflow.jobs import evaluate

    out, ckpt = tmp_path / "ood", photos_run["last_checkpoint"]
    record = evaluate(composed("eval", [f"ckpt_path='{ckpt}'", *EVAL, "ood_data=[digits]", "ood_train_images=200",
                                        f"ood_reference_ckpt='{ckpt}'"], out))
    table = json.loads((out / "ood_table.json").read_text())
    assert table == json.loads(json.dumps(record["ood"]))
    assert (out / "ood_table.md").is_file() and (out / "ood_table.csv").is_file() and (out / "ood_scores.png").is_file()
    rows = {(r["score"], r["role"]): r for r in table["rows"]}
    assert {s for s, _ in rows} >= {"bpd", "s_png", "level_1", "last_scale", "typicality", "ratio"}
    assert rows[("bpd", "in")]["n"] == 617 and rows[("bpd", "ood")]["n"] == 180  # every test image of both sets
    assert table["conversion"]["digits (DigitsDataModule, test)"] == ["greyscale -> 3 channels (the channel repeated)",
                                                                     "8x8 -> 32x32 (bilinear)"]
    assert abs(rows[("ratio", "in")]["mean"]) < 1e-5  # the model against itself: no information
    flow = cincflow.load(ckpt)
    dm = cincflow.data.PhotosDataModule(seed=0)
    dm.setup("test")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        bpd = torch.cat([flow.bits_per_dim(b, generator=gen) for b in dm.test_dataloader()]).double()
    assert rows[("bpd", "in")]["mean"] == pytest.approx(float(bpd.mean()), abs=1e-5)
    printed = capsys.readouterr().out
    assert "out-of-distribution scores" in printed and "AUROC" in printed and "ood_table.md" in printed


def test_ood_bad_inputs_are_one_line_before_any_folder(photos_run, tiny_checkpoint, tmp_path):  # noqa: F811
    ck = f"ckpt_path='{photos_run['last_checkpoint']}'"
    cases = [(["ood_data=digits", "ood_scores=[bpd,entropy]"], ("ood_scores must be a score name or a list", "s_png")),
             (["ood_data=digits", "ood_typicality_batch=500", "ood_scores=typicality"],
              ("ood_typicality_batch=500 is larger than the out-of-distribution digits set (180 images)",)),
             (["ood_data=digits", f"ood_reference_ckpt={tiny_checkpoint}"],
              ("scores images [1, 8, 8] at 5 bits, the evaluated model [3, 32, 32] at 8 bits",))]
    results = run_cases([("eval", [ck, *EVAL, *args, f"hydra.run.dir={tmp_path / 'runs' / str(i)}"])
                         for i, (args, _) in enumerate(cases)])
    for (args, fragments), result in zip(cases, results):
        assert_one_line_error(result, *fragments)
    assert not (tmp_path / "runs").exists()


def test_ood_conversion_and_auroc_against_brute_force():
    from cincflow.ood import auroc, fit_images

    grey = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    rgb, notes = fit_images(grey, 3, 8)
    assert torch.equal(rgb, grey.expand(-1, 3, -1, -1)) and notes == ["greyscale -> 3 channels (the channel repeated)"]
    colour = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    luma, _ = fit_images(colour, 1, 8)
    expected = (0.299 * colour[:, 0] + 0.587 * colour[:, 1] + 0.114 * colour[:, 2]).round().to(torch.uint8)
    assert torch.equal(luma[:, 0], expected)
    flat = torch.full((1, 1, 8, 8), 77, dtype=torch.uint8)
    big, notes = fit_images(flat, 1, 32)
    assert big.shape == (1, 1, 32, 32) and (big == 77).all() and notes == ["8x8 -> 32x32 (bilinear)"]
    small, notes = fit_images(torch.full((1, 3, 64, 64), 9, dtype=torch.uint8), 3, 32)
    assert (small == 9).all() and notes == ["64x64 -> 32x32 (bilinear, antialiased)"]
    with pytest.raises(cincflow.errors.ConfigError, match="4-channel"):
        fit_images(torch.zeros(1, 4, 8, 8, dtype=torch.uint8), 3, 8)
    # AUROC = P(out > in) + P(tie) / 2, over all pairs
    g = torch.Generator().manual_seed(0)
    a, b = torch.randint(0, 6, (40,), generator=g).double(), torch.randint(2, 9, (30,), generator=g).double()
    pairs = (b[None, :] > a[:, None]).double() + 0.5 * (b[None, :] == a[:, None]).double()
    assert auroc(a, b) == pytest.approx(float(pairs.mean()), abs=1e-12)
    assert auroc(a, a + 100) == 1.0 and auroc(a + 100, a) == 0.0


# ----------------------------------------------------------------------------- sweep summary
def test_sweep_summary_of_nested_job_folders_and_a_failed_job(tmp_path):
    """Job folders as Hydra writes them (``.hydra/overrides.yaml``, ``.hydra/hydra.yaml``), nested as
    with ``hydra.sweep.subdir=${task_name}/seed_${seed}``; a job without metrics.json is a row too.
    (The real multirun: tests/test_scripts.py::test_multirun_ends_with_a_summary_of_every_job.)"""
    from cincflow.config.launch import write_summary

    def job(path, num, overrides, metrics=None):
        (path / ".hydra").mkdir(parents=True)
        (path / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
        (path / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  job:\n    num: {num}\n")
        if metrics is not None:
            (path / "metrics.json").write_text(json.dumps(metrics))

    job(tmp_path / "paper_b" / "seed_0", 1, ["experiment=paper/b", "seed=0"])  # failed: no metrics.json
    job(tmp_path / "paper_c" / "seed_0", 2, ["experiment=paper/c", "seed=0"])  # failed, its error.txt says why
    (tmp_path / "paper_c" / "seed_0" / "error.txt").write_text("error: data_dir=/x holds no CIFAR-10\n")
    job(tmp_path / "paper_a" / "seed_0", 0, ["experiment=paper/a", "seed=0"],
        {"test/bpd": 3.14159, "val/bpd_best": 3.2, "global_step": 12, "train_seconds": 4.26})
    (tmp_path / "paper_a" / "seed_0" / ".hydra" / "config.yaml").write_text("tags: [paper, a]\n")
    text = write_summary(tmp_path)
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert lines[1] == "| 0 | experiment=paper/a | paper a | 3.1416 | 3.2000 | 12 | 4.3 | paper_a/seed_0 |"
    # a job whose config has no tags: those derived from its overrides (what it sent to W&B)
    assert lines[2] == "| 1 | experiment=paper/b | experiment=paper/b seed=0 | no metrics.json | - | - | - | paper_b/seed_0 |"
    assert lines[3] == "| 2 | experiment=paper/c | experiment=paper/c seed=0 | failed (error: data_dir=/x holds no CIFAR-10) | - | - | - | paper_c/seed_0 |"
    assert "Common overrides: seed=0" in text and (tmp_path / "summary.csv").is_file()
    assert write_summary(tmp_path / "paper_b") is None  # no job with metrics: nothing written


def test_every_data_config_is_an_ood_data_choice(tmp_path):
    """ood_data names the data group's own configs (no mirror group): each set is the data config itself."""
    from cincflow.config.evaluation import ood_data_configs
    from cincflow.config.schema import plain

    names = sorted(p.stem for p in (ROOT / "conf" / "data").glob("*.yaml"))
    both = composed("eval", ["ckpt_path=x", "ood_data=[svhn,digits]"], tmp_path)
    assert list(ood_data_configs(both)) == ["svhn", "digits"]
    for name in names:
        cfg = composed("eval", ["ckpt_path=x", f"data={name}", f"ood_data={name}"], tmp_path)
        assert ood_data_configs(cfg) == {name: plain(cfg.data)}, name
