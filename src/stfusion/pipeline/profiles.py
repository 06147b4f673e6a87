"""Profiles: overlays of params.yaml, each run as its own study in ``studies/<profile>/``.

``profiles/<name>.yaml`` holds only what differs from the default study's params.yaml: mappings merge
key by key, any other value (a list included) replaces the default. ``extends: OTHER`` lays it over
another profile instead (the rehearsal over the full reproduction). ``stfusion study --profile NAME``
writes ``studies/<name>/params.yaml`` (the merged parameters) and ``studies/<name>/dvc.yaml`` (the
project's pipeline, with its code paths pointing back to the project) and runs it there, so the
profile keeps its own dvc.lock, data and reports and never touches the default study's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from stfusion.errors import ConfigError
from stfusion.io import write_text
from stfusion.pipeline.params import validate_params

DEFAULT = "default"
CODE_VAR = re.compile(r'^(  - code: )""(.*)$', re.M)  # the line of dvc.yaml that says where the code is


def merge(base: Any, overlay: Any) -> Any:
    """``overlay`` over ``base``: mappings merge key by key, anything else replaces."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        return {**base, **{key: merge(base[key], value) if key in base else value for key, value in overlay.items()}}
    return overlay


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of parameters, got {type(data).__name__}")
    return data


def profile_names(root: Path) -> list[str]:
    return sorted(path.stem for path in (root / "profiles").glob("*.yaml"))


def _overlay(root: Path, name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """Profile ``name``'s overlay of params.yaml, with the profile it ``extends`` (if any) beneath it."""
    path = root / "profiles" / f"{name}.yaml"
    if not path.is_file():
        where = f"{root / 'profiles' / seen[-1]}.yaml: extends" if seen else "--profile"
        raise ConfigError(f"{where}: no profile {name!r} ({path} not found); profiles are {profile_names(root)}")
    overlay = _read(path)
    if "profile" in overlay:
        raise ConfigError(f"{path}: profile: leave it out; a profile is named by its file")
    base = overlay.pop("extends", None)
    if base is None:
        return overlay
    if not isinstance(base, str) or base in (*seen, name):
        raise ConfigError(f"{path}: extends: expected the name of another profile (no cycles), got {base!r}")
    return merge(_overlay(root, base, (*seen, name)), overlay)


def profile_params(root: Path, name: str) -> dict[str, Any]:
    """The parameters of profile ``name``: ``profiles/<name>.yaml`` over ``params.yaml`` (over the profile
    it ``extends``, if it names one), validated."""
    params = {**merge(_read(root / "params.yaml"), _overlay(root, name)), "profile": name}
    validate_params(params, source=str(root / "profiles" / f"{name}.yaml"), build_models=False)
    return params


def study_pipeline(root: Path, depth: int) -> str:
    """The project's dvc.yaml for a study ``depth`` folders below the project root."""
    text = (root / "dvc.yaml").read_text()
    if len(CODE_VAR.findall(text)) != 1:
        raise ConfigError(f"{root / 'dvc.yaml'}: expected one line '  - code: \"\"' under vars")
    header = "# Written by `stfusion study --profile`: the project's dvc.yaml with its code paths pointing back.\n"
    return header + CODE_VAR.sub(lambda m: f'{m.group(1)}"{"../" * depth}"{m.group(2)}', text)


def write_study(root: Path, name: str) -> Path:
    """Write ``studies/<name>/params.yaml`` and ``dvc.yaml`` (each only when its text changes, so DVC
    sees no change where there is none); return the study's folder."""
    params = profile_params(root, name)
    folder = root / "studies" / name
    texts = {
        "params.yaml": f"# Written by `stfusion study --profile {name}` from params.yaml and profiles/{name}.yaml: "
                       "edit those.\n" + yaml.safe_dump(params, sort_keys=False, width=110),
        "dvc.yaml": study_pipeline(root, depth=2),
    }
    for file, text in texts.items():
        path = folder / file
        if not path.is_file() or path.read_text() != text:
            write_text(path, text)
    return folder
