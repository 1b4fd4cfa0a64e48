"""cinc-flow's Optuna sweeper: hydra-optuna-sweeper's, resumable (cincflow.config.search.sweeper). Hydra takes
sweepers only from the ``hydra_plugins`` namespace; conf/hparams_search/*.yaml name it as
``hydra.sweeper._target_: hydra_plugins.cincflow_search.resumable_optuna.ResumableOptunaSweeper``."""
from __future__ import annotations

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper


class ResumableOptunaSweeper(OptunaSweeper):
    """The plugin's sweeper; a study that already has trials continues (``n_trials``: the total)."""

    def sweep(self, arguments: list[str]) -> None:
        from cincflow.config.search.sweeper import continue_study

        continue_study(self.sweeper)
        return self.sweeper.sweep(arguments)
