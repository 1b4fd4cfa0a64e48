"""`make reproduce`: every experiment config composes with the paper's settings; every configuration
trains for two steps at a tiny size through the real pipeline, which writes the three tables,
results.json and the plots (mean and spread over seeds) into an untracked folder, and publishes a
copy without local paths on request."""
from __future__ import annotations

import json
import math
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from cincflow.layers.step import COUPLINGS
from cincflow.reproduce import paper
from cincflow.targets import path_of
from cincflow.reproduce import run as reproduce_run
from cincflow.reproduce.report import tables_markdown
from cincflow.reproduce.run import experiments, reproduce

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "conf" / "experiment"
# dataset: (levels, depth, DataModule, processes, seed, image size) of the official README commands
SETTINGS = {
    "cifar10": (3, 32, "CIFAR10DataModule", 2, 2, 32),
    "imagenet32": (3, 48, "ImageNet32OordDataModule", 4, 0, 32),
    "imagenet64": (4, 48, "ImageNet64OordDataModule", 4, 0, 64),
}


def _compose(name: str, overrides: tuple[str, ...] = ()):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[f"experiment=paper/{name}", *overrides])


@pytest.mark.parametrize("name", experiments("full"))
def test_every_experiment_config_has_the_paper_settings(name):
    dataset, conv, coupling = name.split("_")
    cfg = _compose(name)
    levels, depth, datamodule, processes, seed, size = SETTINGS[dataset]
    assert (cfg.model.conv._target_, cfg.model.coupling._target_) == (f"cincflow.layers.step.{conv}", path_of(COUPLINGS[coupling]))
    assert (cfg.model.levels, cfg.model.depth, cfg.model.width, cfg.model.learn_top) == (levels, depth, 512, True)
    assert cfg.data._target_.endswith(datamodule)
    assert (cfg.optimizer._target_, cfg.optimizer.lr) == ("torch.optim.Adamax", 1e-3)
    # the official code's batch: 64 images per process at its anchor size 32x32, scaled by area
    assert cfg.data.batch_size == 64 * 32 * 32 // (size * size) and cfg.trainer.devices == processes
    assert cfg.seed == seed and cfg.data.seed == seed and cfg.module.ema_decay
    # warm-up over 10 official epochs of --n_train = 50,000 (the default) 32x32-batch images
    assert cfg.scheduler.warmup_steps == int(10 * 50_000 / (64 * processes)) and cfg.scheduler.warmup_epochs == 0
    assert all(t in cfg.tags for t in paper.paper_tables_of(dataset, conv, coupling))
    if dataset == "cifar10":
        # --epochs 4001: the official loop runs epochs 1..4000 of ceil(50,000 / (64 x 2)) steps each
        steps_per_epoch = math.ceil(50_000 / (cfg.data.batch_size * processes))
        assert (cfg.trainer.max_epochs, cfg.trainer.max_steps) == (-1, (4001 - 1) * steps_per_epoch)
        assert cfg.data.augment is True
    else:  # no epoch limit: trained until stopped
        assert (cfg.trainer.max_epochs, cfg.trainer.max_steps) == (-1, -1)


def test_configs_cite_the_method_document():
    files = sorted(EXPERIMENTS.glob("*_paper.yaml")) + sorted((EXPERIMENTS / "paper").glob("*.yaml"))
    assert len(files) == 3 + 18
    for path in files:
        text = path.read_text()
        assert "docs/method.md section" in text and "PAPER.md" not in text and "../shared" not in text, path


def test_every_published_row_has_a_configuration():
    names = set(experiments("full"))
    for table in (paper.BPD, paper.ABLATION, paper.SAMPLING_SECONDS):
        assert {paper.experiment_name(*key) for key in table} <= names
    assert len(names) == 18 and {p.stem for p in (EXPERIMENTS / "paper").glob("*.yaml")} == names
    assert len(experiments("tiny")) == 18 and len(experiments("smoke")) == 6


def _cli(monkeypatch, capsys, *argv: str) -> tuple[int, str]:
    """Run src/reproduce.py in this process; (exit status, stderr)."""
    monkeypatch.setattr(sys, "argv", ["reproduce.py", *argv])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(ROOT / "src" / "reproduce.py"), run_name="__main__")
    return info.value.code, capsys.readouterr().err


def test_bad_arguments_are_one_line_exit_2(monkeypatch, capsys):
    with pytest.raises(ValueError, match="unknown configuration 'cifar10_cinc_triple'"):
        experiments("smoke", ["cifar10_cinc_triple"])
    code, err = _cli(monkeypatch, capsys, "--scale", "smoke", "--only", "cifar10_cinc_triple")
    assert code == 2 and err.startswith("error: unknown configuration 'cifar10_cinc_triple'") and err.count("\n") == 1
    assert all(name in err for name in experiments("smoke"))
    code, err = _cli(monkeypatch, capsys, "--scale", "smoke", "--only", "imagenet64_cinc_quad")
    assert code == 2 and "at scale full or tiny" in err
    code, err = _cli(monkeypatch, capsys, "--scale", "huge")
    assert code == 2 and err.startswith("error: argument --scale: invalid choice: 'huge'") and err.count("\n") == 1
    code, err = _cli(monkeypatch, capsys, "--imagenet-epochs", "0")
    assert (code, err) == (2, "error: --imagenet-epochs must be at least 1, got 0\n")


def _record(name: str, bpd: float, seed: int | None = None, seconds: float = 0.5) -> dict:
    dataset, conv, coupling = name.split("_")
    return {"experiment": name, "dataset": dataset, "conv": conv, "coupling": coupling, "seed": seed,
            "test_bpd": bpd, "sample_seconds": seconds, "forward_seconds": 0.4, "run_dir": f"runs/{name}"}


def test_full_scale_tables_put_paper_and_repository_side_by_side():
    records = [_record("cifar10_cinc_quad", 3.40), _record("imagenet64_cinc_quad", 3.90)]
    md = tables_markdown(records, "full", {"hardware": "h", "commit": "c", "datasets": "d", "imagenet_epochs": 100})
    assert "| CIFAR-10 | +Quad | cifar10_cinc_quad | 3.3470 | 3.4000 | +0.0530 |" in md
    assert "| cinc | quad | cifar10_cinc_quad | 3.3879 | 3.4000 | +0.0121 |" in md
    assert "| ImageNet64 | +Quad | imagenet64_cinc_quad | 3.8514 | 3.9000 | +0.0486 |" in md
    assert "| ImageNet64 | Glow | not run | 3.8100 | — |" in md and "100 epochs" in md
    smoke = tables_markdown(records, "smoke", {"hardware": "h", "commit": "c", "datasets": "d"})
    assert "SMOKE SCALE" in smoke and "3.3470" not in smoke and "3.4000" in smoke and "±" not in smoke


def test_tables_show_mean_and_spread_over_seeds():
    bpds = [4.0, 4.25, 4.1]
    records = [_record("cifar10_emerging_affine", b, seed=s, seconds=0.1 * (s + 1)) for s, b in enumerate(bpds)]
    md = tables_markdown(records, "smoke", {"seeds": [0, 1, 2]})
    mean, sd = np.mean(bpds), np.std(bpds, ddof=1)
    assert f"| CIFAR-10 | Emerging | cifar10_emerging_affine | {mean:.4f} ± {sd:.4f} |" in md
    assert f"| emerging | affine | cifar10_emerging_affine | {mean:.4f} ± {sd:.4f} |" in md
    times = [0.1, 0.2, 0.3]
    assert f"| CIFAR-10 | emerging | cifar10_emerging_affine | {np.mean(times):.3f} ± {np.std(times, ddof=1):.3f} |" in md
    assert "mean ± sd" in md and "seeds [0, 1, 2]" in md
    assert all(f"| cifar10_emerging_affine | {s} | {b:.4f} |" in md for s, b in enumerate(bpds))  # every run


def test_results_go_to_an_untracked_folder_by_default():
    assert reproduce_run.DEFAULT_OUT == "outputs/reproduce"
    probe = f"{reproduce_run.DEFAULT_OUT}/smoke/tables.md"
    ignored = subprocess.run(["git", "check-ignore", "-q", probe], cwd=ROOT)
    assert ignored.returncode == 0, f"{probe} is not ignored by git"


def test_full_scale_gives_the_rows_trained_until_stopped_a_length(tmp_path, monkeypatch):
    launches = []
    monkeypatch.setattr(reproduce_run, "launch", lambda names, overrides, sweep, seeds: launches.append(
        (names, overrides, seeds)))
    with pytest.raises(FileNotFoundError, match="only 0 of the runs"):
        reproduce("full", tmp_path, imagenet_epochs=7)
    assert [names for names, _, _ in launches] == [experiments("full")[:6], experiments("full")[6:]]
    assert not any(o.startswith("trainer.max_epochs") for o in launches[0][1])
    assert launches[1][1][-1] == "trainer.max_epochs=7" and launches[1][2] == []  # each config's own seed


def _check_results(out: Path, names: list[str], runs_per_name: int = 1) -> dict:
    result = json.loads((out / "results.json").read_text())
    assert [r["experiment"] for r in result["records"]] == [n for n in names for _ in range(runs_per_name)]
    for r in result["records"]:
        assert 0 < r["test_bpd"] < 20 and r["sample_seconds"] > 0 and r["forward_seconds"] > 0
        assert r["val_curve"], "the validation curve is read from the run's metrics.json"
        assert r["global_step"] == 2
    assert result["meta"]["commit"] and result["meta"]["hardware"]
    md = (out / "tables.md").read_text()
    assert "TINY SCALE" in md and "Table 1" in md and "Table 2" in md and "Table 3" in md
    for png in ("val_bpd.png", "sampling_time.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return result


ONE_PER_DATASET = ["cifar10_emerging_affine", "imagenet32_glow_quad", "imagenet64_cinc_quad"]


@pytest.mark.parametrize("only", [pytest.param(None, marks=pytest.mark.slow, id="all-18"),
                                  pytest.param(ONE_PER_DATASET, id="one-per-dataset")])
def test_tiny_reproduction(only, tmp_path, monkeypatch):
    """The rows (all 18 in `make test-slow`, one per dataset here) train for 2 steps (each with its own
    levels, depth 1, width 8) and are evaluated; then two of them are evaluated again from their folders
    (--runs) and published."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    tables = reproduce("tiny", tmp_path / "out", only=only, device="cpu", reps=1)
    assert tables == tmp_path / "out" / "tiny" / "tables.md"
    result = _check_results(tables.parent, experiments("tiny", only))
    for r in result["records"]:
        assert Path(r["checkpoint"]).is_file() and r["seed"] == SETTINGS[r["dataset"]][4]
        assert Path(r["run_dir"]).name == f"seed_{r['seed']}" and Path(r["run_dir"]).parent.name == f"paper_{r['experiment']}"
    levels = {}
    for r in result["records"]:
        levels[r["dataset"]] = OmegaConf.load(Path(r["run_dir"]) / ".hydra" / "config.yaml").model.levels
    assert levels == {ds: s[0] for ds, s in SETTINGS.items()}

    names = ["cifar10_emerging_affine", "imagenet64_cinc_quad"]
    sweep_dir = result["meta"]["sweep_dir"]
    again = reproduce("tiny", tmp_path / "again", only=names, device="cpu", reps=1, runs=sweep_dir,
                      publish=tmp_path / "published")
    _check_results(again.parent, names)
    published = tmp_path / "published" / "tiny"
    _check_results(published, names)
    for path in published.iterdir():
        if path.suffix in (".md", ".json"):
            text = path.read_text()
            assert str(tmp_path) not in text and "seed_" not in text and "runs/" not in text, path
    records = json.loads((published / "results.json").read_text())["records"]
    assert not any("run_dir" in r or "checkpoint" in r for r in records)
    assert "run folder" not in (published / "tables.md").read_text()


@pytest.mark.slow  # long: `make test-slow`
def test_tiny_reproduction_with_two_seeds(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    tables = reproduce("tiny", tmp_path, only=["cifar10_cinc_quad"], seeds=[3, 4], device="cpu", reps=1)
    result = _check_results(tables.parent, ["cifar10_cinc_quad"], runs_per_name=2)
    assert [r["seed"] for r in result["records"]] == [3, 4]
    bpds = [r["test_bpd"] for r in result["records"]]
    assert bpds[0] != bpds[1]  # another seed: another initialisation and data order
    row = f"| CIFAR-10 | +Quad | cifar10_cinc_quad | {np.mean(bpds):.4f} ± {np.std(bpds, ddof=1):.4f} |"
    assert row in tables.read_text()


def test_evaluating_finished_runs_only(tmp_path, monkeypatch):
    """--runs: the tables come from runs made elsewhere (one cluster job per configuration)."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with pytest.raises(FileNotFoundError, match="no finished run"):
        reproduce("tiny", tmp_path / "out", runs=tmp_path)
