"""Stop within seconds of one Ctrl-C, SIGTERM or scrapyd ``cancel.json``.

On one SIGINT or SIGTERM Scrapy stops taking requests from its scheduler, then waits
until every request already taken is done: downloads in flight run to the end or to
their ``DOWNLOAD_TIMEOUT`` (30 s), and the ones waiting in the downloader's per-host
queues are downloaded too, one after the other. Against a slow site the org crawl took
20 s and more to stop (a trial with 10 s timeouts: 23 s); a second signal kills it
without recording anything.

:class:`QuickStop` (enabled in ``EXTENSIONS``) acts for spiders whose class says
``stop_quickly = True``. Within :data:`POLL` seconds of a stop (the engine no longer
running, or the spider closing with requests still in progress) it sets the spider's
``stopping`` attribute (an errback can tell a request cut short by the stop from a
failure of the site), drops the requests waiting in the downloader's queues (their
errback gets :class:`StopRequested`), and, :data:`GRACE` seconds later, aborts the
connections of the downloads still in flight; then again every second until the
spider is closed. The spider's own ``spider_closed`` handlers then record what was
done; what was not is left for the next run (the org spider selects an organization
whose crawl did not finish again). Requests rendered by the browser are not cut short.

Stats: ``nuke/stop/dropped`` (requests dropped from the downloader's queues) and
``nuke/stop/aborted`` (connections aborted). No settings.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest
from twisted.python.failure import Failure

logger = logging.getLogger(__name__)

POLL = 0.2  # seconds between two looks at the engine
GRACE = 2.0  # seconds downloads in flight get to finish before their connections are cut


class StopRequested(IgnoreRequest):
    """A request dropped because the crawl was told to stop."""


class QuickStop:
    """See the module doc."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self._task: asyncio.Task[None] | None = None
        self._was_running = False
        crawler.signals.connect(self.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> QuickStop:
        return cls(crawler)

    def spider_opened(self, spider: Any) -> None:
        if getattr(spider, "stop_quickly", False):
            self._task = asyncio.ensure_future(self._watch(spider))

    def spider_closed(self, spider: Any) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _stop_requested(self) -> bool:
        engine = self.crawler.engine
        if engine is None:
            return False
        if engine.running:
            self._was_running = True
        elif self._was_running:  # spider_opened comes before the engine runs
            return True
        # not public API: a spider closing for another reason (CloseSpider) with
        # requests still in progress
        slot = getattr(engine, "_slot", None)
        return bool(
            getattr(slot, "closing", None) is not None and getattr(slot, "inprogress", None)
        )

    async def _watch(self, spider: Any) -> None:
        while not self._stop_requested():
            await asyncio.sleep(POLL)
        spider.stopping = True
        dropped = self._drop_queued()
        logger.info(
            "Stopping: %d queued requests dropped; downloads in flight get %.0f s "
            "to finish, then are cut short (left for the next run)",
            dropped,
            GRACE,
        )
        await asyncio.sleep(GRACE)
        while True:
            self._drop_queued()
            aborted = self._abort_connections()
            if aborted:
                logger.info("Stopping: %d connections cut short", aborted)
            await asyncio.sleep(1.0)

    def _drop_queued(self) -> int:
        """Fail the requests waiting in the downloader's per-host queues."""
        engine = self.crawler.engine
        downloader = getattr(engine, "downloader", None)
        dropped = 0
        for slot in list(getattr(downloader, "slots", {}).values()):
            queue = getattr(slot, "queue", None)
            while queue:
                request, deferred = queue.popleft()
                deferred.errback(Failure(StopRequested(f"stopping: {request.url} not fetched")))
                dropped += 1
        if dropped:
            self._stat("nuke/stop/dropped", dropped)
        return dropped

    def _abort_connections(self) -> int:
        """Abort the process's outgoing TCP connections (downloads in flight; the
        database and the browser do not use Twisted's)."""
        from twisted.internet import reactor, tcp

        aborted = 0
        readers = reactor.getReaders()  # type: ignore[misc]
        writers = reactor.getWriters()  # type: ignore[misc]
        transports: set[Any] = set(readers) | set(writers)
        for transport in transports:
            if not isinstance(transport, tcp.Client):
                continue
            if transport.connected:
                transport.abortConnection()
            else:
                transport.stopConnecting()
            aborted += 1
        if aborted:
            self._stat("nuke/stop/aborted", aborted)
        return aborted

    def _stat(self, key: str, count: int) -> None:
        if self.crawler.stats is not None:
            self.crawler.stats.inc_value(key, count)
