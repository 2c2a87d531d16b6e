"""Private directories are 0700: created so, with the parents they create, and tightened when found looser."""

from __future__ import annotations

import os
from pathlib import Path

from prebuildd.runtime.files import PRIVATE_DIR, SHARED_DATA_DIR, private_dir


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_created_with_its_parents_0700_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = private_dir(tmp_path / "a" / "b" / "c")
    finally:
        os.umask(old)
    assert [mode(p) for p in (tmp_path / "a", tmp_path / "a" / "b", path)] == [PRIVATE_DIR] * 3


def test_an_open_directory_from_before_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.mkdir()
    path.chmod(0o755)
    private_dir(path)
    assert mode(path) == PRIVATE_DIR
    path.chmod(0o711)  # traversable by anyone: still too open
    private_dir(path)
    assert mode(path) == PRIVATE_DIR


def test_the_embedded_postgres_group_traverse_mode_is_left(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.mkdir()
    path.chmod(SHARED_DATA_DIR)
    private_dir(path)
    assert mode(path) == SHARED_DATA_DIR
