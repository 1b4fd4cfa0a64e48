"""The trials of an Optuna search in the sweep summary (cincflow.config.launch.sweep_summary): read from
the study's storage, matched to their job folders (a trial's number is its job's number,
cincflow.config.search.sweeper), best first; failed and diverged trials (the worst value, see .objective) last."""
from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .space import is_search
from .sweeper import existing_trials


def study_of(config: DictConfig) -> tuple[list[Any], bool] | None:
    """(the study's trials, whether it maximises) of a search's sweep config, else None."""
    if not is_search(config):
        return None
    trials = existing_trials(OmegaConf.select(config, "hydra.sweeper.storage"),
                             OmegaConf.select(config, "hydra.sweeper.study_name"))
    maximise = str(OmegaConf.select(config, "hydra.sweeper.direction")).lower().endswith("maximize")
    return trials, maximise


def best_first(trials: list[Any], maximise: bool) -> list[Any]:
    def key(trial: Any) -> tuple[int, float]:
        value = trial.value if trial.state.name == "COMPLETE" and trial.value is not None else math.nan
        if not math.isfinite(value):
            return 1, float(trial.number)
        return 0, -value if maximise else value
    return sorted(trials, key=key)


def trial_cells(trial: Any) -> dict[str, str]:
    """A trial's value, state and parameters as summary cells."""
    value = "" if trial.value is None else f"{trial.value:.4f}"
    return {"trial value": value, "trial state": trial.state.name,
            "params": " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())}


def trials_markdown(trials: list[Any], maximise: bool, folders: dict[int, str], metric: str) -> str:
    """The markdown table of the trials, best first (``folders``: job number -> run folder)."""
    names = sorted({k for t in trials for k in t.params})
    head = ["trial", f"{metric} ({'max' if maximise else 'min'})", "state", *names, "run folder"]
    lines = [f"## Trials, best first ({len(trials)})", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for trial in best_first(trials, maximise):
        cells = trial_cells(trial)
        params = [f"{trial.params[n]:.4g}" if isinstance(trial.params.get(n), float) else str(trial.params.get(n, "-"))
                  for n in names]
        row = [str(trial.number), cells["trial value"] or "-", cells["trial state"], *params, folders.get(trial.number, "-")]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
