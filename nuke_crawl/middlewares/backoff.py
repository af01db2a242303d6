"""Retries with exponential backoff, ``Retry-After``, and a per-host slow-down on 429."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.downloadermiddlewares.retry import RetryMiddleware, get_retry_request
from scrapy.exceptions import DontCloseSpider, IgnoreRequest, NotConfigured
from scrapy.utils.asyncio import call_later, sleep
from scrapy.utils.conf import build_component_list
from scrapy.utils.misc import load_object
from scrapy.utils.response import response_status_message

from nuke_crawl import settings as defaults
from nuke_crawl.utils.http import parse_retry_after

if TYPE_CHECKING:
    # typing.Self requires Python 3.11
    from typing import Self

    from scrapy.core.downloader import Downloader
    from scrapy.crawler import Crawler
    from scrapy.http import Request, Response
    from scrapy.settings import BaseSettings
    from scrapy.utils.asyncio import CallLaterResult

logger = logging.getLogger(__name__)

#: Request meta key holding the wall-clock time before which a retry must not be sent.
NOT_BEFORE_META = "nuke_backoff_not_before"

_RATE_LIMIT_CODES = frozenset({429, 503})


def _scrapy_retry_enabled(settings: BaseSettings) -> bool:
    components = build_component_list(
        settings.get_component_priority_dict_with_base("DOWNLOADER_MIDDLEWARES")
    )
    return any(load_object(component) is RetryMiddleware for component in components)


class BackoffRetryMiddleware:
    """Downloader middleware that retries transient failures after an exponential backoff.

    It replaces Scrapy's ``RetryMiddleware`` at its slot (550); enabling both would retry
    twice, so that is refused::

        DOWNLOADER_MIDDLEWARES = {
            "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,
            "nuke_crawl.middlewares.backoff.BackoffRetryMiddleware": 550,
        }

    What is retried is what Scrapy retries: the ``RETRY_EXCEPTIONS`` and the responses in
    ``RETRY_HTTP_CODES``, at most ``RETRY_TIMES`` times (``get_retry_request`` counts,
    adjusts the priority and keeps Scrapy's ``retry/*`` stats). Retry *n* waits
    ``NUKE_BACKOFF_BASE * 2 ** (n - 1)`` seconds, at most ``NUKE_BACKOFF_MAX``; a
    ``Retry-After`` header on a 429 or 503 replaces that delay (at most
    ``NUKE_RETRY_AFTER_MAX``).

    The wait holds no downloader slot and does not block the reactor. The retry request
    carries its not-before time in ``meta["nuke_backoff_not_before"]``:

    - a crawl request goes back through the engine's ``request_scheduled`` signal, where
      it is parked (``call_later``) and re-crawled when due; the spider is kept open
      meanwhile;
    - a media download (``engine.download_async``, which loops on a returned request
      without the scheduler) waits in ``process_request``, so the pipeline gets the final
      response or failure. That wait counts against ``CONCURRENT_REQUESTS``.

    A host answering 429, or 503 with ``Retry-After``, is slowed down for the rest of the
    run: its downloader slot's delay is raised to at least the wait (doubling on a 429 to
    a request sent after the last slow-down), at most ``NUKE_SLOWDOWN_MAX_DELAY``. That
    floor is re-applied whenever a request reaches the slot and after every downloaded
    response, after AutoThrottle has adjusted the delay, so AutoThrottle cannot lower it.

    When retries are exhausted the last response or failure passes on, logged once at
    WARNING (``meta["give_up_log_level"]`` overrides).

    Request meta honoured: ``dont_retry``, ``max_retry_times``, ``priority_adjust``,
    ``give_up_log_level``.

    Settings:

    - ``RETRY_ENABLED`` (``True``), ``RETRY_TIMES`` (``2``), ``RETRY_HTTP_CODES`` (5xx,
      408, 429), ``RETRY_EXCEPTIONS`` (Scrapy's list), ``RETRY_PRIORITY_ADJUST`` (``-1``)
    - ``NUKE_BACKOFF_BASE`` (``1.0`` s), ``NUKE_BACKOFF_MAX`` (``60.0`` s)
    - ``NUKE_RETRY_AFTER_MAX`` (``300.0`` s)
    - ``NUKE_SLOWDOWN_MAX_DELAY`` (``30.0`` s)

    Stats: ``nuke/backoff/retries``, ``nuke/backoff/rate_limited``,
    ``nuke/backoff/slowed_hosts``, ``nuke/backoff/gave_up``,
    ``nuke/backoff/dropped_on_close`` (retries still waiting when the spider closed).
    """

    def __init__(self, crawler: Crawler):
        settings = crawler.settings
        if not settings.getbool("RETRY_ENABLED"):
            raise NotConfigured("RETRY_ENABLED is off")
        if _scrapy_retry_enabled(settings):
            raise ValueError(
                "BackoffRetryMiddleware replaces scrapy.downloadermiddlewares.retry."
                "RetryMiddleware: set it to None in DOWNLOADER_MIDDLEWARES"
            )
        self.crawler = crawler
        self.retry_http_codes = frozenset(int(x) for x in settings.getlist("RETRY_HTTP_CODES"))
        self.exceptions_to_retry: tuple[type[Exception], ...] = tuple(
            load_object(x) for x in settings.getlist("RETRY_EXCEPTIONS")
        )
        self.base: float = settings.getfloat("NUKE_BACKOFF_BASE", defaults.NUKE_BACKOFF_BASE)
        self.max_backoff: float = settings.getfloat("NUKE_BACKOFF_MAX", defaults.NUKE_BACKOFF_MAX)
        self.retry_after_max: float = settings.getfloat(
            "NUKE_RETRY_AFTER_MAX", defaults.NUKE_RETRY_AFTER_MAX
        )
        self.slowdown_max: float = settings.getfloat(
            "NUKE_SLOWDOWN_MAX_DELAY", defaults.NUKE_SLOWDOWN_MAX_DELAY
        )
        if min(self.base, self.max_backoff, self.retry_after_max, self.slowdown_max) < 0:
            raise ValueError(
                "NUKE_BACKOFF_BASE, NUKE_BACKOFF_MAX, NUKE_RETRY_AFTER_MAX and "
                "NUKE_SLOWDOWN_MAX_DELAY must not be negative"
            )
        # slot key -> delay floor, and when it was last raised (monotonic)
        self._floors: dict[str, float] = {}
        self._raised_at: dict[str, float] = {}
        self._parked: dict[int, tuple[Request, CallLaterResult]] = {}
        crawler.signals.connect(self._on_request_scheduled, signal=signals.request_scheduled)
        crawler.signals.connect(self._apply_floor_signal, signal=signals.request_reached_downloader)
        # Connected after AutoThrottle (an extension, built before the engine), so this
        # runs after it has recomputed slot.delay and before the slot's queue is processed.
        crawler.signals.connect(self._apply_floor_signal, signal=signals.response_downloaded)
        crawler.signals.connect(self._on_spider_idle, signal=signals.spider_idle)
        crawler.signals.connect(self._on_spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    # Downloader middleware hooks

    async def process_request(self, request: Request) -> None:
        """Wait out a retry's backoff when it did not come through the scheduler."""
        not_before = request.meta.pop(NOT_BEFORE_META, None)
        if not_before is not None:
            remaining = self._remaining(not_before)
            if remaining > 0:
                await sleep(remaining)
        self._apply_floor(self._downloader.get_slot_key(request))

    def process_response(self, request: Request, response: Response) -> Request | Response:
        delay = None
        if response.status in _RATE_LIMIT_CODES:
            retry_after = parse_retry_after(response.headers.get(b"Retry-After"))
            if retry_after is not None:
                delay = min(retry_after, self.retry_after_max)
            if response.status == 429 or retry_after is not None:
                self._slow_down(request, response, delay)
        if request.meta.get("dont_retry", False) or response.status not in self.retry_http_codes:
            return response
        return self._retry(request, response_status_message(response.status), delay) or response

    def process_exception(self, request: Request, exception: Exception) -> Request | None:
        if not isinstance(exception, self.exceptions_to_retry) or request.meta.get(
            "dont_retry", False
        ):
            return None
        return self._retry(request, exception, None)

    # Retrying

    def _backoff(self, attempt: int) -> float:
        return min(self.base * 2 ** (attempt - 1), self.max_backoff)

    def _remaining(self, not_before: Any) -> float:
        try:
            remaining = float(not_before) - time.time()
        except (TypeError, ValueError):
            return 0.0
        # Clamped: a stale value (a request restored from disk) must not park forever.
        return min(remaining, max(self.max_backoff, self.retry_after_max))

    def _retry(
        self, request: Request, reason: str | Exception, delay: float | None
    ) -> Request | None:
        spider = self.crawler.spider
        assert spider is not None
        retry_request = get_retry_request(
            request,
            spider=spider,
            reason=reason,
            max_retry_times=request.meta.get("max_retry_times"),
            priority_adjust=request.meta.get("priority_adjust"),
            logger=logger,
            give_up_log_level=request.meta.get("give_up_log_level", logging.WARNING),
        )
        stats = self.crawler.stats
        assert stats is not None
        if retry_request is None:
            stats.inc_value("nuke/backoff/gave_up")
            return None
        stats.inc_value("nuke/backoff/retries")
        if delay is None:
            delay = self._backoff(retry_request.meta["retry_times"])
        if delay > 0:
            retry_request.meta[NOT_BEFORE_META] = time.time() + delay
        logger.debug(
            "Retrying %(request)s in %(delay).2f s",
            {"request": retry_request, "delay": delay},
            extra={"spider": spider},
        )
        return retry_request

    def _on_request_scheduled(self, request: Request) -> None:
        not_before = request.meta.get(NOT_BEFORE_META)
        if not_before is None:
            return
        remaining = self._remaining(not_before)
        if remaining <= 0:
            del request.meta[NOT_BEFORE_META]
            return
        key = id(request)
        self._parked[key] = (request, call_later(remaining, self._release, key))
        # The engine drops a request when a request_scheduled handler raises
        # IgnoreRequest, without calling its errback; _release() crawls it again.
        raise IgnoreRequest(f"Retry of {request.url} parked for {remaining:.2f} s")

    def _release(self, key: int) -> None:
        request, _ = self._parked.pop(key)
        request.meta.pop(NOT_BEFORE_META, None)
        engine = self.crawler.engine
        if engine is None or engine.spider is None:
            return
        engine.crawl(request)

    def _on_spider_idle(self) -> None:
        if self._parked:
            raise DontCloseSpider

    def _on_spider_closed(self) -> None:
        if not self._parked:
            return
        stats = self.crawler.stats
        assert stats is not None
        stats.inc_value("nuke/backoff/dropped_on_close", len(self._parked))
        logger.warning(
            "%(count)d retries were still waiting for their backoff when the spider closed",
            {"count": len(self._parked)},
            extra={"spider": self.crawler.spider},
        )
        for _, later in self._parked.values():
            later.cancel()
        self._parked.clear()

    # Slowing hosts down

    @property
    def _downloader(self) -> Downloader:
        return self.crawler.engine.downloader

    def _slow_down(self, request: Request, response: Response, delay: float | None) -> None:
        stats = self.crawler.stats
        assert stats is not None
        stats.inc_value("nuke/backoff/rate_limited")
        key = self._downloader.get_slot_key(request)
        now = time.monotonic()
        if delay is None:
            delay = self._backoff(request.meta.get("retry_times", 0) + 1)
        old = self._floors.get(key)
        if old is None:
            floor = delay
        else:
            # Only a 429 to a request sent after the last slow-down doubles the floor:
            # answers to requests already in flight then say nothing new.
            sent_at = now - float(request.meta.get("download_latency") or 0.0)
            repeated = response.status == 429 and sent_at > self._raised_at[key]
            floor = max(delay, old * 2 if repeated else old)
        floor = min(max(floor, self.base), self.slowdown_max)
        if old is not None and floor <= old:
            return
        self._floors[key] = floor
        self._raised_at[key] = now
        self._apply_floor(key)
        if old is None:
            stats.inc_value("nuke/backoff/slowed_hosts")
            log = logger.info
        else:
            log = logger.debug
        log(
            "Slowing down %(slot)s for the rest of the run: it answered %(status)d, "
            "download delay now at least %(floor).2f s",
            {"slot": key, "status": response.status, "floor": floor},
            extra={"spider": self.crawler.spider},
        )

    def _apply_floor(self, key: str) -> None:
        floor = self._floors.get(key)
        if floor is None:
            return
        slot = self._downloader.slots.get(key)
        if slot is not None and slot.delay < floor:
            slot.delay = floor

    def _apply_floor_signal(self, request: Request) -> None:
        key = request.meta.get("download_slot")
        if key is not None:
            self._apply_floor(key)

    def slot_floor(self, key: str) -> float | None:
        """The delay floor this middleware keeps for a downloader slot, if any."""
        return self._floors.get(key)
