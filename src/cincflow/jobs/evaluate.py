"""``src/eval.py``: bits/dim of a checkpoint on the test split (``split=val``: validation), written
to ``<output_dir>/metrics.json``: the mean over ``dequant_samples`` = K dequantisation draws (draw k
uses the noise of ``seed + k``) and, for K > 1, its standard error over the draws; and the K-sample
importance-weighted bound (:mod:`cincflow.likelihood`, ``<split>/bpd_iw``) with its standard error over
the images. With
``ood_data=<data or [list]>`` also the out-of-distribution evaluation (:mod:`cincflow.ood`): every score and
metric of every set in ``ood_table.{md,csv,json}`` and ``ood_scores.png``."""
from __future__ import annotations

import json
import math
from itertools import islice
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, Trainer, seed_everything
from omegaconf import DictConfig

from ..config import handoff, validate
from ..config.evaluation import ood_data_configs, ood_datamodule
from ..config.schema import plain
from ..likelihood import importance_weighted_bpd
from ..ood import ood_evaluation
from ..paths import ensure_writable_dir
from ..training.checkpoints import resolve_ckpt_path
from ..training.lit_module import FlowLitModule
from ..training.loading import load_module
from .common import checked, checkpoint_module, cpu_settings, datamodule_for, instantiate_trainer, require_checkpoint, say


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Bits/dim of ``cfg.ckpt_path`` on ``cfg.split`` (the checkpoint's data unless ``cfg.data``)."""
    with cpu_settings(cfg):
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
    device = trainer.strategy.root_device
    batches = (trainer.num_test_batches if split == "test" else trainer.num_val_batches)[0]  # the same as above
    bound = importance_weighted_bpd(module.eval_model.to(device).eval(), module.dequant.to(device),
                                    islice(_loader(datamodule, split), int(batches) if math.isfinite(batches) else None), draws, int(seed or 0), progress=True)
    bound_se = float(bound.std() / math.sqrt(len(bound))) if len(bound) > 1 else None
    record.update({f"{key}_iw": float(bound.mean()), f"{key}_iw_se": bound_se, f"{key}_iw_images": len(bound)})
    lines.append(f"{split} bits/dim, {draws}-sample importance-weighted bound: {float(bound.mean()):.4f}"
                 + (f" ± {bound_se:.1e} (standard error over {len(bound)} images)" if bound_se is not None else ""))
    if ood_sets:
        record["ood"] = _ood_check(module, datamodule, ood_sets, split, trainer, cfg, output_dir)
        lines.append(_ood_lines(record["ood"]))
    path = output_dir / "metrics.json"
    path.write_text(json.dumps(record, indent=2, sort_keys=True))
    lines.append(f"metrics: {path}")
    say("\n".join(lines))
    return record


def _ood_check(module: FlowLitModule, datamodule: LightningDataModule, ood_sets: dict[str, LightningDataModule],
               split: str, trainer: Trainer, cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Every OOD score of every image of ``split`` and of each OOD set's test split (converted to the
    model's channels and size), on rank 0 (:func:`cincflow.ood.ood_evaluation`): the table and picture
    in ``output_dir``; returns its record."""
    device = trainer.strategy.root_device
    model = module.eval_model.to(device).eval()
    loader = _loader(datamodule, split)
    in_name = f"{type(datamodule).__name__} ({split})"
    ood = {f"{name} ({type(dm).__name__}, test)": dm.test_dataloader() for name, dm in ood_sets.items()}
    scores = plain(cfg.get("ood_scores"))
    reference = _reference_model(cfg, device)
    train = None
    if scores is None or "typicality" in ([scores] if isinstance(scores, str) else scores):
        limit = cfg.get("ood_train_images")
        images = datamodule.train_images(int(limit) if limit else len(datamodule.train_set))
        train = list(images.split(datamodule.batch_size))
    return ood_evaluation(
        model, loader, ood, output_dir, train_data=train, in_name=in_name, scores=scores,
        seed=int(cfg.get("seed") or 0), typicality_batch=int(cfg.get("ood_typicality_batch") or 10),
        typicality_bootstrap=int(cfg.get("ood_typicality_bootstrap") or 1000),
        typicality_quantile=float(cfg.get("ood_typicality_quantile") or 0.99), reference_model=reference,
        max_images=cfg.get("ood_max_images"))


def _loader(datamodule: LightningDataModule, split: str) -> Any:
    return datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader()


def _reference_model(cfg: DictConfig, device: Any) -> Any:
    """The flow of ``ood_reference_ckpt`` (the one the launch's checks read), or None."""
    if not cfg.get("ood_reference_ckpt"):
        return None
    path = resolve_ckpt_path(cfg.ood_reference_ckpt)
    read = handoff.take("reference", str(path))
    return load_module(path, device=str(device), ckpt=read).eval_model.eval()


def _ood_lines(record: dict[str, Any]) -> str:
    """The OOD table's AUROCs, one line per score, and where the files are."""
    rows = [r for r in record["rows"] if r["role"] == "ood"]
    lines = [f"out-of-distribution scores against {record['in_distribution']} (higher = more OOD; AUROC 0.5 = chance,"
             f" below 0.5: the OOD set looks more in-distribution than the test set):"]
    for score in dict.fromkeys(r["score"] for r in rows):
        cells = ", ".join(f"{r['data']} {r['auroc']:.3f}" for r in rows if r["score"] == score)
        lines.append(f"  {score}: AUROC {cells}")
    files = record["files"]
    lines.append(f"  table: {files['md']} (also .csv, .json); picture: {files['png']}")
    return "\n".join(lines)
