"""Lock files: written complete before they appear, exclusive, with a fallback without hard links."""

from __future__ import annotations

import errno
import json
import os
import socket
from pathlib import Path

import pytest

from steph import locks
from steph.fileio import TMP_PREFIX
from steph.locks import lock_path_for, read_lock, release, try_acquire


def test_lock_holds_its_owner_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = lock_path_for(tmp_path / "sub" / "model.safetensors")
    assert try_acquire(path)
    data = json.loads(path.read_text())
    assert (data["host"], data["pid"]) == (socket.gethostname(), os.getpid())
    assert path.stat().st_nlink == 1  # the temporary name is gone, only the lock links the inode
    assert not try_acquire(path)  # exclusive, also for the same process
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    release(path)
    assert not path.exists()


def test_lock_is_never_visible_before_it_is_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The moment the lock's name appears (the link), it already carries the owner: a process
    killed right after that leaves a lock whose pid tells that it died."""
    path = tmp_path / "x.lock"
    seen: list[str] = []
    real_link = os.link

    def link(src: str | Path, dst: str | Path) -> None:
        seen.append(Path(src).read_text())
        real_link(src, dst)

    monkeypatch.setattr(locks.os, "link", link)
    assert try_acquire(path)
    assert json.loads(seen[0])["pid"] == os.getpid()


@pytest.mark.parametrize("code", [errno.EPERM, errno.EOPNOTSUPP])
def test_file_systems_without_hard_links_fall_back_to_exclusive_create(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    def no_link(src: str | Path, dst: str | Path) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(locks.os, "link", no_link)
    path = tmp_path / "x.lock"
    assert try_acquire(path) and not try_acquire(path)
    info = read_lock(path)
    assert info is not None and info.pid == os.getpid() and not info.is_stale()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_other_link_errors_are_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(src: str | Path, dst: str | Path) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(locks.os, "link", broken)
    with pytest.raises(OSError, match="I/O error"):
        try_acquire(tmp_path / "x.lock")
    assert list(tmp_path.iterdir()) == []
