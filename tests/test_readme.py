"""The README's Python examples run as written."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README should show the flow API in a Python example"
    for code in blocks:
        exec(compile(code, str(README), "exec"), {"__name__": "readme"})
