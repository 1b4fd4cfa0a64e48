"""Hyperparameter search (#19): an Optuna search through the real command line (tests/cli.py), resumed in
its sweep folder; its bad inputs refused before any trial; what a failed or diverged trial returns."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from cli import run_cases
from test_reliability import assert_one_line_error

ROOT = Path(__file__).resolve().parents[1]
# a trial in about a second: debug=smoke's 3 steps, no sample grids, no logger
SEARCH = ["hparams_search=quickstart_optuna", "debug=smoke", "logger=none", "samples.n=0"]


def ok(result: dict) -> dict:
    assert result["code"] == 0, (result["code"], result["stderr"][-3000:], result["stdout"][-2000:])
    return result


def job_folders(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if (p / ".hydra" / "overrides.yaml").is_file())


def test_a_search_continues_its_study_in_its_sweep_folder(tmp_path):
    """2 trials, then the same command with n_trials=4 into the same folder: 2 more trials (the study holds 4),
    2 new job folders next to the old ones (never into them), a summary of all 4, best first."""
    import optuna

    sweep = tmp_path / "search"
    first, again = run_cases([
        ("train", [*SEARCH, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}"]),
        ("train", [*SEARCH, "hydra.sweeper.n_trials=4", f"hydra.sweep.dir={sweep}"]),
    ])
    ok(first), ok(again)
    assert "Best parameters:" in first["stderr"] + first["stdout"] and "Best value:" in again["stderr"] + again["stdout"]
    assert "Continuing the study 'quickstart_optuna': 2 trial(s) done, n_trials=4: 2 more" in again["stdout"]
    study = optuna.load_study(study_name="quickstart_optuna", storage=f"sqlite:///{sweep / 'optuna.db'}")
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert all(t.state.name == "COMPLETE" and math.isfinite(t.value) for t in study.trials)
    folders = job_folders(sweep)
    assert [p.name.split("_", 1)[0] for p in folders] == ["0", "1", "2", "3"]  # numbered after the trials
    assert all((p / "metrics.json").is_file() for p in folders)
    assert (sweep / "optimization_results.yaml").is_file()
    with open(sweep / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    values = [float(r["trial value"]) for r in rows]
    assert len(rows) == 4 and values == sorted(values)  # best first
    assert values[0] == pytest.approx(study.best_value, abs=5e-5)
    assert {int(r["job"]) for r in rows} == {0, 1, 2, 3}
    best = next(r for r in rows if int(r["job"]) == study.best_trial.number)
    assert all(f"{k}=" in best["params"] for k in study.best_trial.params)
    assert best["tags"] == "quickstart_optuna digits cinc"
    table = (sweep / "summary.md").read_text()
    assert "## Trials, best first (4)" in table and "optimizer.lr" in table


def test_a_search_refuses_bad_input_before_any_trial(tmp_path):
    """An unknown key, an unknown distribution, an unknown option of a group and a metric the job does not log:
    one line each, exit 2, no sweep folder."""
    cases = [
        (["++hydra.sweeper.params={model.widht:'choice(8,16)'}"], ["model.widht is not a key", "did you mean model.width?"]),
        (["++hydra.sweeper.params={optimizer.lr:'loguniform(1e-4,1e-2)'}"], ["hydra.sweeper.params.optimizer.lr",
                                                                          "is not a search-space entry", "interval("]),
        (["hydra.sweeper.params.coupling='choice(affine,nope)'"], ["unknown coupling option 'nope'"]),
        (["optimized_metric=val/bdp"], ["optimized_metric=val/bdp is not a metric the training job logs", "val/bpd"]),
    ]
    results = run_cases([("train", [*SEARCH, *args, f"hydra.sweep.dir={tmp_path / str(n)}"])
                         for n, (args, _) in enumerate(cases)])
    for n, ((args, fragments), result) in enumerate(zip(cases, results)):
        assert_one_line_error(result, *fragments)
        assert not (tmp_path / str(n)).exists(), args


def test_every_metric_a_search_can_optimise_is_one_the_job_logs(tmp_path):
    """LOGGED_METRICS (what optimized_metric may name) against a real run's metrics.json."""
    import json

    from cincflow.config.search import LOGGED_METRICS

    run = tmp_path / "run"
    ok(run_cases([("train", ["experiment=quickstart", "debug=smoke", "logger=none", "trainer.enable_progress_bar=false",
                             f"hydra.run.dir={run}"])])[0])
    logged = json.loads((run / "metrics.json").read_text())
    assert set(LOGGED_METRICS) <= set(logged), set(LOGGED_METRICS) - set(logged)


def test_a_failed_or_diverged_trial_returns_the_worst_value():
    """Never nan (Optuna's tell refuses it and the sweeper then stops the study), never a value that wins."""
    from cincflow.config.search.objective import derived_tags, objective_value

    assert objective_value({"val/bpd": 3.5}, "val/bpd") == 3.5
    for record in (None, {}, {"val/bpd": float("nan")}, {"val/bpd": float("inf")}, {"val/bpd": None}):
        assert objective_value(record, "val/bpd") == math.inf
        assert objective_value(record, "val/bpd", maximise=True) == -math.inf
    assert derived_tags(["coupling=quad", "hydra.sweep.dir=x", "+model.depth=2", "paths.log_dir=y", "tags=[]"]) == \
        ["coupling=quad", "model.depth=2"]
