"""Phase two hands newly stored images to phase three (NUKE_ANALYZE_AFTER_BACKFILL)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from nuke_crawl.db import Database
from nuke_crawl.demo import ImageHost, serve
from tests.test_backfill_crawl import crawl, seed

pytestmark = pytest.mark.slow


def _analysed(db_url: str) -> tuple[int, int]:
    db = Database(db_url)
    try:
        stored = db.scalar("SELECT COUNT(*) FROM vehicle_images WHERE storage_path IS NOT NULL")
        done = db.scalar("SELECT COUNT(*) FROM vehicle_images WHERE ai_last_scanned IS NOT NULL")
        return int(stored or 0), int(done or 0)
    finally:
        db.close()


def test_backfill_hands_stored_images_to_analysis(db_url: str, tmp_path: Path) -> None:
    host = ImageHost()
    with serve(host) as server:
        seed(db_url, [("http://dealer.example/a", [f"{server.url}/img/a{i}.jpg" for i in range(3)]),
                      ("http://dealer.example/b", [f"{server.url}/img/b{i}.jpg" for i in range(2)])])
        log = tmp_path / "analysis.log"
        result = crawl(db_url, tmp_path / "images", "-s", "NUKE_ANALYZE_AFTER_BACKFILL=1",
                       "-s", f"NUKE_ANALYSIS_LOG_FILE={log}")
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Handed 5 stored images to image_analysis" in result.stderr
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and _analysed(db_url) != (5, 5):
            time.sleep(0.5)
        assert _analysed(db_url) == (5, 5), log.read_text() if log.exists() else "no log"


def test_without_the_setting_nothing_is_handed_off(sqlite_url: str, tmp_path: Path) -> None:
    host = ImageHost()
    with serve(host) as server:
        seed(sqlite_url, [("http://dealer.example/a", [f"{server.url}/img/a0.jpg"])])
        result = crawl(sqlite_url, tmp_path / "images")
        assert result.returncode == 0, result.stderr[-3000:]
        assert "image_analysis" not in result.stderr
        time.sleep(1)
        assert _analysed(sqlite_url) == (1, 0)
