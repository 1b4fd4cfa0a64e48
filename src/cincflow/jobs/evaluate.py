"""``src/eval.py``: bits/dim of a checkpoint on the test split (``split=val``: validation), written
to ``<output_dir>/metrics.json``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning.pytorch import seed_everything
from omegaconf import DictConfig

from ..config import validate
from ..paths import ensure_writable_dir
from ..training.loading import load_module
from .common import datamodule_for, instantiate_trainer, require_checkpoint, torch_threads


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Bits/dim of ``cfg.ckpt_path`` on ``cfg.split`` (the checkpoint's data unless ``cfg.data``)."""
    with torch_threads(cfg.get("num_threads")):
        return _evaluate(cfg)


def _evaluate(cfg: DictConfig) -> dict[str, Any]:
    validate(cfg, "eval")  # every input, before anything is loaded or written
    ckpt = require_checkpoint(cfg, "src/eval.py")
    split = cfg.get("split", "test")
    if cfg.get("seed") is not None:
        seed_everything(int(cfg.seed), workers=True)
    output_dir = Path(cfg.paths.output_dir)
    ensure_writable_dir(output_dir)
    module = load_module(ckpt, use_ema=bool(cfg.get("use_ema", True)), device="cpu")
    datamodule = datamodule_for(cfg, module)
    trainer = instantiate_trainer(cfg.trainer, logger=False, callbacks=[])
    run = trainer.test if split == "test" else trainer.validate
    out = run(module, datamodule=datamodule)
    metrics = {k: float(v) for k, v in (out[0] if out else {}).items() if not k.endswith("_best")}
    record = {
        **metrics,
        "split": split,
        "checkpoint": str(ckpt),
        "ema": module.ema is not None,
        "data": type(datamodule).__name__,
    }
    if trainer.is_global_zero:
        path = output_dir / "metrics.json"
        path.write_text(json.dumps(record, indent=2, sort_keys=True))
        key = f"{split}/bpd"
        print(f"{split} bits/dim: {record.get(key, float('nan')):.4f} ({ckpt})\nmetrics: {path}", flush=True)
    return record
