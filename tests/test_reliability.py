"""Reliability (issue #6): bad input through the real command line, one-line errors and exit codes.

The bad-input cases run the real entry scripts (``src/train.py`` etc., with their real command-line
parsing by Hydra) one after the other in ONE child process (tests/cli.py: a Python + Lightning
start-up costs ~6 s, so one interpreter per case would cost minutes); one case also runs as a
separate interpreter to check the exit status a shell sees.
"""
from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from cincflow.jobs import train
from cincflow.layers.step import COUPLINGS
from cincflow.targets import path_of
from cli import launch_env, run_cases

ROOT = Path(__file__).resolve().parents[1]
TINY = ["experiment=quickstart", "debug=smoke", "logger=none", "trainer.enable_progress_bar=false"]


def assert_one_line_error(result: dict, *fragments: str, code: int = 2) -> str:
    """Exit ``code``, no traceback, exactly one ``error:`` line (the last line of stderr) that
    contains every fragment."""
    err = result["stderr"]
    assert result["code"] == code, (result["code"], err[-2000:], result["stdout"][-1000:])
    assert "Traceback" not in err and "HYDRA_FULL_ERROR" not in err, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and err.rstrip().splitlines()[-1] == lines[0], err[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """last.ckpt of a 3-step smoke run (in-process)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    out = tmp_path_factory.mktemp("tiny_run")
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*TINY, "test=false", "samples.n=0"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        del cfg.hydra
    train(cfg)
    return out / "checkpoints" / "last.ckpt"


def format_2(ckpt: dict) -> dict:
    """``ckpt`` as format 2 wrote it: the coupling by name in ``model_config``, ``cincflow.Glow`` its target."""
    hparams = dict(ckpt["hyper_parameters"])
    model = dict(hparams["model_config"])
    names = {path_of(cls): name for name, cls in COUPLINGS.items()}
    model.update(_target_="cincflow.Glow", coupling=names[model["coupling"]["_target_"]])
    return {**ckpt, "cincflow_format": 2, "hyper_parameters": {**hparams, "model_config": model}}


def format_1(ckpt: dict) -> dict:
    """``ckpt`` as the code before checkpoint format 2 wrote it: ``FlowLitModule(model=<the flow's
    config, the conv by name + conv_kwargs>, optim=<optimiser settings>, ema_decay=..., ...)`` saved
    all its arguments as the hyper-parameters, and there was no ``cincflow_format`` entry."""
    old = {k: v for k, v in ckpt.items() if k != "cincflow_format"}
    hparams = dict(ckpt["hyper_parameters"])
    model = format_2(ckpt)["hyper_parameters"].pop("model_config")
    del model["_target_"]
    for key in ("scheduler_interval", "scheduler_monitor"):
        hparams.pop(key)
    del hparams["model_config"]
    conv = dict(model.pop("conv"))
    name = conv.pop("_target_").rsplit(".", 1)[-1]
    del conv["_partial_"]
    if "solver" in conv:  # format 1 called it `inverse`
        conv["inverse"] = conv.pop("solver")
    model.update(conv=name, conv_kwargs=conv)
    optim = {"name": "adamax", "lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0,
             "warmup_steps": 2, "warmup_epochs": 0}
    old["hyper_parameters"] = {"model": model, "optim": optim, **hparams}
    return old


def test_a_checkpoint_of_the_previous_format_loads_and_resumes(tiny_checkpoint, compose_cfg, tmp_path):
    from cincflow.errors import CheckpointError
    from cincflow.training.loading import load_module

    ckpt = torch.load(tiny_checkpoint, map_location="cpu", weights_only=False)
    assert ckpt["cincflow_format"] == 3 and "model_config" in ckpt["hyper_parameters"]
    assert ckpt["hyper_parameters"]["model_config"]["coupling"]["_target_"] == "cincflow.layers.quad.QuadCoupling"
    torch.save(format_2(ckpt), tmp_path / "format_2.ckpt")
    assert load_module(tmp_path / "format_2.ckpt", device="cpu").model.coupling == "quad"
    old_path = tmp_path / "format_1.ckpt"
    torch.save(format_1(ckpt), old_path)
    old, new = load_module(old_path, device="cpu"), load_module(tiny_checkpoint, device="cpu")
    assert (old.model.conv, old.model.coupling) == (new.model.conv, new.model.coupling) == ("cinc", "quad")
    assert old.state_dict().keys() == new.state_dict().keys()
    for key, value in new.state_dict().items():
        torch.testing.assert_close(old.state_dict()[key], value, rtol=0, atol=0, msg=key)
    images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    torch.testing.assert_close(old.eval_model.bits_per_dim(images, dequantize=False),
                               new.eval_model.bits_per_dim(images, dequantize=False), rtol=0, atol=0)
    older = format_1(ckpt)
    del older["hyper_parameters"]["max_bad_steps"]  # an argument this version requires
    torch.save(older, tmp_path / "older.ckpt")
    with pytest.raises(CheckpointError, match=r"older.ckpt has hyper-parameters this version does not take .*max_bad_steps"):
        load_module(tmp_path / "older.ckpt", device="cpu")
    result = train(compose_cfg("train", [*TINY, "test=false", "samples.n=0", "trainer.max_epochs=2",
                                         f"ckpt_path={old_path}"], tmp_path / "resumed"))
    assert result["global_step"] == 6  # 3 steps restored + 3 more


def _png(path: Path, size: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((size, size, 3), np.uint8)).save(path)


def test_bad_input_one_line_errors(tmp_path, tiny_checkpoint):
    d = tmp_path
    # data folders: CIFAR-10 with one batch only / all batches garbage; ImageNet32 npz truncated; PNGs
    (d / "cifar_partial" / "cifar-10-batches-py").mkdir(parents=True)
    (d / "cifar_partial" / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"x")
    bad = d / "cifar_bad" / "cifar-10-batches-py"
    bad.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (bad / name).write_bytes(b"\x80\x04garbage")
    npz = d / "npz"
    npz.mkdir()
    buf = io.BytesIO()
    np.savez(buf, data=np.zeros((4, 3072), np.uint8))
    for name in [f"train_data_batch_{i}.npz" for i in range(1, 11)] + ["val_data.npz"]:
        (npz / name).write_bytes(buf.getvalue()[:100])  # truncated
    (d / "png_bad" / "train_32x32").mkdir(parents=True)
    (d / "png_bad" / "train_32x32" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    _png(d / "png_bad" / "valid_32x32" / "b.png", 32)
    _png(d / "png_small" / "train_32x32" / "a.png", 16)
    _png(d / "png_small" / "valid_32x32" / "b.png", 16)
    (d / "empty").mkdir()
    # checkpoints: a text file, a truncated checkpoint
    (d / "notes.ckpt").write_text("not a checkpoint\n")
    raw = tiny_checkpoint.read_bytes()
    (d / "truncated.ckpt").write_bytes(raw[: len(raw) // 2])
    unbuildable = format_1(torch.load(tiny_checkpoint, map_location="cpu", weights_only=False))
    unbuildable["hyper_parameters"]["model"]["conv_kwargs"]["dilation"] = 2  # an option this version's conv lacks
    torch.save(unbuildable, d / "old.ckpt")
    ckpt_before = raw

    def run(i: int) -> str:
        return f"hydra.run.dir={d / 'runs' / str(i)}"

    train_cases = [
        (["data=cifar10", f"paths.data_dir={d / 'missing'}", "data.download=false"],
         ("CIFAR-10 not found", "missing: data_batch_1", "Download")),
        (["data=cifar10", f"paths.data_dir={d / 'cifar_partial'}", "data.download=false"],
         ("CIFAR-10 not found", "missing: data_batch_2")),
        (["data=cifar10", f"paths.data_dir={d / 'cifar_bad'}"], ("cannot read CIFAR-10 batch", "re-download")),
        (["data=imagenet32_oord", f"paths.data_dir={d / 'empty'}"], ("train_32x32", "does not exist")),
        (["data=imagenet32_chrabaszcz", f"paths.data_dir={d / 'npz'}"], ("train_data_batch_1.npz", "cannot read")),
        (["data=imagenet32_oord", f"paths.data_dir={d / 'png_bad'}"], ("cannot read PNG", "a.png")),
        (["data=imagenet32_oord", f"paths.data_dir={d / 'png_small'}"], ("expected a 32x32 RGB PNG", "16x16")),
        (["model.depth=0"], ("invalid model configuration", "depth must be a positive integer")),
        (["model.width=-4"], ("width must be a positive integer",)),
        (["model.conv.solver=magic"], ("unknown solver 'magic'",)),
        (["conv=glow", "+model.conv.init_std=0.1"], ("invalid model configuration", "unexpected keyword argument 'init_std'")),
        (["coupling=quad", "model.coupling._target_=cincflow.layers.quad.Quadd"],
         ("model.coupling._target_=cincflow.layers.quad.Quadd cannot be imported", "QuadCoupling")),
        ([f"ckpt_path={d / 'nope.ckpt'}"], ("nope.ckpt does not exist",)),
        ([f"ckpt_path={d / 'notes.ckpt'}"], ("notes.ckpt is not a checkpoint",)),
        ([f"ckpt_path={d / 'truncated.ckpt'}"], ("truncated.ckpt is not a checkpoint", "truncated")),
        ([f"ckpt_path={d}"], ("is a directory",)),
        ([f"ckpt_path={tiny_checkpoint}", "resume=weights", "model.width=16"],
         ("different architecture", "width=8", "width=16", "shape mismatches", "[8, ")),
        ([f"ckpt_path={tiny_checkpoint}", "resume=weights", "model.depth=2"], ("different architecture", "missing keys", "depth=2")),
        (["ckpt_path=last", f"paths.log_dir={d / 'nolog'}"], ("ckpt_path=last found no checkpoint",)),
        (["trainer.accelerator=mps"], ("invalid trainer configuration", "trainer.accelerator=mps", "trainer=cpu")),
    ]
    cases = [("train", [*TINY, *args, run(i)]) for i, (args, _) in enumerate(train_cases)]
    # the paper's default command without CIFAR-10: the data is checked before the 114 M-parameter
    # model is built or a W&B run starts, and the error names the offline alternatives
    no_data = ("train", ["coupling=quad", "conv=cinc", f"paths.data_dir={d / 'missing'}", "data.download=false",
                         "trainer.enable_progress_bar=false", run(99)])
    cases.append(no_data)
    train_cases.append((no_data[1], ("CIFAR-10 not found", "experiment=quickstart", "data=photos")))
    other = [
        (("eval", [run(100)]), ("src/eval.py needs a checkpoint", "ckpt_path=")),
        (("sample", [run(101)]), ("src/sample.py needs a checkpoint", "ckpt_path=")),
        (("eval", [f"ckpt_path={d / 'notes.ckpt'}", run(102)]), ("is not a checkpoint",)),
        (("sample", [f"ckpt_path={d / 'nope.ckpt'}", run(103)]), ("does not exist",)),
        (("eval", [f"ckpt_path={tiny_checkpoint}", "data=cifar10", run(104)]),
         ("does not match the checkpoint's model",)),
        (("sample", ["ckpt_path=last", f"paths.log_dir={d / 'nolog'}", run(105)]), ("found no checkpoint",)),
        (("eval", [f"ckpt_path={d / 'old.ckpt'}", run(106)]),
         ("old.ckpt stores model settings this version cannot build", "unexpected keyword argument 'dilation'",
          "load its state_dict into a model built with matching settings")),
        (("benchmark", ["size=huge"]), ("unknown size 'huge'", "paper, cpu, tiny")),
        (("benchmark", ["size=tiny", "device=cuda:64"]), ("device=cuda:64", "CUDA GPU(s) on this machine", "device=cpu")),
        (("benchmark", ["size=tiny", "device=gpu"]), ("device=gpu is not a torch device",)),
        (("benchmark", ["size=tiny", "threads=two"]), ("threads must be a positive number",)),
        (("benchmark", ["size=tiny", f"out={d / 'notes.ckpt' / 'b.json'}"]), ("cannot write into", "notes.ckpt")),
        (("benchmark", ["tiny"]), ("unknown argument 'tiny'", "key=value")),
    ]
    cases += [case for case, _ in other]
    expectations = [frag for _, frag in train_cases] + [frag for _, frag in other]
    results = run_cases(cases)
    assert len(results) == len(cases)
    for (script, args), fragments, result in zip(cases, expectations, results):
        assert_one_line_error(result, *fragments)
    started = results[cases.index(no_data)]
    assert "parameters" not in started["stdout"] and "W&B" not in started["stdout"], started["stdout"]
    assert not (d / "runs" / "99" / "wandb").exists()
    # nothing already written was overwritten: the checkpoint we resumed from is byte-identical
    assert tiny_checkpoint.read_bytes() == ckpt_before


@pytest.mark.slow  # fresh interpreters (~20 s): `make test-slow`
def test_real_process_exit_status_and_traceback_on_request(tmp_path):
    cmd = [sys.executable, str(ROOT / "src" / "train.py"), *TINY, "model.depth=0", f"hydra.run.dir={tmp_path}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=launch_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: invalid model configuration: depth must be")
    assert "Traceback" not in proc.stderr
    # HYDRA_FULL_ERROR=1 adds the traceback, same last line and status
    proc = subprocess.run(cmd, cwd=ROOT, env=launch_env(HYDRA_FULL_ERROR="1"), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "Traceback" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: invalid model configuration")


def test_zipfile_check_accepts_real_checkpoints(tiny_checkpoint):
    assert zipfile.is_zipfile(tiny_checkpoint)
    assert torch.load(tiny_checkpoint, map_location="cpu", weights_only=False)["global_step"] == 3
