"""Writes vehicle items to the database in batches, off the reactor thread."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from itemadapter import ItemAdapter
from scrapy.crawler import Crawler
from scrapy.exceptions import DropItem

from nuke_crawl import settings as defaults
from nuke_crawl.db import database_url, store
from nuke_crawl.extensions.workers import worker_pool
from nuke_crawl.signals import vehicles_stored
from nuke_crawl.utils.batching import TimedBatcher
from nuke_crawl.workers.pool import WorkerPool

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VehicleWriteConfig:
    """What :class:`VehicleDatabasePipeline` reads from the settings (defaults in
    settings.py): ``NUKE_DB_BATCH_SIZE``, ``NUKE_DB_BATCH_WAIT``,
    ``NUKE_EXTERNAL_IMAGE_RECORDS``, ``NUKE_DRY_RUN`` and ``DATABASE_URL``."""

    batch_size: int
    batch_wait: float
    external_images: bool
    dry_run: bool
    url: str

    @classmethod
    def from_settings(cls, settings: Any) -> VehicleWriteConfig:
        return cls(
            batch_size=max(1, settings.getint("NUKE_DB_BATCH_SIZE", defaults.NUKE_DB_BATCH_SIZE)),
            batch_wait=max(
                0.0, settings.getfloat("NUKE_DB_BATCH_WAIT", defaults.NUKE_DB_BATCH_WAIT)
            ),
            external_images=settings.getbool(
                "NUKE_EXTERNAL_IMAGE_RECORDS", defaults.NUKE_EXTERNAL_IMAGE_RECORDS
            ),
            dry_run=settings.getbool("NUKE_DRY_RUN", defaults.NUKE_DRY_RUN),
            url=database_url(settings),
        )


class VehicleDatabasePipeline:
    """Upserts :class:`~nuke_crawl.items.VehicleItem` s, their organization
    links and their external image records.

    The spider prepares the database (migrations) before its first request.
    Items are grouped: each waits until its batch is committed, so an item that
    leaves this pipeline is in the database. Settings (:class:`VehicleWriteConfig`):

    - ``NUKE_DB_BATCH_SIZE`` (50): vehicles per transaction.
    - ``NUKE_DB_BATCH_WAIT`` (0.5 s): how long a partial batch waits for company
      (written at once when nothing is being downloaded).
    - ``NUKE_EXTERNAL_IMAGE_RECORDS`` (True): create ``is_external`` image rows.
    - ``NUKE_DRY_RUN`` (False, set by ``-a dry_run=1``): count, write nothing.

    Batches are written by the crawler's worker processes
    (:class:`~nuke_crawl.extensions.workers.WorkerPoolExtension`, ``NUKE_WORKER_PROCESSES``), each
    with its own connection, so that binding twenty image rows a vehicle competes
    with neither the reactor nor its GIL.

    Stats: ``nuke/vehicles/created|updated|unchanged|failed`` (``would_write`` in a dry
    run). Each organization's outcomes go to whoever records the crawl's summary (the org
    spider) with the :data:`~nuke_crawl.signals.vehicles_stored` signal, once a batch.
    """

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.config = config = VehicleWriteConfig.from_settings(crawler.settings)
        self.batch_size = config.batch_size
        self.batch_wait = config.batch_wait
        self.external_images = config.external_images
        self.dry_run = config.dry_run
        self.url = config.url
        self.stats = crawler.stats
        self._batcher: TimedBatcher[store.VehicleRecord, str] = TimedBatcher(
            self._write, size=self.batch_size, wait=self.batch_wait, idle=self._nothing_downloading
        )
        self.outcomes: Counter[str] = Counter()
        self._workers: WorkerPool | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> VehicleDatabasePipeline:
        return cls(crawler)

    def _nothing_downloading(self) -> bool:
        """No request is being downloaded or waits in the downloader: no more vehicles
        are coming soon, so a partial batch need not wait (the end of a crawl, a pause
        on a slow site). A worker of a distributed crawl then reports its last
        requests done at once, instead of ``NUKE_DB_BATCH_WAIT`` later."""
        engine = self.crawler.engine
        return engine is None or not engine.downloader.active

    async def process_item(self, item: Any) -> Any:
        adapter = ItemAdapter(item)
        if "discovery_url" not in adapter or "organization_id" not in adapter:
            return item
        rec = store.VehicleRecord(
            organization_id=adapter["organization_id"],
            discovery_url=adapter["discovery_url"],
            fields={**adapter.get("fields", {}), "listing_url": adapter.get("listing_url")},
            image_urls=list(adapter.get("image_urls") or []),
            extracted_at=adapter.get("extracted_at") or "",
            extra_metadata={
                "extraction_sources": list(adapter.get("sources") or []),
                **(adapter.get("extra") or {}),
            },
        )
        if self.dry_run:
            self._count("would_write")
            self.crawler.signals.send_catch_log(
                vehicles_stored, outcomes=[(rec.organization_id, "would_write")]
            )
            return item
        outcome = await self._batcher.submit(rec)
        if outcome.startswith("error"):
            raise DropItem(f"not stored: {rec.discovery_url}: {outcome}")
        return item

    async def _write(self, batch: list[tuple[store.VehicleRecord, asyncio.Future[str]]]) -> None:
        records = [rec for rec, _ in batch]
        try:
            if self._workers is None:
                self._workers = worker_pool(self.crawler)
            outcomes = await self._workers.run_db(
                self.url,
                store.upsert_vehicles,
                records,
                external_images=self.external_images,
                priority=5,  # before detail pages: it completes 50 items at once
            )
        except Exception as exc:  # noqa: BLE001 - e.g. the database went away
            logger.error("Could not write %d vehicles: %s", len(records), exc)
            outcomes = [f"error: {exc}"] * len(records)
        written = []
        for rec, outcome in zip(records, outcomes, strict=True):
            name = "failed" if outcome.startswith("error") else outcome
            self._count(name)
            written.append((rec.organization_id, name))
        # before the items leave: the spider's summary has them when the spider closes
        self.crawler.signals.send_catch_log(vehicles_stored, outcomes=written)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if not future.done():
                future.set_result(outcome)

    def _count(self, outcome: str) -> None:
        self.outcomes[outcome] += 1
        assert self.stats is not None
        self.stats.inc_value(f"nuke/vehicles/{outcome}")

    async def close_spider(self) -> None:
        await self._batcher.drain()
