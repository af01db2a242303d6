"""The local image store's durability: files fsynced before their rename, and the
directories holding new entries fsynced (once each) before the pipeline records them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nuke_crawl.storage.local import LocalImageStore


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths fsynced (the real os.fsync still runs)."""
    seen: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        seen.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return seen


def test_files_then_directories_are_fsynced(tmp_path: Path, fsynced: list[str]) -> None:
    base = tmp_path / "images"
    store = LocalImageStore(str(base))
    store.persist("v1/a.jpg", b"a" * 10, "image/jpeg")
    store.persist("v1/a_thumb.jpg", b"t", "image/jpeg")
    store.persist("v2/b.jpg", b"b", "image/jpeg")
    assert (base / "v1" / "a.jpg").read_bytes() == b"a" * 10
    # each file's data before its rename: fsynced under its temporary name
    assert len(fsynced) == 3 and all("/.tmp-" in p for p in fsynced)
    assert not list(base.rglob(".tmp-*"))
    fsynced.clear()
    store.sync()
    # the two vehicle folders (their renames) and the base folder (the new folders), once each
    assert sorted(fsynced) == sorted([str(base), str(base / "v1"), str(base / "v2")])
    fsynced.clear()
    store.sync()
    assert fsynced == []  # nothing changed since
    store.persist("v1/c.jpg", b"c", "image/jpeg")
    fsynced.clear()
    store.sync()
    assert fsynced == [str(base / "v1")]  # an existing folder: only itself


def test_no_fsync_when_disabled(tmp_path: Path, fsynced: list[str]) -> None:
    store = LocalImageStore(str(tmp_path / "images"), fsync=False)
    store.persist("v1/a.jpg", b"a", "image/jpeg")
    store.sync()
    assert fsynced == []
    assert (tmp_path / "images" / "v1" / "a.jpg").read_bytes() == b"a"


def test_a_failed_directory_sync_is_retried(tmp_path: Path, monkeypatch) -> None:
    store = LocalImageStore(str(tmp_path / "images"))
    store.persist("v1/a.jpg", b"a", "image/jpeg")
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(5, "EIO")))
    with pytest.raises(OSError):
        store.sync()
    synced: list[str] = []
    monkeypatch.setattr(
        os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd))
    )
    store.sync()
    assert str(tmp_path / "images" / "v1") in synced
