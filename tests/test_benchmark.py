"""The speed benchmark (issues #4, #10) runs end to end at a tiny size and writes valid JSON and
markdown; its free-inverse pass replays the real samples without solving."""
from __future__ import annotations

import json
import os
from pathlib import Path

import hydra
import pytest
import torch

from cincflow.bench import COUPLINGS, SIZES, TARGETS, build_model, compare, free_inverse, measure, normflows, throughput
from cincflow.bench.speed_report import TARGETS as SPEED_TARGETS
from cincflow.config.components import default_optimizer
from cincflow.layers.step import CONVS
from cincflow.layers import blocked, solvers
from cincflow.layers.quarter_plane import QuarterPlaneConv
from cincflow.layers.speed import exact_inverse_macs
from cli import run_cases

TIMED = ("auto", "tiled", "wavefront", "kernel")

ROOT = Path(__file__).resolve().parents[1]


def test_free_inverse_replays_the_same_samples_without_solving(monkeypatch):
    """The lower-bound pass of the benchmark computes exactly the real samples, with no solve at all."""
    cfg = SIZES["tiny"]
    for conv in ("cinc", "emerging"):
        model, _ = build_model(conv, "affine", cfg, torch.device("cpu"))
        noise = [torch.randn(cfg["n"], *shape) for shape in model.latent_shapes()]
        real = model.sample(cfg["n"], 1.0, noise)
        replay = free_inverse(model, lambda: model.sample(cfg["n"], 1.0, noise))
        with monkeypatch.context() as patch:
            for cls in (solvers.Tiled, solvers.Kernel, solvers.Auto, solvers.Sequential):
                patch.setattr(cls, "solve", lambda self, *a, **k: (_ for _ in ()).throw(AssertionError("solved")))
            for _ in range(2):  # the recording survives being replayed
                assert torch.equal(replay(), real)
        assert torch.equal(model.sample(cfg["n"], 1.0, noise), real)  # the layers solve again afterwards
        least = sum(cfg["n"] * exact_inverse_macs(m.bias.shape[0], side, side, f.kernel_size)
                    for i, level in enumerate(model.levels) for side in [model.image_size >> (i + 1)]
                    for m in level.modules() if isinstance(m, QuarterPlaneConv) for f in m.factors())
        assert least > 0 and replay.solve_macs == least  # every solve counted once, at its own shape


def test_benchmark_runs_end_to_end_and_writes_valid_json(tmp_path):
    out = tmp_path / "bench.json"
    (proc,) = run_cases([("benchmark", ["size=tiny", f"out={out}"])])  # python src/benchmark.py, tests/cli.py
    assert proc["code"] == 0, proc["stderr"][-3000:]
    result = json.loads(out.read_text())
    assert result["meta"]["size"] == "tiny" and result["meta"]["machine"]["torch_threads"] == 1
    assert {(m["conv"], m["coupling"]) for m in result["models"]} == {(c, k) for c in CONVS for k in COUPLINGS}
    for m in result["models"]:
        assert m["forward_s"] > 0 and m["reconstruction_error"] < 1e-4
        assert m["sampling_best_s"] == min(m["sampling_s"][name] for name in m["sampling_s"] if name != "sequential")
        if m["conv"] == "glow":
            assert m["sample_residual"] == 0.0 and m["worst_layer"]["name"] is None
        else:
            assert set(m["sampling_s"]) == {*TIMED, "sequential"}
            assert set(m["conv_layers"]["inverse_over_forward"]) == {*TIMED, "sequential"}
            assert 0 < m["sample_residual"] < m["worst_layer"]["bound"] < 1e-3
            assert m["worst_layer"]["name"].startswith("levels.") and 0 < m["worst_layer"]["estimate"] < 1e-5
        assert m["peak_memory_bytes"]["sampling"] > 0
    (layer,) = result["layers"]
    assert layer["auto_picks"] in TIMED[1:] and max(layer["error"].values()) < 1e-4 and layer["condition_number"] >= 1
    assert set(layer["peak_memory_bytes"]) == {"forward", *TIMED}
    for dtype in ("float32", "float64"):  # the tiny size measures auto's first call only
        (call,) = layer["first_call"][dtype].values()
        assert set(layer["first_call"][dtype]) == {"auto"} and call["cold_s"] > 0 and call["warm_s"] > 0
    layer_targets = {"layer_32x32x12_best_inverse_over_forward", "layer_32x32x12_first_call_over_budget"}
    assert {t["target"] for t in result["targets"]} == set(TARGETS) - layer_targets
    for bound in result["emerging_over_cinc_bound"]:
        em, ci = ({m["conv"]: m for m in result["models"] if m["coupling"] == bound["coupling"]}[c] for c in ("emerging", "cinc"))
        assert 0 < ci["sampling_free_inverse_s"] and bound["ceiling"] == em["sampling_best_s"] / ci["sampling_free_inverse_s"]
    assert [b["coupling"] for b in result["emerging_over_cinc_bound"]] == list(COUPLINGS)
    md = out.with_suffix(".md").read_text()
    assert md in proc["stdout"] and "| cinc | quad |" in md and "Targets" in md and "Even with free solves" in md
    assert "First (cold) call" in md and "| 12x4x4 | 4 | float64 |" in md
    speed = result["speed"]  # issue #22's suite, at the tiny size without normflows (no network in tests)
    assert speed["compare"]["normflows"] is None and [r["model"] for r in speed["compare"]["rows"]] == list(compare.CONVS)
    assert all(r["over_normflows"] is None and min(r["seconds"].values()) > 0 for r in speed["compare"]["rows"])
    cinc = next(r for r in speed["compare"]["rows"] if r["model"] == "cinc")["seconds"]
    assert "sample_free_solves" in cinc and "cinc + affine sampling with its conv solves free" in md
    assert 0 < cinc["sample_solves_floor"] and "its solves' multiply-add floor" in md
    assert any("free solves + their multiply-add floor: at least" in t["detail"] for t in result["speed_targets"]
               if t["target"] == "cinc_sampling_over_glow")
    assert {(r["conv"], r["dtype"]) for r in speed["solvers"]} == {(c, d) for c in ("cinc", "emerging") for d in ("float32", "float64")}
    for r in speed["solvers"]:
        assert max(r["error"].values()) < 1e-4 and r["best_solver"] in ("tiled", "wavefront", "kernel")
        assert set(r["auto_picks"].split("/")) <= {"tiled", "wavefront", "kernel"}
        assert r["auto_over_best"] == r["inverse_s"]["auto"] / r["inverse_s"][r["best_solver"]]  # one round: its ratio is the median
        assert 0 < r["floor_s"] < r["inverse_s"][r["best_solver"]]  # no solver beats the multiply-add floor
        assert r["ceiling_over_sequential"] == r["inverse_s"]["sequential"] / r["floor_s"]
    assert {(r["conv"], r["coupling"]) for r in speed["throughput"]} == {(c, k) for c in CONVS for k in ("affine", "additive", "quad")}
    assert {t["target"] for t in result["speed_targets"]} == {"cinc_sampling_over_glow", "inverse_over_sequential", "auto_over_best"}
    assert {t["target"] for t in result["speed_targets"]} <= set(SPEED_TARGETS)
    assert "normflows (not installed: its column is skipped)" in md and "| cinc | 12x4x4 | float64 | 4 |" in md


def test_throughput_steps_the_training_jobs_optimizer(compose_cfg, tmp_path):
    """The throughput table's train step uses the optimiser the job builds from conf/train.yaml, with
    its every setting (multi-tensor ``foreach`` included), and steps every parameter."""
    job = compose_cfg("train", [], tmp_path).optimizer
    size = {**throughput.SIZES["quickstart"], "depth": 1, "batch": 4}
    tasks = throughput.train_tasks("glow", "affine", size, torch.device("cpu"), default_optimizer())
    opt = tasks.optimizer
    assert type(opt) is hydra.utils.get_class(job._target_)
    settings = {k: v for k, v in job.items() if not k.startswith("_")}
    assert settings["foreach"] is True
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in opt.defaults.items() if k in settings} == settings
    params = [p for g in opt.param_groups for p in g["params"]]
    before = [p.detach().clone() for p in params]
    tasks.train_step()
    assert all(opt.state[p]["step"] == 1 for p in params)
    assert sum(not torch.equal(a, p) for a, p in zip(before, params)) > len(params) // 2


def test_a_first_call_is_the_median_of_fresh_processes():
    """cold_call runs the first call in ``runs`` fresh processes and reports their median, beside each."""
    call = measure.cold_call("auto", "float32", 4, 4, 4, 1, runs=3)
    assert len(call["cold_runs_s"]) == 3 and call["cold_s"] == sorted(call["cold_runs_s"])[1]
    assert 0 < call["warm_s"] < max(call["cold_runs_s"])


def test_normflows_reference_is_skipped_with_a_reason_when_it_cannot_be_installed(monkeypatch):
    """No pip, no network: the comparison says why and runs without the reference column."""
    lines = []
    monkeypatch.setattr(normflows.sys, "executable", "/nonexistent/python")
    assert normflows.install(log=lines.append) is None
    assert len(lines) == 1 and "not installed" in lines[0] and "skipped" in lines[0]


def test_each_suite_writes_its_own_file_by_default(monkeypatch):
    """suite=speed (issue #22's part) never replaces the sampling suite's results/benchmark_<size>.json."""
    import runpy

    monkeypatch.syspath_prepend(str(ROOT / "src"))
    parse = runpy.run_path(str(ROOT / "src" / "benchmark.py"), run_name="benchmark")["parse"]
    assert Path(parse(["size=cpu"])["out"]) == ROOT / "results" / "benchmark_cpu.json"
    assert Path(parse(["size=cpu", "suite=sampling"])["out"]) == ROOT / "results" / "benchmark_cpu.json"
    assert Path(parse(["size=cpu", "suite=speed"])["out"]) == ROOT / "results" / "speed_cpu.json"


@pytest.mark.slow  # one inductor compilation (C++ on 2 cores)
def test_the_compile_benchmark_compiles_into_an_empty_cache(monkeypatch):
    """A first compiled call is timed against an empty inductor cache (an earlier run's cache would make
    it a lookup), and the user's cache setting is back afterwards."""
    from cincflow.bench.speed_suite import fresh_inductor_cache

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/users/own/cache")
    with fresh_inductor_cache():
        folder = Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
        assert folder.is_dir() and not any(folder.iterdir())
        torch.compile(lambda v: (v.sin() * 3).sum(), backend="inductor")(torch.randn(8))
        assert any(folder.rglob("*"))  # the compilation went there
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/users/own/cache" and not folder.exists()


def test_profile_tables_say_how_much_of_the_time_the_convolutions_take():
    """The profiler table's header (cincflow.bench.profile) counts oneDNN's convolution kernels, forward
    and backward, and nothing else."""
    from cincflow.bench import profile

    x = torch.randn(8, 16, 32, 32, requires_grad=True)
    weight = torch.randn(16, 16, 3, 3, requires_grad=True)

    def convolutions():
        torch.nn.functional.conv2d(x, weight, padding=1).sum().backward()

    def elementwise():
        (x.detach() * 2 + 1).exp()

    def fused():
        with torch.no_grad():
            blocked.conv2d(x.detach(), weight.detach(), padding=1, relu=True)

    share = lambda text: float(text.split("convolutions (forward and backward): ")[1].split("%")[0])  # noqa: E731
    conv_text, other_text = profile.table(convolutions, calls=2), profile.table(elementwise, calls=2)
    fused_text = profile.table(fused, calls=2)
    assert "aten::convolution_backward" in conv_text and share(conv_text) > 50
    assert "mkldnn::_convolution_pointwise" in fused_text and share(fused_text) > 50  # conv + ReLU in one
    assert share(other_text) == 0
    for text in (conv_text, other_text):  # what the profiler itself costs, beside the table
        cost = text.splitlines()[1]
        assert cost.startswith("per call: ") and " ms and " in cost and "under the profiler" in cost
        assert 0 < float(cost.split("per call: ")[1].split(" ms")[0])


def test_rounds_call_every_function_once_each_in_its_own_order():
    """round_times: every round calls each function exactly once, and the order changes from round to
    round so that every function follows every other one at times (its predecessor's caches and allocator
    state would bias it); the orders come from the seed."""
    from cincflow.bench.measure import round_times

    order = []
    fns = {name: (lambda name=name: order.append(name)) for name in "abcd"}
    samples = round_times(fns, torch.device("cpu"), reps=12, warmup=0)
    assert all(len(v) == 12 for v in samples.values())
    rounds = [order[i:i + 4] for i in range(0, len(order), 4)]
    assert all(sorted(r) == list("abcd") for r in rounds) and len({tuple(r) for r in rounds}) > 1
    before = {name: {order[i - 1] for i in range(1, len(order)) if order[i] == name} for name in "abcd"}
    assert all(preceding >= set("abcd") - {name} for name, preceding in before.items()), before  # each after every other
    again = []
    round_times({name: (lambda name=name: again.append(name)) for name in "abcd"}, torch.device("cpu"), reps=12, warmup=0)
    assert again == order
