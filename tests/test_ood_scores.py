"""The OOD scores, metrics, table and picture of :mod:`cincflow.ood` (issue #21) on a tiny float64
Glow with randomised weights and fixed images, each against a hand computation; and the one-line
errors of a bad request."""
from __future__ import annotations

import copy
import csv
import io
import json
import math

import numpy
import pytest
import torch
from PIL import Image, features

import cincflow
from cincflow.errors import ConfigError
from cincflow.ood import (bits_per_image, complexity_bpd, detection_metrics, level_bpd, level_terms, ood_evaluation,
                          score_figure, score_set, typicality, typicality_test)
from cincflow.ood.scores import SCORE_NAMES, TypicalityTest, codec_available, score_label
from cincflow.ood.table import ROW_KEYS
from flowcheck import randomize

D = 3 * 8 * 8


def tiny_glow(width: int = 8, seed: int = 0, channels: int = 3) -> cincflow.Glow:
    torch.manual_seed(seed)
    model = cincflow.Glow(in_channels=channels, image_size=8, levels=2, depth=1, width=width, conv="cinc",
                          coupling="affine", n_bits=8).double()
    x = cincflow.preprocess(images(channels=channels), dtype=torch.float64)
    return randomize(model, x, scale=0.05, seed=seed).eval()


def images(n: int = 8, seed: int = 0, channels: int = 3) -> torch.Tensor:
    """Smooth random images: a coarse random grid upsampled (what a flow can model) plus noise."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, 2, 2, generator=gen) * 200 + 20
    smooth = torch.nn.functional.interpolate(coarse, size=(8, 8), mode="bilinear", align_corners=False)
    return (smooth + torch.randint(-10, 11, smooth.shape, generator=gen)).clamp(0, 255).to(torch.uint8)


def flat(n: int = 6) -> torch.Tensor:
    return torch.linspace(0, 255, n).to(torch.uint8).view(n, 1, 1, 1).expand(n, 3, 8, 8).contiguous()


def noise(n: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 8, 8), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


@pytest.fixture(scope="module")
def model():
    return tiny_glow()


def png_bits(image: torch.Tensor) -> int:
    """8 * the bytes of Pillow's PNG (compress_level 9) of one uint8 image [C, H, W]."""
    buffer = io.BytesIO()
    pixels = image.permute(1, 2, 0).numpy()
    Image.fromarray(pixels[..., 0] if image.shape[0] == 1 else pixels).save(buffer, format="PNG", compress_level=9)
    return 8 * len(buffer.getvalue())


# ----------------------------------------------------------------------------- model-based scores
def test_level_terms_sum_to_log_prob_and_the_top_prior_is_the_last_term(model):
    x = cincflow.preprocess(images(), dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    terms = level_terms(model, x)
    assert terms.logdet.shape == terms.latent_log_prob.shape == (8, 2)
    assert terms.level_dims == (96, 96) and terms.num_dims == D  # 6 x 4 x 4 split off, 24 x 2 x 2 on top
    torch.testing.assert_close(terms.log_prob, model.log_prob(x), rtol=0, atol=1e-9)
    # by hand from encode: the top latent's Gaussian log-density under the learned top prior
    zs, logdet = model.encode(x)
    mean, log_std = model.top_prior.chunk(2, dim=1)
    density = -0.5 * (math.log(2 * math.pi) + 2 * log_std + (zs[-1] - mean) ** 2 * torch.exp(-2 * log_std))
    top = density.flatten(1).sum(1)
    torch.testing.assert_close(terms.latent_log_prob[:, 1], top, rtol=0, atol=1e-9)
    torch.testing.assert_close(terms.logdet.sum(1), logdet, rtol=0, atol=1e-9)
    # another top prior changes the last term only
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.top_prior.add_(0.3)
    moved = level_terms(other, x)
    assert torch.equal(moved.logdet, terms.logdet)
    assert torch.equal(moved.latent_log_prob[:, 0], terms.latent_log_prob[:, 0])
    assert not torch.allclose(moved.latent_log_prob[:, 1], terms.latent_log_prob[:, 1])
    # each level's share of bits/dim: -(ld_i + lp_i) / (D ln 2) + 8 * 96 / 192, summing to the bits/dim
    shares = level_bpd(terms)
    hand = -(terms.logdet + terms.latent_log_prob) / (D * math.log(2)) + 8 * 96 / D
    torch.testing.assert_close(shares, hand, rtol=0, atol=1e-12)
    torch.testing.assert_close(shares.sum(1), cincflow.bits_per_dim(model.log_prob(x), D, 8), rtol=0, atol=1e-9)


def test_model_scores_of_one_pass_equal_bits_per_dim_with_the_same_noise(model):
    batches = [images()[:5], images()[5:]]
    got, notes = score_set(model, batches, 7, ["level_1", "last_scale"])
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        expected = torch.cat([model.bits_per_dim(b, generator=gen) for b in batches])
    torch.testing.assert_close(got["bpd"], expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(bits_per_image(model, batches, 7)[0], expected, rtol=0, atol=0)
    torch.testing.assert_close(got["level_1"] + got["last_scale"], got["bpd"], rtol=0, atol=1e-10)
    assert notes == [] and set(got) == {"bpd", "level_1", "last_scale"}
    assert len(score_set(model, batches, 7, [], max_images=6)[0]["bpd"]) == 6


def test_likelihood_ratio_is_the_difference_of_the_two_models_bits_per_dim(model):
    reference = tiny_glow(width=4, seed=1)
    got, _ = score_set(model, [images()], 2, ["ratio"], reference_model=reference)
    with torch.no_grad():
        ours = model.bits_per_dim(images(), generator=torch.Generator().manual_seed(2))
        theirs = reference.bits_per_dim(images(), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(got["ratio"], ours - theirs, rtol=0, atol=1e-10)
    assert (got["ratio"] != 0).all()


# ----------------------------------------------------------------------------- complexity and S
def test_complexity_is_the_png_file_in_bits_per_dim_and_s_subtracts_it(model):
    x = torch.cat([images(4), flat(2)])
    by_hand = torch.tensor([png_bits(i) / D for i in x], dtype=torch.float64)
    torch.testing.assert_close(complexity_bpd(x, "png"), by_hand)
    coarse = complexity_bpd(x, "png", n_bits=5)  # the 5-bit images the model scores: floor(x / 8)
    torch.testing.assert_close(coarse, torch.tensor([png_bits(i // 8) / D for i in x], dtype=torch.float64))
    grey = x[:, :1]
    by_hand = torch.tensor([png_bits(i) / 64 for i in grey], dtype=torch.float64)
    torch.testing.assert_close(complexity_bpd(grey, "png"), by_hand)
    # flat images compress (at 8x8 the file is mostly its header)
    assert complexity_bpd(flat(2), "png").max() < complexity_bpd(noise(2), "png").min() / 3
    got, _ = score_set(model, [x], 4, ["s_png"])
    torch.testing.assert_close(got["s_png"], got["bpd"] - complexity_bpd(x, "png"), rtol=0, atol=1e-12)


def test_jpeg2000_complexity_is_lossless_where_pillow_has_it():
    x = torch.cat([images(3), noise(2)])
    assert codec_available("jp2") == bool(features.check("jpg_2000"))
    if not codec_available("jp2"):
        with pytest.raises(ConfigError, match="cannot write JPEG-2000 .*: use the PNG complexity score s_png"):
            complexity_bpd(x, "jp2")
        return
    bits = []
    for image in x:
        buffer = io.BytesIO()
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="JPEG2000", irreversible=False)
        decoded = torch.from_numpy(numpy.array(Image.open(io.BytesIO(buffer.getvalue())))).permute(2, 0, 1)
        assert torch.equal(decoded, image)  # lossless
        bits.append(8 * len(buffer.getvalue()) / D)
    torch.testing.assert_close(complexity_bpd(x, "jp2"), torch.tensor(bits, dtype=torch.float64))


# ----------------------------------------------------------------------------- typicality
def test_typicality_by_hand():
    train = torch.tensor([3.0, 4.0, 5.0, 6.0, 7.0], dtype=torch.float64)  # mean 5
    test = typicality_test(train, 2, 400, 0.9, torch.Generator().manual_seed(11))
    index = torch.randint(5, (400, 2), generator=torch.Generator().manual_seed(11))
    stats = (train[index].mean(1) - 5.0).abs()
    assert test == TypicalityTest(5.0, float(torch.quantile(stats, 0.9)), 2, 0.9, 400)
    assert 0 < test.threshold <= 2.0  # the most a pair of these can deviate
    values = torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0], dtype=torch.float64)
    t = typicality(values, TypicalityTest(5.0, 1.0, 3, 0.9, 400), torch.Generator().manual_seed(5))
    order = torch.randperm(7, generator=torch.Generator().manual_seed(5))
    first, second = values[order[:3]], values[order[3:6]]  # two batches of 3, one image left out
    expected = torch.tensor([abs(float(first.mean()) - 5), abs(float(second.mean()) - 5)], dtype=torch.float64)
    torch.testing.assert_close(t, expected, rtol=0, atol=1e-12)
    same = typicality_test(torch.full((4,), 2.5, dtype=torch.float64), 3, 50, 0.99, torch.Generator().manual_seed(0))
    assert same.train_mean == 2.5 and same.threshold == 0.0


# ----------------------------------------------------------------------------- metrics
def test_metrics_of_separated_reversed_and_tied_scores():
    low, high = torch.arange(1.0, 21.0), torch.arange(30.0, 50.0)
    perfect = detection_metrics(low, high)
    assert perfect == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr_at_95_tpr": 0.0, "threshold_at_95_tpr": 19.0}
    reversed_ = detection_metrics(high, low)
    assert reversed_["auroc"] == 0.0 and reversed_["fpr_at_95_tpr"] == 1.0
    tied = detection_metrics(torch.ones(4), torch.ones(3))
    assert tied["auroc"] == 0.5 and tied["fpr_at_95_tpr"] == 1.0 and tied["aupr_out"] == pytest.approx(3 / 7)
    # huge scores are not squashed by a sigmoid: 1e6 and 1e6 + 1 stay apart
    assert detection_metrics(torch.tensor([1e6, 1e6]), torch.tensor([1e6 + 1]))["auroc"] == 1.0


def test_metrics_of_a_small_case_by_hand():
    """in 1, 2, 3, 5; out 4, 6, 7, 3. Pairs with out > in: 3 + 4 + 4 + 2, one tie (3, 3): AUROC
    13.5 / 16. 95 % of 4 in-distribution images = all 4: threshold 5, OOD at or below it: 4 and 3.
    AUPR-out: thresholds 7, 6, 4, 3 add recall 1/4 at precision 1, 1, 3/4, 4/6; AUPR-in the same."""
    m = detection_metrics(torch.tensor([1.0, 2.0, 3.0, 5.0]), torch.tensor([4.0, 6.0, 7.0, 3.0]))
    assert m["auroc"] == pytest.approx(13.5 / 16, abs=1e-15)
    assert m["fpr_at_95_tpr"] == 0.5 and m["threshold_at_95_tpr"] == 5.0
    assert m["aupr_out"] == pytest.approx((1 + 1 + 0.75 + 4 / 6) / 4, abs=1e-15)
    assert m["aupr_in"] == pytest.approx((1 + 1 + 0.75 + 4 / 6) / 4, abs=1e-15)
    # NaN is the most OOD value (above +inf); +inf and NaN tie
    assert detection_metrics(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([math.nan, 0.0]))["auroc"] == 0.5
    assert detection_metrics(torch.tensor([math.inf]), torch.tensor([math.nan]))["auroc"] == 0.5
    assert detection_metrics(torch.tensor([0.0, math.nan]), torch.tensor([1.0]))["fpr_at_95_tpr"] == 1.0


def test_metrics_agree_with_torchmetrics_and_pair_counting():
    from torchmetrics.functional.classification import binary_auroc, binary_average_precision

    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 12, (60,), generator=gen).double() * 100  # ties, values far outside [0, 1]
    b = torch.randint(4, 16, (45,), generator=gen).double() * 100
    m = detection_metrics(a, b)
    pairs = (b[None, :] > a[:, None]).double() + 0.5 * (b[None, :] == a[:, None]).double()
    assert m["auroc"] == pytest.approx(float(pairs.mean()), abs=1e-12)
    scaled = (torch.cat([a, b]) - a.min()) / (torch.cat([a, b]).max() - a.min())  # the same order, in [0, 1]
    labels = torch.cat([torch.zeros(60), torch.ones(45)]).long()
    assert m["auroc"] == pytest.approx(float(binary_auroc(scaled, labels)), abs=1e-6)
    assert m["aupr_out"] == pytest.approx(float(binary_average_precision(scaled, labels)), abs=1e-6)
    assert m["aupr_in"] == pytest.approx(float(binary_average_precision(1 - scaled, 1 - labels)), abs=1e-6)
    t = m["threshold_at_95_tpr"]
    assert float((a <= t).double().mean()) >= 0.95 > float((a < t).double().mean())  # the smallest such value
    assert m["fpr_at_95_tpr"] == float((b <= t).double().mean())


# ----------------------------------------------------------------------------- table and picture
def test_evaluation_writes_the_table_and_the_picture(model, tmp_path):
    sets = {"flat": [flat()], "noise": [noise()], "copy": [images()[:4], images()[4:]]}
    record = ood_evaluation(model, [images()[:4], images()[4:]], sets, tmp_path, train_data=[images(12, seed=5)],
                            in_name="smooth", scores=["bpd", "s_png", "levels", "typicality"], typicality_batch=2,
                            typicality_bootstrap=200, seed=3)
    columns = ["bpd", "s_png", "level_1", "last_scale", "typicality"]
    assert list(record["scores"]) == columns
    rows = record["rows"]
    assert [(r["score"], r["data"], r["role"]) for r in rows] == [
        (c, s, "in" if s == "smooth" else "ood") for c in columns for s in ("smooth", "flat", "noise", "copy")]
    bpd = score_set(model, [images()[:4], images()[4:]], 3, [])[0]["bpd"]
    assert rows[0]["mean"] == pytest.approx(float(bpd.mean()), abs=1e-12) and rows[0]["auroc"] is None
    # a copy of the in-distribution images, scored on the same noise, cannot be told apart
    copy_bpd = next(r for r in rows if r["data"] == "copy" and r["score"] == "bpd")
    assert copy_bpd["auroc"] == 0.5 and copy_bpd["fpr_at_95_tpr"] == 1.0
    assert next(r for r in rows if r["data"] == "copy" and r["score"] == "typicality")["n"] == 4  # 8 images / M = 2
    assert record["typicality"]["train_images"] == 12 and set(record["typicality"]["rejected"]) == {"smooth", *sets}
    assert json.loads((tmp_path / "ood_table.json").read_text()) == json.loads(json.dumps(record))
    with (tmp_path / "ood_table.csv").open() as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == ROW_KEYS and len(table) == len(rows) and table[0]["auroc"] == ""
    assert float(table[1]["auroc"]) == rows[1]["auroc"]
    md = (tmp_path / "ood_table.md").read_text().splitlines()
    assert "| score | data | n | mean | std | median | AUROC | AUPR-in | AUPR-out | FPR@95%TPR |" in md[2]
    assert md[4].startswith("| bpd | smooth (in) | 8 |") and len([ln for ln in md if ln.startswith("| ")]) == 21
    assert set(record["files"]) == {"md", "csv", "json", "png"}
    assert (tmp_path / "ood_scores.png").stat().st_size > 10_000


def test_picture_names_each_score_and_set():
    gen = torch.Generator().manual_seed(0)
    values = {name: {"bpd": torch.randn(30, generator=gen) + shift, "typicality": torch.rand(5, generator=gen)}
              for name, shift in (("cifar10", 0.0), ("svhn", -1.0), ("digits", 2.0))}
    values["svhn"]["bpd"][0] = math.nan
    fig = score_figure(values, "cifar10", ["bpd", "typicality"], {"bpd": 1.5, "typicality": math.inf}, 4)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2
    for ax, column in zip(axes, ["bpd", "typicality"]):
        assert ax.get_title().replace("\n", " ").startswith(f"{column}: cifar10 (in) vs svhn, digits")
        assert ax.get_xlabel() == score_label(column, 4) + " (higher = more OOD)" and ax.get_ylabel() == "density"
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert [t.split(" (n=")[0] for t in legend[:3]] == ["cifar10 (in)", "svhn", "digits"]
    assert "M=4" in axes[1].get_xlabel() and "bits/dim" in axes[0].get_xlabel()
    legend = [t.get_text() for t in axes[0].get_legend().get_texts()]
    assert legend[3] == "threshold at 95% TPR: 1.500" and "1 non-finite not shown" in legend[1]
    assert len(axes[1].get_legend().get_texts()) == 3  # an infinite threshold is not drawn


# ----------------------------------------------------------------------------- bad input
def bad(model, tmp_path, **kwargs):
    args = {"model": model, "in_data": [images()], "ood_data": {"noise": [noise()]}, "output_dir": tmp_path,
            "train_data": [images(12, seed=5)], "typicality_bootstrap": 20}
    with pytest.raises(ConfigError) as err:
        ood_evaluation(**{**args, **kwargs})
    message = str(err.value)
    assert "\n" not in message and not list(tmp_path.iterdir())  # one line, nothing written
    return message


def test_bad_requests_get_one_line_errors_before_anything_is_written(model, tmp_path):
    unknown = bad(model, tmp_path, scores=["bpd", "auc"])
    assert unknown == f"unknown OOD score 'auc': choose from {', '.join(SCORE_NAMES)}"
    assert bad(model, tmp_path, ood_data={"noise": [noise(5)]}, scores=["typicality"], typicality_batch=6) == (
        "the typicality batch M=6 is larger than the OOD set 'noise' (5 images): choose typicality_batch <= 5 or "
        "give that set more images")
    # a set whose size shows only once it is read
    assert "larger than the in-distribution set 'test' (8 images)" in bad(
        model, tmp_path, in_data=iter([images()]), ood_data={"noise": [noise(12)]}, scores=["typicality"],
        typicality_batch=9)
    assert "larger than the training set 'train' (3 images)" in bad(
        model, tmp_path, train_data=[images(3)], scores=["typicality"], typicality_batch=4)
    grey = tiny_glow(channels=1)
    assert bad(model, tmp_path, reference_model=grey) == (
        "the reference model scores images [1, 8, 8] at 8 bits, the model [3, 8, 8] at 8 bits: give "
        "ood_reference_ckpt= a model of the model's image shape and bits")
    assert bad(model, tmp_path, scores=["ratio"]).startswith("the OOD score 'ratio' needs a reference model")
    assert bad(model, tmp_path, scores=["typicality"], train_data=None).startswith(
        "the OOD score 'typicality' needs the training images")
    assert "typicality_quantile must be a number strictly between 0 and 1" in bad(
        model, tmp_path, scores=["typicality"], typicality_quantile=1.5)
    assert "typicality_batch must be a positive integer" in bad(model, tmp_path, scores=["typicality"],
                                                                typicality_batch=0)
    assert bad(model, tmp_path, ood_data={}) == "no OOD data set given: pass at least one (ood_data=<data>)"
    assert "named 'test' like the in-distribution set" in bad(model, tmp_path, ood_data={"test": [noise()]})
    assert "max_images must be a positive integer" in bad(model, tmp_path, max_images=0)
    assert "has no images" in bad(model, tmp_path, ood_data={"empty": []}, scores=["bpd"])
    assert bad(model, tmp_path, scores=[]).startswith("no OOD score chosen")
