"""environment.yml (conda) and pyproject.toml (pip) pin the same packages at the same versions."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pins(requirements) -> dict[str, str]:
    pins = {}
    for req in requirements:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", req.strip())
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def test_environment_yml_matches_pyproject_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pyproject = _pins(project["dependencies"] + project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip_section
    assert _pins(pip_section) == pyproject
    assert "python=3.11" in env["dependencies"]


def test_the_environment_has_the_pinned_versions():
    """What the tests run in is what pyproject.toml / environment.yml promise (a stale or hand-made
    environment is named, package by package)."""
    from importlib.metadata import PackageNotFoundError, version

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wrong = {}
    for name, pin in _pins(project["dependencies"] + project["optional-dependencies"]["dev"]).items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = "not installed"
        if installed.split("+")[0] != pin:  # local build tags (e.g. +cpu, +cu124) are the same release
            wrong[name] = f"{installed} (pinned {pin})"
    assert not wrong, f"reinstall the pinned environment (make install): {wrong}"


def test_every_dependency_is_pinned_exactly():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for req in project["dependencies"] + project["optional-dependencies"]["dev"]:
        assert "==" in req, f"{req} is not pinned"
