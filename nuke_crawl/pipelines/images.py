"""Downloads, verifies and stores the images of claimed vehicles (phase two).

:class:`ImageBackfillPipeline` is a Scrapy :class:`~scrapy.pipelines.media.MediaPipeline`
(its public hooks only) with the parts that must not run on the reactor moved off it:
decoding, normalising and thumbnailing (:func:`nuke_crawl.imaging.process_image`) in
worker processes, the storage writes (:mod:`nuke_crawl.storage`) in threads, and the
database work in the crawler's database thread. Downloads still go through Scrapy's
downloader (``engine.download_async``), so AutoThrottle, per-domain concurrency,
``DOWNLOAD_TIMEOUT``, ``DOWNLOAD_MAXSIZE``, the private-network guard and the backoff
retry middleware all apply.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from scrapy.crawler import Crawler
from scrapy.http import Request, Response
from scrapy.http.request import NO_CALLBACK
from scrapy.pipelines.media import FileInfoOrError, MediaPipeline
from scrapy.utils.request import RequestFingerprinter
from twisted.python.failure import Failure

from nuke_crawl import settings as defaults
from nuke_crawl.db import backfill
from nuke_crawl.exceptions import ReasonError
from nuke_crawl.extensions.database import crawler_database
from nuke_crawl.extensions.workers import worker_pool
from nuke_crawl.imaging import ImageRejected, ProcessedImage
from nuke_crawl.items import VehicleImagesItem
from nuke_crawl.pipelines._imageworker import process_in_worker
from nuke_crawl.signals import store_failed
from nuke_crawl.storage import ImageStore, build_store, describe_failure, store_problem
from nuke_crawl.utils.batching import TimedBatcher
from nuke_crawl.utils.downloads import download_failure_reason
from nuke_crawl.utils.stopping import StopFlag, Stopped
from nuke_crawl.variants import (
    VariantSpecError,
    extension_for,
    process_kwargs,
    variants_from_settings,
)
from nuke_crawl.workers.pool import WorkerError, WorkerPool

logger = logging.getLogger(__name__)

ACCEPT = "image/avif,image/webp,image/apng,image/*,*/*;q=0.8"
RECORD_BATCH = 200
"""Stored images recorded in one commit at most."""


class ImageFailed(ReasonError):
    """One image could not be stored: ``reason`` is recorded as its ``download_error``."""


class StoreFailed(ReasonError):
    """The store stopped working mid-run (reason ``store_failed``): not the image's
    fault, so nothing is recorded against the image and the run stops."""

    def __init__(self, detail: str) -> None:
        super().__init__("store_failed", detail)


STORE_FAILED = "store_failed"
"""The ``status`` of an image result whose store failed (see :class:`StoreFailed`)."""


class PerImageFingerprinter:
    """Request fingerprints for the backfill spider (``REQUEST_FINGERPRINTER_CLASS``).

    Media results are cached per fingerprint (``MediaPipeline``), and must be cached
    per image row, not per URL: the same URL on two vehicles is two stored files, one
    in each vehicle's folder. Requests without an image row get Scrapy's fingerprint.
    """

    def __init__(self, crawler: Crawler | None = None) -> None:
        self._default = RequestFingerprinter(crawler)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> PerImageFingerprinter:
        return cls(crawler)

    def fingerprint(self, request: Request) -> bytes:
        image_id = request.meta.get("nuke_image_id")
        if image_id is None:
            return self._default.fingerprint(request)
        key = f"{image_id} {request.url}"
        return hashlib.sha1(key.encode("utf-8")).digest()


@dataclass
class _VehicleState:
    hashes: dict[str, asyncio.Future[backfill.StoredImage]] = field(default_factory=dict)


_RecordBatch = list[tuple[backfill.StoredImage, "asyncio.Future[None]"]]


class ImageBackfillPipeline(MediaPipeline):
    """Downloads a :class:`VehicleImagesItem`'s images, stores them, records them.

    Per image: the body is verified and normalised by
    :func:`~nuke_crawl.imaging.process_image` in a worker process; the file and its
    variants go to ``<vehicle_id>/<sha1(source URL)>.<ext>`` (``_<variant>`` before the
    extension for variants), unless the vehicle already has the same content
    (sha256); then the row is recorded in its own transaction. Per vehicle: failures
    are recorded and the vehicle is settled (:func:`nuke_crawl.db.backfill.complete_vehicle`).

    Settings (defaults):

    - ``IMAGES_STORE`` (``"images"``) and the store's settings: see :mod:`nuke_crawl.storage`.
      The spider calls :meth:`check_store` before its first claim (the store's
      ``probe``). A store whose ``local_variants`` is False (Cloudflare Images) makes
      its own variants: none is made here, and ``variants`` records the store's. Each
      original is written with ``metadata`` (vehicle id, organization id, source URL,
      sha256). A store failure mid-run (anything but a permanent reason such as
      ``storage_rejected``) stops the run; its images are not marked failed and stay
      claimable.
    - ``REQUEST_FINGERPRINTER_CLASS``: must be :class:`PerImageFingerprinter` (the
      ``image_backfill`` spider sets it), else the pipeline refuses to start.
    - ``IMAGES_MIN_WIDTH`` / ``IMAGES_MIN_HEIGHT`` (0): smaller images fail ``too_small``.
    - ``NUKE_IMAGE_MAX_PIXELS`` (50,000,000): the decompression-bomb limit.
    - ``NUKE_IMAGE_VARIANTS`` (``{"thumb": (320, 240)}``, or
      ``"thumb:320x240:webp,medium:1024:webp"``: see :mod:`nuke_crawl.variants`; a larger
      box costs about four times the CPU per image, AVIF far more).
    - ``NUKE_IMAGE_MAX_ATTEMPTS`` (5), ``NUKE_IMAGE_RETRY_BACKOFF`` (3600 s): cross-run retries.
    - ``NUKE_IMAGES_FSYNC`` (True): fsync local files and their folders before recording them.
    - ``NUKE_IMAGE_PROCESSES`` (None: the CPU count): worker processes decoding images
      (the crawl's pool, :class:`~nuke_crawl.extensions.workers.WorkerPoolExtension`, as
      the spider configures it); 0 decodes in threads of the crawl's process instead.
    - ``NUKE_IMAGE_RECORD_WAIT`` (0.05 s): stored images arriving this close together
      share one database commit.
    - ``MEDIA_ALLOW_REDIRECTS`` (True for the spider).

    Stats: ``nuke/images/downloaded``, ``nuke/images/stored``, ``nuke/images/duplicates``,
    ``nuke/images/failed``, ``nuke/images/failed/<reason>``, ``nuke/images/bytes``,
    ``nuke/vehicles/completed``, ``nuke/vehicles/waiting``, ``nuke/images/cache_peak``
    (the most results Scrapy's per-run media cache held: a settled vehicle's results are
    dropped from it, so this stays near the images in flight) and ``nuke/images/cache_left``.
    """

    LOG_FAILED_RESULTS = False

    def __init__(self, crawler: Crawler) -> None:
        super().__init__(crawler=crawler)
        settings = crawler.settings
        if not isinstance(crawler.request_fingerprinter, PerImageFingerprinter):
            raise TypeError(
                "ImageBackfillPipeline needs REQUEST_FINGERPRINTER_CLASS = "
                f"'{__name__}.PerImageFingerprinter' (media results are cached per image row)"
            )
        # Settings problems are reported by check_store() in one line, not a traceback.
        self.problems: list[str] = []
        self.store_uri = str(settings.get("IMAGES_STORE") or defaults.IMAGES_STORE)
        self._store: ImageStore | None = None
        try:
            self._store = build_store(settings)
        except Exception as exc:  # noqa: BLE001 - a store that cannot be built
            self.problems.append(describe_failure(self.store_uri, exc))
        self.min_width = settings.getint("IMAGES_MIN_WIDTH", defaults.IMAGES_MIN_WIDTH)
        self.min_height = settings.getint("IMAGES_MIN_HEIGHT", defaults.IMAGES_MIN_HEIGHT)
        self.max_pixels = settings.getint("NUKE_IMAGE_MAX_PIXELS", defaults.NUKE_IMAGE_MAX_PIXELS)
        kwargs: dict[str, Any] = {
            "variants": dict(defaults.NUKE_IMAGE_VARIANTS),
            "variant_formats": {},
        }
        if settings.get("NUKE_IMAGE_VARIANTS") is not None:
            try:
                kwargs = process_kwargs(variants_from_settings(settings))
            except VariantSpecError as exc:
                self.problems.append(str(exc))
        self.variants: dict[str, tuple[int, int]] = kwargs["variants"]
        self.variant_formats: dict[str, tuple[str, int]] = kwargs["variant_formats"]
        self._store_executor: concurrent.futures.ThreadPoolExecutor | None = None
        if self._store is not None and not self._store.local_variants:
            self.variants, self.variant_formats = {}, {}  # the store makes its own
        if self._store is not None and self._store.threads:
            # e.g. uploads waiting for an API's rate cap: in threads of their own, not
            # the default executor's few, which the pipeline's other blocking work shares
            self._store_executor = concurrent.futures.ThreadPoolExecutor(
                self._store.threads, thread_name_prefix="nuke-store"
            )
        self.store_failure: str | None = None  # set when the store fails mid-run
        self.max_attempts = settings.getint(
            "NUKE_IMAGE_MAX_ATTEMPTS", defaults.NUKE_IMAGE_MAX_ATTEMPTS
        )
        self.retry_backoff = settings.getfloat(
            "NUKE_IMAGE_RETRY_BACKOFF", defaults.NUKE_IMAGE_RETRY_BACKOFF
        )
        # Decoding in worker processes, not threads: in threads, Pillow's work and the
        # reactor shared one GIL and a run used about one core (measured: 80 vs
        # several hundred images/s on 2 cores). The workers are the crawl's pool
        # (WorkerPoolExtension; bodies written to their pipes by the event loop): a
        # ProcessPoolExecutor's feeder and manager threads cost the reactor thread
        # about 10% of its time. Found at the first image (the engine exists then).
        self._pool: WorkerPool | None = None
        self.record_wait = settings.getfloat(
            "NUKE_IMAGE_RECORD_WAIT", defaults.NUKE_IMAGE_RECORD_WAIT
        )
        self._records: TimedBatcher[backfill.StoredImage, None] = TimedBatcher(
            self._write_records, size=RECORD_BATCH, wait=self.record_wait
        )
        self._requests: dict[str, list[Request]] = {}  # vehicle id -> its media requests
        self.stats = crawler.stats
        self._vehicles: dict[str, _VehicleState] = {}
        # this run's failures: counts per reason and a few example URLs (bounded)
        self.failure_counts: Counter[str] = Counter()
        self.failure_examples: dict[str, list[str]] = {}
        # a stopping crawl abandons the vehicles in flight (their leases are released)
        self._stop = StopFlag(crawler)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ImageBackfillPipeline:
        return cls(crawler)

    @property
    def image_store(self) -> ImageStore:
        assert self._store is not None, "check_store() reported why there is no store"
        return self._store

    # Scrapy 2.13+ awaits an async open_spider without a spider argument; MediaPipeline's
    # own is still typed the old way
    async def open_spider(self) -> None:  # type: ignore[override]
        super().open_spider()
        if self.crawler.settings.getbool("NUKE_DRY_RUN", defaults.NUKE_DRY_RUN):
            return  # a dry run writes nothing, not even the probe
        problem = await self.check_store()
        if problem is not None:  # the spider opens after its pipelines: it cannot start
            self.store_failure = problem
            self.crawler.signals.send_catch_log(store_failed, detail=problem)

    async def check_store(self) -> str | None:
        """The start-up check, before any claim or download: None when the settings are
        good and the store's ``probe()`` passes, else one line saying why not."""
        if self.problems:
            return self.problems[0]
        return await asyncio.to_thread(store_problem, self.image_store, self.store_uri)

    def _store_failed(self, detail: str) -> StoreFailed:
        """Stop the run once: the store is failing, and every further image would too.

        The run drains rather than closing the engine under its items: the spider
        claims nothing more (:data:`~nuke_crawl.signals.store_failed`), images not downloaded yet
        are not downloaded (:meth:`media_to_download`), downloaded ones are not
        processed, and no image is marked failed for it; the vehicles' leases are
        released at the close, so the next run claims them again."""
        if self.store_failure is None:
            self.store_failure = detail
            self.crawler.signals.send_catch_log(store_failed, detail=detail)
            message = f"storage failed: {detail}"
            logger.error(
                "Stopping: %s (the images not stored stay claimable for the next run)", message
            )
            assert self.stats is not None
            self.stats.set_value("nuke/error", message)
        return StoreFailed(detail)

    # -- requests -----------------------------------------------------------------

    def get_media_requests(self, item: Any, info: MediaPipeline.SpiderInfo) -> list[Request]:
        if not isinstance(item, VehicleImagesItem):
            return []
        known = self._requests.get(item.work.vehicle_id)
        if known is not None:
            return known
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
                    meta={
                        "allow_offsite": True,
                        "nuke_vehicle_id": work.vehicle_id,
                        "nuke_image_id": image.image_id,
                        "nuke_image": image,
                    },
                )
            except ValueError:
                request = Request(
                    "about:blank",
                    callback=NO_CALLBACK,
                    meta={
                        "nuke_vehicle_id": work.vehicle_id,
                        "nuke_image": image,
                        "nuke_image_id": image.image_id,
                        "nuke_bad_url": True,
                    },
                )
            requests.append(request)
        self._requests[work.vehicle_id] = requests
        return requests

    def media_to_download(
        self, request: Request, info: MediaPipeline.SpiderInfo, *, item: Any = None
    ) -> Any:
        # The database says what is stored; paths are deterministic, so a file
        # left by a killed run is overwritten, never duplicated.
        if request.meta.get("nuke_bad_url"):
            image = request.meta["nuke_image"]
            return {
                "url": image.url,
                "path": "",
                "checksum": None,
                "status": "failed",
                "reason": "bad_url",
                "detail": "not a downloadable http(s) URL",
            }
        if self.store_failure is not None:  # the run is stopping: nothing more to fetch
            return {
                "url": request.url,
                "path": "",
                "checksum": None,
                "status": STORE_FAILED,
                "reason": "store_failed",
                "detail": self.store_failure,
            }
        return None

    def media_failed(
        self, failure: Failure, request: Request, info: MediaPipeline.SpiderInfo
    ) -> Any:
        reason, detail = download_failure_reason(failure.value)
        request.meta["nuke_failure"] = (reason, detail)
        return None  # the reason travels in the request's meta; no traceback

    async def media_downloaded(
        self,
        response: Response,
        request: Request,
        info: MediaPipeline.SpiderInfo,
        *,
        item: Any = None,
    ) -> Any:
        try:
            return await self._store_response(response, request, item)
        except StoreFailed as exc:
            return {
                "url": request.url,
                "path": "",
                "checksum": None,
                "status": STORE_FAILED,
                "reason": exc.reason,
                "detail": exc.detail,
            }
        except ImageFailed as exc:
            return {
                "url": request.url,
                "path": "",
                "checksum": None,
                "status": "failed",
                "reason": exc.reason,
                "detail": exc.detail,
            }

    async def _store_response(
        self, response: Response, request: Request, item: VehicleImagesItem
    ) -> dict[str, Any]:
        image: backfill.ImageWork = request.meta["nuke_image"]
        vehicle_id = item.work.vehicle_id
        if self.store_failure is not None:
            raise StoreFailed(self.store_failure)
        if response.status != 200:
            raise ImageFailed(f"http_{response.status}", f"HTTP {response.status}")
        body = response.body
        self._inc("nuke/images/downloaded")
        self._inc("nuke/images/bytes", len(body))
        if not body:
            raise ImageFailed("empty", "the body has no bytes")
        ctype = response.headers.get("Content-Type")
        content_type = ctype.decode("latin-1") if ctype else None
        options = {
            "content_type": content_type,
            "max_pixels": self.max_pixels,
            "min_width": self.min_width,
            "min_height": self.min_height,
            "variants": self.variants,
            "variant_formats": self.variant_formats,
        }
        try:
            if self._pool is None:
                self._pool = worker_pool(self.crawler)
            if self._pool.processes > 0:
                processed = await self._pool.call(process_in_worker, body, options)
            else:  # NUKE_IMAGE_PROCESSES=0: threads of the crawl's process
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
                first = await pending  # raises the first copy's failure
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
                path = self.file_path(request, response, extension=processed.extension)
                metadata = {
                    "vehicle_id": vehicle_id,
                    "organization_id": item.work.organization_id,
                    "source_url": image.url,
                    "sha256": processed.sha256,
                }
                variants = await asyncio.get_running_loop().run_in_executor(
                    self._store_executor, self._persist, path, processed, metadata
                )
            except Exception as exc:  # noqa: BLE001 - classified below
                del state.hashes[processed.sha256]
                failed: ReasonError
                if isinstance(exc, ReasonError) and exc.reason in backfill.PERMANENT_REASONS:
                    failed = ImageFailed(exc.reason, exc.detail)  # e.g. storage_rejected
                else:  # the store, not the image: stop the run, mark nothing failed
                    text = exc.detail if isinstance(exc, ReasonError) else str(exc)
                    failed = self._store_failed(f"{type(exc).__name__}: {text}")
                future.set_exception(failed)  # a same-content image waiting on it fails too
                future.exception()  # retrieved: no "never retrieved" warning without waiters
                raise failed from None
            public = self.image_store.public_url(path)
        stored = backfill.StoredImage(
            image_id=image.image_id,
            vehicle_id=vehicle_id,
            storage_path=path,
            public_url=public,
            file_hash=processed.sha256,
            file_size=len(processed.data),
            mime_type=processed.mime_type,
            width=processed.width,
            height=processed.height,
            variants=variants,
        )
        pending_future = state.hashes.get(processed.sha256)
        if pending_future is not None and not pending_future.done():
            pending_future.set_result(stored)
        await self._record(stored)
        self._inc("nuke/images/stored")
        return {"url": request.url, "path": path, "checksum": processed.sha256, "status": "stored"}

    async def _record(self, stored: backfill.StoredImage) -> None:
        """Record a stored image; returns once committed. Images that arrive within
        ``NUKE_IMAGE_RECORD_WAIT`` (0.05 s) of each other share one commit: one
        commit per image made the database thread the bottleneck of a run."""
        await self._records.submit(stored)

    async def _write_records(self, batch: _RecordBatch) -> None:
        adb = crawler_database(self.crawler)
        try:
            # the files' directory entries become durable before any row says "stored"
            await asyncio.to_thread(self.image_store.sync)
        except Exception as exc:  # noqa: BLE001 - the store failed: the run stops
            failed = self._store_failed(f"{type(exc).__name__}: {exc}")
            for _, future in batch:
                if not future.done():  # cancelled: the crawl is stopping
                    future.set_exception(failed)
            return
        try:
            await adb.run(backfill.record_stored, [stored for stored, _ in batch])
        except Exception:  # noqa: BLE001 - retried one by one so one bad row fails alone
            for stored, future in batch:
                try:
                    await adb.run(backfill.record_stored, [stored])
                except Exception as exc:  # noqa: BLE001
                    if not future.done():
                        future.set_exception(
                            ImageFailed("database", f"{type(exc).__name__}: {exc}")
                        )
                else:
                    if not future.done():
                        future.set_result(None)
            return
        for _, future in batch:
            if not future.done():  # cancelled: the crawl is stopping (the row is written)
                future.set_result(None)

    def file_path(
        self,
        request: Request,
        response: Response | None = None,
        info: MediaPipeline.SpiderInfo | None = None,
        *,
        item: Any = None,
        extension: str = "jpg",
    ) -> str:
        """``<vehicle_id>/<sha1(url)>.<ext>``: deterministic per vehicle and source URL."""
        digest = hashlib.sha1(request.url.encode("utf-8")).hexdigest()
        ext = extension.lstrip(".") or "jpg"
        return f"{request.meta['nuke_vehicle_id']}/{digest}.{ext}"

    def _persist(
        self, path: str, processed: ProcessedImage, metadata: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Write the variants, then the image (in a thread); return ``variants`` (the
        store's own when it makes them)."""
        variants: dict[str, Any] = {}
        stem = path.rsplit(".", 1)[0]
        for variant in processed.variants:
            ext = extension_for(variant.mime_type)
            vpath = f"{stem}_{variant.name}.{ext}"
            self.image_store.persist(vpath, variant.data, variant.mime_type)
            variants[variant.name] = {
                "path": vpath,
                "url": self.image_store.public_url(vpath),
                "width": variant.width,
                "height": variant.height,
                "mime_type": variant.mime_type,
            }
        made = self.image_store.write(path, processed.data, processed.mime_type, metadata=metadata)
        return variants if made is None else made

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
        # MediaPipeline asks get_media_requests() and gets the objects kept for the
        # vehicle, so that the failures recorded in their meta can be read here.
        requests = self.get_media_requests(item, self.spiderinfo)
        try:
            await self._stop.run(super().process_item(item))
        except Stopped:
            # the images stored so far are recorded; the others wait for the next run
            item.abandoned = True
            self._forget(requests)
            return item
        finally:
            self._requests.pop(item.work.vehicle_id, None)
        failed: list[backfill.FailedImage] = []
        store_failed = False
        for request, result in zip(requests, item.results, strict=True):
            image: backfill.ImageWork = request.meta["nuke_image"]
            if result.get("status") == "stored":
                continue
            if result.get("status") == STORE_FAILED:
                store_failed = True  # not the image's fault: nothing recorded against it
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
        if store_failed:
            # left under this run's lease, which the spider releases when it closes:
            # the vehicle is claimed again by the next run
            self._inc("nuke/vehicles/store_failed")
        else:
            item.outcome = await adb.run(
                backfill.complete_vehicle,
                item.work.vehicle_id,
                item.owner,
                item.work.selected_ids,
                max_attempts=self.max_attempts,
            )
            self._inc(
                "nuke/vehicles/completed" if item.outcome.complete else "nuke/vehicles/waiting"
            )
        assert self.stats is not None
        self.stats.max_value("nuke/images/cache_peak", len(self.spiderinfo.downloaded))
        self._forget(requests)
        self._vehicles.pop(item.work.vehicle_id, None)
        return item

    def _forget(self, requests: list[Request]) -> None:
        """Keep the per-run cache bounded (scrapy #939): a settled vehicle's entries go."""
        downloaded = self.spiderinfo.downloaded
        fingerprint = self.crawler.request_fingerprinter.fingerprint
        for request in requests:
            downloaded.pop(fingerprint(request), None)

    def failure_summary(self) -> dict[str, Any]:
        """``{reason: {"count": n, "examples": [url, ...]}}`` for this run, most first."""
        return {
            reason: {"count": count, "examples": self.failure_examples[reason]}
            for reason, count in self.failure_counts.most_common()
        }

    async def close_spider(self) -> None:
        # the run's failures, by reason with examples (the spider logs the totals)
        for why, failures in self.failure_summary().items():
            logger.info(
                "  failed %s: %d, e.g. %s", why, failures["count"], ", ".join(failures["examples"])
            )
        info = getattr(self, "spiderinfo", None)
        if self.stats is not None and info is not None:
            # results still cached when the run ends (0 unless it was stopped mid-vehicle)
            self.stats.set_value("nuke/images/cache_left", len(info.downloaded))
        if self._store_executor is not None:
            self._store_executor.shutdown(wait=False)
        if self._store is not None and self.stats is not None:
            for key, value in self._store.run_stats().items():
                self.stats.set_value(f"nuke/{key}", value)

    def _inc(self, key: str, count: int = 1) -> None:
        assert self.stats is not None
        self.stats.inc_value(key, count)


__all__ = [
    "ImageBackfillPipeline",
    "ImageFailed",
    "PerImageFingerprinter",
    "StoreFailed",
]
