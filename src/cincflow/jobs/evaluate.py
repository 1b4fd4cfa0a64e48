"""``src/eval.py``: bits/dim of a checkpoint on the test split (``split=val``: validation), written
to ``<output_dir>/metrics.json``: the mean over ``dequant_samples`` = K dequantisation draws (draw k
uses the noise of ``seed + k``) and, for K > 1, its standard error over the draws. With
``ood_data=<data>`` also the out-of-distribution check (:mod:`cincflow.ood`): ``ood.json`` and
``ood_bpd.png``."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, Trainer, seed_everything
from omegaconf import DictConfig

from ..config import validate
from ..ood import bits_per_image, histogram_png, ood_report
from ..paths import ensure_writable_dir
from ..training.lit_module import FlowLitModule
from ..timing import torch_threads
from ..config import handoff
from ..config.data import ood_data_configs, ood_datamodule
from .common import checked, checkpoint_module, datamodule_for, instantiate_trainer, plain, require_checkpoint, say


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Bits/dim of ``cfg.ckpt_path`` on ``cfg.split`` (the checkpoint's data unless ``cfg.data``)."""
    with torch_threads(cfg.get("num_threads")):
        return _evaluate(cfg)


def mean_and_se(values: list[float]) -> tuple[float, float | None]:
    """Mean and its standard error std / sqrt(K) (sample std, K - 1 in the denominator); None for K = 1."""
    k = len(values)
    mean = sum(values) / k
    if k < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (k - 1) / k)


def _evaluate(cfg: DictConfig) -> dict[str, Any]:
    if not checked(cfg):  # the Hydra callbacks checked every input before the folder was made
        validate(cfg, "eval")
    ckpt = require_checkpoint(cfg, "src/eval.py")
    split = cfg.get("split", "test")
    draws = int(cfg.get("dequant_samples") or 1)  # a positive integer (checked by the schema)
    seed = cfg.get("seed")
    output_dir = Path(cfg.paths.output_dir)
    ensure_writable_dir(output_dir)
    module = checkpoint_module(cfg, ckpt, device="cpu")
    datamodule = datamodule_for(cfg, module)
    ood_sets = {name: handoff.take(f"ood:{name}", config) or ood_datamodule(name, config, cfg.get("batch_size"))
                for name, config in ood_data_configs(cfg).items()}
    ood_dm = next(iter(ood_sets.values()), None)
    trainer = instantiate_trainer(cfg.trainer, logger=False, callbacks=[])
    run = trainer.test if split == "test" else trainer.validate
    key = f"{split}/bpd"
    values, metrics = [], {}
    for k in range(draws):
        if seed is not None:
            seed_everything(int(seed) + k, workers=True, verbose=False)  # draw k: the dequantisation noise of seed + k
        out = run(module, datamodule=datamodule, verbose=draws == 1)
        metrics = {n: float(v) for n, v in (out[0] if out else {}).items() if not n.endswith("_best")}
        values.append(metrics.get(key, float("nan")))
    mean, se = mean_and_se(values)
    record = {
        **metrics,
        key: mean,
        f"{key}_se": se,
        f"{key}_draws": values,
        "dequant_samples": draws,
        "seed": seed,
        "split": split,
        "checkpoint": str(ckpt),
        "ema": module.ema is not None,
        "data": type(datamodule).__name__,
    }
    if not trainer.is_global_zero:
        return record
    spread = f" ± {se:.1e} (standard error over {draws} dequantisation draws)" if se is not None else ""
    lines = [f"{split} bits/dim: {mean:.4f}{spread} ({ckpt})"]
    if ood_dm is not None:
        record["ood"] = _ood_check(module, datamodule, ood_dm, split, trainer, cfg, output_dir)
        lines.append(_ood_lines(record["ood"], output_dir))
    path = output_dir / "metrics.json"
    path.write_text(json.dumps(record, indent=2, sort_keys=True))
    lines.append(f"metrics: {path}")
    say("\n".join(lines))
    return record


def _ood_check(module: FlowLitModule, datamodule: LightningDataModule, ood_dm: LightningDataModule, split: str,
               trainer: Trainer, cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Bits/dim of every image of ``split`` and of the OOD data's test set (converted to the model's
    channels and size), on rank 0; writes ood.json and ood_bpd.png; returns the report."""
    model = module.eval_model.to(trainer.strategy.root_device).eval()
    seed, limit = int(cfg.get("seed") or 0), cfg.get("ood_max_images")
    datamodule.setup("test" if split == "test" else "fit")
    ood_dm.setup("test")
    loader = datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader()
    in_bpd, _ = bits_per_image(model, loader, seed, limit)
    ood_bpd, notes = bits_per_image(model, ood_dm.test_dataloader(), seed, limit)
    in_name, ood_name = f"{type(datamodule).__name__} ({split})", f"{type(ood_dm).__name__} (test)"
    report = ood_report(in_bpd, ood_bpd, in_name, ood_name, notes)
    report["png"] = str(output_dir / "ood_bpd.png")
    title = (f"model trained on {type(datamodule).__name__}, AUROC of bits/dim {report['auroc']:.3f}\n"
             f"OOD images: {', '.join(notes) or 'unchanged (same channels and size)'}")
    histogram_png({in_name: in_bpd, ood_name: ood_bpd}, Path(report["png"]), title)
    (output_dir / "ood.json").write_text(json.dumps(report, indent=2))
    return report


def _ood_lines(report: dict[str, Any], output_dir: Path) -> str:
    a, b = report["in_distribution"], report["ood"]
    return "\n".join([
        f"out-of-distribution check: {a['data']} mean {a['mean']:.4f} / median {a['median']:.4f} bits/dim "
        f"vs {b['data']} mean {b['mean']:.4f} / median {b['median']:.4f}",
        f"  OOD images converted to the model's: {'; '.join(b['conversion'])}",
        f"  AUROC of bits/dim as an OOD score: {report['auroc']:.3f} (0.5 = chance; below 0.5: the OOD data looks "
        f"more likely)",
        f"  histograms: {report['png']}, statistics: {output_dir / 'ood.json'}",
    ])
