"""Issue #22's targets, evaluated on :mod:`.speed_suite`'s result, and its markdown tables."""
from __future__ import annotations

from .compare import REFERENCE, TASKS
from .measure import first_call_over_budget
from .solver_table import COLD_RUNS

TARGETS = {
    "glow_over_normflows": ("<=", 0.8),  # train step, log_prob, sampling: glow + affine / normflows' Glow
    "cinc_over_normflows": ("<=", 1.0),
    "inverse_over_sequential": (">=", 20.0),  # the layer's inverse (auto) / the published raster scan
    "layer_12x32x32_float32_best_inverse_over_forward": ("<=", 1.3),
    "auto_over_best": ("<=", 1.1),
    "auto_first_call_over_budget": ("<=", 1.0),  # cold / (2 warm + 0.5 s)
    "cinc_sampling_over_glow": ("<=", 1.05),
}


def _shape(row: dict) -> str:
    return "x".join(map(str, row["shape"]))


def evaluate(speed: dict, sampling_models: list[dict] | None = None) -> list[dict]:
    """The targets, from this run's measurements (``sampling_models``: the sampling suite's models,
    whose CInC / Glow sampling ratio also counts)."""
    rows = []

    def add(name: str, value: float, detail: str) -> None:
        op, limit = TARGETS[name]
        rows.append({"target": name, "detail": detail, "value": value, "limit": f"{op} {limit}",
                     "met": bool(value <= limit if op == "<=" else value >= limit)})

    by = {r["model"]: r for r in speed["compare"]["rows"]}
    for conv in ("glow", "cinc"):
        if by[conv]["over_normflows"] is not None:
            for task in TASKS:
                add(f"{conv}_over_normflows", by[conv]["over_normflows"][task], task)
    shape = speed["compare"]["shape"]
    cinc, glow = by["cinc"]["seconds"], by["glow"]["seconds"]["sample"]
    free = (f"; free solves: at least {cinc['sample_free_solves'] / glow:.2f}, free solves + their multiply-add floor: "
            f"at least {(cinc['sample_free_solves'] + cinc['sample_solves_floor']) / glow:.2f}") if "sample_free_solves" in cinc else ""
    add("cinc_sampling_over_glow", cinc["sample"] / glow,
        f"affine, L{shape['levels']} K{shape['depth']} width {shape['width']}, {shape['samples']} samples{free}")
    by_model = {(m["conv"], m["coupling"]): m for m in sampling_models or []}
    for (conv, coupling), m in by_model.items():
        if conv == "cinc" and ("glow", coupling) in by_model:
            add("cinc_sampling_over_glow", m["sampling_best_s"] / by_model[("glow", coupling)]["sampling_best_s"],
                f"{coupling}, the sampling suite's models")
    for r in speed["solvers"]:
        case = f"{r['conv']} {_shape(r)} {r['dtype']}"
        add("inverse_over_sequential", r["over_sequential"]["auto"], f"{case} (floor: at most x{r['ceiling_over_sequential']:.0f} here)")
        add("auto_over_best", r["auto_over_best"], f"{case}: {r['auto_picks']} vs {r['best_solver']}")
        if "auto_first_call" in r:
            add("auto_first_call_over_budget", first_call_over_budget(r["auto_first_call"]), case)
        if r["shape"] == [12, 32, 32] and r["dtype"] == "float32":
            add("layer_12x32x32_float32_best_inverse_over_forward", r["best_inverse_over_forward"], f"{r['conv']} ({r['best_solver']})")
    return rows


def _compare(c: dict) -> list[str]:
    s = c["shape"]
    ref = f"normflows {c['normflows']}" if c["normflows"] else "normflows (not installed: its column is skipped)"
    lines = [f"Against {ref}, the same Glow shape: L={s['levels']}, K={s['depth']}, width {s['width']}, "
             f"{s['image_size']}x{s['image_size']}x{s['channels']}, batch {s['batch']}, sampling {s['samples']} images; "
             "train step = forward + backward + Adam step; medians of interleaved rounds (a ratio: the median of the "
             "ratios within each round):", "",
             "| model | parameters (stored) | " + " | ".join(f"{t} ms" for t in TASKS) + " | " + " | ".join(f"{t} / normflows" for t in TASKS) + " |",
             "|---|---:|" + "---:|" * (2 * len(TASKS))]
    for r in c["rows"]:
        ratios = [f"{r['over_normflows'][t]:.2f}" if r["over_normflows"] else "-" for t in TASKS]
        name = "normflows Glow" if r["model"] == REFERENCE else f"{r['model']} + affine"
        lines.append(f"| {name} | {r['parameters']['free'] / 1e3:.0f}k ({r['parameters']['stored'] / 1e3:.0f}k) | "
                     + " | ".join(f"{r['seconds'][t] * 1e3:.1f}" for t in TASKS) + " | " + " | ".join(ratios) + " |")
    for r in c["rows"]:
        if "sample_free_solves" in r["seconds"]:
            lines += ["", f"{r['model']} + affine sampling with its conv solves free (each replayed from a recording: "
                          f"the least any solver could make it cost): {r['seconds']['sample_free_solves'] * 1e3:.1f} ms, "
                          f"{r['seconds']['sample_free_solves'] / r['seconds']['sample']:.2f} of its real sampling; "
                          f"its solves' multiply-add floor (their least multiply-adds at this core's best matrix-product "
                          f"rate): {r['seconds']['sample_solves_floor'] * 1e3:.1f} ms."]
    return lines


def _solvers(rows: list[dict]) -> list[str]:
    names = ("auto", "tiled", "wavefront", "kernel", "sequential")
    lines = ["", "One invertible conv layer, forward and every exact solver, ms (x = speed-up over the published sequential "
             "raster scan, in PyTorch); auto's choice (per factor for Emerging) beside the fastest; auto's first call in a "
             f"fresh process (the median of {COLD_RUNS} processes) against 2 warm calls + 0.5 s; floor = the least "
             "multiply-adds of any exact inverse at this core's best matrix-product rate (x = the largest speed-up over "
             "sequential any solver could reach here):", "",
             "| layer | C x H x W | dtype | images | forward | " + " | ".join(names)
             + " | floor | auto picks / best | auto / best | best inv / fwd | auto first call / budget |",
             "|---|---|---|---:|---:|" + "---:|" * (len(names) + 1) + "---|---:|---:|---:|"]
    for r in rows:
        cells = [f"{r['inverse_s'][n] * 1e3:.1f}" + (f" (x{r['over_sequential'][n]:.1f})" if n != "sequential" else "") for n in names]
        cold = f"{first_call_over_budget(r['auto_first_call']):.2f}" if "auto_first_call" in r else "-"
        lines.append(f"| {r['conv']} | {_shape(r)} | {r['dtype']} | {r['images']} | {r['forward_s'] * 1e3:.1f} | " + " | ".join(cells)
                     + f" | {r['floor_s'] * 1e3:.1f} (x{r['ceiling_over_sequential']:.0f})"
                     + f" | {r['auto_picks']} / {r['best_solver']} | {r['auto_over_best']:.2f} | {r['best_inverse_over_forward']:.2f} | {cold} |")
    return lines


def _throughput(rows: list[dict]) -> list[str]:
    batch = rows[0]["batch"] if rows else 0
    lines = ["", f"Training throughput, images/s (one train step: bits/dim of uint8 images, backward, a step of the "
             f"training job's optimiser as conf/train.yaml sets it; batch {batch}; medians of interleaved rounds):", ""]
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    lines += ["| conv | coupling | " + " | ".join(sizes) + " |", "|---|---|" + "---:|" * len(sizes)]
    by = {(r["size"], r["conv"], r["coupling"]): r for r in rows}
    for conv, coupling in dict.fromkeys((r["conv"], r["coupling"]) for r in rows):
        lines.append(f"| {conv} | {coupling} | " + " | ".join(f"{by[(s, conv, coupling)]['images_per_s']:.0f}" for s in sizes) + " |")
    return lines


def markdown(speed: dict, targets: list[dict]) -> str:
    lines = ["## Issue #22: speed against normflows, the solvers, throughput", "", *_compare(speed["compare"]),
             *_solvers(speed["solvers"]), *_throughput(speed["throughput"])]
    if speed["compile"]:
        c = speed["compile"]
        lines += ["", "torch.compile of glow + affine at normflows' shape (cincflow.compiled.compile_flow): first call "
                  "(compiles) " + ", ".join(f"{t} {s:.0f} s" for t, s in c["first_call_s"].items()) + "; warm speed-up over eager "
                  + ", ".join(f"{t} {v:.2f}x" for t, v in c["speedup"].items()) + "."]
    lines += ["", "Targets (issue #22), measured in this run:", "", "| target | case | value | limit | met |", "|---|---|---:|---:|---|"]
    lines += [f"| {t['target']} | {t['detail']} | {t['value']:.2f} | {t['limit']} | {'yes' if t['met'] else 'NO'} |" for t in targets]
    return "\n".join(lines) + "\n"
