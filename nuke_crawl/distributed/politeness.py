"""Per-domain politeness shared by every worker through Redis.

Scrapy's downloader slots limit concurrency and delay per process; three workers on
one site would each send ``CONCURRENT_REQUESTS_PER_DOMAIN`` requests. Here a request
takes a lease on its host's slot in Redis right before it is downloaded (a sorted set of
leases that expire, so a killed worker's leases run out) and gives it back when the
response or error arrives; a new request starts only when fewer than the limit are in
flight across all workers and at least the host's delay has passed since the previous
start. The delay is the largest of ``DOWNLOAD_DELAY``, this worker's AutoThrottle delay
for the slot and the latest one any worker published.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.http import Request, Response
from scrapy.utils.httpobj import urlparse_cached

from nuke_crawl.distributed import redis_url
from nuke_crawl.distributed.cluster import RedisError, crawler_cluster, leased

logger = logging.getLogger(__name__)

# KEYS: leases, next, delay; ARGV: token, limit, delay ms (this worker), lease ms.
# Returns 0 when the lease is taken, -1 when every slot is taken, else the milliseconds
# until the host's delay has passed.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return -1 end
local nxt = tonumber(redis.call('GET', KEYS[2]) or '0')
if nxt > now then return nxt - now end
local delay = math.max(tonumber(ARGV[3]), tonumber(redis.call('GET', KEYS[3]) or '0'))
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[1])
redis.call('SET', KEYS[2], now + delay, 'PX', math.max(delay, 1) + 1000)
return 0
"""

_FULL = -1
SLOT = "_nuke_slot"  # request.meta: (host key, lease token)


class SharedPolitenessMiddleware:
    """A downloader middleware (installed by :func:`nuke_crawl.distributed.configure`,
    priority 950). Reads ``CONCURRENT_REQUESTS_PER_DOMAIN``, ``DOWNLOAD_SLOTS``
    (per-host ``concurrency``/``delay``), ``DOWNLOAD_DELAY`` and ``DOWNLOAD_TIMEOUT``
    (leases expire after it plus a minute)."""

    def __init__(self, crawler: Crawler) -> None:
        if not redis_url(crawler.settings):
            raise NotConfigured("NUKE_REDIS_URL is not set")
        self.crawler = crawler
        self.cluster = crawler_cluster(crawler)
        settings = crawler.settings
        self.limit = max(1, settings.getint("CONCURRENT_REQUESTS_PER_DOMAIN"))
        self.slots = settings.getdict("DOWNLOAD_SLOTS")
        self.base_delay = settings.getfloat("DOWNLOAD_DELAY")
        self.lease_ms = int((settings.getfloat("DOWNLOAD_TIMEOUT") + 60) * 1000)
        self._acquire = self.cluster.redis.register_script(_ACQUIRE)
        self._tokens = 0
        self._hosts: set[str] = set()
        # one request per host and worker asks Redis at a time; the others wait here
        self._turns: dict[str, asyncio.Lock] = {}

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> SharedPolitenessMiddleware:
        return cls(crawler)

    def _slot_key(self, request: Request) -> str:
        slot = request.meta.get("download_slot")
        return str(slot) if slot else (urlparse_cached(request).hostname or "")

    def _local_delay(self, key: str) -> float:
        engine = self.crawler.engine
        slot = engine.downloader.slots.get(key) if engine is not None else None
        return max(self.base_delay, slot.delay if slot is not None else 0.0)

    async def process_request(self, request: Request) -> None:
        if self.cluster.lost is not None:
            raise IgnoreRequest("Redis lost: stopping")
        key = self._slot_key(request)
        conf = self.slots.get(key) or {}
        limit = int(conf.get("concurrency", self.limit))
        delay_ms = int(max(float(conf.get("delay", 0.0)), self._local_delay(key)) * 1000)
        self._tokens += 1
        token = f"{self.cluster.worker}:{self._tokens}"
        keys = self.cluster.keys
        redis_keys = [keys.slot(key, "leases"), keys.slot(key, "next"), keys.slot(key, "delay")]
        if key not in self._hosts:
            try:
                self.cluster.redis.sadd(keys.hosts_of(self.cluster.worker), key)
            except RedisError as exc:
                self.cluster.on_error(exc)
                raise IgnoreRequest("Redis lost: stopping") from None
            self._hosts.add(key)
        turn = self._turns.get(key)
        if turn is None:
            turn = self._turns[key] = asyncio.Lock()
        try:
            async with turn:
                await self._take(redis_keys, [token, limit, delay_ms, self.lease_ms])
        finally:
            leased(self.cluster, request)
        request.meta[SLOT] = (key, token)

    async def _take(self, redis_keys: list[str], args: list[Any]) -> None:
        backoff = 0.005
        while True:
            try:
                wait = int(self._acquire(keys=redis_keys, args=args))
            except RedisError as exc:
                self.cluster.on_error(exc)
                raise IgnoreRequest("Redis lost: stopping") from None
            if wait == 0:
                return
            if wait == _FULL:  # all slots taken: poll, less often the longer it lasts
                backoff = min(backoff * 2, 0.02)
                await asyncio.sleep(backoff)
            else:  # the host's delay: wait exactly that
                await asyncio.sleep(min(wait, 1000) / 1000)

    def _release(self, request: Request, publish: bool) -> None:
        held = request.meta.pop(SLOT, None)
        if held is None or self.cluster.lost is not None:
            return
        key, token = held
        keys = self.cluster.keys
        try:
            pipe = self.cluster.redis.pipeline(transaction=False)
            pipe.zrem(keys.slot(key, "leases"), token)
            if publish:  # this worker's AutoThrottle view of the host, for the others
                pipe.set(keys.slot(key, "delay"), int(self._local_delay(key) * 1000), ex=600)
            pipe.execute()
        except RedisError as exc:
            self.cluster.on_error(exc)

    def process_response(self, request: Request, response: Response) -> Response:
        self._release(request, publish=True)
        return response

    def process_exception(self, request: Request, exception: Exception) -> None:
        self._release(request, publish=False)


def free_leases(cluster: Any, worker: str) -> int:
    """Remove a dead worker's host slot leases at once (they would expire anyway, after
    ``DOWNLOAD_TIMEOUT`` plus a minute); how many."""
    keys = cluster.keys
    redis = cluster.redis
    freed = 0
    for raw in redis.smembers(keys.hosts_of(worker)):
        host = raw.decode() if isinstance(raw, bytes) else str(raw)
        leases = keys.slot(host, "leases")
        mine = [m for m, _ in redis.zscan_iter(leases, match=f"{worker}:*")]
        if mine:
            freed += int(redis.zrem(leases, *mine))
    redis.delete(keys.hosts_of(worker))
    return freed
