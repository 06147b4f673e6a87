"""`stfusion push` and `stfusion pull` on a tiny DVC project: the outputs travel, bad remotes are one line, and a
failed pull changes nothing in the workspace. (tests/test_pipeline_e2e.py does it with the smoke study.)"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from stfusion.cli import main

PIPELINE = """stages:
  make:
    cmd: python -c "import pathlib; p = pathlib.Path('out'); p.mkdir(exist_ok=True); (p / 'a.txt').write_text('a'); pathlib.Path('b.txt').write_text('b')"
    outs:
      - out
      - b.txt
"""


def run(*args, cwd):
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e.invalid",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e.invalid"})


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    """A project whose study ran: dvc.yaml, dvc.lock and the outputs in its cache; a profile's study too."""
    root = tmp_path_factory.mktemp("origin")
    run("git", "init", "-q", cwd=root)
    run("dvc", "init", "-q", cwd=root)
    for folder in (root, root / "studies" / "smoke"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "dvc.yaml").write_text(PIPELINE)
        run("dvc", "repro", "-q", cwd=folder)
    (root / "studies" / "smoke" / "out" / "a.txt").unlink()  # the profile's own outputs differ from the default's
    (root / "studies" / "smoke" / "b.txt").write_text("smoke")
    run("dvc", "commit", "-q", "-f", cwd=root / "studies" / "smoke")
    run("git", "add", "-A", cwd=root)
    run("git", "commit", "-qm", "study", cwd=root)
    return root


@pytest.fixture
def project(origin, tmp_path, monkeypatch):
    """A fresh clone of ``origin`` (no outputs, empty cache) as the code root, and a remote that ``origin`` pushed to."""
    remote = tmp_path / "remote"
    monkeypatch.setenv("STFUSION_ROOT", str(origin))
    monkeypatch.delenv("STFUSION_REMOTE", raising=False)
    assert main(["push", "--remote", str(remote)]) == 0
    clone = tmp_path / "clone"
    run("git", "clone", "-q", str(origin), str(clone), cwd=tmp_path)
    monkeypatch.setenv("STFUSION_ROOT", str(clone))
    return clone, remote


def test_pull_brings_the_pushed_outputs_and_dvc_status_is_clean(project, capsys):
    clone, remote = project
    assert main(["pull", "--remote", str(remote)]) == 0
    out = capsys.readouterr().out
    assert "pulled" in out and "every stage is up to date" in out
    assert (clone / "out" / "a.txt").read_text() == "a" and (clone / "b.txt").read_text() == "b"
    status = subprocess.run(["dvc", "status", "dvc.yaml"], cwd=clone, capture_output=True, text=True, check=True)
    assert "up to date" in status.stdout
    assert not (clone / "studies" / "smoke" / "b.txt").exists()  # only the default study's outputs


def test_profiles_are_pushed_and_pulled_apart(project, origin, monkeypatch):
    clone, remote = project
    assert main(["pull", "--profile", "smoke", "--remote", str(remote)]) == 2  # not pushed yet
    monkeypatch.setenv("STFUSION_ROOT", str(origin))
    assert main(["push", "--profile", "smoke", "--remote", str(remote)]) == 0
    monkeypatch.setenv("STFUSION_ROOT", str(clone))
    monkeypatch.setenv("STFUSION_REMOTE", str(remote))  # the environment variable names the remote
    assert main(["pull", "--profile", "smoke"]) == 0 and main(["pull"]) == 0
    assert (clone / "studies" / "smoke" / "b.txt").read_text() == "smoke" and (clone / "b.txt").read_text() == "b"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and ".git" not in p.parts and ".dvc" not in p.parts}


@pytest.mark.parametrize("case, message", [
    ("no-folder", "folder not found"),
    ("partial", "are not there"),
    ("unsaved", "exist nowhere else"),
    ("plugin", "pip install -e '.[s3]'"),
    ("no-lock", "dvc.lock: not found"),
    ("typo", "is neither a remote"),
])
def test_a_failed_pull_is_one_line_and_changes_nothing(project, capsys, case, message):
    clone, remote = project
    args = ["pull", "--remote", str(remote)]
    if case == "no-folder":
        args[-1] = str(remote.parent / "elsewhere")
    elif case == "partial":
        victim = next(p for p in (remote / "files" / "md5").rglob("*") if p.is_file() and p.suffix != ".dir")
        victim.unlink()
    elif case == "unsaved":
        (clone / "b.txt").write_text("my own edit")
    elif case == "plugin":
        args[-1] = "s3://bucket/stfusion"
    elif case == "no-lock":
        args += ["--profile", "full"]
    elif case == "typo":
        args[-1] = "lcoal"
    before = snapshot(clone)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert snapshot(clone) == before


def test_push_refuses_a_study_whose_outputs_are_not_all_in_the_cache(project, capsys):
    clone, remote = project  # a fresh clone: dvc.lock names outputs its cache does not hold
    assert main(["push", "--remote", str(remote.parent / "empty")]) == 2
    err = capsys.readouterr().err
    assert "neither in the DVC cache nor on the remote" in err and len(err.strip().splitlines()) == 1
    assert main(["push", "--remote", str(remote)]) == 0  # everything is on that remote already


def test_without_a_remote_the_error_says_how_to_give_one(project, capsys):
    assert main(["pull"]) == 2  # the tiny project configures no remote
    assert "no DVC remote" in capsys.readouterr().err


def test_the_project_ships_a_local_default_remote():
    from dvc.repo import Repo

    root = Path(__file__).resolve().parents[1]
    with Repo(str(root)) as repo:
        name = repo.config["core"]["remote"]
        assert repo.config["remote"][name]["url"] == str(Path("~/.cache/stfusion/dvc-remote").expanduser())


def test_every_remote_command_of_the_docs_configures_dvc(tmp_path):
    """docs/sharing.md shows how to switch remotes: each of its `dvc remote ...` commands works as written."""
    import re
    import shlex

    page = (Path(__file__).resolve().parents[1] / "docs" / "sharing.md").read_text()
    commands = {c for c in re.findall(r"(?m)(?:`|^)(dvc remote [^`\n]+)", page) if "..." not in c}
    assert len(commands) >= 5, commands
    run("git", "init", "-q", cwd=tmp_path)
    run("dvc", "init", "-q", cwd=tmp_path)
    (tmp_path / ".dvc" / "config").write_text('[core]\n    remote = local\n[\'remote "local"\']\n    url = /tmp/x\n')
    for command in sorted(commands):
        run(*shlex.split(command), cwd=tmp_path)
    local = (tmp_path / ".dvc" / "config.local").read_text()
    for url in ("s3://my-bucket/stfusion", "gs://my-bucket/stfusion", "ssh://user@example.org/srv/stfusion",
                "/mnt/shared/stfusion-remote"):
        assert url in local, url


@pytest.mark.parametrize("path, kept", [
    ("studies/full/", True), ("studies/full/dvc.yaml", True), ("studies/full/dvc.lock", True),
    ("studies/full/params.yaml", True), ("studies/full/data/sources/train.json", True),
    ("studies/full/reports/README.md", True), ("studies/rehearsal/rehearsal.csv", False),
    ("studies/rehearsal/portal/cia.zip", False), ("studies/full/data/downloads/cia.zip", False),
    ("studies/full/data/checkpoints/cia/last.ckpt", False),
])
def test_a_profile_study_is_committed_like_the_default_one(path, kept):
    """Git (what a clone gets) and DVC (which skips a dvc.yaml in an ignored folder) agree on .gitignore."""
    from dvc.repo import Repo

    root = Path(__file__).resolve().parents[1]
    ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=root).returncode == 0
    with Repo(str(root)) as repo:
        assert (ignored, repo.scm.is_ignored(str(root / path))) == (not kept, not kept)


def test_a_pull_says_which_stages_the_code_has_changed_since(project, capsys):
    clone, remote = project
    (clone / "dvc.yaml").write_text(PIPELINE.replace("'b'", "'B'"))
    assert main(["pull", "--remote", str(remote)]) == 0
    assert "1 stage(s) differ from dvc.lock all the same" in capsys.readouterr().out
    assert (clone / "b.txt").read_text() == "b"  # the outputs dvc.lock records, as pushed
