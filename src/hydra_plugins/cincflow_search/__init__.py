"""cinc-flow's Hydra plugins (found by Hydra's plugin scan): :mod:`.resumable_optuna`."""
