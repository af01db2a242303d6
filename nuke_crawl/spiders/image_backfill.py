"""The ``image_backfill`` spider: download the images the ``org`` crawl recorded.

``scrapy crawl image_backfill -a limit=100`` claims vehicles whose images are not
backfilled yet, ``batch_size`` at a time (highest ``images_priority`` first, then newest
first, ``scrapy image-priority`` sets priorities; with a lease so that several
processes can share one PostgreSQL), and yields one
:class:`~nuke_crawl.items.VehicleImagesItem` per vehicle. The
:class:`~nuke_crawl.pipelines.images.ImageBackfillPipeline` downloads, verifies,
stores and records the images. Work comes from the database only: a killed run's
leases expire and its vehicles are claimed again.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from scrapy.crawler import Crawler
from scrapy.settings import SETTINGS_PRIORITIES

from nuke_crawl import settings as defaults
from nuke_crawl.db import backfill, needs_migration
from nuke_crawl.extensions.database import SchemaMissing, crawler_database
from nuke_crawl.extensions.workers import worker_pool
from nuke_crawl.items import VehicleImagesItem
from nuke_crawl.params import (
    ArgumentError,
    arg,
    positive_int,
    to_bool,
    to_int,
    to_uuid,
    to_uuid_list,
)
from nuke_crawl.signals import store_failed
from nuke_crawl.spiders.leased import LeasedArgs, LeasedWorkSpider
from nuke_crawl.workers.pool import WorkerError

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


def to_priority(name: str, value: Any) -> int:
    return to_int(name, value, minimum=-(2**31))


MAX_VEHICLE_IDS = 1000
"""The most ids ``vehicle_ids`` takes (each is one SQL parameter of a claim)."""


def to_vehicle_ids(name: str, value: Any) -> tuple[str, ...]:
    return to_uuid_list(name, value, most=MAX_VEHICLE_IDS)


@dataclass(frozen=True)
class BackfillArgs(LeasedArgs):
    """The ``image_backfill`` spider's arguments (``-a name=value``)."""

    limit: int = arg(100, "vehicles to process in this run", positive_int)
    batch_size: int = arg(10, "vehicles claimed from the database at a time", positive_int)
    max_images: int = arg(20, "images per vehicle (in position order)", positive_int)
    organization_id: str | None = arg(None, "only this organization's vehicles", to_uuid)
    vehicle_id: str | None = arg(None, "only this vehicle", to_uuid)
    vehicle_ids: tuple[str, ...] = arg(
        (), f"only these vehicles (comma list of up to {MAX_VEHICLE_IDS} UUIDs)", to_vehicle_ids
    )
    created_after: datetime | None = arg(
        None, "only vehicles created at or after this time", to_datetime
    )
    min_priority: int | None = arg(
        None, "only vehicles whose images_priority is at least this", to_priority
    )
    dry_run: bool = arg(False, "print what would be downloaded, write nothing", to_bool)
    retry_failed: bool = arg(False, "also retry images that failed permanently before", to_bool)


class ImageBackfillSpider(LeasedWorkSpider):
    """Downloads and stores vehicle images recorded by the ``org`` crawl.

    Arguments (``-a name=value``): :class:`BackfillArgs`, as ``self.args``. Settings:
    ``NUKE_IMAGE_LEASE_SECONDS`` (600),
    ``NUKE_IMAGE_MAX_ATTEMPTS`` (5), ``NUKE_IMAGE_MAX_IN_FLIGHT`` (images handed to the
    pipeline and not settled yet, which bounds memory; default ``2 * CONCURRENT_REQUESTS``;
    a batch is claimed when fewer are in flight) and the pipeline's settings
    (:class:`~nuke_crawl.pipelines.images.ImageBackfillPipeline`).

    Stats: ``nuke/vehicles/claimed``, ``nuke/vehicles/completed``,
    ``nuke/vehicles/waiting``, ``nuke/images/...`` (see the pipeline),
    ``nuke/images/success_rate``, ``nuke/images/per_second``.
    """

    name = "image_backfill"
    Arguments = BackfillArgs
    args: BackfillArgs
    STATS_PREFIX = "nuke/"
    CLAIMED_STAT = "nuke/vehicles/claimed"
    WORK_NAME = "vehicles"
    max_attempts = defaults.NUKE_IMAGE_MAX_ATTEMPTS  # read in from_crawler
    store_failure: str | None = None  # the pipeline's store failed (signals.store_failed)
    custom_settings = {
        # Only this spider's pipeline: the org spider's database pipeline is global.
        "ITEM_PIPELINES": {"nuke_crawl.pipelines.images.ImageBackfillPipeline": 300},
        # Plain HTTP downloads: no browser for images.
        "DOWNLOAD_HANDLERS": {},
        "MEDIA_ALLOW_REDIRECTS": True,
        # The media pipeline asks for a vehicle's images all at once: Scrapy 2.19's own
        # downloader then lets such a burst past CONCURRENT_REQUESTS_PER_DOMAIN.
        "DOWNLOADER": "nuke_crawl.downloader.slotsafe.SlotSafeDownloader",
        # The pipeline's media results are cached per image row, not per URL.
        "REQUEST_FINGERPRINTER_CLASS": "nuke_crawl.pipelines.images.PerImageFingerprinter",
        # The crawl's worker pool (WorkerPoolExtension) decodes images here: at the
        # crawler's CPU priority, its workers importing Pillow and numpy only (no
        # Scrapy); how many: NUKE_IMAGE_PROCESSES (see update_settings).
        "NUKE_WORKER_NICE": 0,
        "NUKE_WORKER_PRELOAD": ["nuke_crawl.pipelines._imageworker"],
    }

    @classmethod
    def update_settings(cls, settings: Any) -> None:
        super().update_settings(settings)
        # NUKE_IMAGE_PROCESSES (None: the CPU count; 0 or less: decode in threads) sizes the
        # pool, given at its own priority or at least the spider's.
        processes = settings.get("NUKE_IMAGE_PROCESSES", defaults.NUKE_IMAGE_PROCESSES)
        priority = max(
            settings.getpriority("NUKE_IMAGE_PROCESSES") or 0, SETTINGS_PRIORITIES["spider"]
        )
        settings.set(
            "NUKE_WORKER_PROCESSES",
            os.cpu_count() or 1 if processes is None else max(0, int(processes)),
            priority=priority,
        )

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> ImageBackfillSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        crawler.signals.connect(spider._on_store_failed, signal=store_failed)
        settings = crawler.settings
        spider.batch_size = spider.args.batch_size
        spider.lease_seconds = settings.getfloat(
            "NUKE_IMAGE_LEASE_SECONDS", defaults.NUKE_IMAGE_LEASE_SECONDS
        )
        spider.max_attempts = settings.getint(
            "NUKE_IMAGE_MAX_ATTEMPTS", defaults.NUKE_IMAGE_MAX_ATTEMPTS
        )
        in_flight = settings.get("NUKE_IMAGE_MAX_IN_FLIGHT", defaults.NUKE_IMAGE_MAX_IN_FLIGHT)
        spider.max_in_flight = (
            2 * settings.getint("CONCURRENT_REQUESTS") if in_flight is None else int(in_flight)
        )
        return spider

    def _selection(self) -> backfill.Selection:
        args = self.args
        return backfill.Selection(
            organization_id=args.organization_id,
            vehicle_id=args.vehicle_id,
            vehicle_ids=args.vehicle_ids,
            created_after=args.created_after,
            retry_failed=args.retry_failed,
            run_started=self.run_started,
            min_priority=args.min_priority,
        )

    def _adb(self) -> Any:
        return crawler_database(self.crawler)

    # -- leased work ----------------------------------------------------------------

    async def before_claims(self) -> bool:
        await super().before_claims()
        if self.store_failure is not None:  # the pipeline's start-up check of its store
            self.cannot_start(self.store_failure)
            return False
        try:  # the pipeline decodes in the crawl's worker pool: none, no run
            await worker_pool(self.crawler).start()  # their imports overlap the first claim
        except WorkerError as exc:
            self.cannot_start(str(exc))
            return False
        available = await self._adb().run(backfill.count_claimable, self._selection())
        self.total = min(self.args.limit, available)
        logger.info(
            "%d vehicles need their images backfilled; this run takes up to %d",
            available,
            self.args.limit,
        )
        return True

    def _on_store_failed(self, detail: str) -> None:
        """The pipeline's :data:`~nuke_crawl.signals.store_failed`: at start (its
        pipeline opens before the first claim) the run cannot start; later, the run
        claims nothing more and drains."""
        if self.store_failure is None:
            self.store_failure = detail

    async def claim(self, want: int) -> list[backfill.VehicleWork]:
        if self.store_failure is not None:
            return []  # the store failed mid-run: claim nothing more, the run drains
        works: list[backfill.VehicleWork] = await self._adb().run(
            backfill.claim_vehicles,
            self.owner,
            limit=want,
            lease_seconds=self.lease_seconds,
            selection=self._selection(),
            max_images=self.args.max_images,
            max_attempts=self.max_attempts,
        )
        if not works and self.claimed == 0:
            logger.info("No vehicle needs its images backfilled")
        return works

    async def renew(self, keys: list[str]) -> None:
        await self._adb().run(backfill.renew_leases, self.owner, keys, self.lease_seconds)

    async def release(self) -> int:
        released: int = await self._adb().run(backfill.release_leases, self.owner)
        return released

    def work_key(self, work: Any) -> str:
        return str(work.vehicle_id)

    def work_weight(self, work: Any) -> int:
        return len(work.images)

    def make_item(self, work: Any) -> VehicleImagesItem:
        return VehicleImagesItem(work=work, owner=self.owner)

    def is_work_item(self, item: Any) -> bool:
        return isinstance(item, VehicleImagesItem)

    def progress_line(self, batch: int, elapsed: float, eta: float) -> str:
        stored = self.stats.get_value("nuke/images/stored", 0)
        failed = self.stats.get_value("nuke/images/failed", 0)
        total = max(self.total, self.claimed)
        return (
            f"Batch {batch} done: {self.done} of {total} vehicles, images stored "
            f"{stored} / failed {failed}, {(stored + failed) / elapsed:.1f} images/s, "
            f"ETA {eta:.0f}s"
        )

    # -- dry run ------------------------------------------------------------------

    async def dry_run(self) -> None:
        def preview(db: Any) -> list[backfill.VehicleWork]:
            if not db.table_exists("vehicles"):
                raise SchemaMissing("the database has no nuke_crawl schema: run `scrapy migrate`")
            if needs_migration(db):
                raise SchemaMissing(
                    "the database schema is older than this version: run `scrapy migrate`"
                )
            return backfill.select_preview(
                db,
                limit=self.args.limit,
                selection=self._selection(),
                max_images=self.args.max_images,
                max_attempts=self.max_attempts,
            )

        works = await self._adb().run(preview)
        hosts: Counter[str] = Counter()
        images = 0
        lines = []
        for work in works:
            images += len(work.images)
            for image in work.images:
                hosts[urlsplit(image.url).hostname or "?"] += 1
            lines.append(
                f"vehicle {work.vehicle_id}: {len(work.images)} images to download"
                + (f", {work.waiting} waiting for a retry" if work.waiting else "")
            )
        lines.insert(0, f"dry run: {len(works)} vehicles, {images} images, {len(hosts)} hosts")
        lines.extend(f"  {host}: {count} images" for host, count in hosts.most_common())
        self.report_dry_run(lines, {"vehicles": len(works), "images": images, "hosts": len(hosts)})

    # -- closing ------------------------------------------------------------------

    def summarize(self, reason: str) -> None:
        stats = self.stats
        stored = stats.get_value("nuke/images/stored", 0)
        failed = stats.get_value("nuke/images/failed", 0)
        elapsed = max(1e-6, time.monotonic() - self.started)
        tried = stored + failed
        if not tried:  # no success rate for 0 images
            logger.info(
                "Image backfill %s: %d vehicles, no image stored or failed", reason, self.done
            )
            return
        rate = stored / tried
        stats.set_value("nuke/images/success_rate", round(rate, 4))
        stats.set_value("nuke/images/per_second", round(tried / elapsed, 2))
        logger.info(
            "Image backfill %s: %d vehicles (%d complete, %d waiting for retries), "
            "%d images stored, %d failed, success rate %.1f%%, %.1f images/s",
            reason,
            self.done,
            stats.get_value("nuke/vehicles/completed", 0),
            stats.get_value("nuke/vehicles/waiting", 0),
            stored,
            failed,
            100 * rate,
            tried / elapsed,
        )
