"""Analyses and records the images the ``image_analysis`` spider claimed (phase three).

The spider yields one :class:`~nuke_crawl.items.ImageAnalysisItem` per claimed image;
:class:`ImageAnalysisPipeline` reads the image (the stored copy through
:mod:`nuke_crawl.storage`, else a download through Scrapy's downloader, verified by
:func:`nuke_crawl.imaging.process_image` in a thread), runs the providers
(:mod:`nuke_crawl.analysis.registry`) and records the outcome through
:mod:`nuke_crawl.db.analysis` in the crawler's database thread: a success in one
transaction, a failure as an error, an attempt count and a next-attempt time. A dry
run writes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from itemadapter import ItemAdapter
from scrapy.crawler import Crawler
from scrapy.http import Request
from scrapy.http.request import NO_CALLBACK

from nuke_crawl import settings as defaults
from nuke_crawl.analysis.registry import Providers, select_providers
from nuke_crawl.analysis.results import ProviderResult
from nuke_crawl.db import analysis
from nuke_crawl.exceptions import ReasonError
from nuke_crawl.extensions.database import crawler_database
from nuke_crawl.imaging import ImageRejected, process_image
from nuke_crawl.items import ImageAnalysisItem
from nuke_crawl.storage import StoreError, build_store, describe_failure
from nuke_crawl.utils.downloads import download_failure_reason
from nuke_crawl.utils.stopping import StopFlag, Stopped

logger = logging.getLogger(__name__)

ACCEPT = "image/avif,image/webp,image/png,image/jpeg,image/*;q=0.8,*/*;q=0.5"


class FetchFailed(ReasonError):
    """The image's bytes could not be had: ``reason`` and ``detail``."""


def _sniff_mime(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return "image/jpeg"


class ImageAnalysisPipeline:
    """Analyses :class:`~nuke_crawl.items.ImageAnalysisItem` s and records them.

    Settings (defaults): ``NUKE_DRY_RUN`` (False: set by ``-a dry_run=1``; nothing is
    written), ``NUKE_ANALYSIS_RETRY_BACKOFF`` (600 s before a failed image's next
    attempt, doubling per attempt, at most a day), ``NUKE_ANALYSIS_PROVIDERS`` (None:
    every configured provider; set by the spider's ``providers``),
    ``NUKE_IMAGE_MAX_PIXELS`` (50,000,000), ``IMAGES_STORE`` and the store's settings
    (:mod:`nuke_crawl.storage`), the providers' settings.

    Stats: ``nuke/analysis/written``, ``nuke/analysis/failures_recorded``,
    ``nuke/analysis/tags``, ``nuke/analysis/components``, ``nuke/analysis/paint``,
    ``nuke/analysis/spid``, ``nuke/analysis/vin_filled``, ``nuke/analysis/vin_rejected``,
    ``nuke/analysis/skipped/<reason>``, ``nuke/analysis/write_errors`` (an analysis that
    could not be written is recorded as the failure ``write_error``; its attempt was
    counted before the providers were called).
    """

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        settings = crawler.settings
        self.dry_run = settings.getbool("NUKE_DRY_RUN", defaults.NUKE_DRY_RUN)
        self.backoff = settings.getfloat(
            "NUKE_ANALYSIS_RETRY_BACKOFF", defaults.NUKE_ANALYSIS_RETRY_BACKOFF
        )
        self.max_pixels = settings.getint("NUKE_IMAGE_MAX_PIXELS", defaults.NUKE_IMAGE_MAX_PIXELS)
        requested = settings.getlist("NUKE_ANALYSIS_PROVIDERS")
        self.requested = tuple(requested) or None
        self.store_problem: str | None = None  # the spider's "Cannot start" reads it
        try:
            self.store = build_store(settings)
        except Exception as exc:  # noqa: BLE001 - reported in one line, not a traceback
            self.store_problem = describe_failure(
                str(settings.get("IMAGES_STORE") or "images"), exc
            )
        assert crawler.stats is not None
        self.stats = crawler.stats
        self._providers: Providers | None = None  # built for the first image
        # the perceptual hashes of each vehicle's analysed images (near-duplicates)
        self._hashes: dict[str, asyncio.Future[dict[str, str]]] = {}
        # a stopping crawl abandons the images in flight (their leases are released)
        self._stop = StopFlag(crawler)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ImageAnalysisPipeline:
        return cls(crawler)

    async def process_item(self, item: Any) -> Any:
        if not isinstance(item, ImageAnalysisItem):
            return item
        if self.dry_run:
            return item
        try:
            await self._stop.run(self._analyse(item))
        except Stopped:
            item.abandoned = True  # nothing recorded: the next run takes it again
            return item
        except Exception as exc:
            logger.exception("Analysis of image %s crashed", item.work.image_id)
            item.ok = False
            item.error_reason, item.error_detail = "error", f"{type(exc).__name__}: {exc}"
        await self._record(item)
        return item

    async def close_spider(self) -> None:
        if self._providers is not None:
            await self._providers.aclose()

    # -- reading ----------------------------------------------------------------------

    async def _fetch(self, work: analysis.AnalysisWork) -> tuple[bytes, str]:
        if work.stored:
            try:
                data = await asyncio.to_thread(self.store.read, str(work.storage_path))
                return data, work.mime_type or _sniff_mime(data)
            except StoreError as exc:
                if not (work.url or "").startswith(("http://", "https://")):
                    raise
                logger.info(
                    "Image %s: stored copy unreadable (%s); downloading %s",
                    work.image_id,
                    exc.detail,
                    work.url,
                )
        return await self._download(work)

    async def _download(self, work: analysis.AnalysisWork) -> tuple[bytes, str]:
        url = work.url
        if not url or not url.startswith(("http://", "https://")):
            raise FetchFailed("bad_url", f"not a downloadable http(s) URL: {url!r}")
        headers = {"Accept": ACCEPT}
        if work.referer:
            headers["Referer"] = work.referer
        try:
            request = Request(
                url,
                callback=NO_CALLBACK,
                headers=headers,
                dont_filter=True,
                meta={"allow_offsite": True},
            )
        except ValueError as exc:
            raise FetchFailed("bad_url", str(exc)) from None
        assert self.crawler.engine is not None
        try:
            response = await self.crawler.engine.download_async(request)
        except Exception as exc:  # noqa: BLE001 - classified; expected in the wild
            reason, detail = download_failure_reason(exc, fallback="download_error")
            raise FetchFailed(reason, detail) from None
        if response.status != 200:
            raise FetchFailed(f"http_{response.status}", f"HTTP {response.status} for {url}")
        content_type = response.headers.get(b"Content-Type")
        ctype = content_type.decode("latin-1") if content_type else None
        try:
            processed = await asyncio.to_thread(
                process_image,
                response.body,
                content_type=ctype,
                max_pixels=self.max_pixels,
                variants={},
            )
        except ImageRejected as exc:
            raise FetchFailed("invalid_image", f"{exc.reason}: {exc.detail}") from None
        return processed.data, processed.mime_type

    # -- analysing --------------------------------------------------------------------

    def _providers_of_run(self) -> Providers:
        if self._providers is None:
            # the spider refused to start when a requested provider is not configured
            self._providers, _ = select_providers(self.crawler.settings, self.requested)
        return self._providers

    async def _known_hashes(self, vehicle_id: str) -> dict[str, str]:
        future = self._hashes.get(vehicle_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._hashes[vehicle_id] = future
            try:
                known = await crawler_database(self.crawler).run(
                    analysis.known_hashes, [vehicle_id]
                )
            except BaseException as exc:
                del self._hashes[vehicle_id]
                future.set_exception(exc)
                future.exception()  # retrieved: no warning without other waiters
                raise
            future.set_result(dict(known.get(vehicle_id, {})))
        return await future

    async def _analyse(self, item: ImageAnalysisItem) -> None:
        work = item.work
        providers = self._providers_of_run()
        try:
            data, mime = await self._fetch(work)
        except ReasonError as exc:
            item.ok, item.error_reason, item.error_detail = False, exc.reason, exc.detail
            return
        if not work.attempt_counted:
            # durably, before any call: an answer that cannot be written (or a process
            # that dies) still counts against NUKE_ANALYSIS_MAX_ATTEMPTS, so a paid call
            # is never repeated forever
            await crawler_database(self.crawler).run(analysis.count_attempt, work)
        results: list[ProviderResult] = []
        context: dict[str, Any] = dict(work.context)
        first = [p for p in providers.items.values() if not p.remote]
        if first:
            hashes = await self._known_hashes(work.vehicle_id)
            context["other_hashes"] = dict(hashes)
        for provider in first:
            result = await provider.analyze(data, mime, context=context)
            results.append(result)
            if not result.ok:
                item.ok, item.results = False, results
                item.error_reason = result.error_reason
                item.error_detail = f"{result.provider}: {result.error_detail}"
                return
            dhash = result.data.get("dhash_hex")
            if dhash:
                hashes[work.image_id] = str(dhash)
        remote = list(providers.remote.values())
        if remote:
            results.extend(
                await asyncio.gather(*(p.analyze(data, mime, context=work.context) for p in remote))
            )
        optional = {n for n, p in providers.items.items() if p.optional}
        others_ok = any(r.ok for r in results if r.provider not in optional)
        fatal = [r for r in results if not r.ok and not (r.provider in optional and others_ok)]
        item.results = results
        if fatal:
            item.ok = False
            item.error_reason = fatal[0].error_reason
            item.error_detail = f"{fatal[0].provider}: {fatal[0].error_detail}"
        else:
            item.ok = True

    # -- recording --------------------------------------------------------------------

    async def _record(self, item: ImageAnalysisItem) -> None:
        adapter = ItemAdapter(item)
        work: analysis.AnalysisWork = adapter["work"]
        adb = crawler_database(self.crawler)
        try:
            if adapter["ok"]:
                outcome = await adb.run(
                    analysis.record_success, work, adapter["results"], adapter["owner"]
                )
                if outcome.written:
                    self.stats.inc_value("nuke/analysis/written")
                    self.stats.inc_value("nuke/analysis/tags", outcome.tags)
                    self.stats.inc_value("nuke/analysis/components", outcome.components)
                    self.stats.inc_value("nuke/analysis/paint", outcome.paint)
                    if outcome.spid:
                        self.stats.inc_value("nuke/analysis/spid")
                    if outcome.vin_filled:
                        self.stats.inc_value("nuke/analysis/vin_filled")
                        logger.info(
                            "Vehicle %s: VIN %s filled from image %s",
                            work.vehicle_id,
                            outcome.vin_filled,
                            work.image_id,
                        )
                    if outcome.vin_rejected:
                        self.stats.inc_value("nuke/analysis/vin_rejected")
                        logger.info(
                            "Vehicle %s: VIN %r read from image %s has an invalid "
                            "check digit; not used",
                            work.vehicle_id,
                            outcome.vin_rejected,
                            work.image_id,
                        )
                else:
                    self.stats.inc_value(f"nuke/analysis/skipped/{outcome.skipped_reason}")
            else:
                await adb.run(
                    analysis.record_failure,
                    work,
                    adapter["error_reason"] or "error",
                    adapter["error_detail"] or "",
                    backoff=self.backoff,
                )
                self.stats.inc_value("nuke/analysis/failures_recorded")
        except Exception as exc:  # noqa: BLE001 - a database error must not stop the run
            self.stats.inc_value("nuke/analysis/write_errors")
            logger.error(
                "Could not record the analysis of image %s: %s: %s",
                work.image_id,
                type(exc).__name__,
                exc,
            )
            if adapter["ok"]:
                # recorded as a failure, so that the image waits out its backoff
                try:
                    await adb.run(
                        analysis.record_failure,
                        work,
                        "write_error",
                        f"{type(exc).__name__}: {exc}",
                        backoff=self.backoff,
                    )
                except Exception as again:  # noqa: BLE001 - the database is gone
                    logger.error(
                        "Could not record the failure of image %s either: %s", work.image_id, again
                    )
