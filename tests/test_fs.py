"""Atomic writes: complete or absent, and readable by others as the umask allows."""

import os
import stat

import pytest

from smora_cli.utils.fs import atomic_directory, atomic_write_text


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_published_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "out") as tmp:
            (tmp / "sub").mkdir()
            (tmp / "sub" / "f.txt").write_text("x")
        atomic_write_text(tmp_path / "single.json", "{}")
    finally:
        os.umask(old)
    assert mode(tmp_path / "out") == 0o755 and mode(tmp_path / "out" / "sub") == 0o755
    assert mode(tmp_path / "out" / "sub" / "f.txt") == 0o644
    assert mode(tmp_path / "single.json") == 0o644


def test_failed_write_leaves_the_old_directory(tmp_path):
    with atomic_directory(tmp_path / "out") as tmp:
        (tmp / "a").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "out") as tmp:
        (tmp / "a").write_text("new")
        raise RuntimeError("killed halfway")
    assert (tmp_path / "out" / "a").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
