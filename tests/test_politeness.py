"""The shared politeness script, the batched Redis writes and the batched pops, against
the real Redis at 127.0.0.1:6379 (whole crawls are in tests/test_distributed.py)."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from conftest import REDIS
from scrapy.http import Request
from scrapy.spiders import Spider
from scrapy.utils.test import get_crawler

from nuke_crawl.distributed.cluster import Cluster
from nuke_crawl.distributed.politeness import _ACQUIRE, _FULL
from nuke_crawl.distributed.queue import LEASE, LeasedPriorityQueue

pytestmark = pytest.mark.redis


@pytest.fixture
def client(ns: str) -> Iterator[tuple[redis.Redis, str]]:
    """The shared Redis and a namespace of this test's own (conftest's ``ns``)."""
    conn = redis.Redis.from_url(REDIS)
    yield conn, ns
    conn.close()


class Host:
    """One host's slot keys and the acquisition script, as a worker calls it."""

    def __init__(self, conn: redis.Redis, ns: str, limit: int, delay_ms: int = 0) -> None:
        self.conn = conn
        self.keys = [
            f"{ns}:slot:h:{part}" for part in ("leases", "next", "delay", "held", "wanting")
        ]
        self.limit = limit
        self.delay_ms = delay_ms
        self.script = conn.register_script(_ACQUIRE)

    def ask(self, worker: str, n: int) -> tuple[int, int, int]:
        tokens = [f"{worker}:{uuid.uuid4().hex[:6]}" for _ in range(n)]
        args = [worker, self.limit, self.delay_ms, 60_000, 50, 250, *tokens]
        granted, wait, delay = (int(x) for x in self.script(keys=self.keys, args=args))
        self.last = tokens[:granted]
        return granted, wait, delay

    def release(self, worker: str, token: str) -> None:
        self.conn.zrem(self.keys[0], token)
        self.conn.hincrby(self.keys[3], worker, -1)

    def in_flight(self) -> int:
        return int(self.conn.zcard(self.keys[0]))


def test_leases_for_every_waiting_request_in_one_call_within_the_limit(
    client: tuple[redis.Redis, str],
) -> None:
    conn, ns = client
    host = Host(conn, ns, limit=4)
    assert host.ask("a", 3) == (3, 0, 0)  # three waiting, three granted at once
    assert host.ask("a", 5) == (1, 0, 0)  # one slot left
    assert host.in_flight() == 4
    assert host.ask("a", 1)[:2] == (0, _FULL)


def test_a_worker_gets_no_more_than_its_fair_share_while_another_waits(
    client: tuple[redis.Redis, str],
) -> None:
    conn, ns = client
    host = Host(conn, ns, limit=4)
    assert host.ask("a", 4)[0] == 4
    a_tokens = host.last
    assert host.ask("b", 3)[:2] == (0, _FULL)  # b waits now
    # a gives one back and asks again for its next request: over its share (2), it gets
    # nothing, and the slot stays free for b
    host.release("a", a_tokens[0])
    assert host.ask("a", 3)[:2] == (0, _FULL)
    assert host.in_flight() == 3
    assert host.ask("b", 3)[0] == 1
    # a's next release goes to b as well, until each has two
    host.release("a", a_tokens[1])
    assert host.ask("a", 3)[0] == 0
    assert host.ask("b", 2)[0] == 1
    held = {k.decode(): int(v) for k, v in conn.hgetall(host.keys[3]).items()}
    assert held == {"a": 2, "b": 2}
    # at its share, a hands a slot over to itself: no one else loses by it
    host.release("a", a_tokens[2])
    assert host.ask("a", 3)[0] == 1
    assert host.in_flight() == 4


def test_a_worker_that_stopped_waiting_no_longer_limits_the_others(
    client: tuple[redis.Redis, str],
) -> None:
    conn, ns = client
    host = Host(conn, ns, limit=4)
    assert host.ask("b", 1)[0] == 1  # b takes one and wants no more
    b_token = host.last[0]
    assert host.ask("a", 5)[0] == 3  # the rest: nobody else is waiting
    assert host.ask("b", 1)[:2] == (0, _FULL)  # b waits
    host.release("b", b_token)
    time.sleep(0.3)  # b's wish lapses (250 ms) when it is not renewed
    assert host.ask("a", 2)[0] == 1  # a may take the free slot beyond half


def test_with_a_delay_leases_are_granted_for_the_next_horizon_only(
    client: tuple[redis.Redis, str],
) -> None:
    conn, ns = client
    host = Host(conn, ns, limit=16, delay_ms=10)
    # 50 ms ahead at 10 ms apart: six now (the i-th starts i delays later)
    assert host.ask("a", 10) == (6, 0, 10)
    granted, wait, _ = host.ask("a", 4)
    assert granted == 0 and 0 < wait <= 60  # the next start is 60 ms away
    time.sleep(wait / 1000 + 0.01)
    assert host.ask("a", 4)[0] == 4


def test_the_slowest_workers_delay_wins(client: tuple[redis.Redis, str]) -> None:
    conn, ns = client
    host = Host(conn, ns, limit=4, delay_ms=0)
    conn.set(host.keys[2], 200)  # another worker's AutoThrottle published 200 ms
    assert host.ask("a", 3) == (1, 0, 200)


def test_tick_batch_sends_one_transaction_and_answers_each_caller() -> None:
    crawler = get_crawler(Spider, {"NUKE_REDIS_URL": REDIS})
    cluster = Cluster(crawler)
    ns = f"nuketest:{uuid.uuid4().hex[:10]}"
    got: dict[str, Any] = {}
    pipelines: list[Any] = []
    real_pipeline = cluster.redis.pipeline

    def counting_pipeline(transaction: bool = True) -> Any:  # the real one, counted
        pipe = real_pipeline(transaction=transaction)
        pipelines.append((transaction, pipe))
        return pipe

    cluster.redis.pipeline = counting_pipeline  # type: ignore[method-assign]

    async def go() -> None:
        for i in range(5):
            cluster.batch.add(
                lambda pipe, i=i: pipe.incrby(f"{ns}:n", i),
                lambda results, i=i: got.__setitem__(f"incr{i}", results),
            )
        cluster.batch.add(
            lambda pipe: (pipe.set(f"{ns}:k", "v"), pipe.get(f"{ns}:k")),
            lambda results: got.__setitem__("setget", results),
        )
        assert got == {} and len(cluster.batch) == 6  # nothing sent yet
        await asyncio.sleep(cluster.batch.WAIT * 5)

    asyncio.run(go())
    try:
        # each caller given its own results: 0, 0+1, 0+1+2, ...
        assert [got[f"incr{i}"][0] for i in range(5)] == [0, 1, 3, 6, 10]
        assert got["setget"] == [True, b"v"]
        assert [t for t, _ in pipelines] == [True]  # one MULTI/EXEC for all six
    finally:
        for key in cluster.redis.scan_iter(f"{ns}:*"):
            cluster.redis.delete(key)


def test_tick_batch_on_a_lost_redis_tells_the_cluster_and_each_caller() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens
    crawler = get_crawler(Spider, {"NUKE_REDIS_URL": f"redis://127.0.0.1:{port}/0"})
    cluster = Cluster(crawler)
    failed: list[str] = []

    async def go() -> None:
        cluster.batch.add(lambda pipe: pipe.incr("x"), lambda results: failed.append("then"))
        cluster.batch.add(lambda pipe: pipe.incr("y"), None, lambda: failed.append("failed"))
        await asyncio.sleep(cluster.batch.WAIT * 5)

    asyncio.run(go())
    assert failed == ["failed"]  # never "then"
    assert cluster.lost and "Connection refused" in cluster.lost
    # once lost, what is added is refused at once, with its failure called
    cluster.batch.add(lambda pipe: pipe.incr("z"), None, lambda: failed.append("later"))
    assert failed == ["failed", "later"]


def test_pops_come_in_priority_order_leased_to_the_worker(
    client: tuple[redis.Redis, str],
) -> None:
    conn, ns = client
    spider = Spider("org")
    queue = LeasedPriorityQueue(conn, spider, f"{ns}:org:requests")
    queue.lease_to(f"{ns}:inflight:w", f"{ns}:inflight:w:score")
    for i, priority in enumerate((0, 5, 1, 5, 0)):
        queue.push(Request(f"https://example.com/{i}", priority=priority))
    first = queue.pop_many(3)
    assert [r.url[-1] for r in first] == ["1", "3", "2"]  # highest priority first
    assert len({r.meta[LEASE] for r in first}) == 3
    assert conn.hlen(f"{ns}:inflight:w") == 3 and len(queue) == 2
    rest = queue.pop_many(8)  # fewer wait than asked for
    assert sorted(r.url[-1] for r in rest) == ["0", "4"]
    assert queue.pop_many(8) == [] and queue.pop() is None
    # a worker's in-flight requests go back on requeue, with their priorities
    assert queue.requeue(f"{ns}:inflight:w", f"{ns}:inflight:w:score", f"{ns}:workers", "w") == 5
    assert [r.url[-1] for r in queue.pop_many(2)] == ["1", "3"]
