"""One crawler's membership in the cluster: its Redis client, keys, worker id, and what
happens when Redis goes away."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
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
        self.checked = False

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


UNLEASED = "_nuke_unleased"  # request.meta: popped, no host slot lease yet


def leased(cluster: Cluster, request: Any) -> None:
    """The popped request got its host slot, or will never need it (idempotent)."""
    if request.meta.pop(UNLEASED, False):
        cluster.unleased -= 1
        engine = cluster.crawler.engine
        slot = getattr(engine, "_slot", None)
        if slot is not None:
            slot.nextcall.schedule()  # room to pop again


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
