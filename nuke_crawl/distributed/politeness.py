"""Per-domain politeness shared by every worker through Redis.

Scrapy's downloader slots limit concurrency and delay per process; three workers on
one site would each send ``CONCURRENT_REQUESTS_PER_DOMAIN`` requests. Here a request
takes a lease on its host's slot in Redis right before it is downloaded (a sorted set of
leases that expire, so a killed worker's leases run out) and gives it back when the
response or error arrives; a new request starts only when fewer than the limit are in
flight across all workers and at least the host's delay has passed since the previous
start. The delay is the largest of ``DOWNLOAD_DELAY``, this worker's AutoThrottle delay
for the slot and the latest one any worker published.

A worker asks for leases for all its requests waiting on a host at once, and gives a
lease back and asks for its waiting requests' in the same round trip (with its other
writes of that moment: :class:`~nuke_crawl.distributed.cluster.TickBatch`), so a busy
host costs about one round trip a page, not three. While other workers wait for a host
too, a worker gets at most its fair share of the host's slots (the limit divided by the
number of workers waiting), so one worker's quick hand-overs never starve the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.http import Request, Response
from scrapy.utils.httpobj import urlparse_cached

from nuke_crawl.distributed import redis_url
from nuke_crawl.distributed.cluster import RedisError, crawler_cluster, leased

logger = logging.getLogger(__name__)

# KEYS: leases, next, delay, held, wanting. ARGV: worker, limit, delay ms (this worker),
# lease ms, horizon ms, wanting ms, then one token per request waiting.
# Grants leases to the first waiting requests: as many as there are free slots, no more
# than the worker's fair share while other workers wait for the host (``wanting``, each
# entry refreshed by its worker's every ask), and, when the host has a delay, only those
# whose turn comes within the horizon (the i-th of them may start i delays from now).
# ``held`` counts each worker's leases. Returns {granted, ms to wait (-1: no slot for
# this worker now), the delay used}.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local me = ARGV[1]
local limit = tonumber(ARGV[2])
local wanted = #ARGV - 6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
local free = limit - redis.call('ZCARD', KEYS[1])
local others = redis.call('ZCARD', KEYS[5])
if redis.call('ZSCORE', KEYS[5], me) then others = others - 1 end
if others > 0 then
  local share = math.ceil(limit / (others + 1))
  share = share - math.max(0, tonumber(redis.call('HGET', KEYS[4], me) or '0'))
  if share < free then free = share end
end
if free <= 0 then
  redis.call('ZADD', KEYS[5], now + tonumber(ARGV[6]), me)
  return {0, -1, 0}
end
local nxt = tonumber(redis.call('GET', KEYS[2]) or '0')
if nxt > now then
  redis.call('ZADD', KEYS[5], now + tonumber(ARGV[6]), me)
  return {0, nxt - now, 0}
end
local delay = math.max(tonumber(ARGV[3]), tonumber(redis.call('GET', KEYS[3]) or '0'))
local n = math.min(free, wanted)
if delay > 0 then n = math.min(n, 1 + math.floor(tonumber(ARGV[5]) / delay)) end
for i = 1, n do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[6 + i])
end
redis.call('HINCRBY', KEYS[4], me, n)
redis.call('PEXPIRE', KEYS[4], tonumber(ARGV[4]))
if n < wanted then
  redis.call('ZADD', KEYS[5], now + tonumber(ARGV[6]), me)
else
  redis.call('ZREM', KEYS[5], me)
end
redis.call('SET', KEYS[2], now + n * delay, 'PX', math.max(n * delay, 1) + 1000)
return {n, 0, delay}
"""

_FULL = -1
SLOT = "_nuke_slot"  # request.meta: (host key, lease token)
HORIZON_MS = 50  # leases granted at once start within this many milliseconds
WANTING_MS = 250  # a worker that stops asking for a host stops counting as waiting
HOLDING_POLL = 0.05  # seconds between asks while this worker holds leases of the host


class SharedPolitenessMiddleware:
    """A downloader middleware (installed by :func:`nuke_crawl.distributed.configure`,
    priority 950). Reads ``CONCURRENT_REQUESTS_PER_DOMAIN``, ``DOWNLOAD_SLOTS``
    (per-host ``concurrency``/``delay``), ``DOWNLOAD_DELAY`` and ``DOWNLOAD_TIMEOUT``
    (leases expire after it plus a minute).

    A worker's requests waiting for a host queue here; one task a host (:meth:`_grant`)
    asks for their leases, and a lease given back asks again for them in the same
    transaction (:meth:`_release`). When no slot is free the task polls for other
    workers' releases: every 5 to 20 ms, or every 50 ms while this worker holds leases of
    the host (its own releases ask again anyway)."""

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
        # host -> requests waiting for a lease (token, the future its start offset is set on)
        self._waiting: dict[str, deque[tuple[str, asyncio.Future[int]]]] = {}
        self._granting: dict[str, asyncio.Task[None]] = {}
        # set when a lease of this worker's for the host came back without all of its
        # waiting requests served: the host's task asks again at once
        self._freed: dict[str, asyncio.Event] = {}
        self._published: dict[str, tuple[int, float]] = {}  # host -> (delay ms, when)
        self._holding: dict[str, int] = {}  # host -> leases this worker's requests hold

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

    def _redis_keys(self, key: str) -> list[str]:
        keys = self.cluster.keys
        return [keys.slot(key, part) for part in ("leases", "next", "delay", "held", "wanting")]

    def _ask(self, key: str) -> tuple[list[Any], list[asyncio.Future[int]]]:
        """The acquisition script's arguments for every request of this worker waiting
        on the host, and those requests (taken off the queue: :meth:`_served` puts back
        those not granted)."""
        waiting = self._waiting.get(key)
        futures = []
        tokens = []
        while waiting:
            token, future = waiting.popleft()
            if not future.done():  # not given up (a stop)
                futures.append(future)
                tokens.append(token)
        conf = self.slots.get(key) or {}
        limit = int(conf.get("concurrency", self.limit))
        delay_ms = int(max(float(conf.get("delay", 0.0)), self._local_delay(key)) * 1000)
        args = [self.cluster.worker, limit, delay_ms, self.lease_ms, HORIZON_MS, WANTING_MS]
        return [*args, *tokens], futures

    def _served(
        self, key: str, asked: list[Any], futures: list[asyncio.Future[int]], result: Any
    ) -> tuple[int, int]:
        """Hand out what the script granted, in order; the rest wait on. Returns (granted,
        ms to wait)."""
        n, wait, delay = (int(x) for x in result)
        tokens = asked[6:]
        for i in range(n):
            if futures[i].done():  # gave up since it was asked for: the lease goes back
                self._give_back(key, tokens[i])
            else:
                futures[i].set_result(i * delay)
        rest = [(tokens[i], futures[i]) for i in range(n, len(futures))]
        self._waiting.setdefault(key, deque()).extendleft(reversed(rest))
        return n, wait

    async def process_request(self, request: Request) -> None:
        if self.cluster.lost is not None:
            raise IgnoreRequest("Redis lost: stopping")
        key = self._slot_key(request)
        self._tokens += 1
        token = f"{self.cluster.worker}:{self._tokens}"
        keys = self.cluster.keys
        if key not in self._hosts:
            try:
                self.cluster.redis.sadd(keys.hosts_of(self.cluster.worker), key)
            except RedisError as exc:
                self.cluster.on_error(exc)
                raise IgnoreRequest("Redis lost: stopping") from None
            self._hosts.add(key)
        granted: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, deque()).append((token, granted))
        if key not in self._granting:
            self._granting[key] = asyncio.ensure_future(self._grant(key))
        try:
            offset = await granted
        finally:
            leased(self.cluster, request)
        try:
            if offset:  # granted with others: its turn comes that many ms later
                await asyncio.sleep(offset / 1000)
        except BaseException:
            self._give_back(key, token)
            raise
        request.meta[SLOT] = (key, token)
        self._holding[key] = self._holding.get(key, 0) + 1

    async def _grant(self, key: str) -> None:
        """Ask for leases for this worker's requests waiting on the host until none is
        left: again at once when one of its leases comes back, else polling."""
        redis_keys = self._redis_keys(key)
        backoff = 0.005
        try:
            while self._waiting.get(key):
                freed = self._freed.get(key)
                if freed is None:
                    freed = self._freed[key] = asyncio.Event()
                freed.clear()
                asked, futures = self._ask(key)
                if not futures:
                    return
                try:
                    result = self._acquire(keys=redis_keys, args=asked)
                except RedisError as exc:
                    self.cluster.on_error(exc)
                    for future in futures:
                        future.set_exception(IgnoreRequest("Redis lost: stopping"))
                    self._fail_waiting(key)
                    return
                n, wait = self._served(key, asked, futures, result)
                if n:
                    backoff = 0.005
                elif wait == _FULL:
                    # No slot for this worker now. While it holds some, each one it gives
                    # back asks again (:meth:`_release`): a slow poll is enough, for slots
                    # other workers leave. Otherwise poll, less often the longer it lasts.
                    backoff = min(backoff * 2, 0.02)
                    poll = HOLDING_POLL if self._holding.get(key) else backoff
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(freed.wait(), poll)
                else:  # the host's delay: wait exactly that
                    await asyncio.sleep(min(wait, 1000) / 1000)
        finally:
            self._granting.pop(key, None)

    def _fail_waiting(self, key: str) -> None:
        for _, future in self._waiting.pop(key, deque()):
            if not future.done():
                future.set_exception(IgnoreRequest("Redis lost: stopping"))

    def _give_back(self, key: str, token: str) -> None:
        """A lease granted to a request that gave up before its download."""
        keys = self._redis_keys(key)
        worker = self.cluster.worker

        def commands(pipe: Any) -> None:
            pipe.zrem(keys[0], token)
            pipe.hincrby(keys[3], worker, -1)

        self.cluster.batch.add(commands)

    def _release(self, request: Request, publish: bool) -> None:
        held = request.meta.pop(SLOT, None)
        if held is None or self.cluster.lost is not None:
            return
        key, token = held
        self._holding[key] -= 1
        redis_keys = self._redis_keys(key)
        worker = self.cluster.worker
        delay = int(self._local_delay(key) * 1000) if publish else None
        now = time.monotonic()
        last = self._published.get(key)
        if delay is not None and last is not None and last[0] == delay and now - last[1] < 1.0:
            delay = None  # published less than a second ago
        if delay is not None:
            self._published[key] = (delay, now)
        asking: list[Any] = []  # (what was asked, for whom), when requests wait on the host

        def commands(pipe: Any) -> None:
            pipe.zrem(redis_keys[0], token)
            pipe.hincrby(redis_keys[3], worker, -1)
            if delay is not None:  # this worker's AutoThrottle view of the host, for the others
                pipe.set(redis_keys[2], delay, ex=600)
            if self._waiting.get(key):  # the same round trip asks for the waiting ones
                asked, futures = self._ask(key)
                if futures:
                    asking.extend((asked, futures))
                    pipe.eval(_ACQUIRE, len(redis_keys), *redis_keys, *asked)

        def then(results: list[Any]) -> None:
            if asking:
                n, _ = self._served(key, asking[0], asking[1], results[-1])
                if n < len(asking[1]):
                    return  # no slot left for the rest: the host's task polls
            freed = self._freed.get(key)
            if freed is not None:
                freed.set()

        def failed() -> None:  # Redis lost: the requests asked for stop waiting
            for future in asking[1] if asking else []:
                if not future.done():
                    future.set_exception(IgnoreRequest("Redis lost: stopping"))

        # sent with the other writes of this turn of the loop (TickBatch)
        self.cluster.batch.add(commands, then, failed)

    def process_response(self, request: Request, response: Response) -> Response:
        self._release(request, publish=True)
        return response

    def process_exception(self, request: Request, exception: Exception) -> None:
        self._release(request, publish=False)


def free_leases(cluster: Any, worker: str) -> int:
    """Remove a dead worker's host slot leases at once (they would expire anyway, after
    ``DOWNLOAD_TIMEOUT`` plus a minute), its lease counts and its waiting marks; how
    many leases."""
    keys = cluster.keys
    redis = cluster.redis
    freed = 0
    for raw in redis.smembers(keys.hosts_of(worker)):
        host = raw.decode() if isinstance(raw, bytes) else str(raw)
        leases = keys.slot(host, "leases")
        mine = [m for m, _ in redis.zscan_iter(leases, match=f"{worker}:*")]
        if mine:
            freed += int(redis.zrem(leases, *mine))
        redis.hdel(keys.slot(host, "held"), worker)
        redis.zrem(keys.slot(host, "wanting"), worker)
    redis.delete(keys.hosts_of(worker))
    return freed
