"""Downloads, verifies and stores the images of claimed vehicles (phase two).

:class:`ImageBackfillPipeline` is Scrapy's :class:`~scrapy.pipelines.files.FilesPipeline`
with the parts that must not run on the reactor moved off it: decoding, normalising
and thumbnailing (:func:`nuke_crawl.imaging.process_image`), hashing and the storage
writes all run in threads, and the database work in the crawler's database thread.
Downloads still go through Scrapy's downloader (``engine.download_async``), so
AutoThrottle, per-domain concurrency, ``DOWNLOAD_TIMEOUT``, ``DOWNLOAD_MAXSIZE``, the
private-network guard and the backoff retry middleware all apply.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import os
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from scrapy.crawler import Crawler
from scrapy.exceptions import (
    CannotResolveHostError,
    DownloadCancelledError,
    DownloadConnectionRefusedError,
    DownloadTimeoutError,
    IgnoreRequest,
)
from scrapy.http import Request, Response
from scrapy.http.request import NO_CALLBACK
from scrapy.pipelines.files import FilesPipeline
from scrapy.pipelines.media import FileInfoOrError, MediaPipeline
from twisted.internet import error as twisted_error
from twisted.python.failure import Failure

from nuke_crawl.db import backfill
from nuke_crawl.dbglue import crawler_database
from nuke_crawl.imaging import DEFAULT_VARIANTS, ImageRejected, ProcessedImage
from nuke_crawl.pipelines._imageworker import process_in_worker
from nuke_crawl.storage.cloudflare import SCHEME as CLOUDFLARE_SCHEME
from nuke_crawl.storage.cloudflare import CloudflareImagesError, CloudflareImagesStore
from nuke_crawl.variants import (
    VariantSpecError,
    extension_for,
    process_kwargs,
    variants_from_settings,
)
from nuke_crawl.workers import WorkerError, WorkerPool

logger = logging.getLogger(__name__)

ACCEPT = "image/avif,image/webp,image/apng,image/*,*/*;q=0.8"

# -- storage ---------------------------------------------------------------------------


class ImageStore(Protocol):
    """Where image files go. A file is durable once ``persist`` returned and then
    ``sync`` returned (S3: ``persist`` alone; ``sync`` does nothing)."""

    def persist(self, path: str, data: bytes, content_type: str) -> None: ...

    def sync(self) -> None: ...

    def public_url(self, path: str) -> str: ...


class LocalImageStore:
    """A folder: each file written to a temporary name, fsynced, then renamed,
    so a killed process never leaves a partial file under the final name.

    A rename (and a new vehicle folder) is only durable once its directory is fsynced:
    :meth:`sync` does that for every directory changed since its last call, once per
    directory however many files went in, and the pipeline calls it before it records
    a batch of stored images."""

    def __init__(self, basedir: str, public_base: str | None = None, fsync: bool = True):
        if basedir.startswith("file://"):
            basedir = basedir[len("file://") :]
        self.basedir = Path(basedir).expanduser().resolve()
        self.basedir.mkdir(parents=True, exist_ok=True)
        self.public_base = public_base.rstrip("/") if public_base else None
        self.fsync = fsync
        self._made: set[Path] = set()
        self._dirty: set[Path] = set()  # directories with entries not fsynced yet
        self._lock = threading.Lock()

    def persist(self, path: str, data: bytes, content_type: str) -> None:
        target = self.basedir.joinpath(*path.split("/"))
        parent = target.parent
        if parent not in self._made:
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

    def public_url(self, path: str) -> str:
        if self.public_base:
            return f"{self.public_base}/{path}"
        return self.basedir.joinpath(*path.split("/")).as_uri()


class S3ImageStore:
    """``s3://bucket/prefix`` through boto3 (``AWS_ENDPOINT_URL`` for R2, MinIO, Supabase)."""

    def __init__(self, uri: str, settings: Any, public_base: str | None = None):
        import boto3  # noqa: PLC0415 - optional dependency, only for S3 stores
        from botocore.config import Config  # noqa: PLC0415

        parts = urlsplit(uri)
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.endpoint = settings.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")
        self.client = boto3.session.Session().client(
            "s3",
            aws_access_key_id=settings.get("AWS_ACCESS_KEY_ID") or None,
            aws_secret_access_key=settings.get("AWS_SECRET_ACCESS_KEY") or None,
            aws_session_token=settings.get("AWS_SESSION_TOKEN") or None,
            endpoint_url=self.endpoint or None,
            region_name=settings.get("AWS_REGION_NAME") or None,
            config=Config(max_pool_connections=32, retries={"max_attempts": 3}),
        )
        self.acl = settings.get("FILES_STORE_S3_ACL") or None
        self.public_base = public_base.rstrip("/") if public_base else None

    def key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def sync(self) -> None:
        """Nothing to do: an object is durable once ``put_object`` returned."""

    def persist(self, path: str, data: bytes, content_type: str) -> None:
        extra: dict[str, Any] = {"ContentType": content_type,
                                 "CacheControl": "public, max-age=31536000, immutable"}
        if self.acl:
            extra["ACL"] = self.acl
        self.client.put_object(Bucket=self.bucket, Key=self.key(path), Body=data, **extra)

    def public_url(self, path: str) -> str:
        if self.public_base:
            return f"{self.public_base}/{path}"
        if self.endpoint:
            return f"{self.endpoint.rstrip('/')}/{self.bucket}/{self.key(path)}"
        return f"https://{self.bucket}.s3.amazonaws.com/{self.key(path)}"


class UnusableStore:
    """Stands in for a store whose settings are wrong, so that the spider's start-up
    check reports ``problem`` in one line before any download (not a traceback)."""

    def __init__(self, problem: str) -> None:
        self.problem = problem

    def probe(self) -> None:
        raise CloudflareImagesError("storage_config", self.problem)

    def persist(self, path: str, data: bytes, content_type: str) -> None:
        raise CloudflareImagesError("storage_config", self.problem)

    def sync(self) -> None:
        """Nothing was written."""

    def public_url(self, path: str) -> str:
        raise CloudflareImagesError("storage_config", self.problem)


def make_store(uri: str, settings: Any) -> ImageStore:
    public = settings.get("NUKE_IMAGES_PUBLIC_URL") or None
    if uri.startswith("s3://"):
        return S3ImageStore(uri, settings, public)
    if uri.startswith(f"{CLOUDFLARE_SCHEME}://"):
        return CloudflareImagesStore.from_settings(uri, settings)
    if "://" in uri and not uri.startswith("file://"):
        raise ValueError(f"IMAGES_STORE {uri!r}: expected a folder, s3://bucket/prefix or "
                         f"{CLOUDFLARE_SCHEME}://<account_id>")
    return LocalImageStore(uri, public, settings.getbool("NUKE_IMAGES_FSYNC", True))


# -- the item --------------------------------------------------------------------------


@dataclass
class VehicleImagesItem:
    """A claimed vehicle whose images the pipeline downloads."""

    work: backfill.VehicleWork
    owner: str
    results: list[dict[str, Any]] = field(default_factory=list, repr=False)
    outcome: backfill.VehicleOutcome | None = None
    requests: list[Request] | None = field(default=None, repr=False)


class ImageFailed(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class _PerVehicleFingerprinter:
    """Media results are cached per image row, not per URL: the same URL on two
    vehicles is two stored files, one in each vehicle's folder."""

    def fingerprint(self, request: Request) -> bytes:
        key = f"{request.meta.get('nuke_image_id', '')} {request.url}"
        return hashlib.sha1(key.encode("utf-8")).digest()  # noqa: S324 - a cache key


@dataclass
class _VehicleState:
    hashes: dict[str, asyncio.Future[backfill.StoredImage]] = field(default_factory=dict)


def failure_reason(exc: BaseException | None) -> tuple[str, str]:
    """A download failure's ``(reason, detail)``."""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, ImageFailed):
        return exc.reason, exc.detail
    if isinstance(exc, IgnoreRequest):
        return "refused", detail
    if isinstance(exc, (DownloadTimeoutError, twisted_error.TimeoutError, TimeoutError)):
        return "timeout", detail
    if isinstance(exc, DownloadCancelledError) or "maxsize" in detail.lower():
        return "too_large", detail
    if isinstance(exc, (CannotResolveHostError, twisted_error.DNSLookupError)):
        return "dns", detail
    if isinstance(exc, (DownloadConnectionRefusedError, twisted_error.ConnectError,
                        ConnectionError, twisted_error.ConnectionLost)):
        return "connection", detail
    if isinstance(exc, ValueError) and "url" in detail.lower():
        return "bad_url", detail
    return "connection", f"{type(exc).__name__}: {detail}"


class ImageBackfillPipeline(FilesPipeline):
    """Downloads a :class:`VehicleImagesItem`'s images, stores them, records them.

    Per image: the body is verified and normalised by
    :func:`~nuke_crawl.imaging.process_image` in a thread; the file and its variants
    go to ``<vehicle_id>/<sha1(source URL)>.<ext>`` (``_<variant>`` before the
    extension for variants), unless the vehicle already has the same content
    (sha256); then the row is recorded in its own transaction. Per vehicle: failures
    are recorded and the vehicle is settled (:func:`nuke_crawl.db.backfill.complete_vehicle`).

    Settings (defaults):

    - ``IMAGES_STORE`` (``"images"``): folder or ``s3://bucket/prefix``;
      ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``... for S3; or
      ``cloudflare-images://<account_id>`` (``CF_IMAGES_*``, see
      :mod:`nuke_crawl.storage.cloudflare`): each image is uploaded with its metadata,
      ``storage_path`` is its Cloudflare id, ``image_url`` the delivery URL of
      ``CF_IMAGES_VARIANT``, ``variants`` the account's variant URLs; no variant is made
      here, and uploads run in ``CF_IMAGES_CONCURRENCY`` threads of their own.
    - ``NUKE_IMAGES_PUBLIC_URL`` (None): base URL of the public ``image_url``
      (None: ``file://`` URIs for a folder, the endpoint or bucket URL for S3).
    - ``IMAGES_MIN_WIDTH`` / ``IMAGES_MIN_HEIGHT`` (0): smaller images fail ``too_small``.
    - ``NUKE_IMAGE_MAX_PIXELS`` (50,000,000): the decompression-bomb limit.
    - ``NUKE_IMAGE_VARIANTS`` (``{"thumb": (320, 240)}``, or
      ``"thumb:320x240:webp,medium:1024:webp"``: see :mod:`nuke_crawl.variants`; a larger
      box costs about four times the CPU per image, AVIF far more).
    - ``NUKE_IMAGE_MAX_ATTEMPTS`` (5), ``NUKE_IMAGE_RETRY_BACKOFF`` (3600 s): cross-run retries.
    - ``NUKE_IMAGES_FSYNC`` (True): fsync local files and their folders before recording them.
    - ``NUKE_IMAGE_PROCESSES`` (CPU count): worker processes decoding images; 0 decodes
      in threads of the crawl's process instead.
    - ``NUKE_IMAGE_RECORD_WAIT`` (0.05 s): stored images arriving this close together
      share one database commit.
    - ``MEDIA_ALLOW_REDIRECTS`` (True for the spider).

    Stats: ``nuke/images/downloaded``, ``nuke/images/stored``, ``nuke/images/duplicates``,
    ``nuke/images/failed``, ``nuke/images/failed/<reason>``, ``nuke/images/bytes``,
    ``nuke/vehicles/completed``, ``nuke/vehicles/waiting``, ``nuke/images/cache_peak``
    (the most results Scrapy's per-run media cache held: a settled vehicle's results are
    dropped from it, so this stays near the images in flight) and ``nuke/images/cache_left``.
    """

    MEDIA_NAME = "image"
    LOG_FAILED_RESULTS = False

    def __init__(self, store_uri: str, *, crawler: Crawler) -> None:
        self.crawler = crawler
        super().__init__(store_uri, crawler=crawler)
        self._fingerprinter = _PerVehicleFingerprinter()
        settings = crawler.settings
        self.min_width = settings.getint("IMAGES_MIN_WIDTH", 0)
        self.min_height = settings.getint("IMAGES_MIN_HEIGHT", 0)
        self.max_pixels = settings.getint("NUKE_IMAGE_MAX_PIXELS", 50_000_000)
        kwargs: dict[str, Any] = {"variants": dict(DEFAULT_VARIANTS), "variant_formats": {}}
        if settings.get("NUKE_IMAGE_VARIANTS") is not None:
            try:
                kwargs = process_kwargs(variants_from_settings(settings))
            except VariantSpecError as exc:  # reported by the spider's start-up check
                self._problems.append(str(exc))
        self.variants: dict[str, tuple[int, int]] = kwargs["variants"]
        self.variant_formats: dict[str, tuple[str, int]] = kwargs["variant_formats"]
        if isinstance(self.image_store, CloudflareImagesStore):
            # Cloudflare makes the variants (named on the account): nothing else is uploaded
            self.variants, self.variant_formats = {}, {}
        self._store_executor: concurrent.futures.ThreadPoolExecutor | None = None
        if isinstance(self.image_store, CloudflareImagesStore):
            # Uploads wait for the API's rate cap: in threads of their own, not the
            # default executor's few, which the pipeline's other blocking work shares.
            self._store_executor = concurrent.futures.ThreadPoolExecutor(
                self.image_store.config.concurrency, thread_name_prefix="nuke-cf-upload")
        self.max_attempts = settings.getint("NUKE_IMAGE_MAX_ATTEMPTS", 5)
        self.retry_backoff = settings.getfloat("NUKE_IMAGE_RETRY_BACKOFF", 3600.0)
        workers = settings.getint("NUKE_IMAGE_PROCESSES", os.cpu_count() or 1)
        # Decoding in worker processes, not threads: in threads, Pillow's work and the
        # reactor shared one GIL and a run used about one core (measured: 80 vs
        # several hundred images/s on 2 cores). The workers are nuke_crawl.workers'
        # (bodies written to their pipes by the event loop): a ProcessPoolExecutor's
        # feeder and manager threads cost the reactor thread about 10% of its time.
        self._pool: WorkerPool | None = WorkerPool(workers) if workers > 0 else None
        self.record_wait = settings.getfloat("NUKE_IMAGE_RECORD_WAIT", 0.05)
        self._to_record: list[tuple[backfill.StoredImage, asyncio.Future[None]]] = []
        self._record_timer: asyncio.TimerHandle | None = None
        self.stats = crawler.stats
        self._vehicles: dict[str, _VehicleState] = {}
        # this run's failures: counts per reason and a few example URLs (bounded)
        self.failure_counts: Counter[str] = Counter()
        self.failure_examples: dict[str, list[str]] = {}

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ImageBackfillPipeline:
        return cls(str(crawler.settings.get("IMAGES_STORE") or "images"), crawler=crawler)

    def _get_store(self, uri: str) -> Any:
        self._problems: list[str] = []
        try:
            self.image_store: Any = make_store(uri, self.crawler.settings)
        except CloudflareImagesError as exc:  # reported by the spider's start-up check
            self._problems.append(exc.detail)
            self.image_store = UnusableStore(exc.detail)
        return self.image_store

    def startup_problem(self) -> str | None:
        """The start-up check (blocking: call from a thread): a line saying why this run
        cannot store images (a bad setting, a store that refuses the credentials), or
        None. Stores without ``probe`` pass."""
        if self._problems:
            return self._problems[0]
        probe = getattr(self.image_store, "probe", None)
        if probe is None:
            return None
        try:
            probe()
        except CloudflareImagesError as exc:
            return exc.detail
        return None

    # -- requests -----------------------------------------------------------------

    def get_media_requests(self, item: Any, info: MediaPipeline.SpiderInfo) -> list[Request]:
        if not isinstance(item, VehicleImagesItem):
            return []
        if item.requests is not None:
            return item.requests
        work = item.work
        headers = {"Accept": ACCEPT}
        if work.listing_url:
            headers["Referer"] = work.listing_url
        requests = []
        for image in work.images:
            try:
                request = Request(
                    image.url,
                    callback=NO_CALLBACK,
                    headers=headers,
                    dont_filter=True,
                    meta={"allow_offsite": True, "nuke_vehicle_id": work.vehicle_id,
                          "nuke_image_id": image.image_id, "nuke_image": image},
                )
            except ValueError:
                request = Request("about:blank", callback=NO_CALLBACK,
                                  meta={"nuke_vehicle_id": work.vehicle_id, "nuke_image": image,
                                        "nuke_image_id": image.image_id, "nuke_bad_url": True})
            requests.append(request)
        item.requests = requests
        return requests

    def media_to_download(
        self, request: Request, info: MediaPipeline.SpiderInfo, *, item: Any = None
    ) -> Any:
        # The database says what is stored; paths are deterministic, so a file
        # left by a killed run is overwritten, never duplicated.
        if request.meta.get("nuke_bad_url"):
            image = request.meta["nuke_image"]
            return {"url": image.url, "path": "", "checksum": None, "status": "failed",
                    "reason": "bad_url", "detail": "not a downloadable http(s) URL"}
        return None

    def media_failed(
        self, failure: Failure, request: Request, info: MediaPipeline.SpiderInfo
    ) -> Any:
        reason, detail = failure_reason(failure.value)
        request.meta["nuke_failure"] = (reason, detail)
        return None  # the reason travels in the request's meta; no traceback

    async def media_downloaded(
        self, response: Response, request: Request, info: MediaPipeline.SpiderInfo, *,
        item: Any = None,
    ) -> Any:
        try:
            return await self._store_response(response, request, item)
        except ImageFailed as exc:
            return {"url": request.url, "path": "", "checksum": None, "status": "failed",
                    "reason": exc.reason, "detail": exc.detail}

    async def _store_response(
        self, response: Response, request: Request, item: VehicleImagesItem
    ) -> dict[str, Any]:
        image: backfill.ImageWork = request.meta["nuke_image"]
        vehicle_id = item.work.vehicle_id
        if response.status != 200:
            raise ImageFailed(f"http_{response.status}", f"HTTP {response.status}")
        body = response.body
        self._inc("nuke/images/downloaded")
        self._inc("nuke/images/bytes", len(body))
        if not body:
            raise ImageFailed("empty", "the body has no bytes")
        ctype = response.headers.get("Content-Type")
        content_type = ctype.decode("latin-1") if ctype else None
        options = {"content_type": content_type, "max_pixels": self.max_pixels,
                   "min_width": self.min_width, "min_height": self.min_height,
                   "variants": self.variants, "variant_formats": self.variant_formats}
        try:
            if self._pool is not None:
                processed = await self._pool.call(process_in_worker, body, options)
            else:
                processed = await asyncio.to_thread(process_in_worker, body, options)
        except WorkerError as exc:
            raise ImageFailed("storage", f"the image worker process died ({exc})") from None
        except ImageRejected as exc:
            raise ImageFailed(exc.reason, exc.detail) from None
        if not processed.reencoded:
            processed.data = body
        state = self._vehicles.setdefault(vehicle_id, _VehicleState())
        known = item.work.known_hashes.get(processed.sha256)
        pending = state.hashes.get(processed.sha256)
        if known is not None or pending is not None:
            self._inc("nuke/images/duplicates")
            if pending is not None:
                first = await pending
                path, public, variants = first.storage_path, first.public_url, first.variants
            else:
                assert known is not None
                path, public = known["storage_path"], known["image_url"]
                variants = {}
        else:
            future: asyncio.Future[backfill.StoredImage] = (
                asyncio.get_running_loop().create_future()
            )
            state.hashes[processed.sha256] = future
            try:
                path = self.image_path(vehicle_id, image.url, processed.extension)
                metadata = {"vehicle_id": vehicle_id,
                            "organization_id": item.work.organization_id,
                            "source_url": image.url, "sha256": processed.sha256}
                if self._store_executor is not None:
                    variants = await asyncio.get_running_loop().run_in_executor(
                        self._store_executor, self._persist, path, processed, metadata)
                else:
                    variants = await asyncio.to_thread(self._persist, path, processed, metadata)
            except Exception as exc:  # noqa: BLE001 - a storage error fails this image only
                del state.hashes[processed.sha256]
                if isinstance(exc, CloudflareImagesError):  # storage_rejected keeps its code
                    failed = ImageFailed(exc.reason, exc.detail)
                else:
                    failed = ImageFailed("storage", f"{type(exc).__name__}: {exc}")
                future.set_exception(failed)  # a same-content image waiting on it fails too
                future.exception()  # retrieved: no "never retrieved" warning without waiters
                raise failed from None
            public = self.image_store.public_url(path)
        stored = backfill.StoredImage(
            image_id=image.image_id, vehicle_id=vehicle_id, storage_path=path,
            public_url=public, file_hash=processed.sha256, file_size=len(processed.data),
            mime_type=processed.mime_type, width=processed.width, height=processed.height,
            variants=variants,
        )
        pending_future = state.hashes.get(processed.sha256)
        if pending_future is not None and not pending_future.done():
            pending_future.set_result(stored)
        await self._record(stored)
        self._inc("nuke/images/stored")
        return {"url": request.url, "path": path, "checksum": processed.sha256,
                "status": "stored"}

    async def _record(self, stored: backfill.StoredImage) -> None:
        """Record a stored image; returns once committed. Images that arrive within
        ``NUKE_IMAGE_RECORD_WAIT`` (0.05 s) of each other share one commit: one
        commit per image made the database thread the bottleneck of a run."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._to_record.append((stored, future))
        if len(self._to_record) >= 200:
            self._flush_records()
        elif self._record_timer is None:
            self._record_timer = loop.call_later(self.record_wait, self._flush_records)
        await future

    def _flush_records(self) -> None:
        if self._record_timer is not None:
            self._record_timer.cancel()
            self._record_timer = None
        batch, self._to_record = self._to_record, []
        if batch:
            asyncio.ensure_future(self._write_records(batch))

    async def _write_records(
        self, batch: list[tuple[backfill.StoredImage, asyncio.Future[None]]]
    ) -> None:
        adb = crawler_database(self.crawler)
        try:
            # the files' directory entries become durable before any row says "stored"
            await asyncio.to_thread(self.image_store.sync)
        except Exception as exc:  # noqa: BLE001 - the batch fails as a storage error
            for _, future in batch:
                future.set_exception(ImageFailed("storage", f"{type(exc).__name__}: {exc}"))
            return
        try:
            await adb.run(backfill.record_stored, [stored for stored, _ in batch])
        except Exception:  # noqa: BLE001 - retried one by one so one bad row fails alone
            for stored, future in batch:
                try:
                    await adb.run(backfill.record_stored, [stored])
                except Exception as exc:  # noqa: BLE001
                    future.set_exception(ImageFailed("database", f"{type(exc).__name__}: {exc}"))
                else:
                    future.set_result(None)
            return
        for _, future in batch:
            future.set_result(None)

    @staticmethod
    def image_path(vehicle_id: str, url: str, extension: str) -> str:
        """``<vehicle_id>/<sha1(url)>.<ext>``: deterministic per vehicle and source URL."""
        digest = hashlib.sha1(url.encode("utf-8")).hexdigest()  # noqa: S324 - a name
        ext = extension.lstrip(".") or "jpg"
        return f"{vehicle_id}/{digest}.{ext}"

    def _persist(
        self, path: str, processed: ProcessedImage, metadata: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Write the variants, then the image (in a thread); return ``variants``."""
        variants: dict[str, Any] = {}
        store = self.image_store
        if isinstance(store, CloudflareImagesStore):
            result = store.upload(path, processed.data, processed.mime_type, metadata=metadata)
            return {url.rstrip("/").rsplit("/", 1)[-1]: {"url": url} for url in result.variants}
        stem = path.rsplit(".", 1)[0]
        for variant in processed.variants:
            ext = extension_for(variant.mime_type)
            vpath = f"{stem}_{variant.name}.{ext}"
            self.image_store.persist(vpath, variant.data, variant.mime_type)
            variants[variant.name] = {
                "path": vpath, "url": self.image_store.public_url(vpath),
                "width": variant.width, "height": variant.height,
                "mime_type": variant.mime_type,
            }
        self.image_store.persist(path, processed.data, processed.mime_type)
        return variants

    # -- per vehicle --------------------------------------------------------------

    def item_completed(
        self, results: list[FileInfoOrError], item: Any, info: MediaPipeline.SpiderInfo
    ) -> Any:
        if isinstance(item, VehicleImagesItem):
            item.results = [
                dict(value) if ok and isinstance(value, dict) else {} for ok, value in results
            ]
        return item

    async def process_item(self, item: Any) -> Any:  # type: ignore[override]
        if not isinstance(item, VehicleImagesItem):
            return item
        # MediaPipeline asks get_media_requests() too and gets these same objects
        # back, so that the failures recorded in their meta can be read here.
        requests = self.get_media_requests(item, self.spiderinfo)
        await super().process_item(item)
        failed: list[backfill.FailedImage] = []
        for request, result in zip(requests, item.results, strict=True):
            image: backfill.ImageWork = request.meta["nuke_image"]
            if result.get("status") == "stored":
                continue
            if result.get("status") == "failed":
                reason, detail = result["reason"], result["detail"]
            else:
                reason, detail = request.meta.get("nuke_failure") or ("connection", "no response")
            failed.append(backfill.FailedImage(image.image_id, reason, detail))
            self.failure_counts[reason] += 1
            examples = self.failure_examples.setdefault(reason, [])
            if len(examples) < 3:
                examples.append(image.url)
            self._inc("nuke/images/failed")
            self._inc(f"nuke/images/failed/{reason}")
            logger.debug("Image %s failed: %s (%s)", image.url, reason, detail)
        adb = crawler_database(self.crawler)
        if failed:
            await adb.run(backfill.record_failed, failed, retry_backoff=self.retry_backoff)
        item.outcome = await adb.run(
            backfill.complete_vehicle, item.work.vehicle_id, item.owner, item.work.selected_ids,
            max_attempts=self.max_attempts,
        )
        self._inc("nuke/vehicles/completed" if item.outcome.complete else "nuke/vehicles/waiting")
        # Keep the per-run cache bounded (scrapy #939): this vehicle's entries go.
        downloaded = self.spiderinfo.downloaded
        assert self.stats is not None
        self.stats.max_value("nuke/images/cache_peak", len(downloaded))
        fingerprint = self._fingerprinter.fingerprint
        for request in requests:
            downloaded.pop(fingerprint(request), None)
        self._vehicles.pop(item.work.vehicle_id, None)
        return item

    def failure_summary(self) -> dict[str, Any]:
        """``{reason: {"count": n, "examples": [url, ...]}}`` for this run, most first."""
        return {reason: {"count": count, "examples": self.failure_examples[reason]}
                for reason, count in self.failure_counts.most_common()}

    async def close_spider(self) -> None:
        info = getattr(self, "spiderinfo", None)
        if self.stats is not None and info is not None:
            # results still cached when the run ends (0 unless it was stopped mid-vehicle)
            self.stats.set_value("nuke/images/cache_left", len(info.downloaded))
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close(timeout=10)
        if self._store_executor is not None:
            self._store_executor.shutdown(wait=False)
        if isinstance(self.image_store, CloudflareImagesStore) and self.stats is not None:
            for key, value in self.image_store.counts.items():
                self.stats.set_value(f"nuke/cloudflare/{key}", value)

    def _inc(self, key: str, count: int = 1) -> None:
        assert self.stats is not None
        self.stats.inc_value(key, count)


__all__ = [
    "ImageBackfillPipeline",
    "ImageFailed",
    "LocalImageStore",
    "S3ImageStore",
    "VehicleImagesItem",
    "failure_reason",
    "make_store",
]
