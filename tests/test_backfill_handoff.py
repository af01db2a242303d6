"""Phase one hands off to phase two (NUKE_TRIGGER_BACKFILL)."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs

import pytest

from nuke_crawl.db import Database, loads_json
from nuke_crawl.demo import launch
from nuke_crawl.handoff import backfill_arguments, backfill_command, schedule_scrapyd
from tests.conftest import run_scrapy


def test_arguments_and_command():
    args = backfill_arguments(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), 7)
    assert args == {"created_after": "2026-01-02T03:04:05+00:00", "limit": "7"}
    cmd = backfill_command(args, {"IMAGES_STORE": "/x"})
    assert cmd[-7:] == ["image_backfill", "-a", "created_after=2026-01-02T03:04:05+00:00",
                        "-a", "limit=7", "-s", "IMAGES_STORE=/x"]


def test_scrapyd_schedule_json():
    seen: list[dict[str, list[str]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            length = int(self.headers["Content-Length"])
            seen.append({"path": [self.path], **parse_qs(self.rfile.read(length).decode())})
            body = json.dumps({"status": "ok", "jobid": "j1"}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        job = schedule_scrapyd(f"http://127.0.0.1:{server.server_port}", "nuke_crawl",
                               {"created_after": "2026-01-01T00:00:00+00:00", "limit": "3"})
    finally:
        server.shutdown()
    assert job == "j1"
    assert seen == [{"path": ["/schedule.json"], "project": ["nuke_crawl"],
                     "spider": ["image_backfill"], "limit": ["3"],
                     "created_after": ["2026-01-01T00:00:00+00:00"]}]


@pytest.mark.slow
def test_org_crawl_starts_a_detached_backfill(db_url, tmp_path):
    with launch("jsonld", n_vehicles=3, per_page=10, images_per_vehicle=2) as demo:
        store = tmp_path / "images"
        result = run_scrapy(
            ["crawl", "org", "-a", f"url={demo.url}", "-s", "NUKE_TRIGGER_BACKFILL=1",
             "-s", f"IMAGES_STORE={store}", "-s", f"NUKE_BACKFILL_LOG_FILE={tmp_path / 'bf.log'}",
             "-s", "AUTOTHROTTLE_START_DELAY=0.01", "-s", "NUKE_DB_BATCH_WAIT=0.05"],
            db_url, cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Started image_backfill for 3 vehicles" in result.stderr
        deadline = time.monotonic() + 60
        done = 0
        while time.monotonic() < deadline:
            db = Database(db_url)
            try:
                metas = [loads_json(r["origin_metadata"]) for r in
                         db.fetchall("SELECT origin_metadata FROM vehicles")]
            finally:
                db.close()
            done = sum(1 for m in metas if m.get("images_backfilled") is True)
            if done == 3:
                break
            time.sleep(0.3)
        assert done == 3, (tmp_path / "bf.log").read_text()[-3000:]
        assert len(list(store.rglob("*.jpg"))) >= 6
