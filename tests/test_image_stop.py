"""The image spiders stop cleanly on one SIGINT or SIGTERM (issue 12, item 1).

A real ``scrapy crawl`` child process, slow local servers counting their hits, one real
signal (or scrapyd's own ``cancel.json``): the run exits within 10 s, claims nothing
more, keeps what it finished, records no failure for what it abandoned, releases its
leases, and the next run does the rest without fetching again what was stored.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from nuke_crawl.db import Database
from nuke_crawl.demo import serve, warm_pool
from nuke_crawl.demo.images import ImageHost
from tests.conftest import REPO, scrapy_env
from tests.openai_server import API_KEY, FakeOpenAI
from tests.scrapyd_server import PROJECT, Scrapyd
from tests.test_backfill_crawl import FAST, LISTING, SlowHost, _assert_consistent, images, seed

pytestmark = pytest.mark.slow

STOP_WITHIN = 10.0


def _popen(spider: str, db_url: str, *args: str, **env: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "scrapy", "crawl", spider, *args]
    return subprocess.Popen(
        cmd,
        cwd=REPO,
        env=scrapy_env(db_url, **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(check: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("the run never got going")


def _stop(proc: subprocess.Popen[str], signame: str) -> tuple[float, str]:
    """One signal; seconds until the process exited, and its log."""
    proc.send_signal(getattr(signal, signame))
    sent = time.monotonic()
    try:
        _, err = proc.communicate(timeout=STOP_WITHIN + 20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(
            f"still running {STOP_WITHIN + 20:.0f} s after {signame}:\n" + err[-3000:]
        ) from None
    return time.monotonic() - sent, err


def _rows(db_url: str, sql: str) -> list[dict[str, Any]]:
    db = Database(db_url)
    try:
        return db.fetchall(sql)
    finally:
        db.close()


def _photo_hits(host: ImageHost) -> dict[str, int]:
    return {p: n for p, n in host.hits.items() if p.startswith("/img/")}


def _backfill_args(out: Path) -> list[str]:
    return [
        *FAST,
        "-s",
        f"IMAGES_STORE={out}",
        "-s",
        "DOWNLOAD_TIMEOUT=30",
        "-a",
        "limit=1000",
        "-a",
        "batch_size=5",
    ]


def _check_stopped_backfill(
    db_url: str, out: Path, host: SlowHost, urls: set[str], stored_before: int
) -> None:
    rows = images(db_url)
    _assert_consistent(rows, urls, out)
    stored = [r for r in rows if r["storage_path"]]
    assert stored_before <= len(stored) < len(urls)  # what finished is kept
    # nothing abandoned is recorded as failed: it was not the image's fault
    assert [r["download_error"] for r in rows if r["download_error"]] == []
    leased = _rows(db_url, "SELECT id FROM vehicles WHERE images_lease_owner IS NOT NULL")
    assert leased == []  # released: the next run takes them at once
    # the next run does the rest and fetches nothing again that was stored
    host.delay = 0.0
    before = _photo_hits(host)
    again = subprocess.run(
        [sys.executable, "-m", "scrapy", "crawl", "image_backfill", *_backfill_args(out)],
        cwd=REPO,
        env=scrapy_env(db_url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    rows = images(db_url)
    _assert_consistent(rows, urls, out)
    assert all(r["storage_path"] for r in rows)
    after = _photo_hits(host)
    for row in stored:
        path = urllib.parse.urlsplit(row["source_url"]).path
        assert after[path] == before[path], path


def test_backfill_stops_within_10s_of_one_sigint(db_url: str, tmp_path: Path) -> None:
    warm_pool()
    host = SlowHost(1.0)  # 4 per host at a time: 64 images in flight take 16 s to drain
    with serve(host) as server:
        n, per = 30, 4
        urls = {f"{server.url}/img/s{i}-{j}.jpg" for i in range(n) for j in range(per)}
        seed(
            db_url,
            [
                (f"{LISTING}{i}", [f"{server.url}/img/s{i}-{j}.jpg" for j in range(per)])
                for i in range(n)
            ],
        )
        out = tmp_path / "images"
        proc = _popen("image_backfill", db_url, *_backfill_args(out))
        _wait_for(lambda: sum(1 for r in images(db_url) if r["storage_path"]) >= 4)
        stored_before = sum(1 for r in images(db_url) if r["storage_path"])
        took, err = _stop(proc, "SIGINT")
        assert took < STOP_WITHIN, err[-3000:]
        assert proc.returncode == 0, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        assert "Closing spider (shutdown)" in err
        assert "abandoned and left for the next run" in err
        assert "Released " in err and " claimed vehicles not finished in this run" in err
        hits = sum(_photo_hits(host).values())
        time.sleep(0.5)
        assert sum(_photo_hits(host).values()) == hits  # nothing left running behind it
        _check_stopped_backfill(db_url, out, host, urls, stored_before)


def _scrapyd_post(server: Scrapyd, path: str, fields: list[tuple[str, str]]) -> dict[str, Any]:
    data = urllib.parse.urlencode(fields).encode()
    with urllib.request.urlopen(f"{server.url}/{path}", data=data, timeout=10) as r:
        return dict(json.loads(r.read().decode()))


@pytest.mark.parametrize("sig", ["", "TERM"])
def test_backfill_cancelled_through_scrapyd(sqlite_url: str, tmp_path: Path, sig: str) -> None:
    """scrapyd's cancel.json: its default signal (INT in scrapyd 1.5) and TERM (the
    default of earlier scrapyd versions, and what a process manager sends)."""
    warm_pool()
    host = SlowHost(1.0)
    with serve(host) as server, Scrapyd(tmp_path / "scrapyd", scrapy_env("")) as scrapyd:
        n, per = 30, 4
        urls = {f"{server.url}/img/c{i}-{j}.jpg" for i in range(n) for j in range(per)}
        seed(
            sqlite_url,
            [
                (f"{LISTING}{i}", [f"{server.url}/img/c{i}-{j}.jpg" for j in range(per)])
                for i in range(n)
            ],
        )
        out = tmp_path / "images"
        settings = [
            ("setting", f"DATABASE_URL={sqlite_url}"),
            ("setting", f"IMAGES_STORE={out}"),
            ("setting", "AUTOTHROTTLE_ENABLED=0"),
            ("setting", "DOWNLOAD_TIMEOUT=30"),
            ("setting", "NUKE_ALLOW_PRIVATE_NETWORKS=1"),
        ]
        job = _scrapyd_post(
            scrapyd,
            "schedule.json",
            [
                ("project", PROJECT),
                ("spider", "image_backfill"),
                ("limit", "1000"),
                ("batch_size", "5"),
                *settings,
            ],
        )["jobid"]
        _wait_for(lambda: sum(1 for r in images(sqlite_url) if r["storage_path"]) >= 4)
        stored_before = sum(1 for r in images(sqlite_url) if r["storage_path"])
        answer = _scrapyd_post(
            scrapyd,
            "cancel.json",
            [("project", PROJECT), ("job", job)] + ([("signal", sig)] if sig else []),
        )
        assert answer["status"] == "ok", answer
        sent = time.monotonic()
        while time.monotonic() - sent < STOP_WITHIN + 20:
            if any(j["id"] == job for j in scrapyd.listjobs()["finished"]):
                break
            time.sleep(0.2)
        took = time.monotonic() - sent
        logs = scrapyd.job_logs()
        assert took < STOP_WITHIN, f"job still running after {took:.0f} s\n{logs[-3000:]}"
        assert f"Received SIG{sig or 'INT'}" in logs and "Traceback" not in logs, logs[-3000:]
        _check_stopped_backfill(sqlite_url, out, host, urls, stored_before)


def test_analysis_stops_within_10s_of_one_sigterm(db_url: str, tmp_path: Path) -> None:
    from tests.test_image_analysis import Fixture

    with (
        serve(ImageHost(width=640, height=480)) as server,
        FakeOpenAI(default="slow", slow_seconds=60) as openai,
    ):
        fx = Fixture(db_url, server.url, tmp_path / "images")
        try:
            for i in range(6):
                fx.vehicle(f"car {i}", [f"/img/a{i}-{j}.jpg" for j in range(4)])
        finally:
            fx.close()
        env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": openai.url + "/v1"}
        args = [*FAST, "-s", "NUKE_ANALYSIS_RETRY_BACKOFF=0", "-a", "concurrency=4"]
        proc = _popen("image_analysis", db_url, *args, **env)
        _wait_for(lambda: openai.chat_requests >= 4)
        took, err = _stop(proc, "SIGTERM")
        assert took < STOP_WITHIN, err[-3000:]
        assert proc.returncode == 0, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        assert "Received SIGTERM" in err and "abandoned and left for the next run" in err
        assert "Released " in err
        rows = _rows(db_url, "SELECT ai_last_scanned, ai_error, ai_lease_owner FROM vehicle_images")
        assert len(rows) == 24
        assert all(r["ai_lease_owner"] is None for r in rows)
        assert all(r["ai_error"] is None and r["ai_last_scanned"] is None for r in rows)
        # the next run analyses every image
        openai.default = "good"
        calls = openai.chat_requests
        again = subprocess.run(
            [sys.executable, "-m", "scrapy", "crawl", "image_analysis", *args],
            cwd=REPO,
            env=scrapy_env(db_url, **env),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert again.returncode == 0, again.stderr[-3000:]
        rows = _rows(db_url, "SELECT ai_last_scanned FROM vehicle_images")
        assert all(r["ai_last_scanned"] is not None for r in rows)
        assert openai.chat_requests - calls == 24


def test_scraper_close_check_still_exists() -> None:
    """nudge_scraper_close() reads Scrapy internals (scrapy/scrapy#7029 workaround): fail
    loudly when Scrapy changes them, rather than hang again on a stop."""
    from scrapy.core.engine import ExecutionEngine
    from scrapy.core.scraper import Scraper, Slot

    assert callable(getattr(Scraper, "_check_if_closing", None))
    slot = Slot()
    assert slot.closing is None and slot.is_idle()
    assert "running" in ExecutionEngine.__init__.__code__.co_names


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens there once closed


@pytest.mark.parametrize("spider", ["image_backfill", "image_analysis"])
def test_cannot_start_is_the_last_line_of_ours(spider: str, tmp_path: Path) -> None:
    """No summary ("finished ... success rate 100.0%") after "Cannot start: ...", and no
    stop or release line: the run never started."""
    db_url = f"postgresql://postgres@127.0.0.1:{_closed_port()}/nowhere"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "scrapy",
            "crawl",
            spider,
            "-s",
            f"IMAGES_STORE={tmp_path}",
            "-a",
            "providers=local",
        ]
        if spider == "image_analysis"
        else [sys.executable, "-m", "scrapy", "crawl", spider, "-s", f"IMAGES_STORE={tmp_path}"],
        cwd=REPO,
        env=scrapy_env(db_url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    after = result.stderr.split("Cannot start: cannot connect to PostgreSQL", 1)[1]
    lines = after.splitlines()[1:]
    assert lines, result.stderr[-3000:]
    assert not [line for line in lines if "[nuke_crawl." in line], after[:3000]
    assert "success rate" not in after and "finished:" not in after
