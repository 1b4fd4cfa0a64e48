"""`make reproduce`: every experiment config composes with the paper's settings; the pipeline runs
end to end at a tiny size and writes the three tables, results.json and the plots."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from cincflow.reproduce import paper
from cincflow.reproduce.report import tables_markdown
from cincflow.reproduce.run import experiments, reproduce

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"cifar10": (32, "CIFAR10DataModule", 2), "imagenet32": (48, "ImageNet32OordDataModule", 4)}


@pytest.mark.parametrize("name", experiments("full"))
def test_every_experiment_config_has_the_paper_settings(name):
    dataset, conv, coupling = name.split("_")
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment=paper/{name}"])
    depth, datamodule, devices = SETTINGS[dataset]
    assert (cfg.model.conv._target_, cfg.model.coupling) == (f"cincflow.layers.step.{conv}", coupling)
    assert (cfg.model.levels, cfg.model.depth, cfg.model.width, cfg.model.learn_top) == (3, depth, 512, True)
    assert cfg.data._target_.endswith(datamodule)
    assert (cfg.optimizer._target_, cfg.optimizer.lr, cfg.scheduler.warmup_epochs) == ("torch.optim.Adamax", 1e-3, 10)
    assert cfg.data.batch_size == 64 and cfg.trainer.devices == devices and cfg.ema_decay
    assert all(t in cfg.tags for t in paper.paper_tables_of(dataset, conv, coupling))
    if dataset == "cifar10":
        assert cfg.data.augment is True


def test_every_published_row_has_a_configuration():
    names = set(experiments("full"))
    for table in (paper.BPD, paper.ABLATION, paper.SAMPLING_SECONDS):
        assert {paper.experiment_name(*key) for key in table} <= names
    assert len(names) == 12


def test_unknown_configuration_is_refused():
    with pytest.raises(ValueError, match="unknown configuration"):
        experiments("smoke", ["cifar10_cinc_triple"])


def test_full_scale_tables_put_paper_and_repository_side_by_side():
    records = [{"experiment": "cifar10_cinc_quad", "dataset": "cifar10", "conv": "cinc", "coupling": "quad",
                "test_bpd": 3.40, "sample_seconds": 0.5, "forward_seconds": 0.4, "run_dir": "r"}]
    md = tables_markdown(records, "full", {"hardware": "h", "commit": "c", "datasets": "d"})
    assert "| CIFAR-10 | +Quad | cifar10_cinc_quad | 3.3470 | 3.4000 | +0.0530 |" in md
    assert "| cinc | quad | cifar10_cinc_quad | 3.3879 | 3.4000 | +0.0121 |" in md
    smoke = tables_markdown(records, "smoke", {"hardware": "h", "commit": "c", "datasets": "d"})
    assert "SMOKE SCALE" in smoke and "3.3470" not in smoke and "3.4000" in smoke


def _run_tiny(tmp_path, monkeypatch, only):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    return reproduce("tiny", tmp_path, only=only, device="cpu", reps=1)


def _check_results(out: Path, names: list[str]) -> None:
    result = json.loads((out / "results.json").read_text())
    assert [r["experiment"] for r in result["records"]] == names
    for r in result["records"]:
        assert 0 < r["test_bpd"] < 20 and r["sample_seconds"] > 0 and r["forward_seconds"] > 0
        assert r["val_curve"], "the validation curve is read from the run's metrics.json"
        assert Path(r["checkpoint"]).is_file()
    assert result["meta"]["commit"] and result["meta"]["hardware"]
    md = (out / "tables.md").read_text()
    assert "TINY SCALE" in md and "Table 1" in md and "Table 2" in md and "Table 3" in md
    for png in ("val_bpd.png", "sampling_time.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tiny_reproduction_pipeline_end_to_end(tmp_path, monkeypatch):
    names = ["cifar10_emerging_affine", "cifar10_cinc_quad"]  # in the order experiments() lists them
    tables = _run_tiny(tmp_path, monkeypatch, names)
    _check_results(tables.parent, names)
    # --runs: evaluate those finished runs again without training (the cluster workflow)
    sweep_dir = json.loads((tables.parent / "results.json").read_text())["meta"]["sweep_dir"]
    again = reproduce("tiny", tmp_path / "again", device="cpu", reps=1, runs=sweep_dir)
    _check_results(again.parent, names)


@pytest.mark.slow
def test_tiny_reproduction_of_every_configuration(tmp_path, monkeypatch):
    tables = _run_tiny(tmp_path, monkeypatch, None)
    _check_results(tables.parent, experiments("tiny"))


def test_evaluating_finished_runs_only(tmp_path, monkeypatch):
    """--runs: the tables come from runs made elsewhere (one cluster job per configuration)."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with pytest.raises(FileNotFoundError, match="no finished run"):
        reproduce("tiny", tmp_path / "out", runs=tmp_path)
