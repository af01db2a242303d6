"""scrapy-redis's scheduler and duplicate filter, per organization.

- Requests live in ``<ns>:org:requests`` (a scrapy-redis priority queue whose pops are
  leased, :mod:`nuke_crawl.distributed.queue`); the queue persists, so a stopped cluster
  resumes from Redis.
- The org spider marks its requests ``dont_filter`` (its own de-duplication is per
  organization); here every new request of an organization is filtered through that
  organization's fingerprint set (``<ns>:org:<id>:seen``), so each page is fetched once
  across all workers, and counted in ``<ns>:org:<id>:pending`` until it is handled.
- A retry or redirect of a popped request replaces it: it takes over the place in the
  organization's count and the original's lease is dropped, all in one transaction.
- A worker whose extraction falls behind its downloads pops nothing more until it
  catches up (``NUKE_REDIS_BACKLOG``), while other workers are alive: the queue goes to
  the workers that keep up.
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from typing import Any

from scrapy.crawler import Crawler
from scrapy.http import Request
from scrapy_redis.dupefilter import RFPDupeFilter
from scrapy_redis.scheduler import Scheduler

from nuke_crawl import settings as defaults
from nuke_crawl.distributed import QUEUE
from nuke_crawl.distributed.cluster import (
    UNLEASED,
    Cluster,
    RedisError,
    crawler_cluster,
    leased,
    org_id_of,
)
from nuke_crawl.distributed.queue import LEASE, LeasedPriorityQueue
from nuke_crawl.extensions.promptclose import wake_engine
from nuke_crawl.extensions.workers import worker_pool
from nuke_crawl.workers.pool import WorkerError, WorkerPool

logger = logging.getLogger(__name__)

# Requests popped in one round trip at most (within the room left by max_unleased).
POP_BATCH = 8

# KEYS: seen, queue, pending; ARGV: fingerprint, score, data. 1: queued, 0: a duplicate.
_ENQUEUE_NEW = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('INCR', KEYS[3])
return 1
"""


class OrgDupeFilter(RFPDupeFilter):  # type: ignore[misc]
    """scrapy-redis's duplicate filter with one fingerprint set per organization
    (``<ns>:org:<id>:seen``, reset when the organization's crawl starts again), and a
    cheap fingerprint: the org spider's URLs are canonical already. A page fetched again
    through the browser (JavaScript detected) is another fingerprint."""

    @classmethod
    def from_spider(cls, spider: Any) -> OrgDupeFilter:
        cluster = crawler_cluster(spider.crawler)
        return cls(cluster.redis, key=f"{cluster.keys.ns}:{spider.name}:dupefilter")

    def request_fingerprint(self, request: Request) -> str:
        js = "js" if request.meta.get("playwright") else ""
        text = f"{request.method} {request.url} {js}".encode() + (request.body or b"")
        return hashlib.sha1(text).hexdigest()[:20]


class OrgRedisScheduler(Scheduler):  # type: ignore[misc]
    """``scrapy_redis.scheduler.Scheduler`` for the org spider (set by
    :func:`nuke_crawl.distributed.configure` when ``NUKE_REDIS_URL`` is set). Never
    raises on a lost Redis: it tells the cluster, which stops the crawl cleanly."""

    cluster: Cluster
    queue: LeasedPriorityQueue
    df: OrgDupeFilter
    max_unleased: int
    _popped: deque[Request]  # popped together (leased to this worker), not yet handed out
    pop_at: int  # the room, in requests waiting for a lease, worth a pop
    max_backlog: int  # NUKE_REDIS_BACKLOG
    pool: WorkerPool | None  # the extraction processes whose backlog pauses the pops
    paused: bool  # pops paused until the extraction catches up

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> OrgRedisScheduler:
        cluster = crawler_cluster(crawler)
        # no ping here (scrapy-redis pings and raises): the spider says why it cannot start
        instance = cls(
            server=cluster.redis,
            persist=True,
            queue_key=cluster.keys.requests("%(spider)s"),
            queue_cls=QUEUE,
            dupefilter_key=f"{cluster.keys.ns}:%(spider)s:dupefilter",
        )
        instance.stats = crawler.stats
        instance.cluster = cluster
        instance.max_unleased = max(1, crawler.settings.getint("CONCURRENT_REQUESTS_PER_DOMAIN"))
        instance._popped = deque()
        instance.pop_at = min(POP_BATCH // 2, instance.max_unleased)
        instance.max_backlog = crawler.settings.getint(
            "NUKE_REDIS_BACKLOG", defaults.NUKE_REDIS_BACKLOG
        )
        instance.pool = None
        instance.paused = False
        return instance

    def open(self, spider: Any) -> None:
        self.spider = spider
        self.queue = LeasedPriorityQueue(
            self.server, spider, self.queue_key % {"spider": spider.name}, self.serializer
        )
        keys = self.cluster.keys
        self.queue.lease_to(
            keys.inflight(self.cluster.worker), keys.inflight_scores(self.cluster.worker)
        )
        self.df = OrgDupeFilter.from_spider(spider)
        if self.max_backlog >= 0:
            try:
                self.pool = worker_pool(self.cluster.crawler)
            except WorkerError:
                self.pool = None  # no extraction processes: nothing to wait for
            else:
                self.pool.add_listener(self._caught_up)
        try:
            queued = len(self.queue)
        except RedisError:
            return  # the spider's start says Redis is unreachable
        if queued:
            logger.info("Resuming from Redis: %d requests queued", queued)

    def close(self, reason: str) -> None:
        """Requests this worker popped and never finished go back to the queue."""
        cluster = self.cluster
        cluster.batch.flush()  # what finished is recorded first, so it stays finished
        self._popped.clear()  # leased in Redis like the rest: requeued below
        if cluster.lost is not None:
            return
        keys = cluster.keys
        try:
            back = self.queue.requeue(
                keys.inflight(cluster.worker),
                keys.inflight_scores(cluster.worker),
                keys.workers,
                cluster.worker,
            )
        except RedisError:
            return
        if back:
            logger.info("Returned %d unfinished requests to the Redis queue", back)

    def enqueue_request(self, request: Request) -> bool:
        if self.cluster.lost is not None:
            return False
        org_id = org_id_of(request)
        leased(self.cluster, request)
        lease = request.meta.pop(LEASE, None)
        try:
            if lease is not None:
                self._replace(request, lease)
            elif org_id is not None:
                self._enqueue_later(request, org_id)
                return True  # a duplicate is filtered (and logged) when the batch is sent
            else:
                if not request.dont_filter and self.df.request_seen(request):
                    return False
                self.queue.push(request)
        except RedisError as exc:
            self.cluster.on_error(exc)
            return False
        if self.stats:
            self.stats.inc_value("scheduler/enqueued/redis")
        return True

    def _enqueue_later(self, request: Request, org_id: str) -> None:
        """Queue a new request of an organization unless its fingerprint was seen, with
        this turn's other writes (:class:`~nuke_crawl.distributed.cluster.TickBatch`): a
        listing page's links cost one round trip, not one each. Scrapy's
        ``request_dropped`` signal is not sent for a duplicate found this way."""
        keys = self.cluster.keys
        redis_keys = [keys.org(org_id, "seen"), self.queue.key, keys.org(org_id, "pending")]
        args = [self.df.request_fingerprint(request), -request.priority, self.queue.encode(request)]

        def commands(pipe: Any) -> None:
            pipe.eval(_ENQUEUE_NEW, 3, *redis_keys, *args)

        def then(results: list[Any]) -> None:
            if not results[0]:
                self.df.log(request, self.spider)
            elif self.stats:
                self.stats.inc_value("scheduler/enqueued/redis")

        self.cluster.batch.add(commands, then)

    def _replace(self, request: Request, lease: str) -> None:
        keys = self.cluster.keys
        worker = self.cluster.worker
        pipe = self.server.pipeline(transaction=True)
        pipe.zadd(self.queue.key, {self.queue.encode(request): -request.priority})
        pipe.hdel(keys.inflight(worker), lease)
        pipe.hdel(keys.inflight_scores(worker), lease)
        pipe.execute()

    def next_request(self) -> Request | None:
        if self.cluster.lost is not None:
            return None
        if not self._popped:
            if self._behind():
                return None
            room = self.max_unleased - self.cluster.unleased
            if room <= 0 or (self.cluster.unleased and room < self.pop_at):
                # leave the queue to workers that can start a request now; while some
                # wait here, pop a few at a time rather than one each round trip
                return None
            try:
                self._popped.extend(self.queue.pop_many(min(room, POP_BATCH)))
            except RedisError as exc:
                self.cluster.on_error(exc)
                return None
            if not self._popped:
                return None
        request = self._popped.popleft()
        request.meta[UNLEASED] = True
        self.cluster.unleased += 1
        if self.stats:
            self.stats.inc_value("scheduler/dequeued/redis")
        return request

    def _behind(self) -> bool:
        """More pages wait for this worker's extraction processes than
        ``NUKE_REDIS_BACKLOG`` while other workers are alive: pop nothing until they
        catch up. On a busy machine the crawler's event loop outruns its extraction
        processes (they run at a lower priority, ``NUKE_WORKER_NICE``); pages it kept
        downloading would only wait in memory while another worker could handle them,
        and its backlog would be a tail at the end of the crawl. A worker alone pops on:
        nobody else would take the pages."""
        if not self._over_backlog():
            return False
        if not self.paused:
            self.paused = True
            if self.stats:
                self.stats.inc_value("nuke/redis/backlog_pauses")
        return True

    def _over_backlog(self) -> bool:
        pool = self.pool
        return pool is not None and self.cluster.peers > 0 and pool.waiting > self.max_backlog

    def _caught_up(self) -> None:
        """A worker process finished a call: pop again if the backlog is down."""
        if self.paused and not self._over_backlog():
            self.paused = False
            wake_engine(self.cluster.crawler)

    def has_pending_requests(self) -> bool:
        if self.cluster.lost is not None:
            return False
        if self._popped or len(self.cluster.batch):
            return True
        try:
            return len(self.queue) > 0
        except RedisError as exc:
            self.cluster.on_error(exc)
            return False
