"""The ``image_backfill`` spider: download the images the ``org`` crawl recorded.

``scrapy crawl image_backfill -a limit=100`` claims vehicles whose images are not
backfilled yet, ``batch_size`` at a time (highest ``images_priority`` first, then newest
first, ``scrapy image-priority`` sets priorities; with a lease so that several
processes can share one PostgreSQL), and yields one
:class:`~nuke_crawl.pipelines.images.VehicleImagesItem` per vehicle. The
:class:`~nuke_crawl.pipelines.images.ImageBackfillPipeline` downloads, verifies,
stores and records the images. Work comes from the database only: a killed run's
leases expire and its vehicles are claimed again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import scrapy
from scrapy import signals
from scrapy.crawler import Crawler

from nuke_crawl.db import DatabaseError, backfill
from nuke_crawl.dbglue import SchemaMissing, crawler_database, prepare_database
from nuke_crawl.pipelines.images import VehicleImagesItem
from nuke_crawl.spiders.args import ArgumentError, Param, parse_args, to_bool, to_int, to_uuid

logger = logging.getLogger(__name__)


def to_datetime(name: str, value: Any) -> datetime:
    text = str(value).strip().replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ArgumentError(
            f"argument {name}={value!r}: expected an ISO date/time (2026-01-31T12:00:00Z)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


ARGUMENTS: dict[str, Param] = {
    "limit": Param(lambda n, v: to_int(n, v, minimum=1), 100, "vehicles to process in this run"),
    "batch_size": Param(
        lambda n, v: to_int(n, v, minimum=1), 10, "vehicles claimed from the database at a time"
    ),
    "max_images": Param(
        lambda n, v: to_int(n, v, minimum=1), 20, "images per vehicle (in position order)"
    ),
    "organization_id": Param(to_uuid, None, "only this organization's vehicles"),
    "vehicle_id": Param(to_uuid, None, "only this vehicle"),
    "created_after": Param(to_datetime, None, "only vehicles created at or after this time"),
    "min_priority": Param(
        lambda n, v: to_int(n, v, minimum=-(2**31)), None,
        "only vehicles whose images_priority is at least this",
    ),
    "dry_run": Param(to_bool, False, "print what would be downloaded, write nothing"),
    "retry_failed": Param(to_bool, False, "also retry images that failed permanently before"),
}


class ImageBackfillSpider(scrapy.Spider):
    """Downloads and stores vehicle images recorded by the ``org`` crawl.

    Arguments (``-a name=value``): ``limit`` (100), ``batch_size`` (10),
    ``max_images`` (20), ``organization_id``, ``vehicle_id``, ``created_after``,
    ``min_priority``, ``dry_run``, ``retry_failed``. Settings: ``NUKE_IMAGE_LEASE_SECONDS`` (600),
    ``NUKE_IMAGE_MAX_ATTEMPTS`` (5), ``NUKE_IMAGE_MAX_IN_FLIGHT`` (images handed to the
    pipeline and not settled yet, which bounds memory; default ``2 * CONCURRENT_REQUESTS``;
    a batch is claimed when fewer are in flight) and the pipeline's settings
    (:class:`~nuke_crawl.pipelines.images.ImageBackfillPipeline`).

    Stats: ``nuke/vehicles/claimed``, ``nuke/vehicles/completed``,
    ``nuke/vehicles/waiting``, ``nuke/images/...`` (see the pipeline),
    ``nuke/images/success_rate``, ``nuke/images/per_second``.
    """

    name = "image_backfill"
    ARGUMENTS = ARGUMENTS
    custom_settings = {
        # Only this spider's pipeline: the org spider's database pipeline is global.
        "ITEM_PIPELINES": {"nuke_crawl.pipelines.images.ImageBackfillPipeline": 300},
        # Plain HTTP downloads: no browser for images.
        "DOWNLOAD_HANDLERS": {},
        "MEDIA_ALLOW_REDIRECTS": True,
        # The media pipeline asks for a vehicle's images all at once: Scrapy 2.19's own
        # downloader then lets such a burst past CONCURRENT_REQUESTS_PER_DOMAIN.
        "DOWNLOADER": "nuke_crawl.downloader.SlotSafeDownloader",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        given = {k: v for k, v in kwargs.items() if k in ARGUMENTS or not k.startswith("_")}
        self.args = parse_args(ARGUMENTS, given, self.name)
        super().__init__(*args)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.claimed = 0
        self.done = 0
        self.in_flight: dict[str, int] = {}  # vehicle id -> batch number
        self.in_flight_images = 0
        self.batch_left: Counter[int] = Counter()
        self.total = 0
        self.started = time.monotonic()
        self.run_started = datetime.now(UTC)
        self._wake = asyncio.Event()
        self._renewer: asyncio.Future[None] | None = None
        self.lease_seconds = 600.0  # settings are read in from_crawler
        self.max_attempts = 5
        self.max_in_flight = 128

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> ImageBackfillSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        settings = crawler.settings
        if spider.args["dry_run"]:
            crawler.settings.set("NUKE_DRY_RUN", True, priority="spider")
        spider.lease_seconds = settings.getfloat("NUKE_IMAGE_LEASE_SECONDS", 600.0)
        spider.max_attempts = settings.getint("NUKE_IMAGE_MAX_ATTEMPTS", 5)
        spider.max_in_flight = settings.getint(
            "NUKE_IMAGE_MAX_IN_FLIGHT", 2 * settings.getint("CONCURRENT_REQUESTS", 16)
        )
        crawler.signals.connect(spider._on_item_done, signal=signals.item_scraped)
        crawler.signals.connect(spider._on_item_done, signal=signals.item_dropped)
        crawler.signals.connect(spider._on_item_done, signal=signals.item_error)
        crawler.signals.connect(spider._on_closed, signal=signals.spider_closed)
        return spider

    def _selection(self) -> backfill.Selection:
        args = self.args
        return backfill.Selection(
            organization_id=args["organization_id"],
            vehicle_id=args["vehicle_id"],
            created_after=args["created_after"],
            retry_failed=args["retry_failed"],
            run_started=self.run_started,
            min_priority=args["min_priority"],
        )

    # -- work ---------------------------------------------------------------------

    async def start(self) -> AsyncIterator[Any]:
        try:
            if self.args["dry_run"]:
                await self._dry_run()
                return
            await prepare_database(self.crawler)
            problem = await self._startup_problem()
            if problem is not None:
                logger.error("Cannot start: %s", problem)
                self._stats().set_value("nuke/error", problem)
                return
            async for item in self._claim_loop():
                yield item
        except (DatabaseError, SchemaMissing) as exc:
            logger.error("Cannot start: %s", exc)
            self._stats().set_value("nuke/error", str(exc))

    async def _startup_problem(self) -> str | None:
        """Ask the image pipeline to check its settings and store before any claim or
        download (a wrong token or account is one line, not a run of failures)."""
        engine = self.crawler.engine
        manager = getattr(getattr(engine, "scraper", None), "itemproc", None)
        for component in getattr(manager, "middlewares", ()):
            check = getattr(component, "startup_problem", None)
            if check is not None:
                problem: str | None = await asyncio.to_thread(check)
                if problem is not None:
                    return problem
        return None

    async def _claim_loop(self) -> AsyncIterator[VehicleImagesItem]:
        args = self.args
        adb = crawler_database(self.crawler)
        self._renewer = asyncio.ensure_future(self._renew_leases())
        available = await adb.run(backfill.count_claimable, self._selection())
        self.total = min(args["limit"], available)
        logger.info("%d vehicles need their images backfilled; this run takes up to %d",
                    available, args["limit"])
        batch_no = 0
        while self.claimed < args["limit"]:
            while self.in_flight and self.in_flight_images >= self.max_in_flight:
                self._wake.clear()
                await self._wake.wait()
            want = min(args["batch_size"], args["limit"] - self.claimed)
            works = await adb.run(
                backfill.claim_vehicles,
                self.owner,
                limit=want,
                lease_seconds=self.lease_seconds,
                selection=self._selection(),
                max_images=args["max_images"],
                max_attempts=self.max_attempts,
            )
            if not works:
                break
            batch_no += 1
            self.claimed += len(works)
            self.total = max(self.total, self.claimed)
            self._stats().inc_value("nuke/vehicles/claimed", len(works))
            for work in works:
                self.in_flight[work.vehicle_id] = batch_no
                self.in_flight_images += len(work.images)
                self.batch_left[batch_no] += 1
                yield VehicleImagesItem(work=work, owner=self.owner)
        if self.claimed == 0:
            logger.info("No vehicle needs its images backfilled")
        self.total = self.claimed

    async def _renew_leases(self) -> None:
        interval = max(1.0, self.lease_seconds / 3)
        adb = crawler_database(self.crawler)
        while True:
            await asyncio.sleep(interval)
            if self.in_flight:
                try:
                    await adb.run(
                        backfill.renew_leases, self.owner, list(self.in_flight),
                        self.lease_seconds,
                    )
                except DatabaseError as exc:  # pragma: no cover - the database went away
                    logger.warning("Could not renew leases: %s", exc)

    def _on_item_done(self, item: Any, **kwargs: Any) -> None:
        if not isinstance(item, VehicleImagesItem):
            return
        batch = self.in_flight.pop(item.work.vehicle_id, None)
        self.in_flight_images -= len(item.work.images)
        self.done += 1
        self._wake.set()
        if batch is None:
            return
        self.batch_left[batch] -= 1
        if self.batch_left[batch] <= 0:
            del self.batch_left[batch]
            self._log_progress(batch)

    def _log_progress(self, batch: int) -> None:
        stats = self._stats()
        stored = stats.get_value("nuke/images/stored", 0)
        failed = stats.get_value("nuke/images/failed", 0)
        elapsed = max(1e-6, time.monotonic() - self.started)
        rate = (stored + failed) / elapsed
        total = max(self.total, self.claimed)
        eta = elapsed / max(1, self.done) * max(0, total - self.done)
        logger.info(
            "Batch %d done: %d of %d vehicles, images stored %d / failed %d, %.1f images/s, "
            "ETA %.0fs",
            batch, self.done, total, stored, failed, rate, eta,
        )

    # -- dry run ------------------------------------------------------------------

    async def _dry_run(self) -> None:
        adb = crawler_database(self.crawler)

        def preview(db: Any) -> list[backfill.VehicleWork]:
            from nuke_crawl.db import needs_migration  # noqa: PLC0415

            if not db.table_exists("vehicles"):
                raise SchemaMissing("the database has no nuke_crawl schema: run `scrapy migrate`")
            if needs_migration(db):
                raise SchemaMissing(
                    "the database schema is older than this version: run `scrapy migrate`"
                )
            return backfill.select_preview(
                db, limit=self.args["limit"], selection=self._selection(),
                max_images=self.args["max_images"], max_attempts=self.max_attempts,
            )

        works = await adb.run(preview)
        hosts: Counter[str] = Counter()
        images = 0
        for work in works:
            images += len(work.images)
            for image in work.images:
                hosts[urlsplit(image.url).hostname or "?"] += 1
            print(f"vehicle {work.vehicle_id}: {len(work.images)} images to download"
                  + (f", {work.waiting} waiting for a retry" if work.waiting else ""))
        print(f"dry run: {len(works)} vehicles, {images} images, {len(hosts)} hosts")
        for host, count in hosts.most_common():
            print(f"  {host}: {count} images")
        stats = self._stats()
        stats.set_value("nuke/dry_run/vehicles", len(works))
        stats.set_value("nuke/dry_run/images", images)
        stats.set_value("nuke/dry_run/hosts", len(hosts))

    # -- closing ------------------------------------------------------------------

    async def _on_closed(self, spider: scrapy.Spider, reason: str) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
        stats = self._stats()
        if self.args["dry_run"]:
            return
        if self.claimed:
            try:
                released = await crawler_database(self.crawler).run(
                    backfill.release_leases, self.owner
                )
            except DatabaseError as exc:
                logger.warning("Could not release leases: %s", exc)
                released = 0
            if released:
                logger.info("Released %d unfinished vehicles for a later run", released)
        stored = stats.get_value("nuke/images/stored", 0)
        failed = stats.get_value("nuke/images/failed", 0)
        elapsed = max(1e-6, time.monotonic() - self.started)
        tried = stored + failed
        rate = stored / tried if tried else 1.0
        stats.set_value("nuke/images/success_rate", round(rate, 4))
        stats.set_value("nuke/images/per_second", round(tried / elapsed, 2))
        logger.info(
            "Image backfill %s: %d vehicles (%d complete, %d waiting for retries), "
            "%d images stored, %d failed, success rate %.1f%%, %.1f images/s",
            reason, self.done, stats.get_value("nuke/vehicles/completed", 0),
            stats.get_value("nuke/vehicles/waiting", 0), stored, failed, 100 * rate,
            tried / elapsed,
        )
        pipeline = self._pipeline()
        if pipeline is not None:
            for why, info in pipeline.failure_summary().items():
                logger.info("  failed %s: %d, e.g. %s", why, info["count"],
                            ", ".join(info["examples"]))

    def _pipeline(self) -> Any:
        from nuke_crawl.pipelines.images import ImageBackfillPipeline  # noqa: PLC0415

        engine = self.crawler.engine
        itemproc = getattr(getattr(engine, "scraper", None), "itemproc", None)
        for middleware in getattr(itemproc, "middlewares", ()):
            if isinstance(middleware, ImageBackfillPipeline):
                return middleware
        return None

    def _stats(self) -> Any:
        assert self.crawler.stats is not None
        return self.crawler.stats
