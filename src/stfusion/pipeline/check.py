"""The study's ``check`` stage: every parameter checked before DVC removes any other stage's outputs.

DVC deletes a stage's outputs just before it runs the stage's command, so a value the stage rejects
costs the outputs it had (a typo under ``models`` wiped a stage's predictions). Every stage but
``sources`` depends on this stage's small output, and this stage depends on the whole params.yaml: DVC
runs it first whenever a parameter changes, and a bad params.yaml stops ``dvc repro`` here, having
deleted nothing else. Its output never changes, so a valid edit reruns only the stages it concerns.
"""

from __future__ import annotations

import os
from pathlib import Path

from stfusion.io import write_json
from stfusion.paths import find_root
from stfusion.pipeline.params import load_params

CHECKED = Path("data") / "checked.json"
"""The stage's output, relative to the study folder: the same bytes whenever params.yaml is valid."""


def check_study(params_path: str | os.PathLike | None = None) -> Path:
    """Validate the study's params.yaml (every setting, every architecture buildable at both tiers, every
    training patch within its scenes); write :data:`CHECKED` beside it. Raises ConfigError naming the first
    bad parameter."""
    path = Path(params_path) if params_path else find_root() / "params.yaml"
    load_params(path, build_models=True)
    return write_json(path.parent / CHECKED, {"params.yaml": "valid"})
