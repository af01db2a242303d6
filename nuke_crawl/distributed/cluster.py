"""One crawler's membership in the cluster: its Redis client, keys, worker id, and what
happens when Redis goes away."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable
from typing import Any

import redis
from scrapy.crawler import Crawler

from nuke_crawl.distributed import (
    DistributedError,
    Keys,
    keys_from_settings,
    redact_redis_url,
    redis_url,
)
from nuke_crawl.extensions.promptclose import wake_engine

logger = logging.getLogger(__name__)

RedisError = redis.exceptions.RedisError


class Cluster:
    """Shared by the scheduler, the middlewares and the coordinator of one crawler
    (:func:`crawler_cluster`). Settings: ``NUKE_REDIS_URL``, ``NUKE_REDIS_NAMESPACE``."""

    def __init__(self, crawler: Crawler) -> None:
        url = redis_url(crawler.settings)
        if not url:
            raise DistributedError("NUKE_REDIS_URL is not set")
        self.crawler = crawler
        self.url = url
        self.keys: Keys = keys_from_settings(crawler.settings)
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        # Short timeouts: a lost Redis is noticed in seconds, never blocks the reactor long.
        self.redis: redis.Redis = redis.Redis.from_url(
            url,
            socket_timeout=5,
            socket_connect_timeout=3,
            retry_on_timeout=False,
        )
        self.lost: str | None = None
        # Requests this worker popped that have no host slot lease yet. Scrapy pops all it
        # can hold (CONCURRENT_REQUESTS); a worker would take a whole site's queue and
        # sit on it. While this many wait, the scheduler pops no more and other workers
        # get the rest of the queue.
        self.unleased = 0
        # other workers alive, as of this worker's last heartbeat
        self.peers = 0
        self.checked = False
        self.batch = TickBatch(self)

    def check(self) -> None:
        """Raise :class:`DistributedError` with one clear line if Redis is unreachable."""
        try:
            self.redis.ping()
        except RedisError as exc:
            self.lost = str(exc)
            raise DistributedError(
                f"Redis at {redact_redis_url(self.url)} is unreachable ({exc})"
            ) from None
        self.lost = None
        self.checked = True

    def on_error(self, exc: Exception) -> None:
        """Redis failed mid-run: say so once and stop the crawl cleanly. What this worker
        had in flight stays leased in Redis; another worker or a later run takes it back."""
        if self.lost is not None:
            return
        self.lost = str(exc)
        if not self.checked:
            return  # before the start: the spider's check says it, once
        logger.error(
            "Redis at %s was lost (%s): stopping; a later run resumes the crawl",
            redact_redis_url(self.url),
            exc,
        )
        stats = self.crawler.stats
        if stats is not None:
            stats.set_value("nuke/error", f"redis lost: {exc}")
        engine = self.crawler.engine
        if engine is not None and engine.spider is not None:
            asyncio.ensure_future(engine.close_spider_async(reason="redis_lost"))


Commands = Callable[[Any], None]  # adds commands to a redis-py pipeline
Then = Callable[[list[Any]], None]  # receives those commands' results


class TickBatch:
    """Redis writes made within :attr:`WAIT` seconds, sent together as one transaction
    (MULTI/EXEC): each page's lease release, its completion bookkeeping and the requests
    it yielded would each cost a round trip, and the reactor waits for every one of
    them. Used by the scheduler, the politeness middleware and the coordinator; the
    scheduler flushes before it closes."""

    #: how long the first write waits for company: long enough to gather the writes of
    #: several responses on a busy worker (about 0.3 ms less CPU a page in bench_org.py),
    #: short against any real site's response time
    WAIT = 0.002

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._entries: list[tuple[Commands, Then | None, Callable[[], None] | None]] = []
        self._handle: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def add(
        self,
        commands: Commands,
        then: Then | None = None,
        failed: Callable[[], None] | None = None,
    ) -> None:
        """``commands(pipeline)`` adds commands (called when the batch is sent);
        ``then(results)`` gets their results; if Redis fails instead, the cluster is
        told (it stops the crawl) and ``failed()`` is called."""
        self._entries.append((commands, then, failed))
        if self._handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a plain call): now
                self.flush()
                return
            self._handle = loop.call_later(self.WAIT, self.flush)

    @staticmethod
    def _fail(entries: list[Any]) -> list[Any]:
        for _, _, failed in entries:
            if failed is not None:
                failed()
        return []

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        entries, self._entries = self._entries, []
        if self.cluster.lost is not None:
            entries = self._fail(entries)
        if not entries:
            return
        pipe = self.cluster.redis.pipeline(transaction=True)
        spans: list[tuple[int, int, Then | None]] = []
        for commands, then, _ in entries:
            start = len(pipe)
            commands(pipe)
            spans.append((start, len(pipe), then))
        try:
            results = pipe.execute()
        except RedisError as exc:
            self.cluster.on_error(exc)
            self._fail(entries)
            return
        for start, end, then in spans:
            if then is None:
                continue
            try:
                then(results[start:end])
            except Exception:  # one caller's bug must not lose the others' results
                logger.exception("Error after a batch of Redis writes")


UNLEASED = "_nuke_unleased"  # request.meta: popped, no host slot lease yet


def leased(cluster: Cluster, request: Any) -> None:
    """The popped request got its host slot, or will never need it (idempotent)."""
    if request.meta.pop(UNLEASED, False):
        cluster.unleased -= 1
        wake_engine(cluster.crawler)  # room to pop again


def crawler_cluster(crawler: Crawler) -> Cluster:
    """The crawler's :class:`Cluster`, created on first use."""
    cluster: Cluster | None = getattr(crawler, "_nuke_cluster", None)
    if cluster is None:
        cluster = Cluster(crawler)
        crawler._nuke_cluster = cluster  # type: ignore[attr-defined]
    return cluster


def org_id_of(request: Any) -> str | None:
    org = request.meta.get("org_id")
    return str(org) if org else None
