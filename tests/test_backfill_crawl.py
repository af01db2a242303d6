"""``scrapy crawl image_backfill`` end to end: real image servers, real databases,
the real command in a child process (a reactor cannot restart inside pytest)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from nuke_crawl.db import Database, backfill, loads_json, migrate, store
from nuke_crawl.demo import EDGE_CASES, ImageHost, serve, warm_pool
from nuke_crawl.demo.server import CountingApp, Request, Response
from tests.conftest import REPO, scrapy_env

LISTING = "http://dealer.example/listing/"

FAST = [
    "-s",
    "AUTOTHROTTLE_ENABLED=0",
    "-s",
    "NUKE_BACKOFF_BASE=0.05",
    "-s",
    "DOWNLOAD_TIMEOUT=2.5",
    "-s",
    "RETRY_TIMES=2",
    "-s",
    "ROBOTSTXT_OBEY=0",
    "-s",
    "IMAGES_MIN_WIDTH=50",
    "-s",
    "IMAGES_MIN_HEIGHT=50",
    "-s",
    "NUKE_IMAGES_PUBLIC_URL=https://cdn.example/img",
]

STORED = {
    "png-alpha.png",
    "webp.webp",
    "gif.gif",
    "avif.avif",
    "cmyk.jpg",
    "exif-rotated.jpg",
    "flaky-500.jpg",
    "rate-limited.jpg",
    "redirect.jpg",
    "hotlink.jpg",
    "same-a.jpg",
    "same-b.jpg",
}
FAILED = {
    "truncated.jpg": "truncated",
    "html.jpg": "not_image",
    "empty.jpg": "empty",
    "bomb.png": "decompression_bomb",
    "pixel.gif": "too_small",
    "404.jpg": "http_404",
    "410.jpg": "http_410",
    "slow.jpg": "timeout",
}


def seed(url: str, vehicles: list[tuple[str, list[str]]]) -> list[str]:
    """Vehicles (listing URL, image URLs) as the org crawl records them; their ids."""
    db = Database(url)
    migrate(db)
    try:
        org, _ = store.add_organization(db, "http://dealer.example")
        recs = [
            store.VehicleRecord(
                org.id,
                listing,
                {"year": 1999, "make": "Saab", "model": "900", "listing_url": listing},
                urls,
            )
            for listing, urls in vehicles
        ]
        store.upsert_vehicles(db, recs)
        rows = db.fetchall("SELECT id, discovery_url FROM vehicles")
        by_url = {r["discovery_url"]: r["id"] for r in rows}
        return [by_url[listing] for listing, _ in vehicles]
    finally:
        db.close()


def crawl(
    db_url: str, store_dir: Path | str, *args: str, timeout: float = 90, **env: str
) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-m",
        "scrapy",
        "crawl",
        "image_backfill",
        *FAST,
        "-s",
        f"IMAGES_STORE={store_dir}",
        *args,
    ]
    return subprocess.run(
        cmd,
        cwd=REPO,
        env=scrapy_env(db_url, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def stats_of(result: subprocess.CompletedProcess[str]) -> str:
    return result.stderr


def images(db_url: str) -> list[dict[str, Any]]:
    db = Database(db_url)
    try:
        return db.fetchall("SELECT * FROM vehicle_images ORDER BY vehicle_id, position")
    finally:
        db.close()


def _image_hits(host: ImageHost) -> int:
    return sum(n for path, n in host.hits.items() if path != "/robots.txt")


@pytest.fixture
def image_host():
    host = ImageHost(slow_seconds=6.0, hotlink_referer=LISTING)
    server = serve(host)
    try:
        yield host, server.url
    finally:
        server.stop()


@pytest.mark.slow
def test_edge_images_outcomes_and_rerun(db_url, tmp_path, image_host):
    host, base = image_host
    edge = [f"{base}/edge/{name}" for name in EDGE_CASES if name != "redirect-hop.jpg"]
    good, other = seed(
        db_url,
        [
            (LISTING + "1", edge),
            ("http://elsewhere.example/2", [f"{base}/edge/hotlink.jpg"]),
        ],
    )
    out = tmp_path / "images"
    result = crawl(db_url, out, "-a", "max_images=50")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    rows = images(db_url)
    by_name = {r["source_url"].rsplit("/", 1)[1]: r for r in rows if r["vehicle_id"] == good}
    for name in STORED:
        row = by_name[name]
        assert row["is_external"] in (False, 0), (name, row["download_error"])
        assert row["storage_path"].startswith(f"{good}/")
        assert row["image_url"] == f"https://cdn.example/img/{row['storage_path']}"
        assert row["source_url"] == f"{base}/edge/{name}"
        assert (out / row["storage_path"]).is_file()
        assert row["file_hash"] and row["file_size"] and row["width"] and row["height"]
    for name, reason in FAILED.items():
        row = by_name[name]
        assert row["is_external"] in (True, 1) and row["storage_path"] is None, name
        assert row["download_error"] == reason, (name, row["download_error"])
        assert backfill.display_url(row) == f"{base}/edge/{name}"
    rotated = by_name["exif-rotated.jpg"]
    assert (rotated["width"], rotated["height"]) == (1200, 1600)
    assert by_name["cmyk.jpg"]["mime_type"] == "image/jpeg"
    assert by_name["png-alpha.png"]["mime_type"] == "image/png"
    assert set(loads_json(by_name["webp.webp"]["variants"])) == {"thumb"}
    # the same bytes under two URLs: one file for the vehicle
    same_a, same_b = by_name["same-a.jpg"], by_name["same-b.jpg"]
    assert same_a["file_hash"] == same_b["file_hash"]
    assert same_a["storage_path"] == same_b["storage_path"]
    # hotlink protection: fixed by the listing's Referer, not by another page's
    (elsewhere,) = [r for r in rows if r["vehicle_id"] == other]
    assert elsewhere["download_error"] == "http_403"
    # retried after the 500 and after the 429 (a loaded machine may time one out once more)
    assert host.hits["/edge/flaky-500.jpg"] >= 2
    assert host.hits["/edge/rate-limited.jpg"] >= 2
    assert "'nuke/backoff/rate_limited'" in result.stderr
    assert "'nuke/images/failed/timeout': 1" in result.stderr
    assert "failed truncated: 1, e.g." in result.stderr
    db = Database(db_url)
    try:
        meta = loads_json(db.scalar("SELECT origin_metadata FROM vehicles WHERE id = ?", [good]))
    finally:
        db.close()
    # slow.jpg is a transient failure: the vehicle waits for its retry
    assert meta["images_backfilled"] is False and meta["images_stored"] == len(STORED)
    # a re-run downloads nothing again (the timeout waits for its cross-run backoff)
    before = _image_hits(host)
    files = sorted(p.name for p in out.rglob("*"))
    again = crawl(db_url, out, "-a", "max_images=50")
    assert again.returncode == 0, again.stderr[-3000:]
    assert _image_hits(host) == before
    assert sorted(p.name for p in out.rglob("*")) == files


@pytest.mark.slow
def test_s3_storage_through_moto(sqlite_url, tmp_path, image_host):
    import boto3
    from moto.server import ThreadedMotoServer

    host, base = image_host
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{server._server.server_port}"
        creds = {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        s3.create_bucket(Bucket="photos")
        (vid,) = seed(sqlite_url, [(LISTING + "s3", [f"{base}/img/a.jpg", f"{base}/img/b.jpg"])])
        result = crawl(
            sqlite_url,
            "s3://photos/vehicles",
            "-s",
            f"AWS_ENDPOINT_URL={endpoint}",
            "-s",
            "NUKE_IMAGES_PUBLIC_URL=",
            "-s",
            'NUKE_IMAGE_VARIANTS={"thumb": [320, 240], "medium": [1024, 768]}',
            **creds,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket="photos")["Contents"]}
        rows = images(sqlite_url)
        assert all(r["is_external"] in (False, 0) for r in rows)
        for row in rows:
            assert f"vehicles/{row['storage_path']}" in keys
            assert row["image_url"] == f"{endpoint}/photos/vehicles/{row['storage_path']}"
        assert len(keys) == 6  # two images, each with the two variants asked for
        for row in rows:
            variants = loads_json(row["variants"])
            assert set(variants) == {"thumb", "medium"}
            assert (variants["medium"]["width"], variants["medium"]["height"]) == (1024, 768)
        assert all(k.startswith(f"vehicles/{vid}/") for k in keys)
    finally:
        server.stop()


class SlowHost(ImageHost):
    """An ImageHost taking ``delay`` seconds per photo (to kill a run mid-way)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def __call__(self, request: Request) -> Response:
        response = super().__call__(request)
        response.delay = self.delay
        return response


@pytest.mark.slow
@pytest.mark.postgres
def test_two_processes_download_each_image_once(pg_url, tmp_path):
    warm_pool()  # a first encode in this busy process must not time a download out
    host = SlowHost(0.02)
    server = serve(host)
    try:
        n, per = 30, 4
        seed(
            pg_url,
            [
                (f"{LISTING}{i}", [f"{server.url}/img/v{i}-{j}.jpg" for j in range(per)])
                for i in range(n)
            ],
        )
        args = ["-a", "batch_size=3", "-a", "limit=1000", "-s", "DOWNLOAD_TIMEOUT=30"]
        cmds = [
            [
                sys.executable,
                "-m",
                "scrapy",
                "crawl",
                "image_backfill",
                *FAST,
                "-s",
                f"IMAGES_STORE={tmp_path / 'images'}",
                *args,
            ]
            for _ in range(2)
        ]
        procs = [
            subprocess.Popen(
                c,
                cwd=REPO,
                env=scrapy_env(pg_url),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for c in cmds
        ]
        outputs = [p.communicate(timeout=120) for p in procs]
        for proc, (_, err) in zip(procs, outputs, strict=True):
            assert proc.returncode == 0, err[-3000:]
        claimed = [
            int(err.split("'nuke/vehicles/claimed': ")[1].split(",")[0])
            for _, err in outputs
            if "'nuke/vehicles/claimed'" in err
        ]
        assert sum(claimed) == n and len(claimed) == 2, claimed  # both took part
        photo_hits = {p: c for p, c in host.hits.items() if p.startswith("/img/")}
        assert len(photo_hits) == n * per
        assert set(photo_hits.values()) == {1}
        rows = images(pg_url)
        assert len(rows) == n * per and all(r["is_external"] is False for r in rows)
    finally:
        server.stop()


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_completes(db_url, tmp_path):
    warm_pool()
    host = SlowHost(0.15)
    server = serve(host)
    try:
        n, per = 12, 4
        urls = {f"{server.url}/img/k{i}-{j}.jpg" for i in range(n) for j in range(per)}
        seed(
            db_url,
            [
                (f"{LISTING}{i}", [f"{server.url}/img/k{i}-{j}.jpg" for j in range(per)])
                for i in range(n)
            ],
        )
        out = tmp_path / "images"
        cmd = [
            sys.executable,
            "-m",
            "scrapy",
            "crawl",
            "image_backfill",
            *FAST,
            "-s",
            f"IMAGES_STORE={out}",
            "-s",
            "NUKE_IMAGE_LEASE_SECONDS=2",
            "-s",
            "CONCURRENT_REQUESTS=2",
            "-s",
            "DOWNLOAD_TIMEOUT=30",
            "-a",
            "batch_size=2",
        ]
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=scrapy_env(db_url),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            stored = [r for r in images(db_url) if r["storage_path"]]
            if len(stored) >= 6:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        rows = images(db_url)
        assert 6 <= sum(1 for r in rows if r["storage_path"]) < n * per
        _assert_consistent(rows, urls, out)
        time.sleep(2.1)  # the killed worker's leases expire
        result = crawl(db_url, out, "-s", "DOWNLOAD_TIMEOUT=30")
        assert result.returncode == 0, result.stderr[-3000:]
        rows = images(db_url)
        _assert_consistent(rows, urls, out)
        assert all(r["storage_path"] for r in rows)
        db = Database(db_url)
        try:
            metas = [
                loads_json(r["origin_metadata"])
                for r in db.fetchall("SELECT origin_metadata FROM vehicles")
            ]
        finally:
            db.close()
        assert all(m["images_backfilled"] is True and m["images_stored"] == per for m in metas)
    finally:
        server.stop()


def _assert_consistent(rows: list[dict[str, Any]], urls: set[str], out: Path) -> None:
    """No external URL lost, no half-recorded image."""
    assert {r["source_url"] for r in rows} == urls
    for row in rows:
        if row["is_external"] in (True, 1):
            assert row["storage_path"] is None and row["image_url"] == row["source_url"]
        else:
            assert row["storage_path"] and row["file_hash"] and row["width"]
            assert (out / row["storage_path"]).is_file()


def test_dry_run_writes_nothing(db_url, tmp_path, image_host):
    _, base = image_host
    seed(db_url, [(LISTING + "d", [f"{base}/img/d1.jpg", f"{base}/img/d2.jpg"])])
    before = images(db_url)
    out = tmp_path / "images"
    result = crawl(db_url, out, "-a", "dry_run=1")
    assert result.returncode == 0, result.stderr[-3000:]
    # reported the one way both image phases report a dry run: in the log
    assert "dry run: 1 vehicles, 2 images, 1 hosts" in result.stderr
    assert images(db_url) == before
    assert not out.exists() or not any(out.iterdir())


def test_vehicle_ids_backfills_exactly_those_vehicles(db_url, tmp_path, image_host):
    host, base = image_host
    ids = seed(
        db_url,
        [
            (f"{LISTING}ids{i}", [f"{base}/img/320x240/ids{i}-{j}.jpg" for j in range(2)])
            for i in range(4)
        ],
    )
    chosen = {ids[0], ids[2]}
    out = tmp_path / "images"
    result = crawl(db_url, out, "-a", f"vehicle_ids={ids[2]},{ids[0]}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "'nuke/vehicles/claimed': 2," in result.stderr
    assert "'nuke/images/stored': 4," in result.stderr
    assert {p for p in host.hits if p.startswith("/img/")} == {
        f"/img/320x240/ids{i}-{j}.jpg" for i in (0, 2) for j in range(2)
    }
    rows = images(db_url)
    assert len(rows) == 8  # the org crawl's external rows, for every vehicle
    for row in rows:
        if row["vehicle_id"] in chosen:
            assert row["storage_path"] and (out / row["storage_path"]).is_file()
        else:  # not even tried
            assert row["storage_path"] is None and row["download_attempts"] in (0, None)
    db = Database(db_url)
    try:
        metas = {
            r["id"]: loads_json(r["origin_metadata"])
            for r in db.fetchall("SELECT id, origin_metadata FROM vehicles")
        }
    finally:
        db.close()
    assert {vid for vid, m in metas.items() if m["images_backfilled"]} == chosen


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["-a", "limit=lots"], "limit"),
        (["-a", "batch_size=0"], "batch_size"),
        (["-a", "vehicle_id=42"], "vehicle_id"),
        (["-a", "created_after=yesterday"], "created_after"),
        (["-a", "min_priority=urgent"], "min_priority"),
        (["-a", "colour=red"], "colour"),
    ],
)
def test_bad_arguments_refused(sqlite_url, tmp_path, args, named):
    result = crawl(sqlite_url, tmp_path / "images", *args, timeout=60)
    assert result.returncode == 2
    assert named in result.stderr
    assert "Traceback" not in result.stderr


def test_private_network_guard_refuses_image_urls(sqlite_url, tmp_path, image_host):
    host, base = image_host
    seed(sqlite_url, [(LISTING + "p", [f"{base}/img/p1.jpg", f"{base}/edge/redirect.jpg"])])
    result = crawl(sqlite_url, tmp_path / "images", NUKE_ALLOW_PRIVATE_NETWORKS="0")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = images(sqlite_url)
    assert [r["download_error"] for r in rows] == ["refused", "refused"]
    assert _image_hits(host) == 0
    assert "Traceback" not in result.stderr


class StreamingServer:
    """A bare HTTP server on 127.0.0.1 answering every request with ``body`` and no
    ``Content-Length`` (the body ends when the connection closes), so a client only
    learns the size while receiving."""

    def __init__(self, body: bytes) -> None:
        import socket
        import threading

        self.body = body
        self.hits = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    head += chunk
                self.hits += 1
                # (the client may give up mid-body: what a size limit does)
                with contextlib.suppress(OSError):
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n"
                        b"Connection: close\r\n\r\n" + self.body
                    )

    def stop(self) -> None:
        self._sock.close()


def test_too_large_is_a_permanent_failure(db_url, tmp_path, image_host):
    host, base = image_host
    big = host.photo("streamed")  # 1600x1200: ~200 KB
    assert len(big) > 100_000
    stream = StreamingServer(big)
    try:
        big_url, small_url = f"{base}/img/big.jpg", f"{base}/img/320x240/small.jpg"
        streamed_url = f"{stream.url}/img/streamed.jpg"
        (vid,) = seed(db_url, [(LISTING + "big", [big_url, streamed_url, small_url])])
        out = tmp_path / "images"
        limit = ["-s", "DOWNLOAD_MAXSIZE=100000", "-s", "DOWNLOAD_WARNSIZE=0"]
        result = crawl(db_url, out, *limit)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Traceback" not in result.stderr
        by_url = {r["source_url"]: r for r in images(db_url)}
        for url in (big_url, streamed_url):  # Content-Length known, and only while receiving
            row = by_url[url]
            assert row["download_error"] == "too_large", (url, row["download_error_detail"])
            assert row["is_external"] in (True, 1) and row["storage_path"] is None
            assert row["download_next_at"] is None  # permanent: no retry scheduled
            assert backfill.display_url(row) == url
        assert by_url[small_url]["storage_path"]
        assert "'nuke/images/failed/too_large': 2" in result.stderr
        db = Database(db_url)
        try:
            meta = loads_json(db.scalar("SELECT origin_metadata FROM vehicles WHERE id = ?", [vid]))
        finally:
            db.close()
        assert meta["images_backfilled"] is True
        assert (meta["images_stored"], meta["images_failed"]) == (1, 2)
        assert meta["images_last_error"].startswith("too_large")
        # permanent: a re-run asks for neither again
        hits = (_image_hits(host), stream.hits)
        again = crawl(db_url, out, *limit)
        assert again.returncode == 0, again.stderr[-3000:]
        assert (_image_hits(host), stream.hits) == hits
        # unless told to retry failed images; with a larger limit they are stored
        retried = crawl(db_url, out, "-a", "retry_failed=1")
        assert retried.returncode == 0, retried.stderr[-3000:]
        assert all(r["storage_path"] for r in images(db_url))
    finally:
        stream.stop()


@pytest.mark.slow
def test_lease_is_renewed_while_a_vehicle_takes_longer(db_url, tmp_path):
    """A vehicle taking several lease periods stays with its worker: the lease is renewed,
    and another worker's claim finds nothing to take."""
    warm_pool()
    host = SlowHost(1.2)
    server = serve(host)
    try:
        urls = [f"{server.url}/img/lease{j}.jpg" for j in range(5)]
        (vid,) = seed(db_url, [(LISTING + "lease", urls)])
        out = tmp_path / "images"
        cmd = [
            sys.executable,
            "-m",
            "scrapy",
            "crawl",
            "image_backfill",
            *FAST,
            "-s",
            f"IMAGES_STORE={out}",
            "-s",
            "NUKE_IMAGE_LEASE_SECONDS=2",
            "-s",
            "CONCURRENT_REQUESTS=1",
            "-s",
            "CONCURRENT_REQUESTS_PER_DOMAIN=1",
            "-s",
            "DOWNLOAD_TIMEOUT=30",
        ]
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=scrapy_env(db_url),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        db = Database(db_url)
        try:

            def lease() -> dict[str, Any]:
                row = db.fetchone(
                    "SELECT images_lease_owner, images_lease_until FROM vehicles WHERE id = ?",
                    [vid],
                )
                assert row is not None
                return row

            deadline = time.monotonic() + 60
            while lease()["images_lease_owner"] is None:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
            owner = lease()["images_lease_owner"]
            first_until = backfill._parse_ts(lease()["images_lease_until"])
            assert first_until is not None
            checks = 0
            # 5 images at 1.2 s each, one at a time: about three lease periods of 2 s
            while proc.poll() is None and checks < 3:
                now = datetime.now(UTC)
                if now < first_until + timedelta(seconds=0.5 + 1.5 * checks):
                    time.sleep(0.05)
                    continue
                current = lease()
                if current["images_lease_owner"] is None:
                    break  # the vehicle is done
                assert current["images_lease_owner"] == owner
                until = backfill._parse_ts(current["images_lease_until"])
                assert until is not None and until > now, "the lease was not renewed"
                assert backfill.claim_vehicles(db, "thief", limit=5, lease_seconds=60) == []
                checks += 1
            assert checks >= 2, "the run ended before its first lease expired"
        finally:
            db.close()
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-3000:]
        rows = images(db_url)
        assert all(r["storage_path"] for r in rows)
        assert {p: n for p, n in host.hits.items() if p.startswith("/img/")} == {
            f"/img/lease{j}.jpg": 1 for j in range(5)
        }
    finally:
        server.stop()


@pytest.mark.slow
def test_media_cache_stays_bounded(sqlite_url, tmp_path, image_host):
    """Scrapy's media pipeline keeps every result for the run (scrapy #939); settled
    vehicles' results are dropped, so the cache holds about what is in flight."""
    _, base = image_host
    n, per = 40, 3
    seed(
        sqlite_url,
        [
            (f"{LISTING}c{i}", [f"{base}/img/320x240/c{i}-{j}.jpg" for j in range(per)])
            for i in range(n)
        ],
    )
    result = crawl(
        sqlite_url,
        tmp_path / "images",
        "-a",
        "batch_size=2",
        "-a",
        "limit=1000",
        "-s",
        "NUKE_IMAGE_MAX_IN_FLIGHT=6",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"'nuke/images/stored': {n * per}" in result.stderr
    peak = int(result.stderr.split("'nuke/images/cache_peak': ")[1].split(",")[0].split("}")[0])
    # in flight: up to 6 images, plus the batch claimed when fewer were (2 vehicles of 3)
    assert 1 <= peak <= 6 + 2 * per, peak
    assert "'nuke/images/cache_left': 0" in result.stderr


@pytest.mark.parametrize("per_domain", [1, 3])
def test_per_domain_concurrency_holds_for_a_vehicles_burst(sqlite_url, tmp_path, per_domain):
    """All of a vehicle's images are requested at once; the host still never sees more
    than CONCURRENT_REQUESTS_PER_DOMAIN of them at a time."""
    warm_pool()
    host = CountingApp(ImageHost(), 0.3)
    server = serve(host)
    try:
        seed(
            sqlite_url,
            [
                (
                    f"{LISTING}burst{i}",
                    [f"{server.url}/img/320x240/burst{i}-{j}.jpg" for j in range(8)],
                )
                for i in range(2)
            ],
        )
        result = crawl(
            sqlite_url,
            tmp_path / "images",
            "-a",
            "batch_size=2",
            "-s",
            f"CONCURRENT_REQUESTS_PER_DOMAIN={per_domain}",
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "'nuke/images/stored': 16" in result.stderr
        assert host.most == per_domain, host.most
    finally:
        server.stop()


@pytest.mark.serial
def test_run_closes_right_after_its_last_vehicle(sqlite_url, tmp_path, image_host):
    """The spider yields items, not requests: without PromptClose, Scrapy noticed the
    end only on its 5-second heartbeat, so every run ended up to 5 s late."""
    _, base = image_host
    seed(sqlite_url, [(f"{LISTING}q{i}", [f"{base}/img/320x240/q{i}.jpg"]) for i in range(3)])
    result = crawl(
        sqlite_url,
        tmp_path / "images",
        "-s",
        "LOG_LEVEL=INFO",
        "-s",
        "LOG_FORMAT=%(created).3f %(name)s %(message)s",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "'nuke/images/stored': 3" in result.stderr
    times = {}
    for line in result.stderr.splitlines():
        for key in ("Batch 1 done", "Closing spider"):
            if key in line:
                times[key] = float(line.split(" ", 1)[0])
    assert times["Closing spider"] - times["Batch 1 done"] < 2.0, times


def test_a_bad_worker_setting_stops_the_run_before_any_claim(sqlite_url, tmp_path):
    """The pipeline decodes in the crawl's one worker pool (WorkerPoolExtension): a
    setting that disables it stops the run with "Cannot start", claims nothing and
    exits 1, instead of failing every image."""
    seed(sqlite_url, [(LISTING + "w", ["http://img.example/w1.jpg"])])
    result = crawl(sqlite_url, tmp_path / "images", "-s", "NUKE_WORKER_NICE=25", timeout=60)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Cannot start: no worker pool" in result.stderr
    assert "NUKE_WORKER_NICE=25" in result.stderr  # the extension's warning names it
    assert "Traceback" not in result.stderr
    assert [row["storage_path"] for row in images(sqlite_url)] == [None]
    db = Database(sqlite_url)
    try:
        assert db.fetchall("SELECT images_lease_owner FROM vehicles") == [
            {"images_lease_owner": None}
        ]
    finally:
        db.close()
