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
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import FAST, PG_BASE, REDIS, REPO, run_scrapy, scrapy_env

from bench.common import private_redis
from nuke_crawl.db import Database, loads_json, migrate, store
from nuke_crawl.demo import build_site, launch, serve
from nuke_crawl.demo.server import CountingApp, Response
from nuke_crawl.distributed import enqueue_organizations
from nuke_crawl.extraction import COMMON_INVENTORY_PATHS

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    return [
        "-s",
        f"NUKE_REDIS_URL={url}",
        "-s",
        f"NUKE_REDIS_NAMESPACE={ns}",
        "-s",
        "NUKE_REDIS_HEARTBEAT=0.3",
        "-s",
        "NUKE_REDIS_WORKER_TIMEOUT=2",
    ]


def enqueue(db_url: str, ns: str, *args: str, url: str = REDIS) -> subprocess.CompletedProcess[str]:
    proc = run_scrapy(
        ["org-enqueue", *args, "-s", f"NUKE_REDIS_URL={url}", "-s", f"NUKE_REDIS_NAMESPACE={ns}"],
        db_url,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def worker(
    db_url: str, ns: str, log: Path, *extra: str, url: str = REDIS, **env: str
) -> subprocess.Popen[Any]:
    args = [
        sys.executable,
        "-m",
        "scrapy",
        "crawl",
        "org",
        "-a",
        "from_queue=1",
        "-a",
        "exit_when_empty=1",
        *redis_args(ns, url),
        *FAST,
        *extra,
    ]
    out = log.open("w")
    return subprocess.Popen(args, cwd=REPO, env=scrapy_env(db_url, **env), stdout=out, stderr=out)


def wait_all(procs: list[subprocess.Popen[Any]], timeout: float = 120) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    for proc in procs:
        codes.append(proc.wait(timeout=max(1.0, deadline - time.monotonic())))
    return codes


def logs(tmp_path: Path) -> str:
    return "\n".join(
        f"== {p.name}\n{p.read_text()[-4000:]}" for p in sorted(tmp_path.glob("*.log"))
    )


def test_three_workers_share_the_sites_fetch_each_page_once_and_stay_polite(
    pg_url: str,
    ns: str,
    tmp_path: Path,
) -> None:
    # one large site and two small ones; each worker takes one organization at a time
    sites = [
        CountingApp(
            build_site(style, n_vehicles=n, per_page=5, images_per_vehicle=2, seed=3), delay=0.05
        )
        for style, n in (("jsonld", 40), ("microdata", 8), ("plain", 8))
    ]
    servers = [serve(site) for site in sites]
    try:
        org_ids = [add_org(pg_url, s.url, name=f"Dealer {i}") for i, s in enumerate(servers)]
        proc = enqueue(pg_url, ns, "-a", "threshold=1")
        assert "enqueued 3 organizations" in proc.stdout, proc.stdout
        procs = [
            worker(
                pg_url,
                ns,
                tmp_path / f"w{i}.log",
                "-s",
                "CONCURRENT_REQUESTS_PER_DOMAIN=2",
                "-s",
                "NUKE_REDIS_ORGS_PER_WORKER=1",
            )
            for i in range(3)
        ]
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
            crawl = rows(
                pg_url, "SELECT * FROM nuke_org_crawls WHERE organization_id = ?", [org_id]
            )[0]
            assert crawl["finished_at"] is not None
            summary = loads_json(crawl["summary"])
            assert summary["vehicles_found"] == n and summary["created"] == n, summary
        # the large site's pages were shared between workers
        shares = [
            int(m.group(1))
            for log in tmp_path.glob("w*.log")
            for m in re.finditer(rf"'nuke/org/{org_ids[0]}/pages': (\d+)", log.read_text())
        ]
        assert sum(shares) == 49 and len([n for n in shares if n]) >= 2, shares
    finally:
        for server in servers:
            server.stop()


# Loaded by a worker's processes (crawler and extraction) through its PYTHONPATH: every
# page's extraction takes {delay} s longer, as on a slow or overloaded machine.
SLOW_EXTRACTION = """
import functools, time
from nuke_crawl.spiders import orgpage

_extract = orgpage.extract_for_crawl


@functools.wraps(_extract)
def extract_for_crawl(*args, **kwargs):
    time.sleep({delay})
    return _extract(*args, **kwargs)


orgpage.extract_for_crawl = extract_for_crawl
"""


def pages_of(log: Path, org_id: str) -> int:
    found = re.search(rf"'nuke/org/{org_id}/pages': (\d+)", log.read_text())
    return int(found.group(1)) if found else 0


@pytest.mark.serial  # shares of the pages depend on both workers' speed
def test_a_worker_whose_extraction_lags_leaves_the_queue_to_the_others(
    pg_url: str, ns: str, tmp_path: Path
) -> None:
    """Two workers on one site, one of them extracting pages slowly (0.3 s each). It
    pauses its pops while pages wait for its extraction (NUKE_REDIS_BACKLOG=0), so the
    fast worker takes most of the site. Without the limit (NUKE_REDIS_BACKLOG=-1) the
    slow one takes a third to a half of the 103 pages (measured: 36-54), as both
    download equally fast, and the crawl waits for its extraction (measured with the
    limit: 13-18)."""
    slow_path = tmp_path / "slow"
    slow_path.mkdir()
    (slow_path / "sitecustomize.py").write_text(SLOW_EXTRACTION.format(delay=0.3))
    backlog = int(os.environ.get("NUKE_TEST_BACKLOG", "0"))  # -1 shows the contrast
    site = CountingApp(
        build_site("jsonld", n_vehicles=100, per_page=50, images_per_vehicle=1, seed=4),
        delay=0.02,
    )
    with serve(site) as server:
        org_id = add_org(pg_url, server.url)
        logs_ = [tmp_path / "slow.log", tmp_path / "fast.log"]
        extra = ("-s", f"NUKE_REDIS_BACKLOG={backlog}", "-s", "LOG_LEVEL=INFO")
        procs = [
            worker(pg_url, ns, logs_[0], *extra, PYTHONPATH=f"{slow_path}{os.pathsep}{REPO}"),
            worker(pg_url, ns, logs_[1], *extra),
        ]
        wait_for_workers(ns, 2)  # both up before there is work: both could take it
        client = redis.Redis.from_url(REDIS)
        assert enqueue_organizations(client, f"{ns}:org:queue", [org_id]) == 1
        client.close()
        assert wait_all(procs) == [0, 0], logs(tmp_path)
    text = logs(tmp_path)
    assert "Traceback" not in text, text
    assert rows(pg_url, "SELECT COUNT(*) AS n FROM vehicles")[0]["n"] == 100, text
    slow, fast = (pages_of(log, org_id) for log in logs_)
    assert slow + fast == 103, (slow, fast)  # home, two inventory pages, 100 vehicles
    assert "'nuke/redis/backlog_pauses'" in logs_[0].read_text(), text
    assert slow <= 25, (slow, fast)


def test_a_worker_alone_pops_on_however_far_its_extraction_lags(
    pg_url: str, ns: str, tmp_path: Path
) -> None:
    """With no other worker alive, pausing would only leave the queue to nobody."""
    slow_path = tmp_path / "slow"
    slow_path.mkdir()
    (slow_path / "sitecustomize.py").write_text(SLOW_EXTRACTION.format(delay=0.1))
    site = build_site("jsonld", n_vehicles=20, per_page=20, images_per_vehicle=1, seed=4)
    with serve(site) as server:
        org_id = add_org(pg_url, server.url)
        enqueue(pg_url, ns, "-a", f"organization_id={org_id}")
        log = tmp_path / "alone.log"
        proc = worker(
            pg_url,
            ns,
            log,
            "-s",
            "NUKE_REDIS_BACKLOG=0",
            "-s",
            "LOG_LEVEL=INFO",
            PYTHONPATH=f"{slow_path}{os.pathsep}{REPO}",
        )
        assert wait_all([proc]) == [0], logs(tmp_path)
    text = log.read_text()
    assert "Traceback" not in text, text
    assert pages_of(log, org_id) == 22, text  # home, the inventory page, 20 vehicles
    assert "'nuke/redis/backlog_pauses'" not in text, text


def test_redis_unreachable_at_start_is_one_clear_line_and_exit_1(pg_url: str, ns: str) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    add_org(pg_url, "https://dealer.example")
    proc = run_scrapy(["crawl", "org", "-a", "from_queue=1", *redis_args(ns, dead), *FAST], pg_url)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if " ERROR: " in line]
    assert len(errors) == 1 and "Cannot start: Redis at redis://127.0.0.1:" in errors[0], errors
    proc = run_scrapy(["org-enqueue", "-s", f"NUKE_REDIS_URL={dead}"], pg_url)
    assert proc.returncode == 2 and "is unreachable" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    # and the password of a URL is never shown
    proc = run_scrapy(
        ["org-enqueue", "-s", f"NUKE_REDIS_URL=redis://user:s3cret@127.0.0.1:{free_port()}/0"],
        pg_url,
    )
    assert proc.returncode == 2 and "s3cret" not in proc.stderr and "***" in proc.stderr


def test_from_queue_needs_redis_and_org_enqueue_checks_its_arguments(sqlite_url: str) -> None:
    proc = run_scrapy(["crawl", "org", "-a", "from_queue=1", *FAST], sqlite_url)
    assert proc.returncode == 1 and "from_queue=1 needs NUKE_REDIS_URL" in proc.stderr
    proc = run_scrapy(
        ["org-enqueue", "-a", "threshold=0", "-s", f"NUKE_REDIS_URL={REDIS}"], sqlite_url
    )
    assert proc.returncode == 2 and "threshold" in proc.stderr and "at least 1" in proc.stderr
    proc = run_scrapy(["org-enqueue", "-a", "url=https://x.example"], sqlite_url)
    assert proc.returncode == 2 and "unknown argument 'url'" in proc.stderr
    proc = run_scrapy(["org-enqueue"], sqlite_url)
    assert proc.returncode == 2 and "NUKE_REDIS_URL is not set" in proc.stderr


def test_org_enqueue_selects_like_crawl_org_and_never_queues_twice(
    pg_url: str,
    ns: str,
) -> None:
    ids = [add_org(pg_url, f"https://d{i}.example", name=f"D{i}") for i in range(5)]
    proc = enqueue(pg_url, ns, "-a", "limit=3")
    assert "enqueued 3 organizations" in proc.stdout and "next -a offset=3" in proc.stdout
    proc = enqueue(pg_url, ns, "-a", "limit=10")
    assert "enqueued 2 organizations (3 already queued; 5 waiting" in proc.stdout, proc.stdout
    assert "no more organizations" in proc.stdout
    client = redis.Redis.from_url(REDIS)
    queued = [m.decode() for m in client.zrange(f"{ns}:org:queue", 0, -1)]
    assert queued == ids  # in the selection's order
    client.delete(f"{ns}:org:queue")
    enqueue(pg_url, ns, "-a", f"organization_id={ids[4]}")
    assert [m.decode() for m in client.zrange(f"{ns}:org:queue", 0, -1)] == [ids[4]]
    client.close()


class SlowDetails:
    """A site whose vehicle pages take ``delay`` seconds: room for a SIGKILL."""

    def __init__(self, site: Any, delay: float) -> None:
        self.site, self.delay = site, delay

    def bind(self, url: str) -> None:
        self.site.bind(url)

    def __call__(self, request: Any) -> Any:
        response = self.site(request)
        if "/vehicle/" in request.path:
            time.sleep(self.delay)
        return response


def wait_for_vehicles(db_url: str, at_least: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    stored = 0
    while time.monotonic() < deadline:
        try:
            stored = int(rows(db_url, "SELECT COUNT(*) AS n FROM vehicles")[0]["n"])
        except Exception:  # noqa: BLE001 - the schema may not exist yet
            stored = 0
        if stored >= at_least:
            break
        time.sleep(0.1)
    return stored


def holding_requests(ns: str, procs: list[subprocess.Popen[Any]]) -> subprocess.Popen[Any]:
    """A worker that has leased requests in flight right now."""
    client = redis.Redis.from_url(REDIS)
    by_pid = {p.pid: p for p in procs}
    try:
        for _ in range(200):
            for key in client.scan_iter(f"{ns}:inflight:*"):
                name = key.decode()
                if name.endswith(":score") or not client.hlen(key):
                    continue
                pid = int(name.split(":")[-2])
                if pid in by_pid:
                    return by_pid[pid]
            time.sleep(0.02)
    finally:
        client.close()
    raise AssertionError("no worker holds requests")


def assert_complete(db_url: str, site: Any, org_id: str) -> None:
    stored = rows(db_url, "SELECT vin, discovery_url FROM vehicles")
    assert len(stored) == len(site.vehicles)
    assert len({r["discovery_url"] for r in stored}) == len(stored)
    assert sorted(r["vin"] for r in stored) == sorted(v["vin"] for v in site.vehicles)
    assert rows(db_url, "SELECT COUNT(*) AS n FROM organization_vehicles")[0]["n"] == len(stored)
    crawl = rows(db_url, "SELECT * FROM nuke_org_crawls WHERE organization_id = ?", [org_id])[0]
    assert crawl["finished_at"] is not None


def test_a_sigkilled_worker_loses_nothing(pg_url: str, ns: str, tmp_path: Path) -> None:
    site = build_site("jsonld", n_vehicles=30, per_page=10, images_per_vehicle=2, seed=5)
    with serve(SlowDetails(site, 0.3)) as server:
        org_id = add_org(pg_url, server.url)
        enqueue(pg_url, ns)
        procs = [
            worker(
                pg_url,
                ns,
                tmp_path / f"w{i}.log",
                "-s",
                "NUKE_DB_BATCH_SIZE=3",
                "-s",
                "CONCURRENT_REQUESTS_PER_DOMAIN=3",
            )
            for i in range(3)
        ]
        stored = wait_for_vehicles(pg_url, 6)
        victim = holding_requests(ns, procs)
        victim.send_signal(signal.SIGKILL)
        assert 6 <= stored < 30, stored
        survivors = [p for p in procs if p is not victim]
        assert wait_all(survivors) == [0, 0], logs(tmp_path)
        assert "Traceback" not in logs(tmp_path)
        # a re-run finds nothing left to do, or finishes what is
        enqueue(pg_url, ns, "-a", "threshold=1")
        assert wait_all([worker(pg_url, ns, tmp_path / "rerun.log")]) == [0], logs(tmp_path)
        assert_complete(pg_url, site, org_id)
        requeued = sum(
            int(m.group(1))
            for log in tmp_path.glob("w*.log")
            for m in re.finditer(r"'nuke/redis/requeued': (\d+)", log.read_text())
        )
        assert requeued >= 1  # the survivors took back what the killed worker held


def test_a_stopped_worker_returns_what_it_cut_short(pg_url: str, ns: str, tmp_path: Path) -> None:
    """SIGTERM (QuickStop drops queued downloads, cuts those in flight): what was cut short
    goes back to Redis, the organization stays unfinished, and the next worker ends it."""
    site = build_site("jsonld", n_vehicles=30, per_page=10, images_per_vehicle=2, seed=6)
    slow = SlowDetails(site, 0.2)
    with serve(slow) as server:
        org_id = add_org(pg_url, server.url)
        enqueue(pg_url, ns)
        # no retries: a download cut short reaches the spider as a failure
        first = worker(
            pg_url,
            ns,
            tmp_path / "w0.log",
            "-s",
            "NUKE_DB_BATCH_SIZE=3",
            "-s",
            "CONCURRENT_REQUESTS_PER_DOMAIN=3",
            "-s",
            "RETRY_TIMES=0",
        )
        stored = wait_for_vehicles(pg_url, 3)
        slow.delay = 8.0  # the pages in flight now outlast the stop's grace: cut short
        time.sleep(0.5)
        holding_requests(ns, [first])
        first.send_signal(signal.SIGTERM)
        assert wait_all([first], timeout=30) == [0], logs(tmp_path)
        assert 3 <= stored < 30, stored
        assert "Traceback" not in logs(tmp_path)
        crawl = rows(pg_url, "SELECT * FROM nuke_org_crawls WHERE organization_id = ?", [org_id])[0]
        assert crawl["finished_at"] is None  # not all of it was done
        client = redis.Redis.from_url(REDIS)
        try:
            assert client.zcard(f"{ns}:org:requests") >= 1  # the cut-short requests, back
            assert not any(
                client.hlen(key)
                for key in client.scan_iter(f"{ns}:inflight:*")
                if not key.endswith(b":score")
            )  # nothing left leased
            assert int(client.get(f"{ns}:org:{org_id}:pending") or 0) >= 1
        finally:
            client.close()
        assert "connections cut short" in (tmp_path / "w0.log").read_text()
        slow.delay = 0.0
        # nothing enqueued again: the next worker takes the requests left in Redis
        assert wait_all([worker(pg_url, ns, tmp_path / "rerun.log")]) == [0], logs(tmp_path)
        assert_complete(pg_url, site, org_id)


def test_redis_lost_mid_run_stops_cleanly_and_a_later_run_completes(
    pg_url: str,
    tmp_path: Path,
) -> None:
    ns = "nuke"
    site = build_site("jsonld", n_vehicles=24, per_page=8, images_per_vehicle=1, seed=9)
    redis_proc, url = private_redis(tmp_path)
    try:
        with serve(SlowDetails(site, 0.3)) as server:
            org_id = add_org(pg_url, server.url)
            enqueue(pg_url, ns, url=url)
            proc = worker(pg_url, ns, tmp_path / "lost.log", url=url)
            stored = wait_for_vehicles(pg_url, 4)
            redis_proc.terminate()
            redis_proc.wait(timeout=10)
            code = proc.wait(timeout=60)
            text = (tmp_path / "lost.log").read_text()
            assert code == 1, text[-3000:]
            assert "Traceback" not in text, text[-3000:]
            assert "was lost" in text and "a later run resumes" in text
            assert stored < 24
            crawl = rows(
                pg_url, "SELECT * FROM nuke_org_crawls WHERE organization_id = ?", [org_id]
            )[0]
            assert crawl["finished_at"] is None  # not finished: selected again
            # Redis back, empty (nothing was saved): the database says what is left
            redis_proc, url = private_redis(tmp_path)
            proc_out = enqueue(pg_url, ns, "-a", "threshold=1", url=url)
            assert "enqueued 1 organizations" in proc_out.stdout
            assert wait_all([worker(pg_url, ns, tmp_path / "again.log", url=url)]) == [0], logs(
                tmp_path
            )
            assert "Resuming" in (tmp_path / "again.log").read_text() or True
            assert_complete(pg_url, site, org_id)
    finally:
        redis_proc.terminate()
        redis_proc.wait(timeout=10)


class Node:
    """A real scrapyd on a free port with folders of its own, serving deployed eggs only."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home, self.port = home, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            k: v for k, v in env.items() if k not in ("PYTHONPATH", "SCRAPY_SETTINGS_MODULE")
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Node:
        self.home.mkdir(parents=True)
        conf = (REPO / "scrapyd.conf").read_text().replace("6800", str(self.port))
        (self.home / "scrapyd.conf").write_text(
            conf.replace("poll_interval = 1.0", "poll_interval = 0.2")
        )
        out = (self.home / "scrapyd.out").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scrapyd", "--nodaemon", "--pidfile="],
            cwd=self.home,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        for _ in range(150):
            try:
                if self.call("daemonstatus.json")["status"] == "ok":
                    return self
            except OSError:
                time.sleep(0.2)
        raise AssertionError((self.home / "scrapyd.out").read_text())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)

    def call(self, path: str, data: list[tuple[str, str]] | None = None) -> dict[str, Any]:
        import json
        import urllib.parse
        import urllib.request

        body = urllib.parse.urlencode(data).encode() if data is not None else None
        with urllib.request.urlopen(f"{self.url}/{path}", data=body, timeout=20) as resp:
            return dict(json.loads(resp.read()))

    def schedule(self, spider: str, settings: dict[str, str], **args: str) -> str:
        data = [("project", "nuke_crawl"), ("spider", spider)]
        data += [("setting", f"{k}={v}") for k, v in settings.items()]
        data += list(args.items())
        answer = self.call("schedule.json", data)
        assert answer["status"] == "ok", answer
        return str(answer["jobid"])

    def wait(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            jobs = self.call("listjobs.json?project=nuke_crawl")
            if len(jobs["finished"]) >= count and not jobs["pending"] and not jobs["running"]:
                return
            time.sleep(0.3)
        raise AssertionError(self.logs())

    def logs(self) -> str:
        return "\n".join(
            f"== {p}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted((self.home / ".scrapyd" / "logs").rglob("*.log"))
        )


@pytest.mark.slow
def test_two_scrapyd_nodes_deployed_from_a_fresh_copy_share_the_crawl_and_the_images(
    pg_url: str,
    ns: str,
    tmp_path: Path,
) -> None:
    import boto3
    from moto.server import ThreadedMotoServer

    # a fresh copy of the project's tracked files, deployed with scrapyd-deploy to both
    clone = tmp_path / "clone"
    files = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, clone / name)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    moto.start()
    endpoint = f"http://127.0.0.1:{moto._server.server_port}"
    creds = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    env = {
        **os.environ,
        **creds,
        "DATABASE_URL": pg_url,
        "NUKE_ALLOW_PRIVATE_NETWORKS": "1",
        "NUKE_REDIS_URL": REDIS,
    }
    nodes = [Node(tmp_path / f"node{i}", env) for i in range(2)]
    demos = [
        launch(style, n_vehicles=10, per_page=5, images_per_vehicle=1, image_hosts=0, seed=11)
        for style in ("jsonld", "microdata")
    ]
    try:
        for node in nodes:
            node.start()
        with (clone / "scrapy.cfg").open("a") as cfg:
            for i, node in enumerate(nodes):
                cfg.write(f"\n[deploy:node{i}]\nurl = {node.url}/\nproject = nuke_crawl\n")
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(clone)]
        for step in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "fresh"]):
            subprocess.run([*git, *step], check=True, capture_output=True)
        deploy = subprocess.run(
            [str(Path(sys.executable).with_name("scrapyd-deploy")), "-a"],
            cwd=clone,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        assert deploy.stdout.count('"status": "ok"') == 2, deploy.stdout
        # the build left nothing git would pick up (build/, *.egg-info are ignored)
        status = subprocess.run(
            [*git, "status", "--porcelain"], capture_output=True, text=True, check=True
        ).stdout
        assert status == "", status
        for node in nodes:
            assert "org" in node.call("listspiders.json?project=nuke_crawl")["spiders"]

        for i, demo in enumerate(demos):
            add_org(pg_url, demo.url, name=f"Dealer {i}")
        enqueue(pg_url, ns)
        fast = {
            "NUKE_REDIS_NAMESPACE": ns,
            "NUKE_REDIS_HEARTBEAT": "0.3",
            "NUKE_REDIS_ORGS_PER_WORKER": "1",
            "AUTOTHROTTLE_START_DELAY": "0.01",
            "NUKE_DB_BATCH_WAIT": "0.05",
            "DOWNLOAD_TIMEOUT": "10",
        }
        for node in nodes:
            node.schedule("org", fast, from_queue="1", exit_when_empty="1")
        for node in nodes:
            node.wait(1)
        stored = rows(pg_url, "SELECT discovery_url FROM vehicles")
        assert len(stored) == 20 and len({r["discovery_url"] for r in stored}) == 20, (
            nodes[0].logs() + nodes[1].logs()
        )
        for node in nodes:  # both nodes took an organization
            assert "'nuke/redis/orgs_adopted': 1" in node.logs(), node.logs()

        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        s3.create_bucket(Bucket="photos")
        images = {
            "IMAGES_STORE": "s3://photos/v",
            "AWS_ENDPOINT_URL": endpoint,
            "NUKE_IMAGES_PUBLIC_URL": "",
            "AUTOTHROTTLE_START_DELAY": "0.01",
        }
        for node in nodes:
            node.schedule("image_backfill", images, limit="10")
        for node in nodes:
            node.wait(2)
        photos = rows(pg_url, "SELECT storage_path, is_external FROM vehicle_images")
        assert len(photos) == 20 and not any(p["is_external"] for p in photos), (
            nodes[0].logs() + nodes[1].logs()
        )
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket="photos")["Contents"]}
        assert {f"v/{p['storage_path']}" for p in photos} <= keys
        assert len({p["storage_path"] for p in photos}) == 20
        for node in nodes:  # both nodes stored some
            assert "image_backfill" in node.logs()
    finally:
        for node in nodes:
            node.stop()
        for demo in demos:
            demo.stop()
        moto.stop()


class Arrivals:
    """Wraps a site: the time each request arrived."""

    def __init__(self, site: Any) -> None:
        self.site, self.times = site, []  # type: ignore[var-annotated]

    def bind(self, url: str) -> None:
        self.site.bind(url)

    def __call__(self, request: Any) -> Any:
        self.times.append(time.monotonic())
        return self.site(request)


def wait_for_workers(ns: str, count: int, timeout: float = 60) -> None:
    client = redis.Redis.from_url(REDIS)
    deadline = time.monotonic() + timeout
    try:
        while client.zcard(f"{ns}:workers") < count:
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.1)
    finally:
        client.close()


@pytest.mark.serial
def test_the_host_delay_holds_across_workers(pg_url: str, ns: str, tmp_path: Path) -> None:
    """Two workers on one site with DOWNLOAD_DELAY=0.3: the site never sees two requests
    closer than that, though both workers fetch its pages."""
    site = Arrivals(build_site("jsonld", n_vehicles=12, per_page=6, images_per_vehicle=1, seed=2))
    with serve(site) as server:
        org_id = add_org(pg_url, server.url)
        procs = [
            worker(
                pg_url,
                ns,
                tmp_path / f"w{i}.log",
                "-s",
                "DOWNLOAD_DELAY=0.3",
                "-s",
                "RANDOMIZE_DOWNLOAD_DELAY=0",
            )
            for i in range(2)
        ]
        wait_for_workers(ns, 2)  # both up before there is work: both get some
        client = redis.Redis.from_url(REDIS)
        assert enqueue_organizations(client, f"{ns}:org:queue", [org_id]) == 1
        client.close()
        assert wait_all(procs) == [0, 0], logs(tmp_path)
        assert_complete(pg_url, site.site, org_id)
    gaps = [b - a for a, b in zip(site.times, site.times[1:], strict=False)]
    assert len(site.times) >= 15 and min(gaps) >= 0.28, sorted(gaps)[:5]
    shares = [
        sum(
            int(m.group(1))
            for m in re.finditer(r"'downloader/request_count': (\d+)", log.read_text())
        )
        for log in tmp_path.glob("w*.log")
    ]
    assert all(shares), shares


class ListingBarrier:
    """Wraps a site: its listing pages after the first (``?page=``) are answered only once
    ``parties`` of them are asked for at once (or after ``timeout``). With one request at
    a time per worker (``CONCURRENT_REQUESTS=1``), a met barrier means that many workers
    each read a listing page."""

    def __init__(self, site: Any, parties: int, timeout: float = 8.0) -> None:
        self.site, self.parties, self.timeout = site, parties, timeout
        self.arrived = 0
        self.cond = threading.Condition()

    @property
    def met(self) -> bool:
        return self.arrived >= self.parties

    def bind(self, url: str) -> None:
        self.site.bind(url)

    def __call__(self, request: Any) -> Any:
        if "page=" in request.target:
            with self.cond:
                self.arrived += 1
                self.cond.notify_all()
                self.cond.wait_for(lambda: self.met, timeout=self.timeout)
        return self.site(request)


def test_max_vehicles_holds_across_workers(pg_url: str, ns: str, tmp_path: Path) -> None:
    """max_vehicles=6 with three workers that each read a listing page of four vehicles:
    exactly 6 vehicle pages are requested and stored across them (counted per worker,
    each would have taken up to 6 of its own)."""
    site = build_site("jsonld", n_vehicles=20, per_page=4, images_per_vehicle=1, seed=4)
    barrier = ListingBarrier(site, parties=3)
    with serve(barrier) as server:
        org_id = add_org(pg_url, server.url)
        one_at_a_time = ("-s", "CONCURRENT_REQUESTS=1", "-s", "CONCURRENT_REQUESTS_PER_DOMAIN=3")
        procs = [
            worker(pg_url, ns, tmp_path / f"w{i}.log", "-a", "max_vehicles=6", *one_at_a_time)
            for i in range(3)
        ]
        wait_for_workers(ns, 3)  # all up before there is work: all get some
        client = redis.Redis.from_url(REDIS)
        assert enqueue_organizations(client, f"{ns}:org:queue", [org_id]) == 1
        client.close()
        assert wait_all(procs) == [0, 0, 0], logs(tmp_path)
    text = logs(tmp_path)
    assert "Traceback" not in text, text
    assert barrier.met, f"the listing pages were not read by three workers at once\n{text}"
    stored = rows(pg_url, "SELECT discovery_url FROM vehicles")
    assert len(stored) == 6, f"{len(stored)} vehicles stored\n{text}"
    assert len({r["discovery_url"] for r in stored}) == 6
    details = {t: n for t, n in site.hits.items() if t.startswith("/vehicle")}
    assert len(details) == 6 and set(details.values()) == {1}, details
    crawl = rows(pg_url, "SELECT * FROM nuke_org_crawls WHERE organization_id = ?", [org_id])[0]
    assert crawl["finished_at"] is not None
    summary = loads_json(crawl["summary"])
    assert summary["vehicles_found"] == 6 and summary["created"] == 6, summary
    assert summary["caps_hit"] == {"vehicles": 6}, summary


class GatedSitemap:
    """Wraps a site: its ``/sitemap.xml`` lists only a page that is not a vehicle (so whoever
    reads it looks for the inventory), and is answered once ``release`` is set."""

    def __init__(self, site: Any) -> None:
        self.site = site
        self.asked, self.release = threading.Event(), threading.Event()

    def bind(self, url: str) -> None:
        self.base = url
        self.site.bind(url)

    def __call__(self, request: Any) -> Any:
        if request.path != "/sitemap.xml":
            return self.site(request)
        self.site.hits.hit(request.target)
        self.asked.set()
        self.release.wait(timeout=60)
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
            f"<url><loc>{self.base}/contact/</loc></url></urlset>\n"
        )
        return Response(content_type="application/xml", body=body.encode())


def test_no_worker_probes_the_common_paths_once_any_found_inventory(
    pg_url: str, ns: str, tmp_path: Path
) -> None:
    """The worker that found the inventory (linked from the home page) is killed while it
    fetches the sitemap; the worker that takes over reads the sitemap, which lists no
    vehicle, and does not probe the common inventory paths: another worker found the
    inventory."""
    site = build_site("jsonld", n_vehicles=6, per_page=3, images_per_vehicle=1, seed=8)
    gated = GatedSitemap(site)
    with serve(gated) as server:
        org_id = add_org(pg_url, server.url)
        enqueue(pg_url, ns)
        first = worker(pg_url, ns, tmp_path / "w0.log", "-s", "NUKE_DB_BATCH_SIZE=1")
        try:
            assert wait_for_vehicles(pg_url, 6) == 6, logs(tmp_path)
            assert gated.asked.wait(timeout=30)  # its sitemap request in flight, held
            holding_requests(ns, [first])
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
            gated.release.set()
        second = worker(pg_url, ns, tmp_path / "w1.log")
        assert wait_all([second]) == [0], logs(tmp_path)
    text = logs(tmp_path)
    assert "Traceback" not in text, text
    assert "'nuke/redis/requeued': 1" in (tmp_path / "w1.log").read_text()  # the sitemap
    assert site.hits["/sitemap.xml"] == 2, dict(site.hits)  # the killed worker's, and its
    probed = {p: site.hits[p] for p in COMMON_INVENTORY_PATHS if p not in site.inventory_pages}
    assert not any(probed.values()), probed
    assert site.hits["/inventory/"] == 1
    assert_complete(pg_url, site, org_id)


def blocked_on(conn: Any, timeout: float = 60) -> None:
    """Wait until another session waits for a lock ``conn`` holds (looked at from a session
    of its own: a transaction sees one snapshot of pg_stat_activity)."""
    import psycopg

    deadline = time.monotonic() + timeout
    with psycopg.connect(PG_BASE, autocommit=True) as observer:
        while time.monotonic() < deadline:
            found = observer.execute(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                [conn.info.backend_pid],
            ).fetchone()
            if found and found[0]:
                return
            time.sleep(0.05)
    raise AssertionError("no session waits for the lock")


def queued(ns: str) -> list[str]:
    client = redis.Redis.from_url(REDIS)
    try:
        return sorted(m.decode() for m in client.zrange(f"{ns}:org:queue", 0, -1))
    finally:
        client.close()


def claims(ns: str) -> dict[str, list[str]]:
    client = redis.Redis.from_url(REDIS)
    try:
        return {
            key.decode(): sorted(m.decode() for m in client.zrange(key, 0, -1))
            for key in client.scan_iter(f"{ns}:claimed:*")
        }
    finally:
        client.close()


def test_popped_organizations_are_claimed_until_started(
    pg_url: str, ns: str, tmp_path: Path
) -> None:
    """A worker pops three organizations and waits on PostgreSQL (the test holds a lock on
    nuke_org_crawls) before it pushes any of their requests. Stopped (SIGTERM), it puts
    them back in the queue; killed (SIGKILL), the next worker finds it dead and puts them
    back; that worker crawls each of them once."""
    import psycopg

    sites = [
        build_site(style, n_vehicles=4, per_page=2, images_per_vehicle=1, seed=12)
        for style in ("jsonld", "microdata", "plain")
    ]
    servers = [serve(site) for site in sites]
    lock = psycopg.connect(pg_url)
    procs: list[subprocess.Popen[Any]] = []
    try:
        ids = sorted(add_org(pg_url, s.url, name=f"Dealer {i}") for i, s in enumerate(servers))
        enqueue(pg_url, ns)

        # stopped cleanly: what it never started goes back to the queue
        lock.execute("LOCK TABLE nuke_org_crawls IN EXCLUSIVE MODE")
        procs.append(stopped := worker(pg_url, ns, tmp_path / "stopped.log"))
        blocked_on(lock)
        assert queued(ns) == []  # all three popped
        stopped.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        lock.rollback()
        assert wait_all([stopped], timeout=60) == [0], logs(tmp_path)
        assert queued(ns) == ids and claims(ns) == {}
        assert "Returned 3 organizations it had not started" in logs(tmp_path)

        # killed: the next worker finds it dead and takes its organizations
        lock.execute("LOCK TABLE nuke_org_crawls IN EXCLUSIVE MODE")
        procs.append(killed := worker(pg_url, ns, tmp_path / "killed.log"))
        blocked_on(lock)
        assert queued(ns) == [] and list(claims(ns).values()) == [ids]  # claimed by it
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=10)
        lock.rollback()
        procs.append(survivor := worker(pg_url, ns, tmp_path / "survivor.log"))
        assert wait_all([survivor]) == [0], logs(tmp_path)
        text = (tmp_path / "survivor.log").read_text()
        assert "Traceback" not in logs(tmp_path)
        assert "'nuke/redis/orgs_requeued': 3" in text and "'nuke/redis/orgs_adopted': 3" in text
        assert queued(ns) == [] and claims(ns) == {}
        stored = rows(pg_url, "SELECT discovery_url FROM vehicles")
        assert len(stored) == 12 and len({r["discovery_url"] for r in stored}) == 12, text
        for site in sites:  # each crawled once
            hits = {t: n for t, n in site.hits.items() if t != "/robots.txt"}
            assert hits and max(hits.values()) == 1, hits
        crawls = rows(pg_url, "SELECT * FROM nuke_org_crawls")
        assert sorted(c["organization_id"] for c in crawls) == ids
        assert all(c["finished_at"] is not None for c in crawls)
    finally:
        lock.close()  # before the schema is dropped
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        for server in servers:
            server.stop()
