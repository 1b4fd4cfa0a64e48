"""The speed benchmark (issue #4) runs end to end at a tiny size and writes valid JSON and markdown;
its reference algorithm (the published sequential substitution) is itself exact."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from cincflow.benchmark import CONVS, COUPLINGS, SIZES, TARGETS, build_model, free_inverse, sequential_inverse
from cincflow.layers.cinc import CInCConv
from cincflow.layers.emerging import EmergingConv
from cincflow.layers.causal import ALGORITHMS, INVERSE_MODES, causal_conv, causal_conv_inverse

ROOT = Path(__file__).resolve().parents[1]


def test_sequential_reference_is_exact():
    torch.manual_seed(0)
    for k in (2, 3):
        weight = torch.randn(3, 3, k, k, dtype=torch.float64) * 0.2
        weight[:, :, k - 1, k - 1] = torch.tril(weight[:, :, k - 1, k - 1], -1) + torch.eye(3, dtype=torch.float64)
        bias = torch.randn(3, dtype=torch.float64)
        x = torch.randn(2, 3, 5, 4, dtype=torch.float64)
        y = causal_conv(x, weight, bias)
        torch.testing.assert_close(sequential_inverse(y, weight, bias), x, rtol=0, atol=1e-12)
        torch.testing.assert_close(causal_conv_inverse(y, weight, bias, "tiled"), x, rtol=0, atol=1e-12)


def test_free_inverse_replays_the_same_samples_without_solving(monkeypatch):
    """The lower-bound pass of the benchmark computes exactly the real samples, with no solve at all."""
    cfg = SIZES["tiny"]
    for conv in ("cinc", "emerging"):
        model, _ = build_model(conv, "affine", cfg, torch.device("cpu"))
        noise = [torch.randn(cfg["n"], *shape) for shape in model.latent_shapes()]
        real = model.sample(cfg["n"], 1.0, noise)
        replay = free_inverse(model, lambda: model.sample(cfg["n"], 1.0, noise))
        with monkeypatch.context() as patch:
            for cls in (CInCConv, EmergingConv):
                patch.setattr(cls, "_solve", lambda self, y: (_ for _ in ()).throw(AssertionError("solved")))
            for _ in range(2):  # the recording survives being replayed
                assert torch.equal(replay(), real)
        assert torch.equal(model.sample(cfg["n"], 1.0, noise), real)  # the layers solve again afterwards


def test_benchmark_runs_end_to_end_and_writes_valid_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "src" / "benchmark.py"), "size=tiny", f"out={out}"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["meta"]["size"] == "tiny" and result["meta"]["machine"]["torch_threads"] == 1
    assert {(m["conv"], m["coupling"]) for m in result["models"]} == {(c, k) for c in CONVS for k in COUPLINGS}
    for m in result["models"]:
        assert m["forward_s"] > 0 and m["reconstruction_error"] < 1e-4
        assert m["sampling_best_s"] == min(m["sampling_s"][mode] for mode in m["sampling_s"] if mode != "sequential")
        if m["conv"] == "glow":
            assert m["sample_residual"] == 0.0
        else:
            assert set(m["sampling_s"]) == {*INVERSE_MODES, "sequential"}
            assert set(m["conv_layers"]["inverse_over_forward"]) == {*INVERSE_MODES, "sequential"}
            assert 0 < m["sample_residual"] < 1e-3
        assert m["peak_memory_bytes"]["sampling"] > 0
    (layer,) = result["layers"]
    assert layer["auto_picks"] in ALGORITHMS and max(layer["error"].values()) < 1e-4
    assert set(layer["peak_memory_bytes"]) == {"forward", *INVERSE_MODES}
    assert {t["target"] for t in result["targets"]} == set(TARGETS) - {"layer_32x32x12_best_inverse_over_forward"}
    for bound in result["emerging_over_cinc_bound"]:
        em, ci = ({m["conv"]: m for m in result["models"] if m["coupling"] == bound["coupling"]}[c] for c in ("emerging", "cinc"))
        assert 0 < ci["sampling_free_inverse_s"] and bound["ceiling"] == em["sampling_best_s"] / ci["sampling_free_inverse_s"]
    assert [b["coupling"] for b in result["emerging_over_cinc_bound"]] == list(COUPLINGS)
    md = out.with_suffix(".md").read_text()
    assert md in proc.stdout and "| cinc | quad |" in md and "Targets" in md and "Even with free solves" in md
