"""``python tests/count_reads.py <script> <args...>``: run ``src/<script>.py`` as a user would, counting
how often the launch validates its configuration, builds a dataset, checks a checkpoint's CRC and calls
``torch.load``; prints ``READS {json}`` when it ends (tests/test_layering.py)."""
import json
import runpy
import sys
from pathlib import Path

import torch

import cincflow.config.checks as checks
import cincflow.training.checkpoints as checkpoints
from cincflow.data.base import UInt8ImageDataModule

counts = {"validate": 0, "data_builds": 0, "crc_checks": 0, "torch_loads": 0}


def counting(key, fn, when=lambda *a, **k: True):
    def wrapped(*args, **kwargs):
        counts[key] += bool(when(*args, **kwargs))
        return fn(*args, **kwargs)
    return wrapped


originals = (checks.check_node, checkpoints.verify_integrity, torch.load, UInt8ImageDataModule.setup)
checks.check_node = counting("validate", checks.check_node, lambda node, sch, prefix="": prefix == "")
checkpoints.verify_integrity = counting("crc_checks", checkpoints.verify_integrity)
torch.load = counting("torch_loads", torch.load)
UInt8ImageDataModule.setup = counting("data_builds", UInt8ImageDataModule.setup, lambda self, *a, **k: self.train_set is None)
script = sys.argv[1]
sys.argv = [f"src/{script}.py", *sys.argv[2:]]
try:
    runpy.run_path(str(Path(__file__).resolve().parents[1] / "src" / f"{script}.py"), run_name="__main__")
finally:
    checks.check_node, checkpoints.verify_integrity, torch.load, UInt8ImageDataModule.setup = originals
    print("READS " + json.dumps(counts), flush=True)
