"""The RunReport extension in a real ``scrapy crawl image_backfill``: signed webhooks reach
a local server (finished and failure-rate alert); dead or silent webhooks cost the crawl
nothing but a bounded wait."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from nuke_crawl.db import Database
from nuke_crawl.demo import ImageHost, dead_url, serve
from nuke_crawl.extensions.notify import SUMMARY_MARKER, sign
from tests.conftest import REPO, scrapy_env
from tests.service_helpers import seed

pytestmark = pytest.mark.slow

SECRET = "webhook-secret-77"
FAST = [
    "-s",
    "AUTOTHROTTLE_ENABLED=0",
    "-s",
    "ROBOTSTXT_OBEY=0",
    "-s",
    "RETRY_TIMES=0",
    "-s",
    "DOWNLOAD_TIMEOUT=5",
    "-s",
    "NUKE_IMAGES_FSYNC=0",
    "-s",
    "LOG_LEVEL=INFO",
]


class Receiver:
    """A local webhook endpoint recording each POST (headers, body); the first
    ``fail_first`` POSTs answer 503 (to exercise the retries)."""

    def __init__(self, fail_first: int = 0) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.fail_left = fail_first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if outer.fail_left > 0:
                    outer.fail_left -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                outer.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def images():
    host = ImageHost()
    server = serve(host)
    try:
        yield server.url
    finally:
        server.stop()


def crawl(
    db_url: str, tmp_path, *settings: str, timeout: float = 90
) -> tuple[subprocess.CompletedProcess[str], float]:
    cmd = [
        sys.executable,
        "-m",
        "scrapy",
        "crawl",
        "image_backfill",
        *FAST,
        "-s",
        f"IMAGES_STORE={tmp_path / 'images'}",
        *settings,
    ]
    started = time.monotonic()
    result = subprocess.run(
        cmd, cwd=REPO, env=scrapy_env(db_url), capture_output=True, text=True, timeout=timeout
    )
    return result, time.monotonic() - started


def stored(db_url: str) -> int:
    db = Database(db_url)
    try:
        return int(db.scalar("SELECT COUNT(*) FROM vehicle_images WHERE is_external = false"))
    finally:
        db.close()


def test_signed_webhooks_finished_and_alert(sqlite_url, tmp_path, images):
    seed(
        sqlite_url,
        [
            (
                "http://dealer.example/v/1",
                [f"{images}/img/a.jpg", f"{images}/edge/404.jpg", f"{images}/edge/410.jpg"],
            )
        ],
    )
    receiver = Receiver(fail_first=1)
    try:
        result, _ = crawl(
            sqlite_url,
            tmp_path,
            "-s",
            f"NUKE_WEBHOOK_URLS={receiver.url}",
            "-s",
            f"NUKE_WEBHOOK_SECRET={SECRET}",
            "-s",
            "NUKE_ALERT_FAILURE_RATE=0.5",
            "-s",
            "NUKE_ALERT_MIN_IMAGES=3",
            "-s",
            "NUKE_WEBHOOK_BACKOFF=0.05",
        )
    finally:
        receiver.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    events = {}
    for headers, body in receiver.posts:
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["x-nuke-signature"] == expected == sign(body, SECRET)
        payload = json.loads(body)
        assert headers["x-nuke-event"] == payload["event"]
        events[payload["event"]] = payload
    assert set(events) == {"finished", "alert"}, receiver.posts
    done = events["finished"]
    assert done["spider"] == "image_backfill" and done["finishReason"] == "finished"
    assert done["counts"]["imagesStored"] == 1 and done["counts"]["imagesFailed"] == 2
    assert done["failuresByReason"] == {"http_404": 1, "http_410": 1}
    assert done["failureRate"] == pytest.approx(2 / 3, abs=1e-3)
    assert done["durationSeconds"] > 0 and done["args"]["limit"] == 100
    assert events["alert"]["failureRate"] > 0.5
    # the summary is logged too (the service reads its runs' outcomes from it), the
    # secret never
    assert SUMMARY_MARKER in result.stderr
    assert SECRET not in result.stderr
    assert "'nuke/webhooks/sent': 2" in result.stderr


def test_dead_and_silent_webhooks_cost_the_crawl_nothing(sqlite_url, tmp_path, images):
    seed(sqlite_url, [("http://dealer.example/v/1", [f"{images}/img/b.jpg"])])
    silent = socket.socket()  # listens, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        urls = f"{dead_url()}/hook,http://127.0.0.1:{silent.getsockname()[1]}/hook"
        result, elapsed = crawl(
            sqlite_url,
            tmp_path,
            "-s",
            f"NUKE_WEBHOOK_URLS={urls}",
            "-s",
            "NUKE_WEBHOOK_TIMEOUT=0.5",
            "-s",
            "NUKE_WEBHOOK_DEADLINE=1.5",
            "-s",
            "NUKE_WEBHOOK_BACKOFF=0.05",
        )
    finally:
        silent.close()
    assert result.returncode == 0, result.stderr[-3000:]
    assert "'finish_reason': 'finished'" in result.stderr
    assert stored(sqlite_url) == 1
    assert "not delivered" in result.stderr or "'nuke/webhooks/failed'" in result.stderr
    assert "Traceback" not in result.stderr
    # the crawl waited for its webhooks at most NUKE_WEBHOOK_DEADLINE
    lines = result.stderr.splitlines()
    summary = next(line for line in lines if SUMMARY_MARKER in line)
    closed = next(line for line in lines if "Spider closed (finished)" in line)
    waited = datetime.fromisoformat(closed[:19]) - datetime.fromisoformat(summary[:19])
    assert waited.total_seconds() <= 3, (summary[:19], closed[:19])
    assert elapsed < 30
