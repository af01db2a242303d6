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

# KEYS: queue, in-flight hash, in-flight scores; ARGV: lease id
_POP = """
local r = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #r == 0 then return false end
redis.call('ZREM', KEYS[1], r[1])
redis.call('HSET', KEYS[2], ARGV[1], r[1])
redis.call('HSET', KEYS[3], ARGV[1], r[2])
return r[1]
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
        self._next_lease += 1
        lease = str(self._next_lease)
        data = self._pop(keys=[self.key, self.inflight_key, self.scores_key], args=[lease])
        if not data:
            return None
        request: Request = self._decode_request(data)
        request.meta[LEASE] = lease
        return request

    def requeue(self, inflight_key: str, scores_key: str, workers_key: str, worker: str) -> int:
        """Put a (dead or stopping) worker's in-flight requests back; how many."""
        return int(
            self._requeue(keys=[self.key, inflight_key, scores_key, workers_key], args=[worker])
        )
