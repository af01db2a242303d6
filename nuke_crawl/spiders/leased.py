"""The shape both image phases share: a spider that leases work from the database.

:class:`LeasedWorkSpider` claims work in batches under a lease owned by this process
(``host:pid:random``), yields one item per unit of work (a vehicle, an image), keeps
at most ``max_in_flight`` units handed to the pipelines and not settled yet, renews
the leases of those in flight, releases what is left when the run ends, logs a
progress and ETA line per finished batch, reports a dry run one way (the log, and
stats under ``<STATS_PREFIX>dry_run/``) and fails a run that cannot start one way
(``Cannot start: ...`` in the log, ``nuke/error`` in the stats, no traceback).

Stopping (one SIGINT or SIGTERM, scrapyd's ``cancel.json``, a ``CLOSESPIDER_*`` limit):
as soon as the engine starts stopping, the spider claims nothing more and sends
:data:`nuke_crawl.signals.work_stopping`; the pipelines abandon the units in flight
(:class:`nuke_crawl.utils.stopping.StopFlag`; what they finished is recorded), the
spider releases their leases at close and the next run takes them again. Scrapy 2.19
never finishes closing a spider whose ``start()`` items were still in the pipelines
when it began (scrapy/scrapy#7029: the scraper checks whether it may close only after a
*response* is done); :func:`nudge_scraper_close` does that check while stopping.

Subclasses give the phase's parts: :meth:`claim`, :meth:`release`, optionally
:meth:`renew`, :meth:`make_item`, :meth:`dry_run`, :meth:`summarize`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

import scrapy
from scrapy import signals
from scrapy.crawler import Crawler

from nuke_crawl import signals as nuke_signals
from nuke_crawl.db import DatabaseError
from nuke_crawl.extensions.database import SchemaMissing, prepare_database
from nuke_crawl.params import SpiderArgs, arg, positive_int, to_bool

logger = logging.getLogger(__name__)


def lease_owner() -> str:
    """This process's lease owner id: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def duration(seconds: float) -> str:
    """``42s``, ``3m07s``, ``2h05m``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def eta_seconds(done: int, total: int, elapsed: float) -> float:
    """Seconds left at the rate so far (0 before anything is done)."""
    if done <= 0:
        return 0.0
    return elapsed / done * max(0, total - done)


STOP_POLL = 0.1
"""Seconds between two looks at whether the engine is stopping."""


def engine_stopping(crawler: Crawler) -> bool:
    """Whether the crawler's engine is stopping, or closing its spider, before the
    spider has closed: ``engine.running`` is False once ``stop()`` began (the shutdown
    handlers, scrapyd's SIGTERM), and the engine's slot has a ``closing`` Deferred once
    ``close_spider`` began (``CLOSESPIDER_*``)."""
    engine = crawler.engine
    if engine is None or engine.spider is None:
        return False
    if not engine.running:
        return True
    slot = getattr(engine, "_slot", None)
    return getattr(slot, "closing", None) is not None


def nudge_scraper_close(crawler: Crawler) -> bool:
    """Let a closing scraper finish closing once its pipelines are idle (the check
    Scrapy 2.19 skips for ``start()`` items, scrapy/scrapy#7029). True if the check
    ran. Reads the scraper's slot and calls its ``_check_if_closing()``: Scrapy has no
    public way; tests/test_image_stop.py fails loudly when a running Scrapy lacks them."""
    scraper = getattr(crawler.engine, "scraper", None)
    slot = getattr(scraper, "slot", None)
    closing = getattr(slot, "closing", None)
    check = getattr(scraper, "_check_if_closing", None)
    if slot is None or closing is None or closing.called or check is None:
        return False
    if not slot.is_idle():
        return False
    check()
    return True


@dataclass(frozen=True)
class LeasedArgs(SpiderArgs):
    """The arguments every leased-work spider has; a subclass's ``Arguments`` extends
    this class (and may give ``limit`` its own default and help)."""

    limit: int = arg(100, "units of work to process in this run", positive_int)
    dry_run: bool = arg(False, "report what would be done, write nothing", to_bool)


class LeasedWorkSpider(scrapy.Spider):
    """Base of the spiders that claim leased work (see the module docstring).

    Arguments (``-a name=value``): the subclass's ``Arguments``, a :class:`LeasedArgs`
    subclass, parsed once (by ``scrapy crawl``) and read as ``self.args.limit``.
    """

    Arguments: ClassVar[type[LeasedArgs]] = LeasedArgs
    args: LeasedArgs
    STATS_PREFIX: ClassVar[str] = "nuke/"
    CLAIMED_STAT: ClassVar[str] = "nuke/claimed"
    WORK_NAME: ClassVar[str] = "units"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = self.Arguments.from_kwargs(kwargs, self.name)
        super().__init__(*args)
        self.owner = lease_owner()
        self.started = time.monotonic()
        self.run_started = datetime.now(UTC)
        self.claimed = 0
        self.done = 0
        self.total = 0
        self.in_flight: dict[str, int] = {}  # work key -> batch number
        self.in_flight_weight = 0
        self.batch_left: Counter[int] = Counter()
        self.batch_size = 10
        self.lease_seconds = 600.0
        self.max_in_flight = 128
        self._wake = asyncio.Event()
        self._renewer: asyncio.Future[None] | None = None
        self.start_failed = False  # cannot_start() was called: no summary at the close
        self._watcher: asyncio.Future[None] | None = None
        self.stopping = False
        self.abandoned = 0

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> Self:
        spider = super().from_crawler(crawler, *args, **kwargs)
        if spider.args.dry_run:
            crawler.settings.set("NUKE_DRY_RUN", True, priority="spider")
        for signal in (signals.item_scraped, signals.item_dropped, signals.item_error):
            crawler.signals.connect(spider._on_item_done, signal=signal)
        crawler.signals.connect(spider._on_closed, signal=signals.spider_closed)
        return spider

    # -- what a phase provides ------------------------------------------------------

    async def claim(self, want: int) -> Sequence[Any]:
        """Claim up to ``want`` units of work under :attr:`owner`'s lease."""
        raise NotImplementedError

    async def renew(self, keys: list[str]) -> None:
        """Extend the leases of the units in flight (default: leases are not renewed)."""

    async def release(self) -> int:
        """Release this owner's unfinished leases; return how many."""
        raise NotImplementedError

    def work_key(self, work: Any) -> str:
        raise NotImplementedError

    def work_weight(self, work: Any) -> int:
        """How much of ``max_in_flight`` a unit uses (default 1)."""
        return 1

    def make_item(self, work: Any) -> Any:
        raise NotImplementedError

    def is_work_item(self, item: Any) -> bool:
        raise NotImplementedError

    async def before_claims(self) -> bool:
        """Checks and set-up before the first claim; False stops the run (having
        called :meth:`cannot_start`). Default: prepare the database."""
        await prepare_database(self.crawler)
        return True

    async def dry_run(self) -> None:
        """Report what a run would do (:meth:`report_dry_run`); claim and write nothing."""
        raise NotImplementedError

    def item_done(self, item: Any, batch: int | None) -> None:
        """A unit's item left the pipelines (settled, dropped or failed)."""

    def progress_line(self, batch: int, elapsed: float, eta: float) -> str:
        raise NotImplementedError

    def summarize(self, reason: str) -> None:
        """Log the run's summary and set its final stats (not after a dry run, nor
        after :meth:`cannot_start`)."""

    # -- the shared parts --------------------------------------------------------------

    @property
    def stats(self) -> Any:
        assert self.crawler.stats is not None
        return self.crawler.stats

    def cannot_start(self, message: str) -> None:
        """The one way a run that cannot start ends: logged, ``nuke/error`` and
        ``nuke/cannot_start`` set (the crawl command prints it last, on stderr), and no
        run summary at the close."""
        logger.error("Cannot start: %s", message)
        self.stats.set_value("nuke/error", message)
        self.stats.set_value("nuke/cannot_start", message)
        self.start_failed = True

    def report_dry_run(self, lines: list[str], figures: dict[str, int]) -> None:
        """The one way a dry run is reported: the lines in the log, the figures as
        stats under ``<STATS_PREFIX>dry_run/``."""
        for key, value in figures.items():
            self.stats.set_value(f"{self.STATS_PREFIX}dry_run/{key}", value)
        logger.info("\n".join(lines))

    async def start(self) -> AsyncIterator[Any]:
        self._watcher = asyncio.ensure_future(self._watch_stop())
        try:
            if self.args.dry_run:
                await self.dry_run()
                return
            if not await self.before_claims():
                return
            async for item in self._claim_loop():
                yield item
        except (DatabaseError, SchemaMissing) as exc:
            self.cannot_start(str(exc))
        except asyncio.CancelledError:
            self.begin_stop()  # the engine cancels start() when it stops
            raise

    async def _watch_stop(self) -> None:
        while not engine_stopping(self.crawler):
            await asyncio.sleep(STOP_POLL)
        self.begin_stop()
        while True:
            nudge_scraper_close(self.crawler)
            await asyncio.sleep(STOP_POLL)

    def begin_stop(self) -> None:
        """The crawl is stopping: claim nothing more, tell the pipelines to abandon
        the units in flight (:data:`~nuke_crawl.signals.work_stopping`). Once."""
        if self.stopping:
            return
        self.stopping = True
        self._wake.set()
        if self.in_flight:
            logger.info(
                "Stopping: %d %s in flight are abandoned and left for the next run",
                len(self.in_flight),
                self.WORK_NAME,
            )
        self.crawler.signals.send_catch_log(signal=nuke_signals.work_stopping, spider=self)

    async def _claim_loop(self) -> AsyncIterator[Any]:
        limit = self.args.limit
        self._renewer = asyncio.ensure_future(self._renew_leases())
        batch_no = 0
        while self.claimed < limit and not self.stopping:
            while (
                self.in_flight and self.in_flight_weight >= self.max_in_flight and not self.stopping
            ):
                self._wake.clear()
                await self._wake.wait()
            if self.stopping:
                break
            works = await self.claim(min(self.batch_size, limit - self.claimed))
            if not works:
                break
            batch_no += 1
            self.claimed += len(works)
            self.total = max(self.total, self.claimed)
            self.stats.inc_value(self.CLAIMED_STAT, len(works))
            for work in works:
                self.in_flight[self.work_key(work)] = batch_no
                self.in_flight_weight += self.work_weight(work)
                self.batch_left[batch_no] += 1
                yield self.make_item(work)
        self.total = self.claimed

    async def _renew_leases(self) -> None:
        interval = max(1.0, self.lease_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            if self.in_flight:
                try:
                    await self.renew(list(self.in_flight))
                except DatabaseError as exc:  # pragma: no cover - the database went away
                    logger.warning("Could not renew leases: %s", exc)

    def _on_item_done(self, item: Any, **kwargs: Any) -> None:
        if not self.is_work_item(item):
            return
        work = item.work
        batch = self.in_flight.pop(self.work_key(work), None)
        self.in_flight_weight -= self.work_weight(work)
        self._wake.set()
        if getattr(item, "abandoned", False):
            self.abandoned += 1  # left for the next run: its lease is released at close
            return
        self.done += 1
        self.item_done(item, batch)
        if batch is None:
            return
        self.batch_left[batch] -= 1
        if self.batch_left[batch] <= 0:
            del self.batch_left[batch]
            elapsed = max(1e-6, time.monotonic() - self.started)
            eta = eta_seconds(self.done, max(self.total, self.claimed), elapsed)
            logger.info(self.progress_line(batch, elapsed, eta))

    async def _on_closed(self, spider: scrapy.Spider, reason: str) -> None:
        for task in (self._renewer, self._watcher):
            if task is not None:
                task.cancel()
        await self.closing()
        if self.args.dry_run:
            return
        if self.claimed:
            try:
                released = await self.release()
            except DatabaseError as exc:
                logger.warning("Could not release leases: %s", exc)
                released = 0
            if released:
                logger.info(
                    "Released %d claimed %s not finished in this run", released, self.WORK_NAME
                )
        if not self.start_failed:
            self.summarize(reason)

    async def closing(self) -> None:
        """Called first when the spider closes (dry runs included)."""
