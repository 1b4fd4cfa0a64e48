"""Runs (issue #12): a run's files are never overwritten, and a resume is the run the user meant with
the settings the user gave. Through the real command line (one subprocess running several commands,
see tests/cli.py, or real concurrent/signalled processes) and the API; every case that
must not touch an earlier run compares the hashes of all its files."""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import zipfile
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback

from cli import launch_env, run_cases
from test_reliability import assert_one_line_error

from cincflow.errors import CheckpointError, CheckpointNotFoundError
from cincflow.jobs import train
from cincflow.runs import JOB_DIR_MAX, job_dir
from cincflow.training import FlowLitModule
from cincflow.training.checkpoints import resolve_ckpt_path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["experiment=quickstart", "debug=smoke", "logger=none", "trainer.enable_progress_bar=false", "samples.n=0"]


def hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def ok(result: dict) -> dict:
    assert result["code"] == 0, (result["code"], result["stderr"][-3000:], result["stdout"][-2000:])
    return result


def metrics_folder(stdout: str) -> Path:
    return Path(re.findall(r"^metrics: (.*)/metrics.json$", stdout, re.M)[-1])


def ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


# ---------------------------------------------------------------------------- folders
@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two real training runs of task `runs` in their default folders: (A, B), B of another width."""
    log = tmp_path_factory.mktemp("log")
    a, b = run_cases([("train", [*TINY, "task_name=runs", f"paths.log_dir={log}"]),
                      ("train", [*TINY, "task_name=runs", f"paths.log_dir={log}", "model.width=4"])])
    return log, metrics_folder(ok(a)["stdout"]), metrics_folder(ok(b)["stdout"])


def test_a_new_run_never_writes_into_another_runs_folder(two_runs, tmp_path):
    log, a, b = two_runs
    assert a != b and a.parent == b.parent == log / "outputs" / "runs"
    before = hashes(a)
    assert {".hydra/config.yaml", "metrics.json", "checkpoints/last.ckpt", "train.log"} <= set(before)
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    common = [*TINY, "task_name=runs", f"paths.log_dir={log}"]
    results = run_cases([
        ("train", [*common, f"hydra.run.dir={a}"]),
        ("train", [*common, f"hydra.run.dir={a}", "model.depth=0"]),  # bad input too: refused before the folder is touched
        ("train", [*common, f"hydra.run.dir={a}", f"ckpt_path={b / 'checkpoints' / 'last.ckpt'}"]),
        ("train", ["-m", *common, f"hydra.sweep.dir={sweep}", "seed=1,2"]),
        ("eval", [f"hydra.run.dir={a}", "ckpt_path=last", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false"]),
        ("sample", [f"hydra.run.dir={a}", "ckpt_path=last", "n=4", "device=cpu"]),
    ])
    assert_one_line_error(results[0], f"{a} already holds a run (metrics.json, checkpoints)", "never writes into another run's folder",
                          f"hydra.run.dir={a} ckpt_path=last")
    assert_one_line_error(results[1], "depth must be a positive integer")  # inputs are checked first (no file written)
    assert_one_line_error(results[2], f"belongs to the run {b}", "continues that run in its own folder", "resume=weights")
    assert_one_line_error(results[3], f"{sweep} already holds a multirun")
    evaluation, samples = ok(results[4]), ok(results[5])
    assert f"{a} is a training run's folder: this eval writes to {a}/eval/" in evaluation["stdout"]
    (eval_json,) = (a / "eval").glob("*/metrics.json")
    record = json.loads(eval_json.read_text())
    assert record["checkpoint"] == str(a / "checkpoints" / "last.ckpt") and math.isfinite(record["test/bpd"])
    assert f"ckpt_path=last: {a / 'checkpoints' / 'last.ckpt'} (the last.ckpt of the named run folder" in evaluation["stdout"]
    assert len(list((a / "sample").glob("*/samples.png"))) == 1 and "non-finite samples: 0 of 4" in samples["stdout"]
    after = hashes(a)
    assert {k: after[k] for k in before} == before  # no file of the run changed ...
    assert all(k.startswith(("eval/", "sample/")) for k in set(after) - set(before))  # ... nothing else added
    assert sorted(p.name for p in sweep.iterdir()) == ["multirun.yaml"]


def test_multirun_job_folder_names_fit_every_file_system(tmp_path):
    assert job_dir(3, "conv:cinc+coupling:affine") == "3_conv:cinc+coupling:affine"  # short: Hydra's name
    many = "+".join(f"option_{i}.value:{i}" for i in range(40))
    names = {job_dir(n, many.replace("value:7", f"value:{n}")) for n in range(50)}
    assert len(names) == 50  # cut names stay distinct (the hash of the whole name)
    for name in names:
        assert len(name.encode()) <= JOB_DIR_MAX and re.fullmatch(r"\d+_option_0.*~[0-9a-f]{8}", name), name
        (tmp_path / name).mkdir()  # a folder the file system takes (the uncut name is over 255 bytes)
    assert len(f"0_{many}".encode()) > 255


@pytest.mark.slow  # long: `make test-slow`
def test_two_train_processes_started_together_get_their_own_folders(tmp_path):
    """Every default folder of the next minute exists already (as if other runs had just made them):
    both runs, started together, must make folders of their own (suffix), never share one."""
    log = tmp_path / "log"
    taken = log / "outputs" / "race"
    now = datetime.now()
    stamps = [(now + timedelta(seconds=s)).strftime("%Y-%m-%d_%H-%M-%S") for s in range(-1, 90)]
    for stamp in stamps:
        (taken / stamp).mkdir(parents=True)
    cmd = [sys.executable, str(ROOT / "src" / "train.py"), *TINY, "task_name=race", f"paths.log_dir={log}"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    folders = [metrics_folder(out) for out, _ in outs]
    assert folders[0] != folders[1]
    for folder in folders:
        stamp, suffix = folder.name.rsplit("_", 1)
        assert stamp in stamps and suffix.isdigit(), folder.name
        record = json.loads((folder / "metrics.json").read_text())
        assert [e["step"] for e in record["history"]] == [3]  # one run's history, not two interleaved
        assert ckpt(folder / "checkpoints" / "last.ckpt")["global_step"] == 3
    assert all(not any((taken / s).iterdir()) for s in stamps)  # the folders that existed stay empty


# ---------------------------------------------------------------------------- ckpt_path=last
def _tiny_run(compose_cfg, log: Path, task: str, name: str, *extra: str, mtime: float) -> Path:
    out = log / "outputs" / task / name
    train(compose_cfg("train", [*TINY, f"task_name={task}", "test=false", *extra], out))
    last = out / "checkpoints" / "last.ckpt"
    os.utime(last, (mtime, mtime))
    return last


def test_ckpt_path_last_rules(compose_cfg, tmp_path, capsys):
    log = tmp_path / "log"
    t0 = time.time() - 1000
    old = _tiny_run(compose_cfg, log, "T", "old", mtime=t0)
    newer_other_arch = _tiny_run(compose_cfg, log, "T", "new", "model.width=4", mtime=t0 + 10)
    other_task = _tiny_run(compose_cfg, log, "U", "newest", mtime=t0 + 20)
    capsys.readouterr()

    def last(task: str, *extra: str, named: Path | None = None) -> tuple[Path, str]:
        cfg = compose_cfg("train", [*TINY, f"task_name={task}", f"paths.log_dir={log}", *extra], tmp_path / "x")
        path = resolve_ckpt_path("last", cfg, named_dir=named, training=True)
        return path, capsys.readouterr().out

    path, said = last("T")  # the newest of the same task AND architecture: skips the newer width-4 run
    assert path == old and f"ckpt_path=last: {old} (the newest last.ckpt of task T with this model architecture; " \
        "1 newer one(s) of other architectures skipped)" in said
    path, said = last("T", "model.width=4")
    assert path == newer_other_arch and "skipped" not in said
    path, said = last("T", "model.width=4", named=old.parent.parent)  # the named run folder's own comes first
    assert path == old and f"the last.ckpt of the named run folder {old.parent.parent}" in said
    with pytest.raises(CheckpointNotFoundError, match="found 2 last.ckpt of task T but none with this model architecture"):
        last("T", "model.depth=2")
    with pytest.raises(CheckpointNotFoundError, match="ckpt_path=last found no checkpoint"):
        last("V")

    eval_args = ["ckpt_path=last", f"paths.log_dir={log}", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false"]
    results = run_cases([("eval", eval_args), ("eval", [*eval_args, "ckpt_task=T"]),
                         ("eval", [*eval_args, f"hydra.run.dir={old.parent.parent}"])])
    assert_one_line_error(results[0], "ckpt_path=last is ambiguous", "tasks T, U", "ckpt_task=<task>", "hydra.run.dir=")
    for result, expected, why in ((results[1], newer_other_arch, "the newest last.ckpt of task T"),
                                  (results[2], old, "the last.ckpt of the named run folder")):
        assert f"ckpt_path=last: {expected} ({why}" in ok(result)["stdout"]
        assert f"({expected})" in result["stdout"]  # the file evaluated
    assert other_task.is_file()


# ---------------------------------------------------------------------------- resume
def test_resume_continues_the_run_with_the_users_optimizer_settings(tmp_path):
    log = tmp_path / "log"
    run = log / "outputs" / "res" / "first"
    common = [*TINY, "task_name=res", f"paths.log_dir={log}", "test=false"]
    first, resumed = run_cases([("train", [*common, "trainer.max_epochs=2", f"hydra.run.dir={run}"]),
                                ("train", [*common, "trainer.max_epochs=4", "ckpt_path=last", "optimizer.lr=0.02"])])
    ok(first)
    out = ok(resumed)["stdout"]
    last = run / "checkpoints" / "last.ckpt"
    assert f"ckpt_path=last: {last} (the newest last.ckpt of task res with this model architecture)" in out
    assert "Optimizer settings changed on resume (yours apply): lr 0.001 -> 0.02" in out
    assert metrics_folder(out) == run  # continued in its own folder
    config = (run / ".hydra" / "config.yaml").read_text()  # still the first launch's (2 epochs, no ckpt_path)
    assert "max_epochs: 2\n" in config and "ckpt_path: null" in config
    assert len(list((run / ".hydra").glob("resume_*/config.yaml"))) == 1
    record = json.loads((run / "metrics.json").read_text())
    history = record["history"]
    assert [e["epoch"] for e in history] == [0, 1, 2, 3]  # the whole run's history
    best_epoch = min(range(4), key=lambda i: history[i]["val/bpd"])
    assert record["val/bpd_best"] == pytest.approx(history[best_epoch]["val/bpd"], abs=1e-6)
    assert Path(record["best_checkpoint"]).name == f"epoch_{best_epoch:03d}.ckpt"
    state = ckpt(last)
    assert state["global_step"] == 12 and state["best_val_bpd"] == pytest.approx(record["val/bpd_best"])
    assert state["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.02)  # warm-up over: the new lr
    assert state["lr_schedulers"][0]["base_lrs"] == [pytest.approx(0.02)]
    best_cb = next(v for k, v in state["callbacks"].items() if "val/bpd" in k)
    assert float(best_cb["best_model_score"]) == pytest.approx(record["val/bpd_best"], abs=1e-6)

    before = hashes(run)
    explicit = f"ckpt_path={last}"
    results = run_cases([
        ("train", [*common, "trainer.max_epochs=5", explicit, "optimizer._target_=torch.optim.Adam"]),
        ("train", [*common, "trainer.max_epochs=5", explicit, "model.conv.fixed_diagonal=true"]),
        ("train", [*common, explicit, "resume=weights", "optimizer._target_=torch.optim.Adam", "optimizer.lr=1e-12"]),
    ])
    assert_one_line_error(results[0], "was trained with torch.optim.adamax.Adamax, this config has torch.optim.adam.Adam",
                          "add resume=weights")
    assert_one_line_error(results[1], "parameter groups", "fixed_diagonal", "add resume=weights")
    out = ok(results[2])["stdout"]
    assert f"New run from the weights of {last} (fresh optimizer and schedule, step 0)" in out
    fresh = metrics_folder(out)
    assert fresh.parent == run.parent and fresh != run
    new = ckpt(fresh / "checkpoints" / "last.ckpt")
    assert new["global_step"] == 3 and new["optimizer_type"] == "torch.optim.adam.Adam"
    for key, value in state["state_dict"].items():  # started from the checkpoint's weights (lr ~ 0; the EMA moves)
        if key.startswith("model.") and value.is_floating_point():
            torch.testing.assert_close(new["state_dict"][key], value, rtol=0, atol=1e-6, msg=key)
    after = hashes(run)  # the refused resumes left only their own launch records (.hydra/resume_*/)
    assert {k: after[k] for k in before} == before
    assert all(re.fullmatch(r"\.hydra/resume_[\d_-]+/(config|hydra|overrides)\.yaml|\.hydra/resume_[\d_-]+/train\.log", k)
               for k in set(after) - set(before)), sorted(set(after) - set(before))


def test_divergence_keeps_the_last_finite_checkpoint_and_the_advice_works(tmp_path):
    """At lr 1.0 the first update blows the model up (finite gradients, then inf/NaN everywhere)."""
    log = tmp_path / "log"
    run = log / "outputs" / "div" / "r"
    common = [*TINY, "task_name=div", f"paths.log_dir={log}", "test=false", "module.max_bad_steps=3", "trainer.max_epochs=3",
              f"hydra.run.dir={run}"]
    diverged, resumed = run_cases([  # the resumed run's best checkpoint is best.ckpt, the diverged one's would be epoch_*
        ("train", [*common, "optimizer.lr=1.0"]),
        ("train", [*common, "ckpt_path=last", "optimizer.lr=1e-3", "callbacks.model_checkpoint.filename=best"]),
    ])
    message = assert_one_line_error(diverged, "consecutive steps had a non-finite loss", code=3)
    advice = re.search(r"lower (\S+) .* resume with (\S+)", message)
    assert advice.groups() == ("optimizer.lr", "ckpt_path=last")
    assert "val/bpd = inf is not finite: no checkpoint written" in diverged["stdout"]

    out = ok(resumed)["stdout"]  # the advice followed: a lower lr, ckpt_path=last
    assert f"ckpt_path=last: {run / 'checkpoints' / 'last.ckpt'}" in out and "lr 1.0 -> 0.001" in out
    assert not list((run / "checkpoints").glob("epoch_*.ckpt"))  # an inf score was never "best"
    (best,) = (run / "checkpoints").glob("best*.ckpt")
    record = json.loads((run / "metrics.json").read_text())
    # resumed from the kept checkpoint, the run's start (step 0): the inf entry of step 3 is gone
    assert [e["step"] for e in record["history"]] == [3, 6, 9]
    assert all(math.isfinite(e["val/bpd"]) for e in record["history"]) and math.isfinite(record["val/bpd_best"])
    state = ckpt(run / "checkpoints" / "last.ckpt")
    assert state["global_step"] == 9 and state["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(1e-3)
    assert ckpt(best)["best_val_bpd"] == pytest.approx(record["val/bpd_best"], abs=1e-6)


def test_resume_does_not_restore_the_bad_step_run_as_a_stop_trigger(compose_cfg, tmp_path, monkeypatch):
    from test_faults import _inject

    run = tmp_path / "run"
    args = [*TINY, "test=false", "module.max_bad_steps=3", "trainer.max_epochs=2"]
    _inject(monkeypatch, nan_loss_steps={2, 3, 4, 5}, nan_grad_steps=set())  # 1 bad step before the first validation
    with pytest.raises(Exception, match="3 consecutive steps"):
        train(compose_cfg("train", args, run))
    saved = ckpt(run / "checkpoints" / "last.ckpt")
    assert saved["global_step"] == 3 and saved["nonfinite_steps"] == {"skipped": 1, "consecutive": 1}

    monkeypatch.undo()
    _inject(monkeypatch, nan_loss_steps={3, 4}, nan_grad_steps=set())  # 1 restored + 2 = 3 would stop again
    seen = {}

    class Probe(Callback):
        def on_train_start(self, trainer, pl_module):
            seen["consecutive"] = pl_module.consecutive_bad_steps
            seen["lr"] = trainer.optimizers[0].param_groups[0]["initial_lr"]

    result = train(compose_cfg("train", [*args, "ckpt_path=last", "optimizer.lr=5e-4"], run), extra_callbacks=[Probe()])
    assert seen == {"consecutive": 0, "lr": pytest.approx(5e-4)}
    assert result["global_step"] == 6 and result["train/skipped_steps"] == 3


# ---------------------------------------------------------------------------- signals, short runs
def test_sigterm_saves_a_resumable_checkpoint_and_exits_143(compose_cfg, tmp_path):
    sig, code = signal.SIGTERM, 143
    run = tmp_path / "log" / "outputs" / "sig" / "r"
    cmd = [sys.executable, str(ROOT / "src" / "train.py"), *TINY, "task_name=sig", f"paths.log_dir={tmp_path / 'log'}",
           "test=false", "trainer.limit_train_batches=4", "trainer.max_epochs=100000", f"hydra.run.dir={run}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    history = run / "metrics.json"
    try:
        deadline = time.time() + 120
        while not history.exists():  # the first validation is written: training is under way
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.05)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, err[-3000:]
    last = run / "checkpoints" / "last.ckpt"
    line = err.rstrip().splitlines()[-1]
    match = re.fullmatch(rf"interrupted: {sig.name} at epoch (\d+), step (\d+): saved {last}; resume with: (.*)", line)
    assert match, line
    step = int(match.group(2))
    assert ckpt(last)["global_step"] == step >= 4
    resume = shlex.split(match.group(3))
    given = [a for a in cmd[2:] if not a.startswith("hydra.run.dir=")]  # a resume finds its run's folder itself
    assert resume == ["python", "src/train.py", *given, f"ckpt_path={last}"]
    # the resume (in-process, with fewer epochs to go) continues from the interrupted step
    args = [a.replace("max_epochs=100000", f"max_epochs={int(match.group(1)) + 2}") for a in resume[2:]]
    seen = {}

    class Probe(Callback):
        def on_train_start(self, trainer, pl_module):
            seen["step"] = trainer.global_step

    result = train(compose_cfg("train", args, run), extra_callbacks=[Probe()])
    assert seen["step"] == step and result["global_step"] > step


def test_sigint_stops_at_a_batch_boundary_saves_and_exits_130(compose_cfg, tmp_path):
    """A real SIGINT (Ctrl-C) to this process in the middle of epoch 1 (in-process: the job's own error)."""
    from cincflow.errors import TrainingInterrupted

    class CtrlC(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 5:  # after the 5th optimiser step
                os.kill(os.getpid(), signal.SIGINT)

    cfg = compose_cfg("train", [*TINY, "test=false", "trainer.max_epochs=5"], tmp_path)
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN in a background job of a shell
    with pytest.raises(TrainingInterrupted) as err:
        train(cfg, extra_callbacks=[CtrlC()])
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert err.value.exit_code == 130
    assert str(err.value).startswith(f"SIGINT at epoch 1, step 5: saved {last}; resume with: python src/train.py ")
    assert str(err.value).endswith(f"trainer.max_epochs=5 ckpt_path={last}")
    assert ckpt(last)["global_step"] == 5  # stopped at the batch boundary: no half-done update
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler is back: Ctrl-C is Ctrl-C again


def test_a_resume_that_has_nothing_left_to_train_says_which_limit(compose_cfg, tmp_path, capsys):
    """A resume whose checkpoint already reaches the run's length trains no step: one line names the limit
    reached (max_steps or max_epochs, whichever came first) and a larger value to resume with."""
    run = tmp_path / "run"
    train(compose_cfg("train", [*TINY, "test=false"], run))  # 3 steps, 1 epoch
    last = run / "checkpoints" / "last.ckpt"
    for extra, limit in ((["trainer.max_steps=3", "trainer.max_epochs=-1"], "trainer.max_steps=3"),
                         (["trainer.max_epochs=1"], "trainer.max_epochs=1")):
        capsys.readouterr()
        result = train(compose_cfg("train", [*TINY, "test=false", f"ckpt_path={last}", *extra], run))
        out = capsys.readouterr().out
        assert result["global_step"] == 3, out
        line = next(ln for ln in out.splitlines() if ln.startswith("Nothing to train"))
        assert f"already reaches {limit}" in line and "resume with a larger one" in line, line
    result = train(compose_cfg("train", [*TINY, "test=false", f"ckpt_path={last}", "trainer.max_epochs=2"], run))
    assert result["global_step"] == 6 and "Nothing to train" not in capsys.readouterr().out


@pytest.mark.parametrize("extra, steps", [(["trainer.limit_train_batches=null", "trainer.max_steps=6"], 6),
                                          (["data.val_size=0"], 3)])
def test_runs_without_a_validation_leave_last_ckpt(compose_cfg, tmp_path, extra, steps):
    result = train(compose_cfg("train", [*TINY, *extra], tmp_path))
    assert result["last_checkpoint"] == str(tmp_path / "checkpoints" / "last.ckpt")
    assert ckpt(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == result["global_step"] == steps


# ---------------------------------------------------------------------------- corrupted bytes
def _corrupt(path: Path) -> str:
    """Flip one byte inside the largest tensor storage of the zip archive; returns the member's name."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    start = info.header_offset
    name_len, extra_len = int.from_bytes(data[start + 26:start + 28], "little"), int.from_bytes(data[start + 28:start + 30], "little")
    data[start + 30 + name_len + extra_len + info.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return info.filename


def test_corrupted_checkpoint_is_refused_in_eval_sample_and_resume(two_runs, tmp_path):
    _, a, _ = two_runs
    run = tmp_path / "outputs" / "runs" / "copy"
    (run / "checkpoints").mkdir(parents=True)
    bad = run / "checkpoints" / "last.ckpt"
    bad.write_bytes((a / "checkpoints" / "last.ckpt").read_bytes())
    member = _corrupt(bad)
    assert torch.load(bad, map_location="cpu", weights_only=False)["global_step"] == 3  # torch itself does not notice
    before = hashes(run)
    results = run_cases([
        ("eval", [f"ckpt_path={bad}", "trainer.accelerator=cpu", f"hydra.run.dir={tmp_path / 'e'}"]),
        ("sample", [f"ckpt_path={bad}", "device=cpu", f"hydra.run.dir={tmp_path / 's'}"]),
        ("train", [*TINY, "task_name=runs", f"ckpt_path={bad}"]),
    ])
    for result in results:
        assert_one_line_error(result, f"ckpt_path={bad} is corrupted", f"CRC check failed for {member}")
    assert hashes(run) == before
    with pytest.raises(CheckpointError, match="is corrupted"):
        FlowLitModule.load_from_checkpoint(bad)


def test_a_slurm_requeue_continues_in_its_folder(tmp_path, monkeypatch, compose_cfg):
    """Lightning's auto-requeue saved hpc_ckpt_<n>.ckpt in the run folder: the requeued job (same
    hydra.run.dir) may continue there; without it (or outside SLURM) the folder is refused."""
    from cincflow.errors import ConfigError
    from cincflow.runs import check_training_folder

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.json").write_text("{}")
    cfg = compose_cfg("train", TINY, run)
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    with pytest.raises(ConfigError, match="already holds a run"):
        check_training_folder(run, cfg, None)
    (run / "hpc_ckpt_1.ckpt").write_bytes(b"")
    check_training_folder(run, cfg, None)
    monkeypatch.delenv("SLURM_NTASKS")
    with pytest.raises(ConfigError, match="already holds a run"):
        check_training_folder(run, cfg, None)


def test_the_other_processes_of_a_ddp_run_share_rank_0s_folder(tmp_path, monkeypatch, compose_cfg):
    """torchrun/srun/Lightning's DDP launcher start every rank with rank 0's hydra.run.dir: only rank 0
    checks the folder (it may already hold what rank 0 wrote)."""
    from lightning.pytorch.utilities import rank_zero_only

    from cincflow.errors import ConfigError
    from cincflow.runs import check_training_folder

    (tmp_path / "metrics.json").write_text("{}")
    cfg = compose_cfg("train", TINY, tmp_path)
    with pytest.raises(ConfigError, match="already holds a run"):
        check_training_folder(tmp_path, cfg, None)
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    check_training_folder(tmp_path, cfg, None)
