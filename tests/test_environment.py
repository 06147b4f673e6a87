"""environment.yml (conda/mamba) must install exactly the pins of pyproject.toml."""

import re
import tomllib

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
