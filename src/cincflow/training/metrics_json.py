"""``<output_dir>/metrics.json``: the latest value of every logged metric, a per-validation history and
the test metrics (the :class:`MetricsJSON` callback), written atomically (temporary file + rename)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            continue
    return out


def update_metrics_json(path: str | os.PathLike, updates: dict[str, Any], history_entry: dict | None = None) -> dict:
    """Merge ``updates`` into the JSON file at ``path`` (created if missing); append ``history_entry``."""
    path = Path(path)
    record: dict[str, Any] = {}
    if path.exists():
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError:
            record = {}
    record.update(updates)
    if history_entry is not None:
        record.setdefault("history", []).append(history_entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
    tmp.replace(path)
    return record


def truncate_history(path: str | os.PathLike, step: int) -> None:
    """Drop the ``history`` entries of ``metrics.json`` after ``step`` (a resume from that step
    continues the history from there; nothing when there is no file)."""
    path = Path(path)
    if not path.exists():
        return
    record = json.loads(path.read_text())
    kept = [e for e in record.get("history", []) if int(e.get("step", 0)) <= step]
    if len(kept) != len(record.get("history", [])):
        update_metrics_json(path, {"history": kept})


class MetricsJSON(Callback):
    """Keeps ``<output_dir>/metrics.json`` up to date (rank 0): the latest value of every logged
    metric, a per-validation-epoch ``history``, and the test metrics at the end."""

    def __init__(self, output_dir: str, filename: str = "metrics.json"):
        super().__init__()
        self.path = Path(output_dir) / filename

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        metrics = _floats(trainer.callback_metrics)
        # epoch means of training metrics are computed after validation: not current here
        current = {k: v for k, v in metrics.items() if not k.endswith("_epoch")}
        entry = {"epoch": trainer.current_epoch, "step": trainer.global_step, **current}
        update_metrics_json(self.path, {**metrics, "epoch": trainer.current_epoch, "global_step": trainer.global_step}, entry)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero:
            update_metrics_json(self.path, {**_floats(trainer.callback_metrics), "global_step": trainer.global_step})

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero:
            metrics = {k: v for k, v in _floats(trainer.callback_metrics).items() if k.startswith("test/")}
            update_metrics_json(self.path, metrics)
