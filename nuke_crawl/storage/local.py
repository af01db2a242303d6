"""A folder (``IMAGES_STORE = "images"`` or ``file:///srv/images``)."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from nuke_crawl import settings as defaults
from nuke_crawl.storage import PROBE_PREFIX, ImageStore, StoreError


class LocalImageStore(ImageStore):
    """A folder: each file written to a temporary name, fsynced, then renamed,
    so a killed process never leaves a partial file under the final name.

    A rename (and a new vehicle folder) is only durable once its directory is fsynced:
    :meth:`sync` does that for every directory changed since its last call, once per
    directory however many files went in, and the pipeline calls it before it records
    a batch of stored images. The folder itself is created by the first write.

    Settings (defaults): ``NUKE_IMAGES_PUBLIC_URL`` (None: ``file://`` URIs),
    ``NUKE_IMAGES_FSYNC`` (True).
    """

    def __init__(self, basedir: str, public_base: str | None = None, fsync: bool = True):
        basedir = basedir.removeprefix("file://")
        self.basedir = Path(basedir).expanduser().resolve()
        self.public_base = public_base.rstrip("/") if public_base else None
        self.fsync = fsync
        self._made: set[Path] = set()
        self._dirty: set[Path] = set()  # directories with entries not fsynced yet
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, uri: str, settings: Any) -> LocalImageStore:
        return cls(
            uri,
            settings.get("NUKE_IMAGES_PUBLIC_URL") or None,
            settings.getbool("NUKE_IMAGES_FSYNC", defaults.NUKE_IMAGES_FSYNC),
        )

    def _target(self, path: str) -> Path:
        target = self.basedir.joinpath(*path.split("/")).resolve()
        if not target.is_relative_to(self.basedir):
            raise StoreError("bad_path", f"storage_path {path!r} leaves IMAGES_STORE")
        return target

    def persist(self, path: str, data: bytes, content_type: str) -> None:
        # the writer's paths are its own (<vehicle_id>/<sha1>.<ext>): not resolved,
        # which would cost a system call per path component on the hot path
        target = self.basedir.joinpath(*path.split("/"))
        parent = target.parent
        if parent not in self._made:
            if not self._made:
                # the store's own folder: made, not fsynced into its parent
                self.basedir.mkdir(parents=True, exist_ok=True)
            created = [p for p in (parent, *parent.parents) if not p.exists()]
            parent.mkdir(parents=True, exist_ok=True)
            with self._lock:
                self._made.add(parent)
                if self.fsync:
                    self._dirty.update(p.parent for p in created)  # their new entries
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                if self.fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        if self.fsync:
            with self._lock:
                self._dirty.add(parent)

    def sync(self) -> None:
        """Make the renames and new folders of every file persisted so far durable."""
        with self._lock:
            dirs, self._dirty = self._dirty, set()
        try:
            for directory in sorted(dirs, key=lambda d: len(d.parts), reverse=True):
                fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except BaseException:
            with self._lock:
                self._dirty |= dirs  # tried again by the next call
            raise

    def read(self, path: str) -> bytes:
        target = self._target(path)
        try:
            return target.read_bytes()
        except FileNotFoundError:
            raise StoreError("missing_file", f"{target} does not exist") from None
        except OSError as exc:
            raise StoreError("missing_file", f"cannot read {target}: {exc}") from None

    def delete(self, path: str) -> None:
        self._target(path).unlink(missing_ok=True)

    def probe(self) -> None:
        super().probe()
        # the probe's folder goes too, unless something else is in it
        with contextlib.suppress(OSError):
            self._target(PROBE_PREFIX).rmdir()

    def public_url(self, path: str) -> str:
        if self.public_base:
            return f"{self.public_base}/{path}"
        return self.basedir.joinpath(*path.split("/")).as_uri()
