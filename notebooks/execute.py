"""Execute every notebook top to bottom and store it with its outputs: `make notebooks`.

    python notebooks/execute.py                 # all of notebooks/*.ipynb, in place
    python notebooks/execute.py 02_sampling     # one of them

Each runs in a fresh kernel inside a temporary folder (what a notebook writes, e.g. a training run, does
not land in the repository) with the repository's src/ importable; the stored file keeps the outputs
(figures, printed numbers) so that browsing it shows them.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def execute(path: Path, workdir: Path, timeout: int = 600, parameters: dict | None = None) -> nbformat.NotebookNode:
    """The notebook at ``path`` executed in ``workdir`` (a fresh python3 kernel), outputs in place.
    ``parameters`` (e.g. ``{"STEPS": 40}``) are set in a cell inserted after the one tagged
    ``parameters`` (papermill's convention), overriding the values it sets."""
    nb = nbformat.read(path, as_version=4)
    if parameters:
        tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
        if not tagged:
            raise ValueError(f"{path.name} has no cell tagged 'parameters' to override")
        source = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
        nb.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    return nb


def main(names: list[str]) -> None:
    paths = [HERE / f"{n.removesuffix('.ipynb')}.ipynb" for n in names] or sorted(HERE.glob("*.ipynb"))
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        sys.exit(f"error: no notebook {', '.join(missing)} in {HERE}: choose from "
                 f"{', '.join(p.stem for p in sorted(HERE.glob('*.ipynb')))}")
    os.environ.setdefault("PROJECT_ROOT", str(HERE.parent))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent / "src"), os.environ.get("PYTHONPATH")]))
    for path in paths:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as workdir:
            nb = execute(path, Path(workdir))
        nbformat.write(nb, path)
        print(f"{path.name}: executed in {time.perf_counter() - start:.0f} s, stored with outputs "
              f"({path.stat().st_size / 1024:.0f} KiB)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
