"""Result tables and plots of a reproduction run.

Input: one record per run (configuration x seed), a dict with keys dataset, conv, coupling,
experiment, seed, test_bpd, sample_seconds (100 images), forward_seconds (100 images), val_curve
([[step, val/bpd], ...]), run_dir, checkpoint, global_step. Per configuration the tables show the
mean over its runs and, with two or more runs, the sample standard deviation: ``mean ± sd``.

Output in ``out_dir``: ``tables.md`` (the paper's three tables, paper and this repository side by
side with the difference of the mean; at smoke scale this repository's numbers only, never mixed with
the paper's, then every run), ``results.json`` (records + provenance), ``val_bpd.png``,
``sampling_time.png``. ``published=True`` writes the copy kept in the repository: the same without run
folders, checkpoints and the sweep folder (local paths that a clone does not have).
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from . import paper  # noqa: E402

VALUES = ("test_bpd", "sample_seconds", "forward_seconds")
LOCAL_PATHS = ("run_dir", "checkpoint")  # record keys left out of the published copy
LOCAL_META = ("sweep_dir",)


def summary(values) -> tuple[float | None, float | None, int]:
    """(mean, sample standard deviation or None with fewer than 2 values, count) of the finite values."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None, None, 0
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None), len(vals)


def aggregate(records: list[dict]) -> dict[tuple[str, str, str], dict]:
    """Per configuration (dataset, conv, coupling), in record order: experiment, runs, seeds and the
    :func:`summary` of every value in ``VALUES``."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["dataset"], r["conv"], r["coupling"]), []).append(r)
    return {
        key: {"experiment": rs[0]["experiment"], "runs": len(rs), "seeds": [r.get("seed") for r in rs],
              **{v: summary(r.get(v) for r in rs) for v in VALUES}}
        for key, rs in groups.items()
    }


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _fmt_stat(stat: tuple[float | None, float | None, int], digits: int) -> str:
    mean, sd, _n = stat
    return _fmt(mean, digits) + ("" if sd is None else f" ± {sd:.{digits}f}")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _rows(groups: dict, published: dict, key_label, value: str, digits: int, with_paper: bool) -> list[list[str]]:
    rows = []
    for key, pub in published.items():
        group = groups.get(key)
        stat = group[value] if group else (None, None, 0)
        row = [*key_label(key), group["experiment"] if group else "not run"]
        if with_paper:
            diff = None if stat[0] is None else stat[0] - pub
            row += [_fmt(pub, 4), _fmt_stat(stat, digits), ("+" if diff and diff > 0 else "") + _fmt(diff, digits)]
        else:
            row += [_fmt_stat(stat, digits)]
        rows.append(row)
    return rows


def tables_markdown(records: list[dict], scale: str, meta: dict, published: bool = False) -> str:
    groups = aggregate(records)
    with_paper = scale == "full"
    repeated = any(g["runs"] > 1 for g in groups.values())
    spread = "mean ± sd" if repeated else ""
    if with_paper:
        ours = f"this repo ({spread})" if spread else "this repo"
    else:
        ours = f"this repo ({scale} scale{', ' + spread if spread else ''})"
    cols = ["paper", ours, "difference"] if with_paper else [ours]
    parts = [f"# Reproduction results — {scale} scale"]
    if not with_paper:
        parts.append(
            f"**{scale.upper()} SCALE**: reduced depth and width, short training, on `{meta.get('data', '?')}`. "
            "These numbers test the pipeline end to end; they are not comparable with the paper's and are "
            "therefore shown without them (see docs/method.md section 6 for the published tables)."
        )
    if repeated:
        parts.append(
            f"Each configuration ran with seeds {meta.get('seeds', '?')}: every number is the mean over its runs "
            "± their sample standard deviation; the last table lists every run."
        )
    parts.append(
        f"Hardware: {meta.get('hardware', '?')}. Commit: `{meta.get('commit', '?')}`. "
        f"Dataset variants: {meta.get('datasets', '?')}."
        + (f" ImageNet rows (trained until stopped in the paper): {meta['imagenet_epochs']} epochs."
           if "imagenet_epochs" in meta else "")
    )
    parts.append("## Table 1 — bits/dim\n")
    parts.append(_table(
        ["dataset", "model", "experiment", *cols],
        _rows(groups, paper.BPD, lambda k: [paper.DATASETS[k[0]], paper.BPD_COLUMN[k[1:]]], "test_bpd", 4, with_paper),
    ))
    parts.append("## Table 2 — quad-coupling ablation, CIFAR-10 bits/dim\n")
    parts.append(_table(
        ["conv", "coupling", "experiment", *cols],
        _rows(groups, paper.ABLATION, lambda k: [k[1], k[2]], "test_bpd", 4, with_paper),
    ))
    parts.append(
        "## Table 3 — seconds to sample 100 images\n\nPaper: one CPU core. This repository: "
        f"{meta.get('sampling_hardware', meta.get('hardware', '?'))}, the benchmark's method (warm-up, median).\n"
    )
    parts.append(_table(
        ["dataset", "conv", "experiment", *cols],
        _rows(groups, paper.SAMPLING_SECONDS, lambda k: [paper.DATASETS[k[0]], k[1]], "sample_seconds", 3, with_paper),
    ))
    parts.append("## Every run\n")
    header = ["experiment", "seed", "test bits/dim", "sample 100 (s)", "forward 100 (s)", "steps"]
    rows = [
        [r["experiment"], str(r.get("seed", "—")), _fmt(r.get("test_bpd"), 4), _fmt(r.get("sample_seconds")),
         _fmt(r.get("forward_seconds")), str(r.get("global_step", "—"))]
        + ([] if published else [f"`{r.get('run_dir', '')}`"])
        for r in records
    ]
    parts.append(_table(header + ([] if published else ["run folder"]), rows))
    if published:
        parts.append("Run folders and checkpoints stay on the machine that made the runs; they are not part of this copy.")
    return "\n\n".join(parts) + "\n"


def plot_val_curves(records: list[dict], path: Path, scale: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in records:
        curve = r.get("val_curve") or []
        if curve:
            steps, bpd = zip(*curve)
            label = r["experiment"] + ("" if r.get("seed") is None else f" (seed {r['seed']})")
            ax.plot(steps, bpd, marker="o", ms=3, label=label)
    ax.set_xlabel("training step")
    ax.set_ylabel("validation bits/dim")
    ax.set_title(f"validation bits/dim ({scale} scale)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_sampling_times(records: list[dict], path: Path, scale: str) -> None:
    groups = list(aggregate(records).values())
    names = [g["experiment"] for g in groups]
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(names) + 1.5))
    y = range(len(names))
    for offset, value, label in ((0.2, "forward_seconds", "forward"), (-0.2, "sample_seconds", "sampling")):
        means = [g[value][0] or 0 for g in groups]
        sds = [g[value][1] or 0 for g in groups]
        ax.barh([i + offset for i in y], means, xerr=sds, height=0.4, label=label)
    ax.set_yticks(list(y), names, fontsize=7)
    ax.set_xlabel("seconds for 100 images" + (" (mean ± sd over seeds)" if any(g["runs"] > 1 for g in groups) else ""))
    ax.set_title(f"forward and sampling time ({scale} scale)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(records: list[dict], out_dir: str | Path, scale: str, meta: dict, published: bool = False) -> Path:
    """Write tables.md, results.json and the two plots into ``out_dir``; returns tables.md's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if published:
        records = [{k: v for k, v in r.items() if k not in LOCAL_PATHS} for r in records]
        meta = {k: v for k, v in meta.items() if k not in LOCAL_META}
    (out / "tables.md").write_text(tables_markdown(records, scale, meta, published))
    (out / "results.json").write_text(json.dumps({"scale": scale, "meta": meta, "records": records}, indent=2))
    plot_val_curves(records, out / "val_bpd.png", scale)
    plot_sampling_times(records, out / "sampling_time.png", scale)
    return out / "tables.md"
