"""Shared fixtures: W&B sandboxed offline in a temporary folder, and composing the real configs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test`: one process per core, so one torch thread each,
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # in the processes the tests start too (no oversubscription)
    import torch

    torch.set_num_threads(1)


# `make test` (pytest-xdist, --dist loadfile) hands the test files to the workers in collection order: the
# longest go first (longest-processing-time first), so that the workers finish together; the rest keep theirs.
LONGEST_FIRST = ("test_inputs.py", "test_runs.py", "test_reproduce.py", "test_ddp.py", "test_reliability.py",
                 "test_research.py", "test_train.py", "test_dequant.py", "test_scripts.py", "test_launchers.py",
                 "test_search.py", "test_inverse.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(autouse=True)
def wandb_sandbox(tmp_path_factory, monkeypatch):
    """W&B never goes online from the tests and writes only below a temporary folder."""
    base = tmp_path_factory.mktemp("wandb_env")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(base / var.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return base


@pytest.fixture
def float64():
    """Run a test in float64 (the default dtype is restored afterwards)."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def compose_config(config_name: str, overrides: list[str], output_dir: Path):
    """The composed DictConfig of ``config_name`` with ``overrides``, as the CLI would see it
    (``hydra:`` interpolations resolvable, ``paths.output_dir`` = output_dir)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        del cfg.hydra
    return cfg


@pytest.fixture
def compose_cfg():
    """compose_cfg(config_name, overrides, output_dir): :func:`compose_config` as a fixture."""
    return compose_config
