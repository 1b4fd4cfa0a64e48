"""Loggers from the ``logger`` config group, with W&B falling back to offline mode by itself.

W&B mode, decided once per logger instantiation:

* ``WANDB_MODE=offline|dryrun|disabled`` in the environment, or ``offline: true`` in the logger
  config, are obeyed;
* otherwise the run is online only when credentials exist (``WANDB_API_KEY``, or ``wandb login``)
  and the W&B server answers on its port; if not, it runs offline: a real local run folder below
  the run's output folder (``<output_dir>/wandb/offline-run-*``), to upload later with
  ``wandb sync <that folder>``. One line says so.
"""
from __future__ import annotations

import os
import socket
import sys
from typing import Any
from urllib.parse import urlparse

import csv

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger
from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from ..targets import build

class _AppendingWriter(ExperimentWriter):
    """Appends to an existing metrics.csv (Lightning's writer deletes it) and starts from its
    columns, so new columns extend its header."""

    def _check_log_dir_exists(self) -> None:
        pass  # keep what is already written

    def _record_new_keys(self) -> set[str]:
        if not self.metrics_keys and self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys.extend(next(csv.reader(file), []))
        return super()._record_new_keys()


class CSVLogger(_LightningCSVLogger):
    """Lightning's CSVLogger, appending to a metrics.csv that another process of the same run began:
    under ``ddp_spawn`` fit and test run in fresh processes, and Lightning's writer would rewrite the
    file with only its own columns and fail ("dict contains fields not in fieldnames")."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


WANDB_TARGETS = ("lightning.pytorch.loggers.WandbLogger", "lightning.pytorch.loggers.wandb.WandbLogger")
_announced: set[str] = set()


def _say_once(key: str, message: str) -> None:
    """Print ``message`` once per process for ``key`` (a multirun's jobs share the process)."""
    if key not in _announced:
        _announced.add(key)
        print(message, flush=True)


def _wandb_host() -> str:
    url = os.environ.get("WANDB_BASE_URL")
    if not url:
        try:
            from wandb.sdk import wandb_setup

            url = wandb_setup.singleton().settings.base_url
        except Exception:  # noqa: BLE001 - any failure: fall back to the public server
            url = "https://api.wandb.ai"
    return url


def _reachable(url: str, timeout: float = 3.0) -> bool:
    parsed = urlparse(url)
    host = parsed.hostname
    if not host:
        return False
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import wandb

        return bool(wandb.login(prompt=False, verify=False))
    except Exception:  # noqa: BLE001 - no usable credentials
        return False


def wandb_offline_reason(configured_offline: bool = False) -> str | None:
    """None when W&B can log online; otherwise why it will run offline ("disabled" when disabled)."""
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode == "disabled":
        return "disabled"
    if mode in ("offline", "dryrun"):
        return f"WANDB_MODE={mode}"
    if configured_offline:
        return "offline: true in the logger config"
    if not _has_credentials():
        return "no W&B credentials (set WANDB_API_KEY or run `wandb login` to log online)"
    host = _wandb_host()
    if not _reachable(host):
        return f"W&B server {host} not reachable"
    return None


def is_wandb_config(cfg: Any) -> bool:
    return isinstance(cfg, dict) and cfg.get("_target_") in WANDB_TARGETS


def instantiate_loggers(logger_cfg: dict | None, wandb_resume_id: str | None = None) -> list[Logger]:
    """Every logger of the ``logger`` group (a plain mapping name -> ``_target_`` config)."""
    loggers: list[Logger] = []
    for lg_cfg in (logger_cfg or {}).values():
        if not isinstance(lg_cfg, dict) or "_target_" not in lg_cfg:
            continue
        lg_cfg = dict(lg_cfg)
        if is_wandb_config(lg_cfg):
            reason = wandb_offline_reason(bool(lg_cfg.get("offline", False)))
            if reason == "disabled":
                _say_once("wandb-disabled", "W&B logging disabled (WANDB_MODE=disabled); the other loggers and metrics.json still record the run.")
                continue
            if reason is not None:  # mode explicit: wandb's settings may predate WANDB_MODE
                lg_cfg.update(offline=True, log_model=False, mode="offline")
            if wandb_resume_id and not lg_cfg.get("id"):
                lg_cfg.update(id=wandb_resume_id, resume="allow")
            os.makedirs(lg_cfg["save_dir"], exist_ok=True)
            if reason is not None:
                _say_once(
                    "wandb-offline",
                    f"W&B: logging offline ({reason}); run folder under {lg_cfg['save_dir']}/wandb/, "
                    "upload it later with `wandb sync <run folder>`."
                )
        loggers.append(build(lg_cfg))
    return loggers


def finish_wandb() -> None:
    """End the W&B run of this job (each multirun job gets its own run)."""
    wandb = sys.modules.get("wandb")  # never imported: no W&B run to end (and no import to pay for)
    try:
        if wandb is not None and wandb.run is not None:
            wandb.finish()
    except Exception:  # noqa: BLE001 - never fail a finished training because of the logger
        pass
