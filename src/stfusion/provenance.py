"""Which code produced a result: the git commit, marked when the working tree had uncommitted changes."""

from __future__ import annotations

import subprocess
from pathlib import Path

from stfusion import __version__

# Written by the very run that records the commit (any study's, the profiles' in studies/ too): not inputs.
_OUTPUTS = [":(exclude,glob)**/dvc.lock", ":(exclude,glob)**/reports/**", ":(exclude,glob)**/data/sources/**"]


def git_commit(root: Path) -> str:
    """The commit checked out at ``root`` (10 hex digits), with " (with uncommitted changes)" when a tracked
    file under ``root`` other than a study's outputs differs from it; "unknown (not a git checkout)" outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short=10", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", *_OUTPUTS)
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{commit} (with uncommitted changes)" if dirty else commit


def code_version(root: Path) -> dict[str, str]:
    """The package version and the git commit of the code at ``root``, as weights cards record them."""
    return {"stfusion": __version__, "commit": git_commit(root)}
