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
from typing import Any
from urllib.parse import urlparse

from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf, open_dict

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
    return isinstance(cfg, (dict, DictConfig)) and cfg.get("_target_") in WANDB_TARGETS


def instantiate_loggers(logger_cfg: DictConfig | None, wandb_resume_id: str | None = None) -> list[Logger]:
    """Instantiate every logger of the ``logger`` group (a mapping name -> config)."""
    loggers: list[Logger] = []
    if not logger_cfg:
        return loggers
    for name, lg_cfg in logger_cfg.items():
        if not isinstance(lg_cfg, DictConfig) or "_target_" not in lg_cfg:
            continue
        lg_cfg = OmegaConf.create(OmegaConf.to_container(lg_cfg, resolve=True))
        if is_wandb_config(lg_cfg):
            reason = wandb_offline_reason(bool(lg_cfg.get("offline", False)))
            if reason == "disabled":
                _say_once("wandb-disabled", "W&B logging disabled (WANDB_MODE=disabled); the other loggers and metrics.json still record the run.")
                continue
            with open_dict(lg_cfg):
                if reason is not None:
                    lg_cfg.offline = True
                    lg_cfg.log_model = False
                    lg_cfg.mode = "offline"  # explicit: wandb's settings may predate WANDB_MODE
                if wandb_resume_id and not lg_cfg.get("id"):
                    lg_cfg.id = wandb_resume_id
                    lg_cfg.resume = "allow"
            os.makedirs(lg_cfg.save_dir, exist_ok=True)
            if reason is not None:
                _say_once(
                    "wandb-offline",
                    f"W&B: logging offline ({reason}); run folder under {lg_cfg.save_dir}/wandb/, "
                    "upload it later with `wandb sync <run folder>`."
                )
        loggers.append(instantiate(lg_cfg))
    return loggers


def finish_wandb() -> None:
    """End the W&B run of this job (each multirun job gets its own run)."""
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    except Exception:  # noqa: BLE001 - never fail a finished training because of the logger
        pass
