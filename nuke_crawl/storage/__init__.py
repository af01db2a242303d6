"""Where image files live: one storage layer for both image phases.

An :class:`ImageStore` writes (``persist``, then ``sync`` before the database says
"stored"), reads (``read``: the analysis phase reads stored copies back) and deletes
files under relative paths such as ``<vehicle_id>/<sha1>.jpg``. Stores are chosen by
the URI scheme of ``IMAGES_STORE``, like Scrapy's ``FilesPipeline.STORE_SCHEMES``:
:data:`STORE_SCHEMES` maps a scheme to a class path, and :func:`build_store` is the
one place a store is built from settings. A new backend is one module with a class
having ``from_settings(uri, settings)`` and one line in :data:`STORE_SCHEMES`.

Before a run writes anything, :func:`store_problem` builds the store and calls its
:meth:`ImageStore.probe` (write, read back, delete a small object; Cloudflare Images
overrides it with a read-only check): a store that cannot be used is one clear line,
not a run of failed images.

Settings (defaults): ``IMAGES_STORE`` (``"images"``: a folder, ``file://...``,
``s3://bucket/prefix`` or ``cloudflare-images://<account_id>``),
``NUKE_IMAGES_PUBLIC_URL`` (None) and each store's own
(:class:`~nuke_crawl.storage.local.LocalImageStore`,
:class:`~nuke_crawl.storage.s3.S3ImageStore`,
:class:`~nuke_crawl.storage.cloudflare.CloudflareImagesStore`).
"""

from __future__ import annotations

import importlib
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

from nuke_crawl import settings as defaults
from nuke_crawl.exceptions import ReasonError

STORE_SCHEMES: dict[str, str] = {
    "": "nuke_crawl.storage.local.LocalImageStore",
    "file": "nuke_crawl.storage.local.LocalImageStore",
    "s3": "nuke_crawl.storage.s3.S3ImageStore",
    "cloudflare-images": "nuke_crawl.storage.cloudflare.CloudflareImagesStore",
}
"""URI scheme of ``IMAGES_STORE`` -> the store class (``""``: a plain folder)."""

DEFAULT_STORE = defaults.IMAGES_STORE
PROBE_PREFIX = ".nuke-probe"


class StoreError(ReasonError):
    """A stored file could not be read: ``missing_file`` (absent or unreadable) or
    ``bad_path`` (a path that leaves the store)."""


class ImageStore(ABC):
    """A place for image files, addressed by relative ``/``-separated paths.

    A file is durable once :meth:`persist` (or :meth:`write`) returned and then
    :meth:`sync` returned. All methods block: call them from a thread.
    """

    local_variants: ClassVar[bool] = True
    """False for a store that makes its own variants (the pipeline then makes none)."""

    threads: int | None = None
    """Writes this store wants in flight in threads of its own (None: the default
    executor's threads)."""

    @classmethod
    @abstractmethod
    def from_settings(cls, uri: str, settings: Any) -> ImageStore:
        """The store for ``uri`` (``IMAGES_STORE``) configured from ``settings``."""

    @abstractmethod
    def persist(self, path: str, data: bytes, content_type: str) -> None:
        """Write ``data`` under ``path``, replacing any file there."""

    @abstractmethod
    def read(self, path: str) -> bytes:
        """The bytes under ``path``; raises :class:`StoreError` when they cannot be had."""

    @abstractmethod
    def delete(self, path: str) -> None:
        """Remove ``path`` (nothing happens when it is absent)."""

    @abstractmethod
    def public_url(self, path: str) -> str:
        """The URL recorded for the file under ``path``."""

    def write(
        self,
        path: str,
        data: bytes,
        content_type: str,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Store an original image with its ``metadata`` (vehicle id, organization id,
        source URL, sha256); return the variants the store made itself
        (``{name: {"url": ...}}``), or None. Default: :meth:`persist`, metadata unkept."""
        self.persist(path, data, content_type)
        return None

    def run_stats(self) -> dict[str, int]:
        """Counters for the run's stats, under ``nuke/`` (default: none)."""
        return {}

    def sync(self) -> None:  # noqa: B027 - optional hook, for stores that buffer writes
        """Make every file persisted so far durable (default: nothing to do)."""

    def probe(self) -> None:
        """Write, read back and delete a small object: raises when the store cannot
        be written, or gives back something else than was written."""
        path = f"{PROBE_PREFIX}/{uuid.uuid4().hex}.txt"
        data = b"nuke_crawl storage probe\n"
        self.persist(path, data, "text/plain")
        try:
            got = self.read(path)
            if got != data:
                raise StoreError("probe", f"read back {len(got)} bytes, wrote {len(data)}")
        finally:
            self.delete(path)


def store_class(uri: str) -> type[ImageStore]:
    """The class registered for ``uri``'s scheme; ``ValueError`` for an unknown one."""
    scheme = urlsplit(uri).scheme if "://" in uri else ""
    path = STORE_SCHEMES.get(scheme.lower())
    if path is None:
        known = ", ".join(f"{s}://" for s in STORE_SCHEMES if s)
        raise ValueError(f"IMAGES_STORE {uri!r}: expected a folder or one of {known}")
    module, _, name = path.rpartition(".")  # no Scrapy here: this room runs anywhere
    cls: type[ImageStore] = getattr(importlib.import_module(module), name)
    return cls


def build_store(settings: Any, uri: str | None = None) -> ImageStore:
    """The image store of ``IMAGES_STORE`` (or ``uri``): the one place stores are built."""
    uri = str(uri or settings.get("IMAGES_STORE") or DEFAULT_STORE)
    return store_class(uri).from_settings(uri, settings)


def describe_failure(uri: str, exc: BaseException) -> str:
    """One line saying why the store of ``uri`` cannot be used (never a traceback)."""
    if isinstance(exc, ReasonError) and exc.reason == "storage_config":
        return exc.detail  # the store's own words (Cloudflare: the setting to check)
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"IMAGES_STORE {uri!r} cannot be used: {type(exc).__name__}: {text}"


def store_problem(store: ImageStore, uri: str) -> str | None:
    """Probe ``store`` (blocking: call from a thread): None when it works, else one line
    for "Cannot start: ..."."""
    try:
        store.probe()
    except Exception as exc:  # noqa: BLE001 - any failure is reported in one line
        return describe_failure(uri, exc)
    return None


__all__ = [
    "STORE_SCHEMES",
    "ImageStore",
    "StoreError",
    "build_store",
    "describe_failure",
    "store_class",
    "store_problem",
]
