"""Atomic writes: all or nothing, with the permissions of a normal write."""

import os
import stat

import pytest

from stfusion.io import atomic_dir, atomic_path, write_text


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_outputs_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_text(tmp_path / "a.md", "x")
        with atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "b.txt").write_text("y")
    finally:
        os.umask(old)
    assert _mode(path) == 0o644 and _mode(tmp_path / "folder") == 0o755


def test_a_failed_write_leaves_the_old_content_and_no_temp_file(tmp_path):
    write_text(tmp_path / "a.md", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "a.md") as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert (tmp_path / "a.md").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.md"]
