"""bf16-mixed training on the CPU against float32, from the same start:

    python -m cincflow.bench.mixed_precision [steps] [out.json] [threads]

The quickstart model (cinc + quad, L = 2, K = 8, width 64) on the offline 8x8 digits: ActNorm
initialised on one batch, then two copies train ``steps`` Adam steps (lr 1e-3, batch 64, the same
batches and dequantisation noise), one in float32, one under ``torch.autocast("cpu", bfloat16)``
(what Lightning's ``precision="bf16-mixed"`` does). Recorded: the dtypes of the log-determinant, the
prior term and the loss under autocast (float32: the flow's layers run with autocast off, the
coupling networks hand back float32), the time per step, and the test bits/dim of both after
training (float32 evaluation, fixed dequantisation noise). Default out: results/mixed_precision_cpu.json
(and .md).
"""
from __future__ import annotations

import copy
import json
import os
import sys
import time
from pathlib import Path

import torch

from ..data import DigitsDataModule
from ..model import Glow
from ..pixels import bits_per_dim, preprocess
from ..timing import torch_threads


def autocast_dtypes(model: Glow, x: torch.Tensor) -> dict[str, str]:
    """dtypes of log|det|, log p(z) and the loss of one forward pass under bf16 autocast."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, logdet, log_pz = model._encode(x)
        loss = -bits_per_dim(log_pz + logdet, model.num_dims, model.n_bits).mean()
    return {"logdet": str(logdet.dtype), "log_prior": str(log_pz.dtype), "loss": str(loss.dtype)}


def train(model: Glow, batches: list[torch.Tensor], bf16: bool) -> float:
    """``len(batches)`` Adam steps; returns the mean seconds per step."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for i, batch in enumerate(batches):
        x = preprocess(batch, model.n_bits, True, torch.float32, torch.Generator().manual_seed(i))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = bits_per_dim(model.log_prob(x), model.num_dims, model.n_bits).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / len(batches)


@torch.no_grad()
def test_bpd(model: Glow, images: torch.Tensor) -> float:
    return float(model.bits_per_dim(images, generator=torch.Generator().manual_seed(0)).mean())


def run(steps: int = 100) -> dict:
    data = DigitsDataModule(batch_size=64)
    data.setup()
    batches = [b for b, _ in zip(iter(data.train_dataloader()), range(steps))]
    while len(batches) < steps:
        batches += batches[: steps - len(batches)]
    test = torch.cat(list(data.test_dataloader()))
    torch.manual_seed(0)
    start = Glow(1, 8, 2, 8, 64, "cinc", "quad", n_bits=5)
    with torch.no_grad():
        start.bits_per_dim(batches[0], generator=torch.Generator().manual_seed(0))  # ActNorm init
    result = {"model": "cinc + quad, L2 K8 width 64, digits 1x8x8", "steps": steps, "batch": 64,
              "dtypes_under_autocast": autocast_dtypes(start, preprocess(batches[0], 5, False, torch.float32)),
              "start_test_bpd": test_bpd(start, test)}
    for name, bf16 in (("float32", False), ("bf16-mixed", True)):
        model = copy.deepcopy(start)
        result[name] = {"step_s": train(model, batches, bf16), "test_bpd": test_bpd(model, test)}
    result["bf16_step_over_float32"] = result["bf16-mixed"]["step_s"] / result["float32"]["step_s"]
    return result


def markdown(r: dict) -> str:
    d = r["dtypes_under_autocast"]
    return (f"bf16-mixed vs float32 on the CPU, {r['model']}, {r['steps']} Adam steps of batch {r['batch']} from the same start "
            f"(test bits/dim {r['start_test_bpd']:.3f}): float32 {r['float32']['step_s'] * 1e3:.1f} ms/step, test bits/dim "
            f"{r['float32']['test_bpd']:.3f}; bf16-mixed {r['bf16-mixed']['step_s'] * 1e3:.1f} ms/step "
            f"({r['bf16_step_over_float32']:.2f}x), test bits/dim {r['bf16-mixed']['test_bpd']:.3f}. Under autocast: "
            f"log-determinant {d['logdet']}, prior {d['log_prior']}, loss {d['loss']}.\n")


def main(argv: list[str]) -> None:
    steps = int(argv[0]) if argv else 100
    out = Path(argv[1]) if len(argv) > 1 else Path(os.environ.get("PROJECT_ROOT", ".")) / "results" / "mixed_precision_cpu.json"
    with torch_threads(int(argv[2]) if len(argv) > 2 else 1):
        result = run(steps)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result), end="")


if __name__ == "__main__":
    main(sys.argv[1:])
