"""An org crawl, then ``image_backfill`` into ``cloudflare-images://`` (the tests' own
Cloudflare API server), then ``image_analysis`` reading the blobs back: the real
``scrapy`` commands in child processes, real databases."""

from __future__ import annotations

import hashlib
import io
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from nuke_crawl.db import Database, loads_json
from nuke_crawl.demo import ImageHost, launch, serve
from tests.cloudflare_server import ACCOUNT_HASH, ACCOUNT_ID, TOKEN, FakeCloudflare
from tests.conftest import FAST, run_scrapy
from tests.test_backfill_crawl import seed

pytestmark = pytest.mark.slow

URI = f"cloudflare-images://{ACCOUNT_ID}"


@pytest.fixture
def cf() -> Iterator[FakeCloudflare]:
    with FakeCloudflare() as server:
        yield server


def backfill(
    db_url: str, cf: FakeCloudflare, *args: str, token: str = TOKEN, store: str = URI
) -> subprocess.CompletedProcess[str]:
    return run_scrapy(
        [
            "crawl",
            "image_backfill",
            *FAST,
            "-s",
            "AUTOTHROTTLE_ENABLED=0",
            "-s",
            "ROBOTSTXT_OBEY=0",
            "-s",
            f"IMAGES_STORE={store}",
            "-s",
            f"CF_IMAGES_API_URL={cf.api_url}",
            "-s",
            f"CF_IMAGES_ACCOUNT_HASH={ACCOUNT_HASH}",
            "-s",
            "IMAGES_MIN_WIDTH=50",
            "-s",
            "IMAGES_MIN_HEIGHT=50",
            *args,
        ],
        db_url,
        timeout=120,
        CF_IMAGES_TOKEN=token,
    )


def rows(
    db_url: str,
    sql: str = "SELECT * FROM vehicle_images ORDER BY vehicle_id, position",
    params: list[Any] | None = None,
) -> list[dict[str, Any]]:
    db = Database(db_url)
    try:
        return db.fetchall(sql, params or [])
    finally:
        db.close()


def cloudflare_id(vehicle_id: str, url: str, ext: str = "jpg") -> str:
    return f"{vehicle_id}/{hashlib.sha1(url.encode()).hexdigest()}.{ext}"


@pytest.mark.postgres
def test_org_crawl_then_backfill_into_cloudflare_then_analysis(
    pg_url: str, cf: FakeCloudflare
) -> None:
    # PostgreSQL only (four scrapy runs, ~30 s): the tests below run the same backfill
    # code on SQLite.
    db_url = pg_url
    with launch("jsonld", n_vehicles=3, per_page=10, images_per_vehicle=2) as demo:
        org = run_scrapy(["crawl", "org", "-a", f"url={demo.url}", *FAST], db_url)
        assert org.returncode == 0, org.stderr[-3000:]
        before = rows(db_url)
        assert len(before) == 6 and all(r["is_external"] in (True, 1) for r in before)
        # Cloudflare refuses one of them (as it does an image it cannot process)
        refused = before[0]
        refused_id = cloudflare_id(refused["vehicle_id"], refused["source_url"])
        cf.reject[refused_id] = (400, 5400, "Bad request: Error during the processing")

        run = backfill(db_url, cf)
        assert run.returncode == 0, run.stderr[-3000:]
        assert "Traceback" not in run.stderr and TOKEN not in run.stderr
        after = {r["id"]: r for r in rows(db_url)}
        stored = [r for r in after.values() if r["id"] != refused["id"]]
        assert cf.uploads == 5 and len(cf.images) == 5
        orgs = {
            r["id"]: r["origin_organization_id"]
            for r in rows(db_url, "SELECT id, origin_organization_id FROM vehicles")
        }
        for row in stored:
            assert row["is_external"] in (False, 0), row["download_error"]
            image_id = cloudflare_id(row["vehicle_id"], row["source_url"])
            assert row["storage_path"] == image_id
            assert row["image_url"] == (
                f"https://imagedelivery.net/{ACCOUNT_HASH}/{image_id}/public"
            )
            variants = loads_json(row["variants"])
            assert variants == {
                name: {"url": f"https://imagedelivery.net/{ACCOUNT_HASH}/{image_id}/{name}"}
                for name in ("public", "thumbnail")
            }
            uploaded = cf.images[image_id]
            assert hashlib.sha256(uploaded.data).hexdigest() == row["file_hash"]
            assert uploaded.meta == {
                "vehicle_id": row["vehicle_id"],
                "organization_id": str(orgs[row["vehicle_id"]]),
                "source_url": row["source_url"],
                "sha256": row["file_hash"],
            }
        # the refused image keeps its vendor URL, with the API's reason, code and message
        row = after[refused["id"]]
        assert row["is_external"] in (True, 1) and row["storage_path"] is None
        assert row["image_url"] == refused["image_url"]
        assert row["download_error"] == "storage_rejected"
        assert "5400" in row["download_error_detail"]
        assert "Bad request: Error during the processing" in row["download_error_detail"]
        assert "nuke/images/failed/storage_rejected': 1" in run.stderr
        posts = sum(1 for r in cf.log if r.method == "POST")

        # a re-run uploads nothing (storage_rejected is permanent; the rest is stored)
        again = backfill(db_url, cf)
        assert again.returncode == 0, again.stderr[-3000:]
        assert cf.uploads == 5 and sum(1 for r in cf.log if r.method == "POST") == posts

    # analysis reads the stored copies back through the API's blob endpoint
    analysis = run_scrapy(
        [
            "crawl",
            "image_analysis",
            "-a",
            "providers=local",
            *FAST,
            "-s",
            f"IMAGES_STORE={URI}",
            "-s",
            f"CF_IMAGES_API_URL={cf.api_url}",
            "-s",
            f"CF_IMAGES_ACCOUNT_HASH={ACCOUNT_HASH}",
            "-s",
            "NUKE_ANALYSIS_RETRY_BACKOFF=0",
        ],
        db_url,
        CF_IMAGES_TOKEN=TOKEN,
    )
    assert analysis.returncode == 0, analysis.stderr[-3000:]
    assert "stored copy unreadable" not in analysis.stderr
    blobs = sorted(r.path for r in cf.log if r.path.endswith("/blob"))
    assert len(blobs) == 5 and all(r.status == 200 for r in cf.log if r.path.endswith("/blob"))
    done = rows(db_url, "SELECT ai_processing_status FROM vehicle_images WHERE is_external = false")
    assert [r["ai_processing_status"] for r in done] == ["completed"] * 5


def test_wrong_token_is_one_clear_line_before_any_download(
    sqlite_url: str, cf: FakeCloudflare
) -> None:
    host = ImageHost(width=640, height=480)
    running = serve(host)
    try:
        seed(sqlite_url, [("http://dealer.example/1", [f"{running.url}/img/a.jpg"])])
        run = backfill(sqlite_url, cf, token="cf-not-the-token-123")
        hits = sum(n for path, n in host.hits.items() if path != "/robots.txt")
    finally:
        running.stop()
    assert run.returncode == 1
    errors = [line for line in run.stderr.splitlines() if "] ERROR:" in line]
    assert len(errors) == 1, errors
    assert "Cannot start: Cloudflare Images" in errors[0] and "CF_IMAGES_TOKEN" in errors[0]
    assert "Traceback" not in run.stderr and "cf-not-the-token-123" not in run.stderr
    assert hits == 0 and not any(r.method == "POST" for r in cf.log)
    (row,) = rows(sqlite_url)
    assert row["is_external"] in (True, 1) and not row["download_attempts"]
    # printed last (issue 12 item 14), no run summary after it
    assert run.stderr.rstrip().splitlines()[-1].startswith("Cannot start: Cloudflare Images")
    assert "success rate" not in run.stderr


def test_missing_token_and_bad_variants_refused_in_one_line(
    sqlite_url: str, cf: FakeCloudflare, tmp_path: Path
) -> None:
    seed(sqlite_url, [("http://dealer.example/1", ["http://127.0.0.1:9/a.jpg"])])
    run = backfill(sqlite_url, cf, token="")
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "Cannot start: CF_IMAGES_TOKEN is not set in the environment" in run.stderr
    run = backfill(
        sqlite_url,
        cf,
        "-s",
        "NUKE_IMAGE_VARIANTS=thumb:320y240:webp",
        store=str(tmp_path / "images"),
    )
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "Cannot start: NUKE_IMAGE_VARIANTS: 'thumb:320y240:webp'" in run.stderr
    assert cf.log == []


def test_webp_variants_in_a_folder_store(
    sqlite_url: str, cf: FakeCloudflare, tmp_path: Path
) -> None:
    host = ImageHost(width=640, height=480)
    running = serve(host)
    try:
        seed(sqlite_url, [("http://dealer.example/1", [f"{running.url}/img/a.jpg"])])
        out = tmp_path / "images"
        run = backfill(
            sqlite_url,
            cf,
            "-s",
            "NUKE_IMAGE_VARIANTS=thumb:320x240:webp,medium:400:jpeg",
            store=str(out),
        )
    finally:
        running.stop()
    assert run.returncode == 0, run.stderr[-3000:]
    (row,) = rows(sqlite_url)
    variants = loads_json(row["variants"])
    assert variants["thumb"]["mime_type"] == "image/webp"
    assert variants["thumb"]["path"].endswith("_thumb.webp")
    assert (variants["thumb"]["width"], variants["thumb"]["height"]) == (320, 240)
    assert variants["medium"]["path"].endswith("_medium.jpg")
    thumb = Image.open(io.BytesIO((out / variants["thumb"]["path"]).read_bytes()))
    assert thumb.format == "WEBP" and thumb.size == (320, 240) and "exif" not in thumb.info
    medium = Image.open(out / variants["medium"]["path"])
    assert medium.format == "JPEG" and medium.size == (400, 300)
    assert cf.log == []  # a folder store never talks to Cloudflare


def test_org_crawl_hands_off_a_backfill_into_the_same_cloudflare_store(
    sqlite_url: str, cf: FakeCloudflare, tmp_path: Path
) -> None:
    # the detached backfill gets IMAGES_STORE and the CF_IMAGES_* settings from the org
    # crawl's hand-off, the token through the environment
    with launch("jsonld", n_vehicles=2, per_page=10, images_per_vehicle=2) as demo:
        org = run_scrapy(
            [
                "crawl",
                "org",
                "-a",
                f"url={demo.url}",
                *FAST,
                "-s",
                "NUKE_TRIGGER_BACKFILL=1",
                "-s",
                f"NUKE_BACKFILL_LOG_FILE={tmp_path / 'bf.log'}",
                "-s",
                f"IMAGES_STORE={URI}",
                "-s",
                f"CF_IMAGES_API_URL={cf.api_url}",
                "-s",
                f"CF_IMAGES_ACCOUNT_HASH={ACCOUNT_HASH}",
                "-s",
                "CF_IMAGES_VARIANT=thumbnail",
                "-s",
                "NUKE_IMAGE_VARIANTS=thumb:320x240:webp",
            ],
            sqlite_url,
            cwd=tmp_path,
            CF_IMAGES_TOKEN=TOKEN,
        )
        assert org.returncode == 0, org.stderr[-3000:]
        assert "Started image_backfill for 2 vehicles" in org.stderr
        deadline = time.monotonic() + 60
        stored: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            stored = [r for r in rows(sqlite_url) if r["is_external"] in (False, 0)]
            if len(stored) == 4:
                break
            time.sleep(0.3)
    log = (tmp_path / "bf.log").read_text() if (tmp_path / "bf.log").exists() else ""
    assert len(stored) == 4, log[-3000:]
    assert cf.uploads == 4
    for row in stored:
        assert row["image_url"] == (
            f"https://imagedelivery.net/{ACCOUNT_HASH}/{row['storage_path']}/thumbnail"
        )
        assert set(loads_json(row["variants"])) == {"public", "thumbnail"}  # Cloudflare's
    assert TOKEN not in log
