"""The CPU allocator setting (cincflow.allocator): with it a flow's log_prob reuses the memory the last
one freed (next to no page faults), without it glibc's malloc hands megabytes back to the system and
faults them in again every call; and it leaves alone an allocator the user chose."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from cincflow import allocator

FAULTS = r"""
import json, resource, sys, torch
from cincflow.allocator import keep_freed_memory
torch.set_num_threads(1)
said = keep_freed_memory() if sys.argv[1] == "keep" else "untouched"
from cincflow.bench.compare import SHAPE, ours
torch.manual_seed(0)
x = torch.rand(64, 3, 32, 32) - 0.5
model = ours("glow", x, SHAPE)  # the benchmark's Glow (L3, K4, width 64), an evaluation job's pattern
with torch.no_grad():
    for _ in range(3):
        model.log_prob(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        model.log_prob(x)
print(json.dumps({"said": said, "faults": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4}))
"""


def faults_per_call(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")}
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, env=env, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")
def test_kept_memory_ends_the_page_faults_of_every_step():
    kept, untouched = faults_per_call("keep"), faults_per_call("untouched")
    assert kept["said"] == "glibc malloc keeps freed blocks up to 1024 MiB for reuse", kept
    assert untouched["faults"] > 1000, untouched  # the problem: megabytes faulted in again every log_prob (5-8k)
    assert kept["faults"] < untouched["faults"] / 10, (kept, untouched)


@pytest.mark.parametrize("env, reason", [({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, "jemalloc is preloaded"),
                                         ({"MALLOC_MMAP_THRESHOLD_": "65536"}, "MALLOC_MMAP_THRESHOLD_ is set"),
                                         ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}, "GLIBC_TUNABLES sets malloc")])
def test_a_users_allocator_choice_is_left_alone(monkeypatch, env, reason):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda *_: pytest.fail("mallopt must not be called"))
    assert allocator.keep_freed_memory().startswith(f"allocator left as it is: {reason}")
