"""What makes hydra-optuna-sweeper's OptunaSweeper resumable (:func:`continue_study`; the sweeper itself,
``hydra_plugins.cincflow_search.resumable_optuna.ResumableOptunaSweeper``, lives where Hydra finds plugins): the study lives in its storage (conf/hparams_search:
``sqlite:///<sweep dir>/optuna.db``), and the same command again with ``hydra.sweep.dir=<that folder>``
continues it.

* ``n_trials`` is the study's TOTAL: a study with 2 finished trials and ``n_trials=4`` runs 2 more (the
  plugin alone would run 4 more);
* job numbers continue the study's trial numbers (trial 2 is job 2, folder ``2_<overrides>``), so a resumed
  sweep never writes into an earlier job's folder (Hydra's own numbering restarts at 0)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

log = logging.getLogger(__name__)

DONE_STATES = ("COMPLETE", "PRUNED", "FAIL")


def existing_trials(storage: str | None, study_name: str | None) -> list[Any]:
    """The trials of the study ``study_name`` in ``storage`` (none: no storage, or no such study yet)."""
    if not storage or not study_name:
        return []
    import optuna

    try:
        return optuna.load_study(study_name=study_name, storage=storage).trials
    except KeyError:  # optuna 2.10: no study of that name in the storage
        return []


def continue_study(impl: Any) -> None:
    """Before ``impl.sweep`` (an ``OptunaSweeperImpl``): when its study already has trials, run only
    the missing ones of ``n_trials`` and number the jobs after the study's trials."""
    trials = existing_trials(impl.storage, impl.study_name)
    if not trials:
        return
    done = sum(t.state.name in DONE_STATES for t in trials)
    wanted = int(impl.n_trials)
    impl.n_trials = max(0, wanted - done)
    impl.job_idx = max(t.number for t in trials) + 1
    if hasattr(impl.sampler, "reseed_rng"):  # its seed again would draw the first trials' random values again
        impl.sampler.reseed_rng()
    message = (f"Continuing the study {impl.study_name!r}: {done} trial(s) done, n_trials={wanted}: "
               f"{impl.n_trials} more" + ("" if impl.n_trials else " (raise hydra.sweeper.n_trials to run more)"))
    log.info(message)
    print(message, flush=True)


def study_file(config: Any) -> Path | None:
    """The SQLite file of the sweep's Optuna study (``hydra.sweeper.storage: sqlite:///<file>``), else None."""
    storage = OmegaConf.select(config, "hydra.sweeper.storage")
    if not isinstance(storage, str) or not storage.startswith("sqlite:///"):
        return None
    return Path(storage.removeprefix("sqlite:///")).resolve()


def continues_study(config: Any, sweep_dir: Path) -> bool:
    """Whether this launch continues a study kept in ``sweep_dir`` (its SQLite file there holds the study)."""
    found = study_file(config)
    return (found is not None and found.is_file() and found.parent == sweep_dir.resolve()
            and bool(existing_trials(OmegaConf.select(config, "hydra.sweeper.storage"),
                                     OmegaConf.select(config, "hydra.sweeper.study_name"))))
