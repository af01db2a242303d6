"""The organization queue (``<ns>:org:queue``), with a lease on every organization a
worker pops.

A plain ``ZPOPMIN`` would take an organization for good: a worker killed between the pop
and the push of the organization's first request (loading it from the database, marking
its crawl started) would lose it until the next ``org-enqueue``. Here the pop moves the
organizations into the worker's claimed set (``<ns>:claimed:<worker>``, with their queue
scores) in the same Lua script, like the request queue's leased pop
(:mod:`nuke_crawl.distributed.queue`). The worker removes a claim once the organization is
started (its entry requests are in Redis, where they are leased in turn), finished as
uncrawlable, dropped as missing from the database or skipped because another worker crawls
it. Whatever is still claimed goes back to the queue, in its old place, when the worker
closes, or when a live worker finds it dead (:meth:`Coordinator._reap
<nuke_crawl.distributed.coordinator.Coordinator._reap>`).
"""

from __future__ import annotations

from typing import Any

from nuke_crawl.distributed import Keys

# KEYS: queue, claimed; ARGV: how many. The popped ids, first queued first.
_POP = """
local r = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
local ids = {}
for i = 1, #r, 2 do
  redis.call('ZREM', KEYS[1], r[i])
  redis.call('ZADD', KEYS[2], r[i + 1], r[i])
  ids[#ids + 1] = r[i]
end
return ids
"""

# KEYS: queue, claimed. Every claimed id back in the queue with the score it was queued
# with (ahead of everything queued after it); the ids.
_GIVE_BACK = """
local r = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
local ids = {}
for i = 1, #r, 2 do
  redis.call('ZADD', KEYS[1], r[i + 1], r[i])
  ids[#ids + 1] = r[i]
end
redis.call('DEL', KEYS[2])
return ids
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class OrgQueue:
    """``<ns>:org:queue`` as ``from_queue`` workers use it: :meth:`pop` leases,
    :meth:`started` ends a lease, :meth:`give_back` returns a worker's leases. ``client``
    is a ``redis.Redis``; its errors are the caller's to handle."""

    def __init__(self, client: Any, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._pop = client.register_script(_POP)
        self._give_back = client.register_script(_GIVE_BACK)

    def pop(self, worker: str, count: int) -> list[str]:
        """Up to ``count`` organization ids, first queued first, claimed by ``worker``."""
        ids = self._pop(keys=[self.keys.org_queue, self.keys.claimed(worker)], args=[count])
        return [_text(org_id) for org_id in ids or []]

    def started(self, worker: str, org_id: str, pipe: Any = None) -> None:
        """``worker`` is done with the claim: the organization is started, finished or
        dropped. With ``pipe`` (a pipeline), as one of its commands: the worker sends it
        in the transaction that pushes the organization's entry requests."""
        (pipe if pipe is not None else self.redis).zrem(self.keys.claimed(worker), org_id)

    def give_back(self, worker: str) -> list[str]:
        """Put every organization ``worker`` still claims back in the queue; their ids."""
        ids = self._give_back(keys=[self.keys.org_queue, self.keys.claimed(worker)])
        return [_text(org_id) for org_id in ids or []]
