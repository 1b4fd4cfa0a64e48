"""Every input is checked before work starts (issue #12): bad configuration values through the real
command line (one ``error:`` line, exit status 2, no run folder created, no earlier file changed) and
against the typed schema; the Python API's checks are in tests/test_inputs_api.py.

The command-line cases run in ONE child process (tests/cli.py)."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import torch

from cli import run_cases
from test_reliability import TINY, assert_one_line_error, tiny_checkpoint  # noqa: F401 (fixture)

from cincflow.config import validate

ROOT = Path(__file__).resolve().parents[1]


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_config_in_conf_passes_the_schema(tmp_path):
    from hydra import compose, initialize_config_dir

    experiments = sorted(str(p.relative_to(ROOT / "conf" / "experiment").with_suffix(""))
                         for p in (ROOT / "conf" / "experiment").rglob("*.yaml"))
    assert len(experiments) >= 20
    groups = {g: sorted(p.stem for p in (ROOT / "conf" / g).glob("*.yaml"))
              for g in ("conv", "coupling", "data", "trainer", "debug", "logger", "callbacks")}
    rounds = max(len(choices) for choices in groups.values())  # every choice of every group, in few compositions
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        overrides = [[f"experiment={e}"] for e in experiments] + [[]]
        overrides += [[f"{g}={c[i % len(c)]}" for g, c in groups.items()] for i in range(rounds)]
        for ov in overrides:
            validate(compose("train", overrides=ov), "train", output_dir=tmp_path / "run")
        for script in ("eval", "sample"):
            validate(compose(script, overrides=["ckpt_path=x.ckpt"]), script, output_dir=tmp_path / "run")
    assert list(tmp_path.iterdir()) == []  # validation creates nothing (its write probes are removed)


@pytest.fixture(scope="module")
def composed():
    """The composed configs of the three scripts (the quickstart for train), composed once."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return {"train": compose("train", overrides=["experiment=quickstart"]),
                "eval": compose("eval", overrides=["ckpt_path=x.ckpt"]),
                "sample": compose("sample", overrides=["ckpt_path=x.ckpt"])}


SCHEMA_CASES = [  # (script, key, value, message fragment): more of each kind than the command-line test runs
    ("train", "optimizer._target_", "torch.nn.Linear", "optimizer._target_=torch.nn.Linear is not a torch.optim.Optimizer"),
    ("train", "model.frobnicate", 1, "cincflow.Glow got an unexpected keyword argument 'frobnicate'"),
    ("train", "model.conv.fixed_diagonal", 1, "fixed_diagonal must be true or false, got 1"),
    ("sample", "temperature", [], "temperature must be a finite number >= 0 or a non-empty list"),
    ("train", "optimizer.lr", float("inf"), "lr must be a positive finite number, got inf"),
    ("train", "optimizer.lr", "fast", "lr must be a positive finite number, got 'fast'"),
    ("train", "optimizer.betas", [0.9], "betas must be two numbers in [0, 1)"),
    ("train", "optimizer.betas", [-0.1, 0.9], "betas must be two numbers in [0, 1)"),
    ("train", "optimizer.eps", 0, "eps must be a positive finite number, got 0"),
    ("train", "optimizer.weight_decay", -1, "weight_decay must be a number >= 0"),
    ("train", "module.ema_decay", -0.5, "ema_decay must be a number in [0, 1)"),
    ("train", "module.ema_decay", True, "ema_decay must be a number in [0, 1)"),
    ("train", "num_threads", -2, "num_threads must be a positive integer"),
    ("train", "num_threads", 1.5, "num_threads must be a positive integer"),
    ("train", "global_batch_size", -64, "global_batch_size must be a positive integer"),
    ("train", "seed", True, "seed must be an integer"),
    ("train", "trainer.max_steps", -2, "max_steps must be an integer >= -1"),
    ("train", "trainer.precision", "bf16-true", "precision must be one of 32-true, 64-true, bf16-mixed, 16-mixed"),
    ("train", "trainer.precision", "transformer-engine", "precision must be one of"),
    ("train", "trainer.gradient_clip_val", float("nan"), "gradient_clip_val must be a number >= 0"),
    ("train", "trainer.gradient_clip_algorithm", "l1", "gradient_clip_algorithm must be norm or value"),
    ("train", "trainer.log_every_n_steps", 0, "log_every_n_steps must be a positive integer"),
    ("train", "model.learn_top", "maybe", "learn_top must be true or false"),
    ("train", "model.levels", "two", "levels must be a positive integer"),
    ("train", "model.n_bits", 9, "n_bits must be an integer from 1 to 8"),
    ("train", "model.conv.kernel_size", 1, "kernel_size must be an integer >= 2, got 1"),
    ("train", "model.conv.kernel_size", "3", "kernel_size must be an integer, got '3'"),
    ("train", "model.conv.init_std", "small", "init_std must be a number, got 'small'"),
    ("train", "samples.temperatures", [], "temperatures must be a non-empty list of finite numbers >= 0"),
    ("train", "callbacks.samples.every_n_epochs", 0, "every_n_epochs must be an integer >= 1, got 0"),
    ("train", "model.coupling.width", 8, "model.coupling.width is not an option of cincflow.layers.quad.QuadCoupling here: model.width sets it"),
    ("train", "module.scheduler_interval", "daily", "scheduler_interval must be step or epoch"),
    ("train", "samples.n", -1, "n must be an integer >= 0"),
    ("train", "scheduler.warmup_steps", -1, "warmup_steps must be an integer >= 0"),
    ("train", "scheduler._target_", "cincflow.training.schedule.cosine", "scheduler._target_=cincflow.training.schedule.cosine cannot be imported"),
    ("train", "module.actnorm_init_images", 0, "actnorm_init_images must be a positive integer"),
    ("train", "module.max_bad_steps", -1, "max_bad_steps must be an integer >= 0"),
    ("sample", "n", -1, "n must be a positive integer, got -1"),
    ("sample", "temperature", -0.7, "temperature must be a finite number >= 0"),
    ("sample", "temperature", [0.7, float("nan")], "temperature must be"),
    ("sample", "temperature", [0.7, "hot"], "temperature must be"),
    ("sample", "interpolation_steps", 1, "interpolation_steps must be an integer >= 2"),
    ("sample", "interpolations", -1, "interpolations must be an integer >= 0"),
    ("sample", "batch_size", 0, "batch_size must be a positive integer"),
    ("sample", "device", "tpu", "device=tpu is not a torch device"),
    ("sample", "device", "mps", "device=mps: only cpu and cuda devices are supported"),
    ("sample", "use_ema", "yes", "use_ema must be true or false"),
    ("eval", "split", "train", "split must be test or val"),
    ("eval", "use_ema", "maybe", "use_ema must be true or false"),
    ("eval", "batch_size", 0, "batch_size must be a positive integer"),
    ("eval", "trainer.precision", "16-true", "precision must be one of"),
]


@pytest.mark.parametrize("script,key,value,message", SCHEMA_CASES, ids=[f"{c[0]}:{c[1]}={c[2]!r}" for c in SCHEMA_CASES])
def test_schema_names_the_key_what_it_must_be_and_an_example(composed, tmp_path, script, key, value, message):
    from omegaconf import OmegaConf, open_dict

    from cincflow.errors import ConfigError

    cfg = composed[script].copy()
    with open_dict(cfg):
        OmegaConf.update(cfg, key, value, force_add=True)
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        validate(cfg, script, output_dir=tmp_path / "run")
    assert "\n" not in str(err.value) and any(fix in str(err.value) for fix in ("set e.g. ", "use ", "change ", "remove "))
    assert not (tmp_path / "run").exists()


def test_output_paths(composed, tmp_path):
    from omegaconf import open_dict

    from cincflow.errors import ConfigError

    cfg = composed["sample"].copy()
    with open_dict(cfg):
        cfg.output = str(tmp_path)
    with pytest.raises(ConfigError, match="is a folder, not a file: choose another file with output="):
        validate(cfg, "sample", output_dir=tmp_path / "run")
    with open_dict(cfg):
        cfg.output = str(tmp_path / "new" / "deeper" / "s.png")
    validate(cfg, "sample", output_dir=tmp_path / "run")  # folders that can be made are fine
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"output folder .*file/run is not writable \(it cannot be created: .*file is a file"):
        validate(cfg, "sample", output_dir=tmp_path / "file" / "run")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        validate(cfg, "sample", output_dir=tmp_path / "file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def _checkpoint_variants(d: Path, ckpt_path: Path) -> None:
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    no_data = {**ckpt, "hyper_parameters": {k: v for k, v in ckpt["hyper_parameters"].items() if k != "data"}}
    torch.save(no_data, d / "no_data.ckpt")
    torch.save({**ckpt, "hyper_parameters": {**ckpt["hyper_parameters"], "frobnicate": 3}}, d / "unknown_hparams.ckpt")
    torch.save(ckpt["state_dict"], d / "weights_only.pt")


@pytest.mark.parametrize("subset", [pytest.param("all", marks=pytest.mark.slow), "some"])
def test_bad_inputs_through_the_command_line(subset, tmp_path, tiny_checkpoint):  # noqa: F811
    """Every case (``all``, in `make test-slow`), or a quarter of the train cases and half of the sample
    cases with every other one (``some``), through the real command line: one line each, no file written."""
    d = tmp_path
    (d / "a_file").write_text("not a folder\n")
    _checkpoint_variants(d, tiny_checkpoint)
    earlier = d / "earlier_run"  # an earlier run's files: none may change
    (earlier / "checkpoints").mkdir(parents=True)
    (earlier / "checkpoints" / "last.ckpt").write_bytes(tiny_checkpoint.read_bytes())
    (earlier / "metrics.json").write_text('{"test/bpd": 3.3}\n')
    before = tree_hashes(d)
    ckpt_before = tiny_checkpoint.read_bytes()
    no_gpu_device = "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"
    ck = f"ckpt_path={tiny_checkpoint}"

    train = [
        (["trainer.max_epochs=abc"], ("max_epochs must be an integer", "'abc'", "trainer.max_epochs=100")),
        (["model.conv.kernel_size=0"], ("invalid model configuration", "kernel_size must be an integer >= 2, got 0")),
        (["optimizer._target_=torch.optim.Adamx"], ("optimizer._target_=torch.optim.Adamx cannot be imported",
                                                     "torch.optim.Adamax")),
        (["optimizer._target_=torch.optim.SGD"], ("torch.optim.SGD got an unexpected keyword argument 'betas'",
                                                   "~optimizer.betas")),
        (["optimizer.lr=-0.1"], ("lr must be a positive finite number, got -0.1", "optimizer.lr=0.001")),
        (["optimizer.betas=[0.9,1.0]"], ("betas must be two numbers in [0, 1)", "optimizer.betas=[0.9,0.999]")),
        (["module.ema_decay=1.0"], ("invalid module configuration", "ema_decay must be a number in [0, 1)", "got 1.0", "module.ema_decay=")),
        (["seed=abc"], ("seed must be an integer", "'abc'", "seed=0")),
        (["num_threads=0"], ("num_threads must be a positive integer", "got 0")),
        (["global_batch_size=0"], ("global_batch_size must be a positive integer",)),
        (["trainer.gradient_clip_val=-1"], ("gradient_clip_val must be a number >= 0", "got -1")),
        (["model.conv.fixed_diagonal=maybe"], ("fixed_diagonal must be true or false", "'maybe'")),
        (["conv=glow", "+model.conv.init_std=0.1"], ("invalid model configuration",
                                                     "unexpected keyword argument 'init_std'", "~model.conv.init_std")),
        (["trainer.precision=16-true"], ("precision must be one of 32-true, 64-true, bf16-mixed, 16-mixed", "16-true")),
        ([f"hydra.run.dir={d / 'a_file' / 'run'}"], ("the output folder", "is not writable", "a_file is a file",
                                                    "hydra.run.dir=")),
        (["data=imagenet32_oord", f"data.cache_dir={d / 'a_file' / 'cache'}"],
         ("data.cache_dir=", "cannot be created", "a_file is a file")),
        (["data=cifar10", f"paths.data_dir={d / 'a_file' / 'data'}"], ("data.data_dir=", "cannot be created")),
    ]
    # options of the sample-grid callback and the DataModule, typed like the rest
    train += [
        (["callbacks.samples.temperatures=[]"], ("invalid callbacks configuration", "temperatures must be a non-empty list")),
        (["callbacks.samples.every_n_epochs=0"], ("every_n_epochs must be an integer >= 1", "got 0")),
        (["data.split_seed=abc"], ("invalid data configuration", "split_seed must be an integer", "'abc'")),
    ]
    # settings removed with ~ that the job needs (or that another setting refers to)
    train += [
        (["~module.ema_decay"], ("the configuration has no module.ema_decay, which this job needs", "~module.ema_decay")),
        (["~optimizer"], ("the configuration has no optimizer settings", "leave them in (defaults: conf/train.yaml")),
        (["~samples"], ("callbacks.samples.n refers to samples.n, which the configuration lacks",)),
    ]
    # the data and the model's sizes against it, read before Hydra makes the folder
    train += [
        (["data.val_size=1700"], ("invalid data configuration", "1700 + 180", "1797 images", "data.val_size")),
        (["model.levels=4"], ("invalid model configuration", "image_size 8 is not divisible by 2^levels = 16")),
        (["model.image_size=16"], ("model.image_size=16", "image_size=8", "model.image_size=null")),
        (["model.in_channels=3"], ("model.in_channels=3", "in_channels=1")),
    ]
    sample = [
        (["n=0"], ("n must be a positive integer, got 0",)),
        (["temperature="], ("temperature must be a finite number >= 0 or a non-empty list", "an empty value")),
        (["temperature=-1"], ("temperature must be a finite number >= 0", "got -1")),
        (["temperature=inf"], ("got inf",)),
        (["temperature=warm"], ("'warm'",)),
        (["interpolation_steps=0"], ("interpolation_steps must be an integer >= 2",)),
        (["reconstructions=-1"], ("reconstructions must be an integer >= 0",)),
        (["nrow=0"], ("nrow must be a positive integer",)),
        (["split=train"], ("split must be test or val", "'train'")),
        ([f"device={no_gpu_device}"], (f"device={no_gpu_device}", "CUDA GPU(s) on this machine", "device=cpu")),
        ([f"output={d / 'a_file' / 'samples.png'}"], ("output=", "cannot be created", "a_file is a file")),
        (["~temperature"], ("the configuration has no temperature", "temperature=0.7")),
    ]
    evaluate = [
        ([f"ckpt_path={d / 'no_data.ckpt'}"], ("the checkpoint has no data config", "data=<name>")),
        ([f"ckpt_path={d / 'unknown_hparams.ckpt'}"], ("unknown_hparams.ckpt has hyper-parameters this version does "
                                                       "not take", "frobnicate")),
        ([f"ckpt_path={d / 'weights_only.pt'}"], ("weights_only.pt holds only weights", "load_state_dict")),
        ([ck, "split=train"], ("split must be test or val",)),
        ([ck, "data=photos"], ("data in_channels=3 (PhotosDataModule) does not match the checkpoint's model",
                               "in_channels=1", "leave data unset")),
    ]
    sample_ckpts = [
        ([f"ckpt_path={d / 'weights_only.pt'}"], ("holds only weights",)),
        ([f"ckpt_path={d / 'unknown_hparams.ckpt'}"], ("hyper-parameters this version does not take",)),
        ([f"ckpt_path={d / 'no_data.ckpt'}", "reconstructions=2"], ("the checkpoint has no data config",)),
    ]

    runs = d / "runs"
    cases, expected = [], []
    if subset == "some":
        train, sample = train[::4], sample[::2]
    for script, group, prefix in (("train", train, TINY), ("sample", sample, [ck]), ("eval", evaluate, []),
                                  ("sample", sample_ckpts, [])):
        for args, fragments in group:
            run_dir = [] if any(a.startswith("hydra.run.dir=") for a in args) else [f"hydra.run.dir={runs / str(len(cases))}"]
            cases.append((script, [*prefix, *args, *run_dir]))
            expected.append(fragments)
    sweep = ("train", ["-m", *TINY, f"hydra.sweep.dir={d / 'a_file' / 'sweep'}", "model.depth=1,2"])
    cases.append(sweep)
    expected.append(("hydra.sweep.dir=", "cannot be created", "a_file is a file"))
    # a multirun checks every job before the first starts: no sweep folder, no job run
    for swept, fragments in ((["model.depth=1,0"], ("job 1 of the 2 of this multirun", "model.depth=0",
                                                    "depth must be a positive integer")),
                             (["data.val_size=100,1700", "model.width=8,16"],
                              ("job 2 of the 4 of this multirun", "data.val_size=1700 model.width=8",
                               "1700 + 180", "1797 images"))):
        cases.append(("train", ["-m", *TINY, *swept, f"hydra.sweep.dir={d / 'sweeps' / str(len(cases))}"]))
        expected.append(fragments)
    cases.append(("reproduce", ["--scale", "smoke", "--only", "cifar10_cinc_triple"]))
    expected.append(("cifar10_cinc_triple",))
    results = run_cases(cases)
    assert len(results) == len(cases)
    for case, fragments, result in zip(cases, expected, results):
        try:
            assert_one_line_error(result, *fragments)
        except AssertionError as err:
            raise AssertionError(f"{case}: {err}") from None
        assert "parameters" not in result["stdout"], (case, result["stdout"][-500:])  # no model was built
    assert not runs.exists() and not (d / "sweeps").exists()  # every case was refused before Hydra made a folder
    assert tree_hashes(d) == before
    assert tiny_checkpoint.read_bytes() == ckpt_before




def test_a_folder_no_one_may_create_is_refused_before_work(tmp_path):
    """/proc takes no new folders, not even from root (for whom every permission check passes): the
    check asks the OS by trying, so every script refuses such a folder in one line, exit 2."""
    locked = Path("/proc/cincflow-test")
    cases = [("train", [*TINY, f"hydra.run.dir={locked / 'run'}"], "the output folder"),
             ("train", [*TINY, f"paths.log_dir={locked}"], "the output folder"),
             ("train", [*TINY, "data=imagenet32_oord", f"data.cache_dir={locked / 'cache'}"], "data.cache_dir="),
             ("train", ["-m", *TINY, f"hydra.sweep.dir={locked / 'sweep'}", "model.depth=1,2"], "hydra.sweep.dir=")]
    results = run_cases([(script, args) for script, args, _ in cases])
    for (_, args, key), result in zip(cases, results):
        assert_one_line_error(result, key, "is not writable", "cannot be created in /proc")
    assert not locked.exists()


def test_multirun_jobs_are_checked_up_front_only_when_they_run_on_this_machine(tmp_path):
    """The sweep's jobs as the basic sweeper composes them: a bad one is refused before any starts; with a
    launcher plugin that runs the jobs elsewhere (a cluster, whose files this machine may not see) each job
    checks itself where it starts."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from cincflow.config.launch import CheckInputs
    from cincflow.errors import ConfigError

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=quickstart"], return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.sweep.dir = str(tmp_path / "sweep")
            cfg.hydra.overrides.task = ["experiment=quickstart", "model.depth=2,1,0"]
        with pytest.raises(ConfigError, match=r"job 2 of the 3 of this multirun \(experiment=quickstart model.depth=0\)"):
            CheckInputs._check_sweep(cfg, "train")
        with open_dict(cfg):
            cfg.hydra.overrides.task = ["experiment=quickstart", "model.depth=2,1"]
        CheckInputs._check_sweep(cfg, "train")  # good jobs pass
        with open_dict(cfg):
            cfg.hydra.overrides.task = ["experiment=quickstart", "model.depth=2,1,0"]
            cfg.hydra.launcher._target_ = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
        CheckInputs._check_sweep(cfg, "train")
    assert not (tmp_path / "sweep").exists()


def test_a_key_a_job_reads_but_the_configuration_lacks_is_one_line(capsys):
    """The safety net behind the schema: OmegaConf's "not in struct" / dangling interpolation inside a job
    becomes one ``error:`` line naming the key (exit 2), not a traceback."""
    from omegaconf import OmegaConf

    from cincflow.errors import report_errors

    cfg = OmegaConf.create({"a": 1, "b": "${c.d}"})
    OmegaConf.set_struct(cfg, True)
    for job, fragment in ((lambda c: c.trainer_options, "the configuration has no trainer_options, which this job needs"),
                          (lambda c: c.b, "b refers to c.d, which the configuration lacks")):
        with pytest.raises(SystemExit) as exit_:
            report_errors(job, cfg)
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and fragment in err[-1] and "Traceback" not in "\n".join(err), err
