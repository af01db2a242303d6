"""The org crawl spread over several workers through a real Redis (127.0.0.1:6379, or a
private redis-server where a test stops it) and a real PostgreSQL."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from nuke_crawl.db import Database, loads_json, migrate, store
from nuke_crawl.demo import build_site, launch, serve
from nuke_crawl.demo.server import CountingApp
from tests.conftest import FAST, REPO, run_scrapy, scrapy_env

REDIS = os.environ.get("NUKE_TEST_REDIS", "redis://127.0.0.1:6379/0")

pytestmark = pytest.mark.postgres


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def ns() -> Iterator[str]:
    """A namespace of this test's own on the shared Redis, cleaned afterwards."""
    client = redis.Redis.from_url(REDIS)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        pytest.fail(f"Redis is required at {REDIS} and is not reachable: {exc}")
    name = f"nuketest:{uuid.uuid4().hex[:10]}"
    yield name
    for key in client.scan_iter(f"{name}:*", count=1000):
        client.delete(key)
    client.close()


def add_org(db_url: str, url: str, name: str = "Fixture Motors") -> str:
    database = Database(db_url)
    migrate(database)
    org, _ = store.add_organization(database, url, name=name)
    database.close()
    return org.id


def rows(db_url: str, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    database = Database(db_url)
    try:
        return database.fetchall(sql, params or [])
    finally:
        database.close()


def redis_args(ns: str, url: str = REDIS) -> list[str]:
    return ["-s", f"NUKE_REDIS_URL={url}", "-s", f"NUKE_REDIS_NAMESPACE={ns}",
            "-s", "NUKE_REDIS_HEARTBEAT=0.3", "-s", "NUKE_REDIS_WORKER_TIMEOUT=2"]


def enqueue(db_url: str, ns: str, *args: str, url: str = REDIS) -> subprocess.CompletedProcess[str]:
    proc = run_scrapy(["org-enqueue", *args, "-s", f"NUKE_REDIS_URL={url}",
                       "-s", f"NUKE_REDIS_NAMESPACE={ns}"], db_url)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def worker(db_url: str, ns: str, log: Path, *extra: str, url: str = REDIS) -> subprocess.Popen[Any]:
    args = [sys.executable, "-m", "scrapy", "crawl", "org", "-a", "from_queue=1",
            "-a", "exit_when_empty=1", *redis_args(ns, url), *FAST, *extra]
    out = log.open("w")
    return subprocess.Popen(args, cwd=REPO, env=scrapy_env(db_url), stdout=out, stderr=out)


def wait_all(procs: list[subprocess.Popen[Any]], timeout: float = 120) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    for proc in procs:
        codes.append(proc.wait(timeout=max(1.0, deadline - time.monotonic())))
    return codes


def logs(tmp_path: Path) -> str:
    return "\n".join(f"== {p.name}\n{p.read_text()[-4000:]}" for p in sorted(tmp_path.glob("*.log")))


def test_three_workers_share_the_sites_fetch_each_page_once_and_stay_polite(
    pg_url: str, ns: str, tmp_path: Path,
) -> None:
    # one large site and two small ones; each worker takes one organization at a time
    sites = [CountingApp(build_site(style, n_vehicles=n, per_page=5, images_per_vehicle=2,
                                    seed=3), delay=0.05)
             for style, n in (("jsonld", 40), ("microdata", 8), ("plain", 8))]
    servers = [serve(site) for site in sites]
    try:
        org_ids = [add_org(pg_url, s.url, name=f"Dealer {i}") for i, s in enumerate(servers)]
        proc = enqueue(pg_url, ns, "-a", "threshold=1")
        assert "enqueued 3 organizations" in proc.stdout, proc.stdout
        procs = [worker(pg_url, ns, tmp_path / f"w{i}.log",
                        "-s", "CONCURRENT_REQUESTS_PER_DOMAIN=2",
                        "-s", "NUKE_REDIS_ORGS_PER_WORKER=1")
                 for i in range(3)]
        assert wait_all(procs) == [0, 0, 0], logs(tmp_path)
        text = logs(tmp_path)
        assert "Traceback" not in text, text
        stored = rows(pg_url, "SELECT discovery_url FROM vehicles")
        assert len(stored) == 56, text
        assert len({r["discovery_url"] for r in stored}) == 56
        assert rows(pg_url, "SELECT COUNT(*) AS n FROM organization_vehicles")[0]["n"] == 56
        for counting in sites:
            site = counting.app
            hits = {t: n for t, n in site.hits.items() if t != "/robots.txt"}  # type: ignore[attr-defined]
            assert hits and max(hits.values()) == 1, hits
            assert counting.most <= 2, counting.most
        # every organization finished once, with the counts of all workers added up
        for org_id, n in zip(org_ids, (40, 8, 8), strict=True):
            crawl = rows(pg_url, "SELECT * FROM nuke_org_crawls WHERE organization_id = ?",
                         [org_id])[0]
            assert crawl["finished_at"] is not None
            summary = loads_json(crawl["summary"])
            assert summary["vehicles_found"] == n and summary["created"] == n, summary
        # the large site's pages were shared between workers
        shares = [int(m.group(1)) for log in tmp_path.glob("w*.log") for m in re.finditer(
            rf"'nuke/org/{org_ids[0]}/pages': (\d+)", log.read_text())]
        assert sum(shares) == 49 and len([n for n in shares if n]) >= 2, shares
    finally:
        for server in servers:
            server.stop()
