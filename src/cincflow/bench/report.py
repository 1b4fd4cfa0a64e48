"""The benchmark's targets (issues #4 and #10) and its markdown report."""
from __future__ import annotations

import json
from pathlib import Path

from .measure import FIRST_CALL_SLACK_S, first_call_over_budget
from .speed_report import markdown as speed_markdown

COUPLINGS = ("affine", "quad")
TARGETS = {
    "cinc_sampling_over_forward": ("<=", 1.5),
    "cinc_sampling_over_glow": ("<=", 1.3),
    "emerging_over_cinc_sampling": (">=", 1.9),
    "layer_32x32x12_best_inverse_over_forward": ("<=", 3.0),
    # the first call of every solver, in a fresh process, within 2 x its warm call + 0.5 s
    "layer_32x32x12_first_call_over_budget": ("<=", 1.0),
}
SEQUENTIAL = "sequential"
SOLVERS = ("auto", "tiled", "wavefront", "kernel")


def evaluate_targets(models: list[dict], layers: list[dict]) -> list[dict]:
    """The speed targets, from this run's measurements."""
    by = {(m["conv"], m["coupling"]): m for m in models}
    rows = []

    def add(name: str, value: float, detail: str) -> None:
        op, limit = TARGETS[name]
        met = value <= limit if op == "<=" else value >= limit
        rows.append({"target": name, "detail": detail, "value": value, "limit": f"{op} {limit}", "met": bool(met)})

    for coupling in COUPLINGS:
        cinc, glow, emerging = (by.get((conv, coupling)) for conv in ("cinc", "glow", "emerging"))
        if cinc:
            add("cinc_sampling_over_forward", cinc["sampling_over_forward"], coupling)
        if cinc and glow:
            add("cinc_sampling_over_glow", cinc["sampling_best_s"] / glow["sampling_best_s"], coupling)
        if cinc and emerging:
            add("emerging_over_cinc_sampling", emerging["sampling_best_s"] / cinc["sampling_best_s"], coupling)
    for layer in layers:
        if layer["shape"] == [12, 32, 32]:
            add("layer_32x32x12_best_inverse_over_forward", layer["inverse_over_forward"][layer["best_solver"]], layer["best_solver"])
            calls = [(f"{name} {dtype}", call) for dtype, by_name in layer["first_call"].items() for name, call in by_name.items()]
            if calls:
                worst, call = max(calls, key=lambda c: first_call_over_budget(c[1]))
                add("layer_32x32x12_first_call_over_budget", first_call_over_budget(call), f"worst: {worst}")
    return rows


def emerging_advantage_bound(models: list[dict]) -> list[dict]:
    """What the Emerging / CInC sampling target needs, per coupling, from the free-inverse passes:
    ``ceiling`` = Emerging's best sampling time / CInC's sampling time with free conv solves (the ratio
    no CInC solver can exceed); ``emerging_conv_inverse_needed_s`` = how long Emerging's conv solves
    would have to take in its sampling pass for the target ratio against the measured CInC time, next
    to how long they take (``emerging_conv_inverse_s`` = best sampling - free-inverse sampling)."""
    by = {(m["conv"], m["coupling"]): m for m in models}
    target = TARGETS["emerging_over_cinc_sampling"][1]
    rows = []
    for coupling in COUPLINGS:
        em, ci = by.get(("emerging", coupling)), by.get(("cinc", coupling))
        if not (em and ci):
            continue
        em_conv = em["sampling_best_s"] - em["sampling_free_inverse_s"]
        needed = target * ci["sampling_best_s"] - em["sampling_free_inverse_s"]
        rows.append({
            "coupling": coupling,
            "measured": em["sampling_best_s"] / ci["sampling_best_s"],
            "ceiling": em["sampling_best_s"] / ci["sampling_free_inverse_s"],
            "cinc_conv_inverse_share": 1 - ci["sampling_free_inverse_s"] / ci["sampling_best_s"],
            "emerging_conv_inverse_share": em_conv / em["sampling_best_s"],
            "emerging_conv_inverse_s": em_conv,
            "emerging_conv_inverse_needed_s": needed,
            "needed_over_measured": needed / em_conv if em_conv > 0 else None,
        })
    return rows


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def _sci(value: float | None, missing: str = "overflow") -> str:
    return missing if value is None else f"{value:.1e}"


def _models(result: dict) -> list[str]:
    lines = [
        "Models (sampling with the fastest solver; `sequential` = the published per-pixel raster scan; worst layer = "
        "the largest forward-error bound cond_inf x residual of the sampling pass, and the largest estimate "
        "cond_inf x unit round-off before it):",
        "",
        "| conv | coupling | params | forward s | sampling s (solver) | sampling / forward | vs Glow | vs Emerging "
        "| sequential sampling s | recon. error | sample residual | worst-layer bound (estimate) | peak MiB fwd / sample |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in result["models"]:
        seq, worst = m["sampling_s"].get(SEQUENTIAL), m["worst_layer"]
        lines.append(
            f"| {m['conv']} | {m['coupling']} | {m['parameters'] / 1e6:.2f} M | {m['forward_s']:.3f} | "
            f"{m['sampling_best_s']:.3f} ({m['best_solver']}) | {m['sampling_over_forward']:.2f} | "
            f"{m['sampling_over_glow']:.2f} | {m['sampling_over_emerging']:.2f} | "
            f"{'-' if seq is None else f'{seq:.3f}'} | {m['reconstruction_error']:.1e} | {_sci(m['sample_residual'])} | "
            + ("-" if worst["name"] is None else f"{_sci(worst['bound'])} ({worst['estimate']:.1e})")
            + f" | {_mib(m['peak_memory_bytes']['forward'])} / {_mib(m['peak_memory_bytes']['sampling'])} |"
        )
    names = [*SOLVERS, SEQUENTIAL]
    lines += [
        "",
        "Invertible convolutions of each model alone (all layers, on their own inputs): inverse time / forward time,",
        "and the model's sampling time with each solver (s):",
        "",
        "| conv | coupling | layers | " + " | ".join(f"{k} inv/fwd" for k in names) + " | "
        + " | ".join(f"{k} sampling" for k in names) + " |",
        "|---|---|---:|" + "---:|" * (2 * len(names)),
    ]
    for m in result["models"]:
        if m["conv"] == "glow":
            continue
        ratios = m["conv_layers"]["inverse_over_forward"]
        lines.append(
            f"| {m['conv']} | {m['coupling']} | {m['conv_layers']['count']} | "
            + " | ".join(f"{ratios[k]:.2f}" for k in names) + " | "
            + " | ".join(f"{m['sampling_s'][k]:.3f}" for k in names) + " |"
        )
    by = {(m["conv"], m["coupling"]): m["conv_layers"]["inverse_s"] for m in result["models"]}
    for coupling in COUPLINGS:
        if ("emerging", coupling) in by and ("cinc", coupling) in by:
            em, ci = by[("emerging", coupling)], by[("cinc", coupling)]
            lines.append(
                f"\n{coupling}: Emerging / CInC time of the conv layers' inverses = "
                f"{min(em[k] for k in SOLVERS[1:]) / min(ci[k] for k in SOLVERS[1:]):.2f} with the best solvers, "
                f"{em[SEQUENTIAL] / ci[SEQUENTIAL]:.2f} with the published sequential one."
            )
    return lines


def _layers(result: dict) -> list[str]:
    names = [*SOLVERS, SEQUENTIAL]
    lines = [
        "",
        "One CInC 3x3 layer, forward and inverse (`auto` = the solver it picks; `kernel` = one FFT or direct convolution "
        "with the H x W inverse kernel; `sequential` = Python loop over pixels, one batched C x C triangular solve each, "
        "the published algorithm), its cond_inf on the grid:",
        "",
        "| C x H x W | images | cond_inf | forward ms | " + " | ".join(f"{k} ms (x fwd)" for k in names)
        + " | max error | peak MiB forward / " + " / ".join(SOLVERS) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(names) + "---:|---:|",
    ]
    for layer in result["layers"]:
        c, h, w = layer["shape"]
        cells = [f"{layer['inverse_s'][k] * 1e3:.2f} ({layer['inverse_over_forward'][k]:.1f})" for k in names]
        cells[0] += f" [{layer['auto_picks']}]"
        lines.append(
            f"| {c}x{h}x{w} | {layer['images']} | {layer['condition_number']:.2f} | {layer['forward_s'] * 1e3:.2f} | "
            + " | ".join(cells) + f" | {max(layer['error'].values()):.1e} | "
            + " / ".join(_mib(layer["peak_memory_bytes"][k]) for k in ("forward", *SOLVERS)) + " |"
        )
    lines += [
        "",
        "First (cold) call of a fresh layer in a fresh process (speed probes, plans, inverse kernel, `auto`'s accuracy "
        f"check) and a warm call, ms; target: cold <= 2 warm + {FIRST_CALL_SLACK_S:g} s:",
        "",
        "| C x H x W | images | dtype | " + " | ".join(f"{k} cold / warm" for k in SOLVERS) + " |",
        "|---|---:|---|" + "---:|" * len(SOLVERS),
    ]
    for layer in result["layers"]:
        c, h, w = layer["shape"]
        for dtype, calls in layer["first_call"].items():
            cells = [f"{calls[k]['cold_s'] * 1e3:.0f} / {calls[k]['warm_s'] * 1e3:.1f}" if k in calls else "-" for k in SOLVERS]
            lines.append(f"| {c}x{h}x{w} | {layer['images']} | {dtype} | " + " | ".join(cells) + " |")
    return lines


def markdown(result: dict) -> str:
    """The result as markdown: the sampling suite's tables (models, conv layers, single layer, first
    calls, targets, the papers' numbers) and issue #22's (:mod:`.speed_report`), those that ran."""
    parts = [_sampling_markdown(result)] if "models" in result else [_meta_line(result) + "\n"]
    if "speed" in result:
        parts.append(speed_markdown(result["speed"], result["speed_targets"]))
    return "\n".join(parts)


def allocator_note(mach: dict) -> str:
    """", <what the allocator setting did>" (:mod:`cincflow.allocator`); nothing where it was not recorded."""
    return f", {mach['allocator']}" if "allocator" in mach else ""


def _meta_line(result: dict) -> str:
    meta, mach = result["meta"], result["meta"]["machine"]
    where = mach.get("gpu") or mach.get("cpu_model") or mach["processor"]
    return (f"Benchmark `{meta['size']}` ({meta['suite']}): machine {where}, {mach['cpu_count']} CPUs, {mach['torch_threads']} torch "
            f"thread(s), device {mach['device']}, torch {mach['torch']}{allocator_note(mach)}; {meta['date']}; took {meta.get('speed_seconds', meta['seconds']):.0f} s.")


def _sampling_markdown(result: dict) -> str:
    meta, cfg, mach = result["meta"], result["meta"]["config"], result["meta"]["machine"]
    where = mach.get("gpu") or mach.get("cpu_model") or mach["processor"]
    lines = [
        f"Benchmark `{meta['size']}`: {cfg['n']} images of {cfg['image_size']}x{cfg['image_size']}x3, L={cfg['levels']}, "
        f"K={cfg['depth']}, width {cfg['width']}, {meta['dtype']}, median of {cfg['reps']} interleaved rounds after a warm-up round. "
        f"Machine: {where}, {mach['cpu_count']} CPUs, {mach['torch_threads']} torch thread(s), device {mach['device']}, "
        f"torch {mach['torch']}{allocator_note(mach)}; "
        f"{meta['date']}; took {meta['seconds']:.0f} s.",
        "",
        *_models(result),
        *_layers(result),
        "", "Targets (issues #4 and #10), measured in this run:", "", "| target | case | value | limit | met |", "|---|---|---:|---:|---|",
    ]
    for t in result["targets"]:
        lines.append(f"| {t['target']} | {t['detail']} | {t['value']:.2f} | {t['limit']} | {'yes' if t['met'] else 'NO'} |")
    target = TARGETS["emerging_over_cinc_sampling"][1]
    for b in result["emerging_over_cinc_bound"]:
        factor = "" if b["needed_over_measured"] is None else f" ({b['needed_over_measured']:.1f}x their measured time)"
        lines.append(
            f"\nEmerging / CInC sampling, {b['coupling']}: {b['measured']:.2f}. The conv solves take "
            f"{100 * b['cinc_conv_inverse_share']:.0f}% of CInC's sampling pass and "
            f"{100 * b['emerging_conv_inverse_share']:.0f}% of Emerging's (sampling again with every solve "
            f"replayed from a recording, i.e. free). Even with free solves CInC could reach at most "
            f"{b['ceiling']:.2f}; for {target} Emerging's solves would have to take "
            f"{b['emerging_conv_inverse_needed_s']:.3f} s instead of {b['emerging_conv_inverse_s']:.3f} s{factor}."
        )
    lines += [
        "",
        "The papers' numbers (docs/method.md section 6), 100 images: CInC poster, sampling on one CPU core (published "
        "Cython sequential inverse): CIFAR-10 Emerging 2.45 s, CInC 1.31 s (Emerging / CInC = 1.87). FInC paper, "
        "GPU, forward FT / sampling ST: Emerging 0.49 / 17.19 s (35x), CInC 0.42 / 7.91 s (19x), FInC 0.37 / 0.41 s (1.1x).",
    ]
    return "\n".join(lines) + "\n"


def write(result: dict, out: str | Path) -> tuple[Path, Path]:
    """Write ``out`` (JSON) and the markdown next to it (same name, ``.md``)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    md = out.with_suffix(".md")
    md.write_text(markdown(result))
    return out, md
