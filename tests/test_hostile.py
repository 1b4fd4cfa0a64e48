"""Hostile and edge-case inputs that once crashed or ended in a traceback (issue #24): a batch of one
image, pictures of any image count, an output file that is not a picture, an unknown option of any
config group, an out-of-distribution set too small for its own splits, and non-finite images given to
the API. Each is a test through the command line where it is a command-line case: one ``error:`` line,
exit status 2, no folder made and no earlier file changed."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.io
import torch

import cincflow
from cli import run_cases
from test_inputs import tree_hashes
from test_reliability import TINY, assert_one_line_error, tiny_checkpoint  # noqa: F401 (fixture)

from cincflow.viz import reconstruction_grid, sample_grid, side_by_side


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_pictures_of_any_image_count_draw(count):
    """Blocks of unequal height (fewer images, a label in a smaller font) sit side by side, padded white."""
    torch.manual_seed(0)
    model = cincflow.Glow(1, 8, levels=2, depth=1, width=8, conv="cinc", coupling="affine", n_bits=5).eval()
    images = torch.randint(0, 256, (count, 1, 8, 8), dtype=torch.uint8)
    grid, stats = reconstruction_grid(model, images)
    assert grid.shape[0] == 3 and stats["recon_err_max"] < 1e-4
    samples, health = sample_grid(model, count, [0.5, 1.0], seed=0)
    assert samples.shape[0] == 3 and health["samples"] == 2 * count
    a, b = torch.zeros(3, 50, 32), torch.zeros(3, 45, 20)
    joined = side_by_side([a, b])
    assert joined.shape[-2] == 50 + 2 * 4 and (joined[:, 4 + 45:4 + 50, 4 + 32 + 4:4 + 32 + 4 + 20] == 1).all()


@pytest.fixture(scope="module")
def small_svhn(tmp_path_factory):
    """SVHN's two .mat files with 40 training and 30 test images (the on-disk format torchvision writes)."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for name, n in (("train_32x32.mat", 40), ("test_32x32.mat", 30)):
        (root / "svhn").mkdir(exist_ok=True)
        scipy.io.savemat(root / "svhn" / name, {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8),
                                                "y": np.ones((n, 1), np.uint8)})
    return root


GROUPS = {"train": ("data", "conv", "coupling", "dequant", "trainer", "logger", "experiment", "debug", "module", "scheduler",
                    "model", "callbacks"),
          "eval": ("data", "trainer"), "sample": ("data",)}


def test_hostile_command_lines(tmp_path, tiny_checkpoint, small_svhn):  # noqa: F811
    d = tmp_path
    (d / "earlier").mkdir()
    (d / "earlier" / "samples.png").write_bytes(b"an earlier picture")
    before = tree_hashes(d)
    ck = f"ckpt_path={tiny_checkpoint}"
    runs = d / "runs"

    def run_dir(i):
        return f"hydra.run.dir={runs / str(i)}"

    refused = [("sample", [ck, f"output={d / 'earlier' / 'last.ckpt'}"], ("output=", ".ckpt is not a picture format",
                                                                         ".png")),
               ("eval", [ck, "ood_data=nope"], ("unknown ood_data 'nope'", "svhn", "digits")),
               ("eval", [ck, "ood_data=svhn", f"paths.data_dir={small_svhn}"],
                ("out-of-distribution set svhn", "do not fit the 40 images", "test split"))]
    for script, groups in GROUPS.items():  # every config group given an unknown option: one line, the choices
        prefix = TINY if script == "train" else [ck]
        refused += [(script, [*prefix, f"{group}=nope"], (f"unknown {group} option 'nope'", "choose one of"))
                    for group in groups]
    refused.append(("train", ["-m", *TINY, "conv=cinc,nope", f"hydra.sweep.dir={d / 'sweep'}"],
                    ("unknown conv option 'nope'", "cinc, emerging, glow")))
    cases = [(script, [*args, run_dir(i)]) for i, (script, args, _) in enumerate(refused)]
    # valid inputs that crashed: a batch of one image (the reconstruction picture), one reconstruction
    one = d / "one"
    cases += [("train", [*TINY, "data.batch_size=1", f"hydra.run.dir={one}"]),
              ("sample", [ck, "n=2", "reconstructions=1", f"hydra.run.dir={d / 'sampled'}"])]
    results = run_cases(cases)
    for (script, args, fragments), result in zip(refused, results):
        try:
            assert_one_line_error(result, *fragments)
        except AssertionError as err:
            raise AssertionError(f"{script} {args}: {err}") from None
    assert not runs.exists() and not (d / "sweep").exists()
    trained, sampled = results[len(refused):]
    assert trained["code"] == 0, trained["stderr"][-3000:]
    assert json.loads((one / "metrics.json").read_text())["global_step"] == 3
    assert (one / "samples" / "recon_epoch_000.png").is_file()
    assert sampled["code"] == 0 and (d / "sampled" / "samples_reconstructions.png").is_file(), sampled["stderr"][-3000:]
    after = {k: v for k, v in tree_hashes(d).items() if k.startswith("earlier")}
    assert after == {k: v for k, v in before.items() if k.startswith("earlier")}


def test_non_finite_images_are_refused_by_the_api():
    model = cincflow.Glow(1, 8, levels=2, depth=1, width=8, conv="glow", coupling="additive", n_bits=5)
    x = torch.rand(2, 1, 8, 8) - 0.5
    assert torch.isfinite(model.log_prob(x)).all()
    x[1, 0, 3, 3] = float("nan")
    for call in (model.log_prob, model.encode):
        with pytest.raises(ValueError, match="Glow got images with 1 non-finite values"):
            call(x)
    with pytest.raises(ValueError, match="postprocess got 1 non-finite values .* nonfinite='clamp'"):
        cincflow.postprocess(x, 5)
    drawn = cincflow.postprocess(x, 5, nonfinite="clamp")
    assert drawn.dtype == torch.uint8 and drawn[1, 0, 3, 3] == 0
    with pytest.raises(ValueError, match="nonfinite must be 'raise' or 'clamp'"):
        cincflow.postprocess(x, 5, nonfinite="ignore")


def test_non_finite_count_is_exact_also_where_a_finite_sum_overflows():
    """The fast path (one sum) never hides a bad value and never reports one that is not there: finite
    values whose sum overflows float32 count 0, and each NaN, +inf and -inf counts once (+inf and -inf
    together sum to NaN, also caught)."""
    from cincflow.numerics import nonfinite_count

    big = torch.full((2, 1, 4, 4), 3e38)  # finite, but the sum is inf in float32
    assert not torch.isfinite(big.sum()) and nonfinite_count(big) == 0
    assert nonfinite_count(-big) == 0 and nonfinite_count(torch.rand(3, 2, 5, 5)) == 0
    for values in ([float("nan")], [float("inf")], [float("-inf")], [float("inf"), float("-inf")], [float("nan"), 1e38]):
        x = torch.rand(2, 1, 4, 4)
        x.view(-1)[: len(values)] = torch.tensor(values)
        want = sum(1 for v in values if not math.isfinite(v))
        assert nonfinite_count(x) == want and nonfinite_count(x.double()) == want
    model = cincflow.Glow(1, 8, levels=2, depth=1, width=8, conv="glow", coupling="additive", n_bits=5)
    assert model.log_prob(torch.full((2, 1, 8, 8), 3e38)).shape == (2,)  # finite images are evaluated, not refused
