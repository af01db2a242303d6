"""`scrapy crawl org` while it runs (issue 12, items 1 and 16): progress lines, each
organization's summary as soon as it is finished, and a stop within 10 s of one SIGINT
or SIGTERM that records what finished and leaves the rest for the next run. The real
command in a child process, local sites, one of them slow."""

from __future__ import annotations

import dataclasses
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FAST, REPO, scrapy_env

from nuke_crawl.db import Database, loads_json, migrate, store
from nuke_crawl.demo.launch import Demo, launch
from nuke_crawl.demo.server import Request, Response, serve

pytestmark = pytest.mark.slow


class SlowDetails:
    """A demo site whose vehicle pages take ``delay`` seconds (changeable), counting hits."""

    def __init__(self, demo: Demo, delay: float) -> None:
        self.site = demo.site
        self.delay = delay
        self.hits = 0

    def bind(self, url: str) -> None:
        pass

    def __call__(self, request: Request) -> Response:
        self.hits += 1
        response = self.site(request)
        if "/vehicle/" in request.path:
            return dataclasses.replace(response, delay=self.delay)
        return response


@dataclasses.dataclass
class Sites:
    fast: SlowDetails
    slow: SlowDetails


@pytest.fixture
def sites(sqlite_url: str) -> Iterator[Sites]:
    with (
        launch("jsonld", n_vehicles=3, per_page=10, images_per_vehicle=1, image_hosts=0) as fast,
        launch(
            "jsonld", n_vehicles=8, per_page=10, images_per_vehicle=1, image_hosts=0
        ) as slow_demo,
    ):
        sites = Sites(SlowDetails(fast, 0.0), SlowDetails(slow_demo, 60.0))
        # the demo sites build absolute links from the Host header: they stay on these;
        # two addresses, so that each site is its own download slot, as on the Internet
        with serve(sites.fast) as fast_server, serve(sites.slow, host="127.0.0.2") as slow_server:
            database = Database(sqlite_url)
            migrate(database)
            store.add_organization(database, fast_server.url, name="Fast Motors")
            store.add_organization(database, slow_server.url, name="Slow Motors")
            database.close()
            yield sites


def start(db_url: str, log: Path, *args: str) -> subprocess.Popen[bytes]:
    out = log.open("w")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "scrapy", "crawl", "org", "-a", "threshold=1", *FAST, *args],
            cwd=REPO,
            env=scrapy_env(db_url),
            stdout=out,
            stderr=out,
        )
    finally:
        out.close()


def crawl_rows(db_url: str) -> dict[str, dict[str, object]]:
    """Per organization name: its nuke_org_crawls row and metadata.last_crawl."""
    database = Database(db_url)
    try:
        rows = database.fetchall(
            "SELECT b.business_name, b.metadata, c.finished_at FROM businesses b "
            "LEFT JOIN nuke_org_crawls c ON c.organization_id = b.id"
        )
        return {
            r["business_name"]: {
                "finished_at": r["finished_at"],
                "last_crawl": (loads_json(r["metadata"]) or {}).get("last_crawl"),
            }
            for r in rows
        }
    finally:
        database.close()


def stored(db_url: str) -> int:
    database = Database(db_url)
    try:
        return int(database.scalar("SELECT COUNT(*) FROM vehicles") or 0)
    except Exception:  # noqa: BLE001 - the schema may not exist yet
        return 0
    finally:
        database.close()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_one_signal_stops_the_crawl_within_10_s_and_the_next_run_finishes(
    sqlite_url: str,
    sites: Sites,
    tmp_path: Path,
    signum: int,
) -> None:
    log = tmp_path / "stopped.log"
    child = start(sqlite_url, log, "-s", "NUKE_PROGRESS_INTERVAL=1")
    try:
        # the fast organization is done, the slow one waits on its vehicle pages
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and stored(sqlite_url) < 3:
            time.sleep(0.2)
        assert stored(sqlite_url) == 3, log.read_text()[-3000:]
        time.sleep(1.5)  # its vehicles are written; the slow site's pages are in flight
        child.send_signal(signum)
        sent = time.monotonic()
        child.wait(timeout=30)
        took = time.monotonic() - sent
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    text = log.read_text()
    assert took < 10, f"exited {took:.1f} s after the signal: {text[-3000:]}"
    assert child.returncode == 0, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert "Closing spider (shutdown)" in text
    rows = crawl_rows(sqlite_url)
    # what finished is recorded as finished; the rest is not
    assert rows["Fast Motors"]["finished_at"] is not None
    assert rows["Fast Motors"]["last_crawl"]["created"] == 3
    assert rows["Slow Motors"]["finished_at"] is None
    assert rows["Slow Motors"]["last_crawl"]["errors"] == 0  # cut short is not an error
    fast_hits = sites.fast.hits
    if signum != signal.SIGINT:
        return  # the next run is the same whichever signal stopped this one

    # the next run takes up what was left: the slow organization, fast now
    sites.slow.delay = 0.0
    again = start(sqlite_url, tmp_path / "again.log")
    assert again.wait(timeout=120) == 0, (tmp_path / "again.log").read_text()[-3000:]
    rows = crawl_rows(sqlite_url)
    assert rows["Slow Motors"]["finished_at"] is not None
    assert stored(sqlite_url) == 3 + 8
    assert sites.fast.hits == fast_hits  # the fast organization was not crawled again


def test_progress_lines_and_each_summary_as_its_organization_finishes(
    sqlite_url: str,
    sites: Sites,
    tmp_path: Path,
) -> None:
    sites.slow.delay = 0.6  # 8 vehicle pages, 2 at a time: a few seconds
    log = tmp_path / "progress.log"
    child = start(
        sqlite_url, log, "-s", "NUKE_PROGRESS_INTERVAL=1", "-s", "CONCURRENT_REQUESTS_PER_DOMAIN=2"
    )
    assert child.wait(timeout=120) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    lines = text.splitlines()

    def first(pattern: str) -> int:
        return next(i for i, line in enumerate(lines) if re.search(pattern, line))

    progress = [line for line in lines if "Progress: " in line]
    assert progress, text[-3000:]
    assert re.search(
        r"Progress: \d of 2 organizations done, \d+ pages, \d+ vehicles found, "
        r"[\d.]+ pages/s, ETA (unknown|\d+s|\d+m\d\ds)",
        progress[0],
    ), progress
    # the fast organization's summary comes while the slow one is still crawled:
    # before a progress line that counts it, and before the close (the last one's
    # may come with the close)
    fast = first(r"Organization Fast Motors: \d+ pages, 3 vehicles found, 3 created")
    assert (
        fast < first(r"Progress: 1 of 2 organizations done") < first(r"Closing spider \(finished\)")
    )
    # each summary once
    assert sum("Organization Fast Motors:" in line for line in lines) == 1
    assert sum("Organization Slow Motors:" in line for line in lines) == 1
    rows = crawl_rows(sqlite_url)
    assert rows["Fast Motors"]["finished_at"] is not None
    assert rows["Slow Motors"]["finished_at"] is not None
    assert stored(sqlite_url) == 11


def test_no_progress_lines_when_the_interval_is_0(
    sqlite_url: str, sites: Sites, tmp_path: Path
) -> None:
    sites.slow.delay = 0.0
    log = tmp_path / "quiet.log"
    child = start(sqlite_url, log, "-s", "NUKE_PROGRESS_INTERVAL=0")
    assert child.wait(timeout=120) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "Progress: " not in text
    assert text.count("Organization Fast Motors:") == 1
