"""environment.yml (conda/mamba) must install exactly the pins of pyproject.toml, which pins every package
the code imports."""

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions

import yaml

from stfusion.paths import find_root

ROOT = find_root()


def _name(requirement: str) -> str:
    return re.split(r"[=<>!~\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = project["dependencies"] + project["optional-dependencies"]["dev"]
    assert all("==" in r for r in pinned), "every direct dependency is pinned exactly"
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = [r for r in pip_section if not r.startswith("-")]
    assert sorted(listed, key=_name) == sorted(pinned, key=_name)
    assert "python=3.11" in env["dependencies"]


def test_constraints_agree_with_direct_pins():
    constraints = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            constraints[_name(name)] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"] + project["optional-dependencies"]["dev"]:
        name, version = requirement.split("==")
        assert constraints.get(_name(name)) == version, requirement


def _imported_packages(path) -> set[str]:
    """Top-level names of the absolute imports in a file, wherever they stand (functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"__future__", "stfusion"}


def test_every_package_the_code_imports_is_a_pinned_direct_dependency():
    """A package src/ imports but only another dependency pulls in could change or vanish with that one."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]}
    distributions = packages_distributions()
    undeclared = {}
    for path in sorted((ROOT / "src" / "stfusion").rglob("*.py")):
        for package in _imported_packages(path):
            if not declared & {_name(d) for d in distributions.get(package, [package])}:
                undeclared.setdefault(package, str(path.relative_to(ROOT)))
    assert not undeclared, f"imported but not in pyproject.toml's dependencies: {undeclared}"
