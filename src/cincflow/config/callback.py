"""The Hydra callback (``conf/hydra/default.yaml``: ``hydra.callbacks.check_inputs``) that checks
a run's configuration before Hydra creates the run folder or writes anything into it: a bad input
is one line ``error: ...`` on stderr and exit status 2, and no folder is made. The jobs run the
same checks again (for callers of :mod:`cincflow.jobs` that bypass Hydra's command line)."""
from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ..errors import report_errors
from .checks import check_creatable, validate

FIX = "choose another folder with hydra.run.dir=..., hydra.sweep.dir=... or paths.log_dir=..."


class CheckInputs(Callback):
    def on_run_start(self, config: DictConfig, config_name: str | None = None, **kwargs: Any) -> None:
        """A single run: the whole configuration, with the run folder Hydra is about to create."""
        if config_name in ("train", "eval", "sample"):
            report_errors(lambda cfg: validate(cfg, config_name, output_dir=cfg.hydra.run.dir), config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A sweep: its folder (each job's configuration is checked when the job starts)."""
        report_errors(lambda cfg: check_creatable(cfg.hydra.sweep.dir, "hydra.sweep.dir=", FIX), config)
