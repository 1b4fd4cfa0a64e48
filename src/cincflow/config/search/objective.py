"""What ``src/train.py`` hands back to Hydra: the value of ``optimized_metric`` (lightning-hydra-template's
convention), which a sweeper (Optuna) minimises or maximises.

A multirun job fails ALONE: a bad input or a fault in one job (or one trial of a search) is written to that
job's log, to ``<job folder>/error.txt`` and to stderr, and the job returns the worst value (``inf`` when
minimising, ``-inf`` when maximising): the sweep (and the summary) goes on. A diverged trial (a
non-finite metric) returns that worst value too, never a ``nan`` (Optuna's ``tell`` refuses ``nan`` and
hydra-optuna-sweeper 1.2.0 then stops the whole study). A single run keeps the project's one line
``error: ...`` and exit status (cincflow.errors).

A multirun job without ``tags`` gets tags derived from its own overrides (``coupling=quad``, ...)."""
from __future__ import annotations

import logging
import math
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from ...errors import TrainingInterrupted, find_user_error, one_line, report_errors

log = logging.getLogger(__name__)

#: the scalar metrics a training job logs (its metrics.json), any of which can be ``optimized_metric``
LOGGED_METRICS = (
    "val/bpd", "val/bpd_best", "test/bpd", "train/bpd", "train/bpd_epoch", "train/lr", "train/grad_norm",
    "train/images_per_sec", "train/skipped_steps", "val/recon_err_max", "val/recon_err_mean",
    "val/recon_pixels_exact", "val/nonfinite_samples", "val/inverse_residual_max", "val/inverse_error_bound",
)
ERROR_FILE = "error.txt"
TAG_MAX = 64  # W&B's limit on one tag


def _hydra():
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def maximising(hydra_cfg: Any) -> bool:
    """Whether the sweeper maximises (hydra.sweeper.direction: maximize); minimising otherwise."""
    return hydra_cfg is not None and str(OmegaConf.select(hydra_cfg, "sweeper.direction")).lower().endswith("maximize")


def objective_value(record: dict[str, Any] | None, metric: str, maximise: bool = False) -> float:
    """``record[metric]`` as a float; the worst value (inf, -inf when maximising) when the job wrote
    none (it failed, or another rank) or it is not finite (a diverged run)."""
    value = (record or {}).get(metric)
    worst = -math.inf if maximise else math.inf
    try:
        value = float(value)
    except (TypeError, ValueError):
        return worst
    return value if math.isfinite(value) else worst


def derived_tags(overrides: list[str]) -> list[str]:
    """Tags of a multirun job from its command-line overrides (``coupling=quad``; hydra.*, paths.* and tags
    left out): what the job sends to W&B and the summary shows when its config has no tags."""
    tags = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if not key.startswith(("hydra.", "paths.")) and key != "tags" and "=" in override:
            tags.append(override.lstrip("+~")[:TAG_MAX])
    return tags


def _record_failure(cfg: DictConfig, exc: BaseException) -> str:
    """The failed job's one line: in its log (with the traceback of a bug), error.txt and stderr."""
    found = find_user_error(exc)
    line = f"{getattr(found, 'prefix', 'error')}: {one_line(found)}" if found is not None else \
        f"error: {type(exc).__name__}: {one_line(exc)}"
    log.error(line + ("" if found is not None else "\n" + "".join(traceback.format_exception(exc))))
    try:
        Path(cfg.paths.output_dir, ERROR_FILE).write_text(line + "\n")
    except OSError:  # the folder itself is the problem: the log and stderr still say it
        pass
    print(line, file=sys.stderr, flush=True)
    return line


def _reraise(exc: BaseException) -> None:
    raise exc


def run_task(job: Callable[[DictConfig], dict[str, Any]], cfg: DictConfig) -> float:
    """Run the training ``job`` and return the value of ``cfg.optimized_metric``; in a multirun a
    failure is that job's alone (see the module's docstring)."""
    hydra_cfg = _hydra()
    metric = str(cfg.get("optimized_metric") or "val/bpd")
    multirun = hydra_cfg is not None and hydra_cfg.mode == RunMode.MULTIRUN
    maximise = maximising(hydra_cfg)
    if not multirun:
        return objective_value(report_errors(job, cfg), metric, maximise)
    if not cfg.get("tags"):
        with open_dict(cfg):
            cfg.tags = derived_tags(list(hydra_cfg.overrides.task))
    try:
        record = job(cfg)
    except Exception as exc:  # noqa: BLE001 - this job fails alone; the sweep goes on
        if isinstance(find_user_error(exc), TrainingInterrupted):  # Ctrl-C/SIGTERM stop the sweep as they stop a run
            report_errors(_reraise, exc)
        _record_failure(cfg, exc)
        return objective_value(None, metric, maximise)
    value = objective_value(record, metric, maximise)
    if record and not math.isfinite(float(record.get(metric, math.nan))):
        log.warning(f"{metric} is {record.get(metric)} (missing or not finite): this job returns {value}")
    return value
