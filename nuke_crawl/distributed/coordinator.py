"""The org spider as one worker among several: feeding, bookkeeping, liveness.

- **Feeding** (``-a from_queue=1``): organization ids pushed by ``scrapy org-enqueue``
  wait in ``<ns>:org:queue``; a worker pops them when it goes idle, the scrapy-redis way,
  and tops up to ``NUKE_REDIS_ORGS_PER_WORKER`` organizations of its own between
  heartbeats. The pop is leased (:mod:`nuke_crawl.distributed.orgqueue`): an organization
  stays claimed by the worker until its entry requests are in Redis, and goes back to the
  queue if the worker closes or dies before. It idles when the queue is empty;
  ``-a exit_when_empty=1`` makes it exit once no queued organization, queued request, or
  live worker's claimed organization or in-flight request is left.
- **Bookkeeping**: a request stays counted in ``<ns>:org:<id>:pending`` from its push
  until its response or failure is fully handled (items written); each worker adds what
  its pages counted to ``<ns>:org:<id>:summary`` in the same transaction. The worker that
  brings the count to zero writes the organization's summary to the database
  (``metadata.last_crawl``, ``nuke_org_crawls.finished_at``): an organization is finished
  in PostgreSQL exactly when every worker is done with it, and an organization whose crawl
  stopped part-way stays "not finished" there and is selected again.
- **Shared limits**: ``max_vehicles`` holds across workers (``<ns>:org:<id>:vehicles``, the
  vehicle pages given a slot, reserved in one round trip per listing page's batch of
  links), and once any worker found an organization's inventory no worker probes its
  common inventory paths (``<ns>:org:<id>:inventory``).
- **Liveness**: every ``NUKE_REDIS_HEARTBEAT`` seconds a worker records itself in
  ``<ns>:workers``; a worker silent for ``NUKE_REDIS_WORKER_TIMEOUT`` seconds (SIGKILL, a
  lost machine) is dead, and the next live worker puts its leased requests and its claimed
  organizations back in their queues.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter
from functools import partial
from typing import Any

from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import DontCloseSpider, NotConfigured
from scrapy.http import Request
from twisted.python.failure import Failure

from nuke_crawl import settings as defaults
from nuke_crawl.db import DatabaseError, store
from nuke_crawl.distributed import REFUSED, redis_url
from nuke_crawl.distributed.cluster import (
    Cluster,
    RedisError,
    crawler_cluster,
    leased,
    org_id_of,
)
from nuke_crawl.distributed.orgqueue import OrgQueue
from nuke_crawl.distributed.politeness import free_leases
from nuke_crawl.distributed.queue import LEASE
from nuke_crawl.extensions.database import crawler_database, prepare_database
from nuke_crawl.extensions.promptclose import wake_engine

logger = logging.getLogger(__name__)

# KEYS: the organization's keys (Keys.org_keys, pending first). Start its crawl unless
# one is under way: its count at 0, the rest (fingerprints, summary, slots...) cleared.
_ADOPT = """
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
if v > 0 then return 0 end
redis.call('SET', KEYS[1], 0)
redis.call('DEL', unpack(KEYS, 2))
return 1
"""

# KEYS: the organization's vehicle slots (a set); ARGV: max_vehicles, then the vehicle
# pages' keys. Per key: 1 given a slot now, 2 it has one already, 0 refused (all taken);
# then how many slots are taken.
_CLAIM_VEHICLES = """
local limit = tonumber(ARGV[1])
local taken = redis.call('SCARD', KEYS[1])
local out = {}
for i = 2, #ARGV do
  if redis.call('SISMEMBER', KEYS[1], ARGV[i]) == 1 then
    out[#out + 1] = 2
  elseif taken < limit then
    redis.call('SADD', KEYS[1], ARGV[i])
    taken = taken + 1
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
out[#out + 1] = taken
return out
"""


_COUNTS = (
    "pages",
    "vehicles_found",
    "created",
    "updated",
    "unchanged",
    "failed",
    "errors",
    "pagination_stopped",
)


class Coordinator:
    """An extension (installed by :func:`nuke_crawl.distributed.configure`). Settings:
    ``NUKE_REDIS_ORGS_PER_WORKER`` (8), ``NUKE_REDIS_HEARTBEAT`` (2.0),
    ``NUKE_REDIS_WORKER_TIMEOUT`` (30.0). Stats: ``nuke/redis/orgs_adopted``,
    ``nuke/redis/orgs_finished``, ``nuke/redis/requeued`` (a dead worker's requests),
    ``nuke/redis/orgs_requeued`` (a dead worker's claimed organizations)."""

    def __init__(self, crawler: Crawler) -> None:
        if not redis_url(crawler.settings) or crawler.spider is None:
            raise NotConfigured("NUKE_REDIS_URL is not set")
        self.crawler = crawler
        self.cluster: Cluster = crawler_cluster(crawler)
        settings = crawler.settings
        self.orgs_per_worker = max(
            1, settings.getint("NUKE_REDIS_ORGS_PER_WORKER", defaults.NUKE_REDIS_ORGS_PER_WORKER)
        )
        self.heartbeat = max(
            0.1, settings.getfloat("NUKE_REDIS_HEARTBEAT", defaults.NUKE_REDIS_HEARTBEAT)
        )
        self.timeout = max(
            self.heartbeat * 2,
            settings.getfloat("NUKE_REDIS_WORKER_TIMEOUT", defaults.NUKE_REDIS_WORKER_TIMEOUT),
        )
        spider: Any = crawler.spider
        self.spider = spider
        setattr(spider, "distributed", self)  # the org spider's hook  # noqa: B010
        self.args: Any = spider.args  # the org spider's OrgArgs
        self.from_queue = bool(self.args.from_queue)
        self.exit_when_empty = bool(self.args.exit_when_empty) or not self.from_queue
        self._adopt = self.cluster.redis.register_script(_ADOPT)
        self._claim_vehicles = self.cluster.redis.register_script(_CLAIM_VEHICLES)
        self.orgs = OrgQueue(self.cluster.redis, self.cluster.keys)
        self._pause_until = 0.0  # no popping before (the database failed)
        self.flushed: dict[str, Counter[str]] = {}
        self.finished = 0  # organizations whose crawl this worker recorded as finished
        self.mine: set[str] = set()  # organizations this worker started and saw unfinished
        self.tasks: set[asyncio.Task[Any]] = set()
        self._adopting = 0
        self._ticker: asyncio.Task[None] | None = None
        self._closing = False
        self._idle_since: float | None = None  # when the cluster was first seen idle
        self._worked = False  # whether any request of this worker's was done
        crawler.signals.connect(self.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self.spider_idle, signal=signals.spider_idle)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Coordinator:
        return cls(crawler)

    # -- hooks for the spider ----------------------------------------------------

    async def check(self) -> None:
        """Raise :class:`~nuke_crawl.distributed.DistributedError` if Redis is down."""
        self.cluster.check()
        self._beat()
        if self._ticker is None:
            self._ticker = asyncio.ensure_future(self._tick_forever())

    def adopt(self, org_id: str, *, finish_uncrawlable: bool = True) -> bool:
        """Start a crawl of the organization in Redis (its pending count, fingerprints and
        summary reset) unless another worker's crawl of it is under way. An organization
        the spider found uncrawlable (no ``config``: bad website or metadata) has no
        request to finish it, so it is finished here (unless ``finish_uncrawlable`` is
        false: the caller does it)."""
        try:
            started = bool(self._adopt(keys=self.cluster.keys.org_keys(org_id)))
        except RedisError as exc:
            self.cluster.on_error(exc)
            return False
        if started:
            self.mine.add(org_id)
            self.flushed.pop(org_id, None)
            self._stat("nuke/redis/orgs_adopted")
            progress = self.spider.progress.get(org_id)
            uncrawlable = progress is not None and progress.config is None
            # no request will bring it to zero: finished now
            if finish_uncrawlable and uncrawlable and self._flush_uncrawlable(org_id):
                self._task(self._finish(org_id))
        else:
            logger.info("Organization %s is being crawled by another worker: skipped", org_id)
        return started

    def claim_vehicles(self, org_id: str, keys: list[str], limit: int) -> tuple[list[int], bool]:
        """Slots for vehicle pages of the organization (``keys``: their canonical URLs, none
        twice) out of its ``limit`` (``max_vehicles``) across all workers, in one round
        trip. For each key, one of :data:`~nuke_crawl.distributed.GRANTED`,
        :data:`~nuke_crawl.distributed.HELD` (a worker was given that page's slot) and
        :data:`~nuke_crawl.distributed.REFUSED` (every slot is taken); and whether every
        slot is taken now. Redis lost: all refused."""
        digests = [hashlib.sha1(key.encode()).hexdigest()[:20] for key in keys]
        try:
            answer = self._claim_vehicles(
                keys=[self.cluster.keys.org(org_id, "vehicles")], args=[limit, *digests]
            )
        except RedisError as exc:
            self.cluster.on_error(exc)
            return [REFUSED] * len(keys), True
        flags = [int(flag) for flag in answer[:-1]]
        return flags, int(answer[-1]) >= limit

    def inventory_found(self, org_id: str) -> None:
        """This worker found the organization's inventory: no worker probes its common
        inventory paths any more (called once per organization by each worker that
        finds it, before the requests of the page that showed it are pushed)."""
        try:
            self.cluster.redis.set(self.cluster.keys.org(org_id, "inventory"), "found")
        except RedisError as exc:
            self.cluster.on_error(exc)

    def knows_inventory(self, org_id: str) -> bool:
        """Whether any worker found the organization's inventory in this crawl (asked
        before probing its common inventory paths). Redis lost: True (no probing)."""
        try:
            return bool(self.cluster.redis.exists(self.cluster.keys.org(org_id, "inventory")))
        except RedisError as exc:
            self.cluster.on_error(exc)
            return True

    # -- signals -----------------------------------------------------------------

    def spider_opened(self, spider: Any) -> None:
        engine = self.crawler.engine
        assert engine is not None and engine.scraper.slot is not None
        slot = engine.scraper.slot
        finish = slot.finish_response

        # Scrapy calls this once a response or failure has gone through its callback or
        # errback and every item and request it gave is handled: the request is done.
        def finish_response(result: Any, request: Request) -> None:
            finish(result, request)
            self._done(request, result)

        slot.finish_response = finish_response  # type: ignore[method-assign]

    def spider_idle(self, spider: Any) -> None:
        if self.cluster.lost is not None or self._closing:
            return
        if self._adopting or self.tasks:
            raise DontCloseSpider
        try:
            if self.from_queue and self._top_up():
                raise DontCloseSpider
            redis = self.cluster.redis
            keys = self.cluster.keys
            if redis.zcard(keys.requests(spider.name)):
                self._wake()
                raise DontCloseSpider
            if not self.exit_when_empty:
                raise DontCloseSpider
            if self._cluster_busy():
                self._idle_since = None
                raise DontCloseSpider
            # a worker that has had no work yet (started before anything was queued)
            # waits three heartbeats for some before it exits; one that worked exits now
            now = time.monotonic()
            if self._idle_since is None:
                self._idle_since = now
            if not self._worked and now - self._idle_since < 3 * self.heartbeat:
                raise DontCloseSpider
        except RedisError as exc:
            self.cluster.on_error(exc)

    async def spider_closed(self, spider: Any, reason: str) -> None:
        self._closing = True
        if self._ticker is not None:
            self._ticker.cancel()
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)
        self.cluster.batch.flush()  # the claims of organizations started end first
        if self.cluster.lost is not None:
            return  # left claimed in Redis: a live worker gives them back
        try:
            back = self.orgs.give_back(self.cluster.worker)
        except RedisError:
            return
        if back:
            logger.info("Returned %d organizations it had not started to the queue", len(back))

    # -- feeding -----------------------------------------------------------------

    def _top_up(self) -> bool:
        """Pop organizations up to this worker's share; whether any was popped."""
        if self._adopting or time.monotonic() < self._pause_until:
            return False
        self._prune_mine()
        room = self.orgs_per_worker - len(self.mine)
        if room <= 0:
            return False
        ids = self.orgs.pop(self.cluster.worker, room)  # claimed until started
        if not ids:
            return False
        self._adopting += 1
        self._task(self._adopt_ids(ids))
        return True

    def _prune_mine(self) -> None:
        if not self.mine:
            return
        keys = self.cluster.keys
        mine = sorted(self.mine)
        pipe = self.cluster.redis.pipeline(transaction=False)
        for org_id in mine:
            pipe.exists(keys.org(org_id, "pending"))
        for org_id, exists in zip(mine, pipe.execute(), strict=True):
            if not exists:
                self.mine.discard(org_id)

    async def _adopt_ids(self, ids: list[str]) -> None:
        """Start the organizations this worker popped (and claimed). Each claim ends once
        the organization's entry requests are in Redis, or it is finished as uncrawlable,
        dropped or skipped; a stop leaves the rest claimed, given back at the close."""
        spider = self.spider
        adb = crawler_database(self.crawler)
        worker = self.cluster.worker
        try:
            if not self.args.dry_run:
                await prepare_database(self.crawler)
            for org_id in ids:
                if self._stopping():
                    return
                org = await adb.run(store.get_organization, org_id)
                if org is None:
                    logger.warning("Queued organization %s is not in the database: dropped", org_id)
                    self.orgs.started(worker, org_id)
                    continue
                if not self.adopt(org_id, finish_uncrawlable=False):
                    if self.cluster.lost is None:
                        self.orgs.started(worker, org_id)  # another worker's crawl of it
                    continue
                dry = self.args.dry_run
                if not dry:
                    await adb.run(store.mark_crawls_started, [org_id])
                progress = spider.new_progress(org)  # bounds; website, metadata checked
                if progress.config is None:
                    spider.progress[org_id] = progress
                    if self._flush_uncrawlable(org_id):  # its entry error recorded
                        await self._finish(org_id)
                    self.orgs.started(worker, org_id)
                    continue
                if org.resume and not dry:
                    progress.known = await adb.run(store.known_listing_urls, org_id)
                if self._stopping():
                    return  # adopted, not started: its claim gives it to another worker
                spider.progress[org_id] = progress
                logger.info(
                    "Crawling organization %s from the queue%s",
                    org.business_name or org.website,
                    f" (resumed, {len(progress.known)} listings stored)" if org.resume else "",
                )
                for request in spider._entry_requests(org):
                    self.crawler.engine.crawl(request)  # type: ignore[union-attr]
                # the claim ends in the transaction that pushes those requests (TickBatch)
                self.cluster.batch.add(partial(self.orgs.started, worker, org_id))
        except DatabaseError as exc:
            # back to the queue now (not when this worker stops: it may run for days),
            # and no popping for a while rather than failing on them every heartbeat
            self._pause_until = time.monotonic() + self.timeout
            back = self._give_back()
            logger.error(
                "Cannot load queued organizations: %s (%d returned to the queue; "
                "trying again in %.0f s)",
                exc,
                len(back),
                self.timeout,
            )
        except RedisError as exc:
            self.cluster.on_error(exc)
        finally:
            self._adopting -= 1

    def _give_back(self) -> list[str]:
        """This worker's claimed organizations back in the queue (it never started them)."""
        self.cluster.batch.flush()  # the claims of organizations started end first
        try:
            back = self.orgs.give_back(self.cluster.worker)
        except RedisError as exc:
            self.cluster.on_error(exc)
            return []
        self.mine.difference_update(back)
        return back

    def _stopping(self) -> bool:
        return (
            self._closing
            or self.cluster.lost is not None
            or bool(getattr(self.spider, "stopping", False))
        )

    # -- bookkeeping ---------------------------------------------------------------

    def _counts(self, org_id: str) -> tuple[Counter[str], Any]:
        progress = self.spider.progress.get(org_id)
        if progress is None:
            return Counter(), None
        summary = self.spider.summary(progress)
        counts: Counter[str] = Counter({k: int(summary.get(k, 0)) for k in _COUNTS})
        for why, n in summary["skipped"].items():
            counts[f"skipped:{why}"] = int(n)
        if summary.get("render_js"):
            counts["render_js"] = 1
        return counts, progress

    def _done(self, request: Request, result: Any) -> None:
        self._worked = True
        leased(self.cluster, request)  # dropped before its download: no slot needed
        if isinstance(result, Failure) and getattr(self.spider, "stopping", False):
            # cut short by a stop (QuickStop): still leased and pending, it goes back
            # to the queue when the scheduler closes, for another worker or the next run
            return
        lease = request.meta.pop(LEASE, None)
        org_id = org_id_of(request)
        if lease is None or self.cluster.lost is not None:
            return
        keys = self.cluster.keys
        worker = self.cluster.worker
        counts: Counter[str] = Counter()
        progress: Any = None
        delta: Counter[str] = Counter()
        if org_id is not None:
            counts, progress = self._counts(org_id)
            delta = counts.copy()
            delta.subtract(self.flushed.get(org_id, Counter()))
            # the next request's delta starts from here, whichever batch it is sent in
            self.flushed[org_id] = counts
        unloaded_error = (
            progress is None and isinstance(result, Failure) and bool(request.meta.get("entry"))
        )

        # One transaction (with this turn's other writes: TickBatch): the lease goes,
        # the counts are added and the organization's pending count drops, or none of it.
        def commands(pipe: Any) -> None:
            pipe.hdel(keys.inflight(worker), lease)
            pipe.hdel(keys.inflight_scores(worker), lease)
            if org_id is None:
                return
            summary_key = keys.org(org_id, "summary")
            for field, n in delta.items():
                if n:
                    pipe.hincrby(summary_key, field, n)
            if unloaded_error:
                pipe.hincrby(summary_key, "errors", 1)  # loaded nowhere yet: still counted
            if progress is not None:
                self._caps(pipe, summary_key, progress)
            if progress is not None and progress.entry_error:
                pipe.hsetnx(summary_key, "entry_error", progress.entry_error)
            pipe.decr(keys.org(org_id, "pending"))

        def then(results: list[Any]) -> None:
            if org_id is not None and int(results[-1]) == 0:
                self._task(self._finish(org_id))

        self.cluster.batch.add(commands, then)

    def _flush_uncrawlable(self, org_id: str) -> bool:
        """An adopted organization whose website or metadata is refused (its entry error
        recorded by the spider) has no request: its counts go to its summary at once, and
        the caller records it finished (:meth:`_finish`) when this returns True."""
        counts, progress = self._counts(org_id)
        summary_key = self.cluster.keys.org(org_id, "summary")
        pipe = self.cluster.redis.pipeline(transaction=True)
        for field, n in counts.items():
            if n:
                pipe.hincrby(summary_key, field, n)
        if progress is not None and progress.entry_error:
            pipe.hsetnx(summary_key, "entry_error", progress.entry_error)
        if progress is not None:
            self._caps(pipe, summary_key, progress)
        try:
            pipe.execute()
        except RedisError as exc:
            self.cluster.on_error(exc)
            return False
        self.flushed[org_id] = counts
        return True

    @staticmethod
    def _caps(pipe: Any, summary_key: str, progress: Any) -> None:
        """The bounds the organization's crawl reached on this worker (``caps_hit``:
        name -> limit, the same limits on every worker), set in its Redis summary."""
        for name, limit in progress.budget.caps_hit.items():
            pipe.hset(summary_key, f"cap:{name}", int(limit))

    async def _finish(self, org_id: str) -> None:
        """Every request of the organization is done: record its crawl as finished."""
        keys = self.cluster.keys
        redis = self.cluster.redis
        try:
            raw = redis.hgetall(keys.org(org_id, "summary"))
        except RedisError as exc:
            self.cluster.on_error(exc)
            return
        fields = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in raw.items()
        }
        error = fields.pop("entry_error", None)
        summary: dict[str, Any] = {k: int(fields.pop(k, 0)) for k in _COUNTS}
        summary["skipped"] = {
            k.split(":", 1)[1]: int(v) for k, v in fields.items() if k.startswith("skipped:")
        }
        summary["render_js"] = bool(int(fields.get("render_js", 0)))
        summary["caps_hit"] = {
            k.split(":", 1)[1]: int(v) for k, v in fields.items() if k.startswith("cap:")
        }
        if not summary["pagination_stopped"]:
            del summary["pagination_stopped"]  # as in a single process: only when any
        progress = self.spider.progress.get(org_id)
        if (
            progress is not None
            and summary["render_js"]
            and not (progress.config and progress.config.render_js)
        ):
            summary["render_js_detected"] = True
        if not self.args.dry_run:
            try:
                await crawler_database(self.crawler).run(
                    store.record_crawl_result, org_id, summary, error, finished=True
                )
            except DatabaseError as exc:
                logger.error("Could not record the crawl of organization %s: %s", org_id, exc)
                return  # left unfinished: it is selected again
        try:
            redis.delete(*keys.org_keys(org_id))
        except RedisError as exc:
            self.cluster.on_error(exc)
        self.mine.discard(org_id)
        self.finished += 1
        self._stat("nuke/redis/orgs_finished")
        logger.info(
            "Organization %s finished across workers: %d pages, %d vehicles found, "
            "%d created, %d updated, %d errors",
            org_id,
            summary["pages"],
            summary["vehicles_found"],
            summary["created"],
            summary["updated"],
            summary["errors"],
        )

    # -- liveness -----------------------------------------------------------------

    async def _tick_forever(self) -> None:
        last_beat = 0.0
        while not self._closing and self.cluster.lost is None:
            try:
                now = time.monotonic()
                if now - last_beat >= self.heartbeat:
                    last_beat = now
                    self._beat()
                    self._reap()
                    self._forget_finished()
                    if self.from_queue:
                        self._top_up()
                self._nudge()
            except RedisError as exc:
                self.cluster.on_error(exc)
                return
            await asyncio.sleep(min(0.25, self.heartbeat))

    def _beat(self) -> None:
        """Record this worker alive, and count the others alive (``Cluster.peers``)."""
        now = time.time()
        pipe = self.cluster.redis.pipeline(transaction=False)
        pipe.zadd(self.cluster.keys.workers, {self.cluster.worker: now})
        pipe.zcount(self.cluster.keys.workers, now - self.timeout, "+inf")
        _, alive = pipe.execute()
        self.cluster.peers = max(0, int(alive) - 1)

    def _reap(self) -> bool:
        """Put dead workers' claimed organizations and leased requests back in their
        queues; whether there were any."""
        keys = self.cluster.keys
        redis = self.cluster.redis
        dead = redis.zrangebyscore(keys.workers, "-inf", time.time() - self.timeout)
        scheduler: Any = self.crawler.engine._slot.scheduler  # type: ignore[union-attr]
        any_back = False
        for raw in dead:
            worker = raw.decode() if isinstance(raw, bytes) else str(raw)
            # first: the request queue's requeue forgets the worker
            orgs = self.orgs.give_back(worker)
            if orgs:
                any_back = True
                logger.warning(
                    "Worker %s stopped answering: %d organizations it had not started queued again",
                    worker,
                    len(orgs),
                )
                self._stat("nuke/redis/orgs_requeued", len(orgs))
            back = scheduler.queue.requeue(
                keys.inflight(worker), keys.inflight_scores(worker), keys.workers, worker
            )
            free_leases(self.cluster, worker)
            if back:
                logger.warning(
                    "Worker %s stopped answering: %d of its requests requeued", worker, back
                )
                self._stat("nuke/redis/requeued", back)
                any_back = True
            if orgs or back:
                self._wake()
        return any_back

    def _forget_finished(self) -> None:
        """Drop this worker's state of organizations whose crawl ended (by any worker),
        so that a later crawl of one starts afresh here too."""
        progress = self.spider.progress
        ids = [org_id for org_id in progress if org_id not in self.mine]
        if not ids:
            return
        keys = self.cluster.keys
        pipe = self.cluster.redis.pipeline(transaction=False)
        for org_id in ids:
            pipe.exists(keys.org(org_id, "pending"))
        for org_id, exists in zip(ids, pipe.execute(), strict=True):
            if not exists:
                done = progress.pop(org_id, None)
                self.flushed.pop(org_id, None)
                if done is not None:  # what this worker did for it stays in its stats
                    self._stat(f"nuke/org/{org_id}/pages", done.pages)
                    self._stat(f"nuke/org/{org_id}/vehicles_found", done.vehicles_found)
                    for outcome, n in done.written.items():  # the pipeline's, via the spider
                        self._stat(f"nuke/org/{org_id}/vehicles_{outcome}", n)

    def _cluster_busy(self) -> bool:
        """Whether any work is left anywhere: a dead worker's work just queued again, or,
        in one snapshot (MULTI/EXEC), a queued request or organization, or another live
        worker's claimed organization or request in flight. Popped organizations stay
        claimed until their entry requests are pushed, in the same transaction, and
        popped requests leased until what they yielded is pushed, in the same
        transaction, so no work is ever out of sight of this check."""
        keys = self.cluster.keys
        redis = self.cluster.redis
        if self._reap():
            return True
        workers = [
            w.decode() if isinstance(w, bytes) else str(w)
            for w in redis.zrange(keys.workers, 0, -1)
        ]
        pipe = redis.pipeline(transaction=True)
        pipe.zcard(keys.requests(self.spider.name))
        if self.from_queue:
            pipe.zcard(keys.org_queue)
        for worker in workers:
            if worker != self.cluster.worker:
                pipe.hlen(keys.inflight(worker))
                pipe.zcard(keys.claimed(worker))
        return any(int(n) for n in pipe.execute())

    def _nudge(self) -> None:
        engine = self.crawler.engine
        if engine is None or engine.spider is None or engine.needs_backout():
            return
        # Room for more: look at Redis now rather than on Scrapy's next 5-second
        # heartbeat (requests other workers pushed, queued organizations, the cluster done).
        self._wake()

    def _wake(self) -> None:
        # requests another worker pushed are fetched sooner when the engine is nudged
        wake_engine(self.crawler)

    # -- helpers --------------------------------------------------------------------

    def _task(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _stat(self, key: str, n: int = 1) -> None:
        if self.crawler.stats is not None:
            self.crawler.stats.inc_value(key, n)


class OrgProgressMiddleware:
    """A downloader middleware (priority 5): before a request of an organization this
    worker has not seen is downloaded, the organization is loaded from the database
    (with the listings already stored), so that any worker can handle any page."""

    def __init__(self, crawler: Crawler) -> None:
        if not redis_url(crawler.settings):
            raise NotConfigured("NUKE_REDIS_URL is not set")
        self.crawler = crawler
        self.loading: dict[str, asyncio.Future[None]] = {}

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> OrgProgressMiddleware:
        return cls(crawler)

    async def process_request(self, request: Request) -> None:
        org_id = org_id_of(request)
        spider: Any = self.crawler.spider
        if org_id is None or org_id in spider.progress:
            return
        future = self.loading.get(org_id)
        if future is None:  # one load at a time per organization
            future = asyncio.ensure_future(self._load(org_id))
            self.loading[org_id] = future
            future.add_done_callback(lambda _: self.loading.pop(org_id, None))
        await asyncio.shield(future)
        return

    async def _load(self, org_id: str) -> None:
        spider: Any = self.crawler.spider
        adb = crawler_database(self.crawler)
        try:
            org = await adb.run(store.get_organization, org_id)
            if org is None or org_id in spider.progress:
                return
            # its bounds (counted per worker), render_js and limits, as where it started
            progress = spider.new_progress(org)
            if org.resume and not spider.args.dry_run:
                progress.known = await adb.run(store.known_listing_urls, org_id)
            spider.progress.setdefault(org_id, progress)
        except DatabaseError as exc:
            logger.error("Cannot load organization %s: %s", org_id, exc)
