"""Result tables and plots of a reproduction run.

Input: one record per configuration, a dict with keys dataset, conv, coupling, experiment, test_bpd,
sample_seconds (100 images), forward_seconds (100 images), val_curve ([[step, val/bpd], ...]),
run_dir, checkpoint. Output in ``out_dir``: ``tables.md`` (the paper's three tables, paper and this
repository side by side with the difference; at smoke scale this repository's numbers only, never
mixed with the paper's), ``results.json`` (records + provenance), ``val_bpd.png``, ``sampling_time.png``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from . import paper  # noqa: E402


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _rows(records: dict, published: dict, key_label, value: str, digits: int, with_paper: bool) -> list[list[str]]:
    rows = []
    for key, pub in published.items():
        rec = records.get(key)
        ours = None if rec is None else rec.get(value)
        row = [*key_label(key), rec["experiment"] if rec else "not run"]
        if with_paper:
            diff = None if ours is None else ours - pub
            row += [_fmt(pub, 4), _fmt(ours, digits), ("+" if diff and diff > 0 else "") + _fmt(diff, digits)]
        else:
            row += [_fmt(ours, digits)]
        rows.append(row)
    return rows


def tables_markdown(records: list[dict], scale: str, meta: dict) -> str:
    by_key = {(r["dataset"], r["conv"], r["coupling"]): r for r in records}
    with_paper = scale == "full"
    cols = ["paper", "this repo", "difference"] if with_paper else [f"this repo ({scale} scale)"]
    parts = [f"# Reproduction results — {scale} scale"]
    if not with_paper:
        parts.append(
            f"**{scale.upper()} SCALE**: reduced depth and width, short training, on `{meta.get('data', '?')}`. "
            "These numbers test the pipeline end to end; they are not comparable with the paper's and are "
            "therefore shown without them (see PAPER.md section 6 for the published tables)."
        )
    parts.append(
        f"Hardware: {meta.get('hardware', '?')}. Commit: `{meta.get('commit', '?')}`. "
        f"Dataset variants: {meta.get('datasets', '?')}."
    )
    parts.append("## Table 1 — bits/dim\n")
    parts.append(
        _table(
            ["dataset", "model", "experiment", *cols],
            _rows(by_key, paper.BPD, lambda k: [paper.DATASETS[k[0]], paper.BPD_COLUMN[k[1:]]], "test_bpd", 4, with_paper),
        )
    )
    parts.append("## Table 2 — quad-coupling ablation, CIFAR-10 bits/dim\n")
    parts.append(
        _table(["conv", "coupling", "experiment", *cols], _rows(by_key, paper.ABLATION, lambda k: [k[1], k[2]], "test_bpd", 4, with_paper))
    )
    parts.append(
        "## Table 3 — seconds to sample 100 images\n\nPaper: one CPU core. This repository: "
        f"{meta.get('sampling_hardware', meta.get('hardware', '?'))}, the benchmark's method (warm-up, median).\n"
    )
    parts.append(
        _table(
            ["dataset", "conv", "experiment", *cols],
            _rows(by_key, paper.SAMPLING_SECONDS, lambda k: [paper.DATASETS[k[0]], k[1]], "sample_seconds", 3, with_paper),
        )
    )
    parts.append("## Every configuration\n")
    parts.append(
        _table(
            ["experiment", "test bits/dim", "sample 100 (s)", "forward 100 (s)", "run folder"],
            [
                [r["experiment"], _fmt(r.get("test_bpd"), 4), _fmt(r.get("sample_seconds")), _fmt(r.get("forward_seconds")), f"`{r.get('run_dir', '')}`"]
                for r in records
            ],
        )
    )
    return "\n\n".join(parts) + "\n"


def plot_val_curves(records: list[dict], path: Path, scale: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in records:
        curve = r.get("val_curve") or []
        if curve:
            steps, bpd = zip(*curve)
            ax.plot(steps, bpd, marker="o", ms=3, label=r["experiment"])
    ax.set_xlabel("training step")
    ax.set_ylabel("validation bits/dim")
    ax.set_title(f"validation bits/dim ({scale} scale)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_sampling_times(records: list[dict], path: Path, scale: str) -> None:
    names = [r["experiment"] for r in records]
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(names) + 1.5))
    y = range(len(names))
    ax.barh([i + 0.2 for i in y], [r.get("forward_seconds") or 0 for r in records], height=0.4, label="forward")
    ax.barh([i - 0.2 for i in y], [r.get("sample_seconds") or 0 for r in records], height=0.4, label="sampling")
    ax.set_yticks(list(y), names, fontsize=7)
    ax.set_xlabel("seconds for 100 images")
    ax.set_title(f"forward and sampling time ({scale} scale)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(records: list[dict], out_dir: str | Path, scale: str, meta: dict) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tables.md").write_text(tables_markdown(records, scale, meta))
    (out / "results.json").write_text(json.dumps({"scale": scale, "meta": meta, "records": records}, indent=2))
    plot_val_curves(records, out / "val_bpd.png", scale)
    plot_sampling_times(records, out / "sampling_time.png", scale)
    return out / "tables.md"
