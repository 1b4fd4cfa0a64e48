"""Hyperparameter search and sweeps (#19): the objective a training job returns to a sweeper and how a
multirun job fails alone (:mod:`.objective`), the resumable Optuna sweeper (:mod:`.sweeper`), the search
space's checks before any trial (:mod:`.space`) and the trials of a study in the sweep summary
(:mod:`.trials`). How to use them: README (Hyperparameter search and cluster sweeps), docs/method.md."""
import logging

from .objective import LOGGED_METRICS, run_task

# optuna's RDB storage imports alembic, which logs "setup plugin ..." at INFO (Hydra prints INFO records)
logging.getLogger("alembic").setLevel(logging.WARNING)

__all__ = ["LOGGED_METRICS", "run_task"]
