"""scrapy-redis's priority queue, with a lease on every request it hands out.

scrapy-redis pops a request for good: a worker killed before the response is handled
loses it. Here the pop moves the encoded request into the worker's in-flight hash in
the same Lua script; the coordinator removes it once the response (or failure) is fully
handled, and a live worker puts a dead worker's in-flight requests back in the queue.
"""

from __future__ import annotations

from typing import Any

from scrapy.http import Request
from scrapy_redis.queue import PriorityQueue

# KEYS: queue, in-flight hash, in-flight scores; ARGV: one lease id per request wanted.
# Pops the first #ARGV requests (fewer if fewer wait) into the in-flight hash.
_POP = """
local r = redis.call('ZRANGE', KEYS[1], 0, #ARGV - 1, 'WITHSCORES')
if #r == 0 then return {} end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, #r / 2 - 1)
local out = {}
for i = 1, #r, 2 do
  local lease = ARGV[(i + 1) / 2]
  redis.call('HSET', KEYS[2], lease, r[i])
  redis.call('HSET', KEYS[3], lease, r[i + 1])
  out[#out + 1] = r[i]
end
return out
"""

# KEYS: queue, in-flight hash, in-flight scores, workers; ARGV: worker id.
# Puts every request the worker had in flight back in the queue and forgets it.
_REQUEUE = """
local data = redis.call('HGETALL', KEYS[2])
local n = 0
for i = 1, #data, 2 do
  local score = redis.call('HGET', KEYS[3], data[i]) or '0'
  redis.call('ZADD', KEYS[1], score, data[i + 1])
  n = n + 1
end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
return n
"""

LEASE = "_nuke_lease"  # request.meta key: the lease id of a popped request


class LeasedPriorityQueue(PriorityQueue):  # type: ignore[misc]
    """A ``scrapy_redis.queue.PriorityQueue`` whose ``pop`` leases what it returns to
    this worker (``<ns>:inflight:<worker>``)."""

    def __init__(self, server: Any, spider: Any, key: str, serializer: Any = None) -> None:
        super().__init__(server, spider, key, serializer)
        self._pop = server.register_script(_POP)
        self._requeue = server.register_script(_REQUEUE)
        self._next_lease = 0
        self.inflight_key = ""
        self.scores_key = ""

    def lease_to(self, inflight_key: str, scores_key: str) -> None:
        self.inflight_key, self.scores_key = inflight_key, scores_key

    def encode(self, request: Request) -> bytes:
        return bytes(self._encode_request(request))

    def pop(self, timeout: int = 0) -> Request | None:
        popped = self.pop_many(1)
        return popped[0] if popped else None

    def pop_many(self, count: int) -> list[Request]:
        """Up to ``count`` requests, highest priority first, in one round trip, each
        leased to this worker."""
        leases = [str(self._next_lease + i) for i in range(1, max(1, count) + 1)]
        self._next_lease += len(leases)
        found = self._pop(keys=[self.key, self.inflight_key, self.scores_key], args=leases)
        requests = []
        for lease, data in zip(leases, found or [], strict=False):
            request: Request = self._decode_request(data)
            request.meta[LEASE] = lease
            requests.append(request)
        return requests

    def requeue(self, inflight_key: str, scores_key: str, workers_key: str, worker: str) -> int:
        """Put a (dead or stopping) worker's in-flight requests back; how many."""
        return int(
            self._requeue(keys=[self.key, inflight_key, scores_key, workers_key], args=[worker])
        )
