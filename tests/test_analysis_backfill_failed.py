"""``image_analysis`` skips the images ``image_backfill`` failed permanently (issue 12,
item 12): no stored copy to analyse, and a download would fail again. The real
``scrapy crawl image_backfill`` then ``image_analysis``, an image server counting hits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nuke_crawl.db import Database
from nuke_crawl.demo import ImageHost, serve
from tests.conftest import REPO, scrapy_env
from tests.test_backfill_crawl import FAST, LISTING, crawl, images, seed

pytestmark = pytest.mark.slow


def test_analysis_skips_images_the_backfill_failed_permanently(db_url: str, tmp_path: Path) -> None:
    host = ImageHost()
    with serve(host) as server:
        names = ["404.jpg", "html.jpg", "410.jpg"]
        seed(
            db_url,
            [
                (
                    LISTING + "f",
                    [f"{server.url}/edge/{n}" for n in names] + [f"{server.url}/img/good.jpg"],
                )
            ],
        )
        out = tmp_path / "images"
        backfill = crawl(db_url, out)
        assert backfill.returncode == 0, backfill.stderr[-3000:]
        errors = {r["source_url"].rsplit("/", 1)[1]: r["download_error"] for r in images(db_url)}
        assert errors == {
            "404.jpg": "http_404",
            "html.jpg": "not_image",
            "410.jpg": "http_410",
            "good.jpg": None,
        }
        before = dict(host.hits)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "scrapy",
                "crawl",
                "image_analysis",
                *FAST,
                "-s",
                f"IMAGES_STORE={out}",
                "-a",
                "providers=local",
            ],
            cwd=REPO,
            env=scrapy_env(db_url),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Traceback" not in result.stderr
        assert "1 images pending" in result.stderr, result.stderr[-3000:]
        assert dict(host.hits) == before  # nothing downloaded again (the good one is stored)
        db = Database(db_url)
        try:
            rows = {
                r["source_url"].rsplit("/", 1)[1]: r
                for r in db.fetchall(
                    "SELECT source_url, ai_last_scanned, ai_error, ai_attempts FROM vehicle_images"
                )
            }
        finally:
            db.close()
        assert rows["good.jpg"]["ai_last_scanned"] is not None
        for name in names:
            assert rows[name]["ai_last_scanned"] is None and rows[name]["ai_error"] is None
            assert not rows[name]["ai_attempts"], name
