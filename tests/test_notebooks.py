"""Every notebook in notebooks/ is stored executed (small outputs, so browsing it shows the figures)
and still executes top to bottom on the CPU with today's code (`make notebooks` refreshes them); a
notebook that trains does so briefly here (its ``parameters`` cell overridden)."""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "notebooks"))
from execute import execute  # noqa: E402  (notebooks/execute.py: what `make notebooks` runs)

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PARAMETERS = {"02_sampling": {"STEPS": 30}, "04_ood": {"STEPS": 10, "REF_STEPS": 5}}  # train briefly here; `make notebooks` stores their own runs


def figures(nb) -> int:
    return sum(o.get("output_type") == "display_data" for c in nb.cells for o in c.get("outputs", []))


TRAINING = {"02_sampling", "04_ood"}  # they train models: executing them takes minutes (`make test-slow`)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_executed(path):
    stored = nbformat.read(path, as_version=4)
    code = [c for c in stored.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), "store notebooks executed: make notebooks"
    assert figures(stored) > 0 and path.stat().st_size < 2_000_000, "outputs stored, and small"
    assert not any(o.get("output_type") == "error" for c in code for o in c.get("outputs", []))


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if p.stem in TRAINING else p for p in NOTEBOOKS],
                         ids=[p.stem for p in NOTEBOOKS])
def test_notebook_still_executes(path, tmp_path, monkeypatch):
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend shows the figures
    nb = execute(path, tmp_path, parameters=PARAMETERS.get(path.stem))
    assert figures(nb) > 0, "no figure shown"
