"""How the package is layered: light imports at the top, no import cycles (function-level imports
included), Hydra only where configurations are handled, and a launch that reads each input once."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from cli import run_cases

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "cincflow"
HEAVY = ("torch", "lightning", "pytorch_lightning", "torchvision", "sklearn", "skimage", "scipy", "hydra", "omegaconf",
         "matplotlib", "wandb")


def test_the_package_and_its_errors_import_nothing_heavy():
    """``import cincflow`` and ``import cincflow.errors`` (what the configuration layer and the entry scripts
    need for their one-line errors) load no torch, Lightning, torchvision, scikit-* or Hydra."""
    code = ("import sys, cincflow, cincflow.errors; "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT / "src")})
    assert out.stdout.strip() == "[]", out.stdout
    from cincflow import Glow  # the names are there, imported on first use

    assert Glow.__module__ == "cincflow.model"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports anywhere (top level or inside functions)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = {f"{base}.{a.name}" for a in node.names}  # `from . import x`: a module x
            found |= names
            if node.module or not names & modules:  # `from . import x` of submodules imports them, not base
                found.add(base)
    return {m for m in found if m in modules and m != name}


def test_no_import_cycles():
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: imports_of(p, set(files)) for m, p in files.items()}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    assert len(graph) > 60 and cycles == []


def test_hydra_only_in_the_configuration_layer():
    allowed = ("cincflow.config", "cincflow.jobs")
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        text = path.read_text()
        uses = any(f"{kw} {lib}" in text for kw in ("import", "from") for lib in ("hydra", "omegaconf"))
        assert not uses or name.startswith(allowed), f"{name} imports Hydra/OmegaConf"


COUNTER = ROOT / "tests" / "count_reads.py"


def test_a_launch_checks_and_reads_each_input_once(tmp_path):
    """validate() once, the training data built once (the Hydra callback's DataModule goes to the job),
    the checkpoint's CRC once and torch.load once for eval and sample."""
    run = tmp_path / "run"
    cases = [("train", ["experiment=quickstart", "debug=smoke", "logger=none", f"hydra.run.dir={run}"])]
    ckpt = run / "checkpoints" / "last.ckpt"
    cases += [("eval", [f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'eval'}"]),
              ("sample", [f"ckpt_path={ckpt}", "n=2", "reconstructions=2", f"hydra.run.dir={tmp_path / 'sample'}"])]
    results = run_cases([(str(COUNTER), [script, *args]) for script, args in cases])
    counts = {}
    for (script, _), result in zip(cases, results):
        assert result["code"] == 0, result["stderr"][-3000:]
        counts[script] = json.loads(result["stdout"].rsplit("READS ", 1)[1].splitlines()[0])
    assert counts["train"] == {"validate": 1, "data_builds": 1, "crc_checks": 0, "torch_loads": counts["train"]["torch_loads"]}
    for script in ("eval", "sample"):
        assert (counts[script]["validate"], counts[script]["crc_checks"], counts[script]["torch_loads"]) == (1, 1, 1), counts
