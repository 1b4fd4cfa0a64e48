"""``src/sample.py``: N samples at temperature(s) T from a checkpoint into a PNG grid, optionally
reconstructions x -> z -> x and latent interpolations of test images; ``sample.json`` records the
files and the numerical health (non-finite samples, the worst inverse's residual and forward-error
bound, the layers solved in float64)."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, seed_everything
from omegaconf import DictConfig, OmegaConf
from torchvision.utils import save_image

from ..config import validate
from ..paths import ensure_writable_dir, resolve_path
from ..viz import interpolation_grid, reconstruction_grid, sample_grid
from ..config.data import uses_data
from .common import checked, checkpoint_module, cpu_settings, datamodule_for, require_checkpoint


def first_images(datamodule: LightningDataModule, n: int, split: str = "test") -> torch.Tensor:
    """The first ``n`` uint8 images of the test (or val) loader."""
    datamodule.setup("test" if split == "test" else "fit")
    loader = datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader()
    chunks, have = [], 0
    for batch in loader:
        chunks.append(batch)
        have += batch.shape[0]
        if have >= n:
            break
    return torch.cat(chunks)[:n]


def sample(cfg: DictConfig) -> dict[str, Any]:
    """N samples at temperature(s) T from a checkpoint into a PNG grid (+ optional extras)."""
    with cpu_settings(cfg):
        return _sample(cfg)


def _sample(cfg: DictConfig) -> dict[str, Any]:
    if not checked(cfg):  # the Hydra callbacks checked every input before the folder was made
        validate(cfg, "sample")
    ckpt = require_checkpoint(cfg, "src/sample.py")
    seed = int(cfg.get("seed") or 0)
    seed_everything(seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    ensure_writable_dir(output_dir)
    module = checkpoint_module(cfg, ckpt, device=cfg.get("device", "auto"))
    model = module.eval_model
    n_rec = int(cfg.get("reconstructions") or 0)
    n_int = int(cfg.get("interpolations") or 0)
    images = None  # the data (an input too) before any file is written
    if uses_data(cfg, "sample"):
        images = first_images(datamodule_for(cfg, module), max(n_rec, 2 * n_int), cfg.get("split", "test"))
    temps = cfg.temperature
    temps = [float(t) for t in temps] if isinstance(temps, (list, tuple)) or OmegaConf.is_list(temps) else [float(temps)]
    n = int(cfg.n)
    fallback = bool(cfg.get("float64_fallback", True))
    grid, health = sample_grid(model, n, temps, seed, batch_size=cfg.get("batch_size"), nrow=cfg.get("nrow"),
                               float64_fallback=fallback, progress=True)  # warns above the accuracy tolerance
    out_png = resolve_path(cfg.get("output") or output_dir / "samples.png")
    out_png.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, out_png)
    nonfinite, total, accuracy = health["nonfinite_samples"], health["samples"], health["accuracy"]
    record: dict[str, Any] = {
        "checkpoint": str(ckpt), "samples_png": str(out_png), "n": n, "temperatures": temps,
        "nonfinite_samples": nonfinite, "nonfinite_share": nonfinite / max(total, 1),
        "inverse_residual_max": accuracy.residual, "inverse_error_bound": accuracy.bound,
        "inverse_error_bound_layer": accuracy.layer, "float64_layers": list(accuracy.float64_layers),
    }
    lines = [
        f"samples ({n} per temperature, T = {', '.join(map(str, temps))}): {out_png}",
        f"non-finite samples: {nonfinite} of {total} (shown clamped to the pixel range in the PNG); "
        f"inverses of the invertible convolutions: {accuracy}"
        + ("" if accuracy.float64_layers else " (float32 was accurate enough everywhere)" if fallback else ""),
    ]
    if nonfinite:
        logging.getLogger(__name__).warning("%d of %d samples are non-finite", nonfinite, total)

    if images is not None:
        if n_rec:
            rgrid, stats = reconstruction_grid(model, images[:n_rec], seed)
            path = out_png.with_name(out_png.stem + "_reconstructions.png")
            save_image(rgrid, path)
            record.update({"reconstructions_png": str(path), **stats})
            lines.append(f"reconstructions (max |x - x'| = {stats['recon_err_max']:.2e}): {path}")
        if n_int:
            igrid = interpolation_grid(model, images[: 2 * n_int], int(cfg.get("interpolation_steps", 8)), seed)
            path = out_png.with_name(out_png.stem + "_interpolations.png")
            save_image(igrid, path)
            record["interpolations_png"] = str(path)
            lines.append(f"interpolations: {path}")
    (output_dir / "sample.json").write_text(json.dumps(record, indent=2))
    print("\n".join(lines), flush=True)
    return record
