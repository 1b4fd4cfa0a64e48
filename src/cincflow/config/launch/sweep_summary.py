"""The summary of a Hydra multirun: one row per job (its overrides, tags, test bits/dim, best validation
bits/dim, steps, time, run folder; a failed job's error), printed and written as ``summary.md`` and ``summary.csv`` into the
sweep folder when the multirun ends (:class:`SweepSummary`, a Hydra callback: conf/hydra/default.yaml).

The rows are read from disk, from every job folder of the sweep (``.hydra/overrides.yaml`` and the
job's ``metrics.json``, or the ``error.txt`` of a job that failed), so the summary is the same with any
launcher and can be rebuilt later with :func:`write_summary`. An Optuna search also lists its trials with
their parameters and value, best first (:mod:`cincflow.config.search.trials`; summary.csv: best first too).
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ..search.objective import ERROR_FILE, derived_tags
from ..search.trials import best_first, study_of, trial_cells, trials_markdown

COLUMNS = ("job", "overrides", "tags", "test bits/dim", "best val bits/dim", "steps", "time (s)", "run folder")
METRICS = {"test bits/dim": "test/bpd", "best val bits/dim": "val/bpd_best", "steps": "global_step",
           "time (s)": "train_seconds"}


def _job_number(folder: Path) -> float:
    """``hydra.job.num`` of a job folder (inf, sorted last, when its .hydra/hydra.yaml does not say)."""
    path = folder / ".hydra" / "hydra.yaml"
    num = OmegaConf.select(OmegaConf.load(path), "hydra.job.num") if path.is_file() else None
    return math.inf if num is None else int(num)


def sweep_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every job folder below ``sweep_dir`` (one with ``.hydra/overrides.yaml``; also nested, as with
    ``hydra.sweep.subdir=<a>/<b>``), in job order: ``folder``, ``num`` (``hydra.job.num``),
    ``overrides`` (the job's command-line overrides, a list), ``tags`` (its config's), ``metrics`` (its
    ``metrics.json``; None while missing, e.g. for a job that failed) and ``error`` (its error.txt's line)."""
    jobs = []
    for marker in sweep_dir.glob("**/.hydra/overrides.yaml"):
        folder = marker.parent.parent
        metrics_path = folder / "metrics.json"
        config_path, error_path = folder / ".hydra" / "config.yaml", folder / ERROR_FILE
        tags = OmegaConf.select(OmegaConf.load(config_path), "tags") if config_path.is_file() else None
        overrides = OmegaConf.to_container(OmegaConf.load(marker)) or []
        jobs.append({
            "folder": folder,
            "num": _job_number(folder),
            "overrides": [str(o) for o in overrides],
            "tags": [str(t) for t in tags or []] or derived_tags([str(o) for o in overrides]),
            "metrics": json.loads(metrics_path.read_text()) if metrics_path.is_file() else None,
            "error": error_path.read_text().strip() if error_path.is_file() else None,
        })
    return sorted(jobs, key=lambda job: (job["num"], str(job["folder"])))


def _cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if column.endswith("bits/dim"):
        return f"{float(value):.4f}"
    if column == "steps":
        return str(int(value))
    return f"{float(value):.1f}" if column == "time (s)" else str(value)


def summary_rows(jobs: list[dict[str, Any]]) -> tuple[list[dict[str, str]], list[str]]:
    """Table rows (column -> text) and the overrides common to every job; a row's ``overrides`` are
    the job's own (those not common to all), ``all overrides`` every one of them."""
    common = [o for o in jobs[0]["overrides"] if all(o in job["overrides"] for job in jobs)] if jobs else []
    rows = []
    for job in jobs:
        metrics = job["metrics"]
        row = {"job": str(job["num"]) if job["num"] != math.inf else "?",
               "overrides": " ".join(o for o in job["overrides"] if o not in common),
               "tags": " ".join(job.get("tags") or []),
               "all overrides": " ".join(job["overrides"])}
        for column, key in METRICS.items():
            row[column] = _cell(column, (metrics or {}).get(key))
        if job.get("error"):
            row["test bits/dim"] = f"failed ({job['error']})"
        elif metrics is None:
            row["test bits/dim"] = "no metrics.json"
        row["run folder"] = str(job["folder"])
        rows.append(row)
    return rows, common


def markdown_table(rows: list[dict[str, str]], common: list[str], sweep_dir: Path) -> str:
    """The rows as a markdown table under a title naming ``sweep_dir``, and the common overrides."""
    lines = [f"# Sweep {sweep_dir}", "", f"Common overrides: {' '.join(common) or '(none)'}", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:  # the run folder relative to the sweep folder (the title): the CSV has the full path
        cells = {**row, "run folder": str(Path(row["run folder"]).relative_to(sweep_dir))}
        lines.append("| " + " | ".join(cells[c] or "-" for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def write_summary(sweep_dir: str | Path, study: tuple[list[Any], bool] | None = None, metric: str = "val/bpd") -> str | None:
    """Write ``summary.md`` and ``summary.csv`` into ``sweep_dir``; returns the markdown (None when
    no job of the sweep wrote a ``metrics.json``, e.g. a sweep of src/sample.py, and it is no search).
    ``study``: (trials, maximises) of an Optuna search, whose trials the summary lists too."""
    sweep_dir = Path(sweep_dir)
    jobs = sweep_jobs(sweep_dir) if sweep_dir.is_dir() else []
    if not any(job["metrics"] is not None for job in jobs) and not (study and study[0]):
        return None
    rows, common = summary_rows(jobs)
    text = markdown_table(rows, common, sweep_dir)
    fields = [*COLUMNS, "all overrides"]
    if study:
        trials, maximise = study
        by_number = {t.number: t for t in trials}
        for row in rows:
            trial = by_number.get(int(row["job"])) if row["job"].isdigit() else None
            row.update(trial_cells(trial) if trial is not None else {})
        order = {t.number: i for i, t in enumerate(best_first(trials, maximise))}
        rows.sort(key=lambda r: order.get(int(r["job"]) if r["job"].isdigit() else -1, len(order)))
        folders = {int(r["job"]): str(Path(r["run folder"]).relative_to(sweep_dir)) for r in rows if r["job"].isdigit()}
        text += "\n" + trials_markdown(trials, maximise, folders, metric)
        fields += ["trial value", "trial state", "params"]
    (sweep_dir / "summary.md").write_text(text)
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return text


class SweepSummary(Callback):
    """Hydra callback: at the end of a multirun, the summary table of all its jobs."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        text = write_summary(sweep_dir, study_of(config), str(config.get("optimized_metric") or "val/bpd"))
        if text is not None:
            print(f"\n{text}\nsummary: {sweep_dir / 'summary.md'}, {sweep_dir / 'summary.csv'}", flush=True)
