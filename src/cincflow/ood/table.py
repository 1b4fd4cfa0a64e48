"""The OOD table: per score, the in-distribution set's own row and one row per OOD set with the
detection metrics; written as Markdown, CSV and JSON."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import torch

from .metrics import detection_metrics

STAT_KEYS = ("n", "mean", "std", "median")
METRIC_KEYS = ("auroc", "aupr_in", "aupr_out", "fpr_at_95_tpr", "threshold_at_95_tpr")
ROW_KEYS = ("score", "data", "role", *STAT_KEYS, *METRIC_KEYS)
HEADERS = {"n": "n", "mean": "mean", "std": "std", "median": "median", "auroc": "AUROC", "aupr_in": "AUPR-in",
           "aupr_out": "AUPR-out", "fpr_at_95_tpr": "FPR@95%TPR", "threshold_at_95_tpr": "threshold@95%TPR"}
TABLE_FILES = {"md": "ood_table.md", "csv": "ood_table.csv", "json": "ood_table.json"}


def summary(bpd: torch.Tensor) -> dict[str, float]:
    """Count, mean, its standard error, standard deviation, median, 5 % and 95 % quantiles, min, max."""
    q = torch.quantile(bpd, torch.tensor([0.05, 0.5, 0.95], dtype=bpd.dtype))
    std = float(bpd.std()) if len(bpd) > 1 else 0.0
    return {"n": len(bpd), "mean": float(bpd.mean()), "se": std / len(bpd) ** 0.5, "std": std,
            "median": float(q[1]), "q05": float(q[0]), "q95": float(q[2]),
            "min": float(bpd.min()), "max": float(bpd.max())}


def table_rows(values: dict[str, dict[str, torch.Tensor]], in_name: str, columns: list[str]) -> list[dict[str, Any]]:
    """Rows of :data:`ROW_KEYS`: for each score column, the set ``in_name`` (role 'in', no metrics),
    then every other set of ``values`` (set -> column -> scores), role 'ood', against it."""
    rows = []
    for column in columns:
        reference = values[in_name][column]
        for name in [in_name, *(n for n in values if n != in_name)]:
            scores = values[name][column]
            stats = summary(scores)
            metrics = detection_metrics(reference, scores) if name != in_name else {}
            rows.append({"score": column, "data": name, "role": "ood" if name != in_name else "in",
                         **{k: stats[k] for k in STAT_KEYS}, **{k: metrics.get(k) for k in METRIC_KEYS}})
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def markdown(rows: list[dict[str, Any]], title: str) -> str:
    """The rows as a Markdown table under ``title``."""
    head = ["score", "data", *(HEADERS[k] for k in (*STAT_KEYS, *METRIC_KEYS))]
    keys = ["score", "data", *STAT_KEYS, *METRIC_KEYS]
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        data = f"{row['data']} (in)" if row["role"] == "in" else row["data"]
        lines.append("| " + " | ".join(_cell(data if k == "data" else row[k]) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def write_table(record: dict[str, Any], title: str) -> None:
    """``record['rows']`` as Markdown under ``title`` and as CSV (columns :data:`ROW_KEYS`), and all
    of ``record`` as JSON, to the paths ``record['files']`` names by format ('md', 'csv', 'json')."""
    files = record["files"]
    Path(files["md"]).write_text(markdown(record["rows"], title))
    with Path(files["csv"]).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=ROW_KEYS)
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in record["rows"])
    Path(files["json"]).write_text(json.dumps(record, indent=2))
