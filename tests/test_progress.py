"""Progress a cluster job's log can read (#19): plain lines when stdout is not a terminal, Lightning's bar
(carriage returns) on one; both through a real process."""
from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cli import launch_env, run_cases

ROOT = Path(__file__).resolve().parents[1]
TINY = ["experiment=quickstart", "debug=smoke", "logger=none", "samples.n=0", "callbacks.progress.every_n_steps=2"]


def test_a_log_that_is_not_a_terminal_gets_plain_progress_lines(tmp_path):
    (result,) = run_cases([("train", [*TINY, f"hydra.run.dir={tmp_path / 'run'}"])])  # stdout: a file
    assert result["code"] == 0, result["stderr"][-2000:]
    out = result["stdout"]
    assert "\r" not in out
    lines = [ln for ln in out.splitlines() if ln.startswith("epoch 1/1 step")]
    assert re.fullmatch(r"epoch 1/1 step 2/3 \| train bits/dim \d\.\d{4} \| (images/s \d+ \| )?ETA \dm\d\ds", lines[0]), lines
    assert re.fullmatch(r"epoch 1/1 step 3/3 \(epoch end\) \| train bits/dim \d\.\d{4} \| val bits/dim \d\.\d{4} \| "
                        r"images/s \d+ \| ETA \dm\d\ds", lines[-1]), lines
    assert len(lines) == 2  # every 2 steps, and the epoch's end


@pytest.mark.slow  # a fresh interpreter on a pseudo-terminal: ~12 s
def test_a_terminal_keeps_the_progress_bar(tmp_path):
    main, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, str(ROOT / "src" / "train.py"), *TINY, f"hydra.run.dir={tmp_path / 'run'}"],
                            stdin=subprocess.DEVNULL, stdout=child, stderr=child, cwd=ROOT, env=launch_env())
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=300) == 0
    os.close(main)
    out = b"".join(chunks).decode(errors="replace")
    # Lightning's bar (Rich's here, tqdm's without rich), redrawn in place: carriage returns without a new line
    assert out.count("Epoch 0/0") >= 2 and re.search(r"\r(?!\n)", out), out[-2000:]
    assert "epoch 1/1 step" not in out
