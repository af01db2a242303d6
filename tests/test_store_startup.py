"""Issue 12 items 13 and 14: the image store is checked before the first claim or
download (one clear "Cannot start" line, exit 1, printed last, no run summary), and a
store that fails mid-run stops the run without marking any image failed. The real
``scrapy crawl image_backfill`` in a child process, a real local image host counting
its hits, moto's S3 server and the tests' Cloudflare API server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nuke_crawl.db import Database
from nuke_crawl.demo import ImageHost, serve
from tests.cloudflare_server import ACCOUNT_HASH, ACCOUNT_ID, TOKEN, FakeCloudflare
from tests.conftest import FAST, REPO, scrapy_env
from tests.test_backfill_crawl import seed

pytestmark = pytest.mark.slow


@pytest.fixture
def host() -> Iterator[ImageHost]:
    image_host = ImageHost(width=400, height=300)
    running = serve(image_host)
    try:
        yield image_host
    finally:
        running.stop()


def image_hits(host: ImageHost) -> int:
    return sum(n for path, n in host.hits.items() if path.startswith("/img/"))


def backfill(
    db_url: str, store: str, *args: str, prefix: list[str] | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    cmd = [
        *(prefix or []),
        sys.executable,
        "-m",
        "scrapy",
        "crawl",
        "image_backfill",
        *FAST,
        "-s",
        "AUTOTHROTTLE_ENABLED=0",
        "-s",
        f"IMAGES_STORE={store}",
        "-s",
        "NUKE_IMAGE_PROCESSES=0",
        *args,
    ]
    return subprocess.run(
        cmd,
        cwd=REPO,
        env=scrapy_env(db_url, **env),
        capture_output=True,
        text=True,
        timeout=float(os.environ.get("CF_T", "120")),
    )


def rows(db_url: str) -> list[dict[str, Any]]:
    db = Database(db_url)
    try:
        return db.fetchall("SELECT * FROM vehicle_images ORDER BY vehicle_id, position")
    finally:
        db.close()


def leases(db_url: str) -> list[Any]:
    db = Database(db_url)
    try:
        return [
            r["images_lease_owner"] for r in db.fetchall("SELECT images_lease_owner FROM vehicles")
        ]
    finally:
        db.close()


def assert_cannot_start(run: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 1, one ERROR line, no traceback, no summary, "Cannot start" printed last."""
    assert run.returncode == 1, run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if "] ERROR:" in line]
    assert len(errors) == 1 and "Cannot start: " in errors[0], errors
    last = run.stderr.rstrip().splitlines()[-1]
    assert last.startswith("Cannot start: "), run.stderr[-2000:]
    assert errors[0].endswith(last)
    for word in words:
        assert word in last, last
    assert "success rate" not in run.stderr and "Image backfill finished" not in run.stderr
    return last


def assert_untouched(db_url: str, host: ImageHost) -> None:
    assert image_hits(host) == 0
    for row in rows(db_url):
        assert row["is_external"] in (True, 1) and not row["download_attempts"]
        assert row["download_error"] is None
    assert set(leases(db_url)) == {None}


def test_store_that_cannot_be_created(sqlite_url: str, host: ImageHost, tmp_path: Path) -> None:
    # a folder under a regular file cannot be made, by root either
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file")
    seed(sqlite_url, [("http://dealer.example/1", [f"{host.url}/img/a.jpg"])])
    run = backfill(sqlite_url, str(blocker / "images"))
    assert_cannot_start(run, "IMAGES_STORE", "NotADirectoryError")
    assert_untouched(sqlite_url, host)


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-U", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs unshare -U (a user namespace)")
def test_existing_read_only_folder(sqlite_url: str, host: ImageHost, tmp_path: Path) -> None:
    # Root writes anywhere; in a user namespace without an id mapping (unshare -U) it
    # keeps its files (it still owns them) but loses the override of permission bits,
    # so a folder of mode 0555 really is read-only to the crawl.
    store = tmp_path / "images"
    store.mkdir()
    store.chmod(0o555)
    seed(sqlite_url, [("http://dealer.example/1", [f"{host.url}/img/a.jpg"])])
    run = backfill(sqlite_url, str(store), prefix=["unshare", "-U"])
    assert_cannot_start(run, "IMAGES_STORE", "PermissionError")
    assert_untouched(sqlite_url, host)
    assert list(store.iterdir()) == []
    store.chmod(0o755)


def test_missing_s3_bucket(sqlite_url: str, host: ImageHost) -> None:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{server._server.server_port}"  # type: ignore[union-attr]
        seed(sqlite_url, [("http://dealer.example/1", [f"{host.url}/img/a.jpg"])])
        run = backfill(
            sqlite_url,
            "s3://no-such-bucket-nuke/photos",
            "-s",
            f"AWS_ENDPOINT_URL={endpoint}",
            AWS_ACCESS_KEY_ID="test",
            AWS_SECRET_ACCESS_KEY="test",
            AWS_DEFAULT_REGION="us-east-1",
        )
    finally:
        server.stop()
    assert_cannot_start(run, "s3://no-such-bucket-nuke/photos", "NoSuchBucket")
    assert_untouched(sqlite_url, host)


def test_unknown_scheme(sqlite_url: str, host: ImageHost) -> None:
    seed(sqlite_url, [("http://dealer.example/1", [f"{host.url}/img/a.jpg"])])
    run = backfill(sqlite_url, "gs://bucket/prefix")
    assert_cannot_start(run, "IMAGES_STORE 'gs://bucket/prefix'", "expected a folder")
    assert_untouched(sqlite_url, host)


def test_nothing_to_do_has_no_success_rate(sqlite_url: str, tmp_path: Path) -> None:
    seed(sqlite_url, [("http://dealer.example/1", [])])
    run = backfill(sqlite_url, str(tmp_path / "images"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "success rate" not in run.stderr and "success_rate" not in run.stderr
    assert "no image stored or failed" in run.stderr


@pytest.mark.parametrize("status", [500, 401])
def test_cloudflare_failing_mid_run_stops_and_marks_nothing_failed(
    sqlite_url: str, host: ImageHost, status: int
) -> None:
    vehicles = [
        (f"http://dealer.example/{n}", [f"{host.url}/img/{n}-{k}.jpg" for k in "ab"])
        for n in range(8)
    ]
    seed(sqlite_url, vehicles)
    with FakeCloudflare() as cf:
        cf.fail_after = (3, status)
        args = [
            "-s",
            f"CF_IMAGES_API_URL={cf.api_url}",
            "-s",
            f"CF_IMAGES_ACCOUNT_HASH={ACCOUNT_HASH}",
            "-s",
            "CF_IMAGES_RETRY_TIMES=1",
            "-s",
            "CONCURRENT_REQUESTS=4",
            "-a",
            "batch_size=2",
        ]
        store = f"cloudflare-images://{ACCOUNT_ID}"
        run = backfill(sqlite_url, store, *args, CF_IMAGES_TOKEN=TOKEN)
        assert run.returncode == 1, run.stderr[-3000:]
        assert "Traceback" not in run.stderr and TOKEN not in run.stderr
        assert "Stopping: storage failed: " in run.stderr
        assert cf.uploads == 3
        after = rows(sqlite_url)
        stored = [r for r in after if r["is_external"] in (False, 0)]
        assert len(stored) == 3
        for row in after:
            # no image is marked failed: the store failed, not the image
            assert row["download_error"] is None, (
                row["download_error"],
                row["download_error_detail"],
            )
        assert set(leases(sqlite_url)) == {None}  # every vehicle claimable again
        assert image_hits(host) < 16  # the run stopped before fetching everything
        if status == 401:
            return
        # the service is back: the next run stores the rest
        cf.fail_after = None
        again = backfill(sqlite_url, store, *args, CF_IMAGES_TOKEN=TOKEN)
        assert again.returncode == 0, again.stderr[-3000:]
        assert cf.uploads == 16
        assert all(r["is_external"] in (False, 0) for r in rows(sqlite_url))


@pytest.mark.parametrize("spider", ["org", "image_backfill", "image_analysis"])
def test_cannot_start_is_printed_last_by_every_spider(spider: str, tmp_path: Path) -> None:
    # a database that cannot be reached: each spider's "Cannot start" path
    args = {
        "org": ["-a", "url=http://dealer.example/"],
        "image_analysis": ["-a", "providers=local"],
    }.get(spider, [])
    cmd = [
        sys.executable,
        "-m",
        "scrapy",
        "crawl",
        spider,
        *args,
        "-s",
        f"IMAGES_STORE={tmp_path / 'images'}",
    ]
    run = subprocess.run(
        cmd,
        cwd=REPO,
        env=scrapy_env("postgresql://127.0.0.1:1/nowhere"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    last = assert_cannot_start(run, "127.0.0.1")
    assert "cannot connect to PostgreSQL" in last
    assert "finished:" not in run.stderr and "success" not in run.stderr


def test_image_analysis_with_a_store_that_cannot_be_built(sqlite_url: str) -> None:
    cmd = [
        sys.executable,
        "-m",
        "scrapy",
        "crawl",
        "image_analysis",
        "-a",
        "providers=local",
        "-s",
        "IMAGES_STORE=gs://bucket/prefix",
    ]
    run = subprocess.run(
        cmd, cwd=REPO, env=scrapy_env(sqlite_url), capture_output=True, text=True, timeout=120
    )
    assert_cannot_start(run, "IMAGES_STORE 'gs://bucket/prefix'", "expected a folder")
