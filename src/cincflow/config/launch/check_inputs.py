"""The Hydra callback (``conf/hydra/default.yaml``: ``hydra.callbacks.check_inputs``) that checks
a launch's configuration before Hydra creates a run folder or writes anything into it: a bad input
is one line ``error: ...`` on stderr and exit status 2, and no folder is made.

* a single run: the whole configuration (:func:`cincflow.config.validate`) and, for training, the
  data (there, readable, large enough for its held-out splits) and the model's sizes against it;
  the DataModule it built goes to the job (:mod:`cincflow.config.handoff`), the sizes taken from the
  data are written into ``model``, and ``_checked_: true`` tells the job not to check again;
* a multirun (Hydra's basic sweeper, jobs launched on this machine: the basic launcher or
  submitit's local one): every job's configuration, composed as the sweeper will compose it, the same
  way, before the first job starts (each distinct data config is read once). Jobs a launcher plugin
  runs elsewhere (e.g. on a cluster's nodes, whose files this machine may not see) check themselves
  where they start;
* an Optuna search (hparams_search=...): its search space and ``optimized_metric``
  (:mod:`cincflow.config.search.space`), then, launched on this machine, the configuration of one trial
  (every parameter at its first choice or lower bound); the trials Optuna chooses check themselves."""
from __future__ import annotations

from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.experimental.callback import Callback
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from ...errors import ConfigError, find_user_error, one_line, report_errors
from .. import handoff
from ..checks import check_creatable, validate
from ..data import DATA_KEYS, prepared_data
from ..evaluation import ood_data_configs, ood_datamodule
from ..schema import plain
from ..search.space import check_search, is_search

FIX = "choose another folder with hydra.run.dir=..., hydra.sweep.dir=... or paths.log_dir=..."
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
#: launchers whose jobs run on this machine (their files are this machine's): checked before the first job
LOCAL_LAUNCHERS = (BASIC_LAUNCHER, "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher")
SCRIPTS = ("train", "eval", "sample")


def check_launch(cfg: DictConfig, script: str, output_dir: str, data_seen: set[str] | None = None,
                 single: bool = False) -> None:
    """:func:`validate` ``cfg``; for training also the data and the model's sizes against it (on global
    rank 0; skipped for a data config already in ``data_seen``, which it joins). ``single``: the launch
    of one run, whose job gets the DataModule and the model's sizes (written into ``cfg.model``)."""
    validate(cfg, script, output_dir=output_dir)
    if script == "eval" and rank_zero_only.rank == 0 and not single:  # a single run's: with its checkpoint
        for name, config in ood_data_configs(cfg).items():
            ood_datamodule(name, config, cfg.get("batch_size"))
    if script != "train" or rank_zero_only.rank != 0 or not isinstance(cfg.get("data"), DictConfig):
        return
    trial = OmegaConf.create({"data": plain(cfg.data), "model": plain(cfg.model)})  # the job's stay as they are
    key = handoff.key_of(plain(trial))
    if data_seen is not None and key in data_seen:
        return
    datamodule = prepared_data(trial)
    if data_seen is not None:
        data_seen.add(key)
    if single:
        handoff.keep("data", plain(cfg.data), datamodule)
        with open_dict(cfg.model):
            for size in DATA_KEYS:
                cfg.model[size] = trial.model[size]


def sweep_job_configs(config: DictConfig) -> list[tuple[list[str], DictConfig]]:
    """(overrides, composed config) of every job of a basic-sweeper multirun, as the sweeper composes them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    loader = GlobalHydra.instance().config_loader()
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(params + list(config.hydra.overrides.task))
    (jobs,) = BasicSweeper.split_arguments(parsed, None)
    return [(list(job), loader.load_sweep_config(config, list(job))) for job in jobs]


class CheckInputs(Callback):
    def on_run_start(self, config: DictConfig, config_name: str | None = None, **kwargs: Any) -> None:
        """A single run: the whole configuration, with the run folder Hydra is about to create."""
        if config_name in SCRIPTS:
            report_errors(self._check_run, config, config_name)

    @staticmethod
    def _check_run(config: DictConfig, config_name: str) -> None:
        check_launch(config, config_name, output_dir=config.hydra.run.dir, single=True)
        with open_dict(config):
            config._checked_ = True  # the job skips what was checked here

    def on_multirun_start(self, config: DictConfig, config_name: str | None = None, **kwargs: Any) -> None:
        """A sweep: its folder, then every job's configuration before the first job starts."""
        report_errors(self._check_sweep, config, config_name)

    @staticmethod
    def _check_sweep(config: DictConfig, config_name: str | None) -> None:
        check_creatable(config.hydra.sweep.dir, "hydra.sweep.dir=", FIX)
        here = config.hydra.launcher.get("_target_") in LOCAL_LAUNCHERS
        if config_name == "train" and is_search(config):  # Optuna: the search space, and one trial's config
            trial = check_search(config)
            if here:
                loader = GlobalHydra.instance().config_loader()
                job_cfg = loader.load_sweep_config(config, [*config.hydra.overrides.task, *trial])
                _check_job(job_cfg, config_name, config, "the first trial of this search", trial, set())
            return
        if config_name not in SCRIPTS or config.hydra.sweeper.get("_target_") != BASIC_SWEEPER:
            return  # another sweeper chooses its jobs as it goes: each is checked when it starts
        if not here:
            return  # jobs launched elsewhere (a cluster's nodes) see their own files: each checks itself there
        jobs = sweep_job_configs(config)
        seen: set[str] = set()
        for n, (overrides, job_cfg) in enumerate(jobs):
            _check_job(job_cfg, config_name, config, f"job {n} of the {len(jobs)} of this multirun", overrides, seen)


def _check_job(job_cfg: DictConfig, script: str, config: DictConfig, which: str, overrides: list[str],
               seen: set[str]) -> None:
    """:func:`check_launch` of one job of a sweep; its problem names the job (``which``) and its overrides."""
    try:
        check_launch(job_cfg, script, output_dir=config.hydra.sweep.dir, data_seen=seen)
    except Exception as err:
        found = find_user_error(err)
        if found is None:
            raise
        raise ConfigError(f"{which} ({' '.join(overrides)}): {one_line(found)}") from err
