"""`scrapy crawl image_analysis` end to end: the real command in a child process, images
served by the demo ImageHost (external records) and stored files under a temporary
IMAGES_STORE, our OpenAI-compatible server through OPENAI_BASE_URL, Rekognition through
moto's server mode, and assertions on the database (SQLite and PostgreSQL)."""

from __future__ import annotations

import copy
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai_server
import pytest
from conftest import FAST, REPO, run_scrapy, scrapy_env
from openai_server import API_KEY, FakeOpenAI
from PIL import Image

from nuke_crawl.db import Database, analysis, loads_json, migrate, store
from nuke_crawl.demo.images import ImageHost
from nuke_crawl.demo.server import serve

pytestmark = pytest.mark.slow

SPID_VIN = "1G1YY2184K5100001"  # valid check digit
BAD_VIN = "1G1YY2185K5100001"  # check digit off by one


@pytest.fixture(scope="module")
def host() -> Iterator[str]:
    running = serve(ImageHost(width=640, height=480))
    try:
        yield running.url
    finally:
        running.stop()


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def openai_env(server: FakeOpenAI, key: str = API_KEY) -> dict[str, str]:
    return {"OPENAI_API_KEY": key, "OPENAI_BASE_URL": server.url + "/v1"}


def analyse(
    db_url: str, *args: str, env: dict[str, str] | None = None, ok: bool = True, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    proc = run_scrapy(
        [
            "crawl",
            "image_analysis",
            *args,
            *FAST,
            "-s",
            "NUKE_OPENAI_BACKOFF_BASE=0.05",
            "-s",
            "NUKE_ANALYSIS_RETRY_BACKOFF=0",
        ],
        db_url,
        timeout=timeout,
        **(env or {}),
    )
    if ok:
        assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    return proc


class Fixture:
    """Vehicles with images in a fresh database."""

    def __init__(self, db_url: str, host: str, store_dir: Path) -> None:
        self.db_url = db_url
        self.host = host
        self.store_dir = store_dir
        self.db = Database(db_url)
        migrate(self.db)
        self.org, _ = store.add_organization(self.db, "https://dealer.example", name="Fixture")
        self.n = 0

    def vehicle(self, title: str, images: list[str], vin: str | None = None) -> str:
        self.n += 1
        rec = store.VehicleRecord(
            self.org.id,
            f"https://dealer.example/v/{self.n}",
            {"title": title, "year": 1969, "make": "Chevrolet", "model": "Camaro", "vin": vin},
            image_urls=[u if "://" in u else f"{self.host}{u}" for u in images],
        )
        store.upsert_vehicles(self.db, [rec])
        return str(
            self.db.scalar("SELECT id FROM vehicles WHERE discovery_url = ?", [rec.discovery_url])
        )

    def store_file(self, vehicle_id: str, data: bytes, name: str = "stored.jpg") -> str:
        """Record a stored (downloaded) image of the vehicle, its file under IMAGES_STORE."""
        path = f"{vehicle_id}/{name}"
        (self.store_dir / vehicle_id).mkdir(parents=True, exist_ok=True)
        (self.store_dir / path).write_bytes(data)
        image_id = str(
            self.db.scalar(
                "SELECT id FROM vehicle_images WHERE vehicle_id = ? ORDER BY position LIMIT 1",
                [vehicle_id],
            )
        )
        self.db.execute(
            "UPDATE vehicle_images SET is_external = false, storage_path = ?, "
            "image_url = ?, mime_type = 'image/jpeg' WHERE id = ?",
            [path, (self.store_dir / path).as_uri(), image_id],
        )
        return image_id

    def images(self, vehicle_id: str) -> list[dict[str, Any]]:
        rows = self.db.fetchall(
            "SELECT * FROM vehicle_images WHERE vehicle_id = ? ORDER BY position", [vehicle_id]
        )
        for row in rows:
            row["ai_scan_metadata"] = loads_json(row["ai_scan_metadata"])
        return rows

    def count(self, table: str, vehicle_id: str | None = None) -> int:
        if vehicle_id is None:
            return int(self.db.scalar(f"SELECT COUNT(*) FROM {table}") or 0)
        return int(
            self.db.scalar(f"SELECT COUNT(*) FROM {table} WHERE vehicle_id = ?", [vehicle_id]) or 0
        )

    def vin(self, vehicle_id: str) -> str | None:
        return self.db.scalar("SELECT vin FROM vehicles WHERE id = ?", [vehicle_id])

    def close(self) -> None:
        self.db.close()


@pytest.fixture
def fx(db_url: str, host: str, tmp_path: Path) -> Iterator[Fixture]:
    fixture = Fixture(db_url, host, tmp_path / "images")
    try:
        yield fixture
    finally:
        fixture.close()


def jpeg(color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    from nuke_crawl.demo.images import image_bytes

    try:
        return image_bytes("stored-photo", 640, 480)  # type: ignore[call-arg]
    except TypeError:
        img = Image.new("RGB", (640, 480), color)
        out = io.BytesIO()
        img.save(out, "JPEG")
        return out.getvalue()


def test_analysis_end_to_end(
    fx: Fixture, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = fx.vehicle("1969 Camaro SS", ["/img/a1.jpg", "/img/a2.jpg", "/img/a3.jpg"])
    stored_id = fx.store_file(good, jpeg())
    spid = fx.vehicle("scenario=spid glovebox", ["/img/s1.jpg"])
    malformed = fx.vehicle("scenario=malformed", ["/img/m1.jpg"])
    refusal = fx.vehicle("scenario=refusal", ["/img/r1.jpg"])
    broken = fx.vehicle("Broken photo", ["/edge/html.jpg"])
    missing = fx.vehicle("Gone", ["/edge/404.jpg"])
    # transient trouble for whichever requests come first: all must end analysed
    fake_openai.retry_after = 0.2
    fake_openai.script("rate_limit", "server_error")

    proc = analyse(
        fx.db_url,
        "-a",
        "providers=local,openai",
        "-a",
        "concurrency=4",
        env=openai_env(fake_openai),
    )
    log = proc.stderr

    # the good vehicle: every image analysed, findings in the four tables
    rows = fx.images(good)
    assert [r["ai_processing_status"] for r in rows] == ["completed"] * 3
    assert all(r["ai_last_scanned"] is not None for r in rows)
    assert {r["id"] for r in rows} >= {stored_id}
    meta = rows[0]["ai_scan_metadata"]
    assert set(meta) == {"local", "openai"} and meta["openai"]["ok"] is True
    assert meta["local"]["data"]["dhash_hex"]
    assert fx.count("component_conditions", good) == 3 * 2
    assert fx.count("paint_quality_assessments", good) == 3 * 2
    tags = fx.db.fetchall(
        "SELECT tag_name, tag_type, confidence FROM image_tags WHERE vehicle_id = ?", [good]
    )
    assert ("Rally wheel", "part") in {(t["tag_name"], t["tag_type"]) for t in tags}
    comp = fx.db.fetchone(
        "SELECT * FROM component_conditions WHERE vehicle_id = ? AND "
        "component_name = 'left rocker panel' LIMIT 1",
        [good],
    )
    assert comp is not None and comp["condition_rating"] == 3 and bool(comp["needs_attention"])
    assert loads_json(comp["damage_types"]) == ["rust"]
    assert comp["detected_by_model"] == "gpt-4o-mini"
    assert not any(bool(r["is_document"]) for r in rows)
    # the 429 (Retry-After) and the 500 were retried, not failures
    assert "rate_limit" in fake_openai.scenarios_served
    assert "server_error" in fake_openai.scenarios_served

    # the SPID sheet: a document, one spid row, the valid VIN fills the empty vin
    (spid_row,) = fx.images(spid)
    assert bool(spid_row["is_document"]) and spid_row["document_category"] == "spid_sheet"
    sheet = fx.db.fetchone("SELECT * FROM vehicle_spid_data WHERE vehicle_id = ?", [spid])
    assert sheet is not None and sheet["vin"] == SPID_VIN and sheet["model_code"] == "1YY07"
    assert "L98" in loads_json(sheet["rpo_codes"]) and "TOOLONG" not in loads_json(
        sheet["rpo_codes"]
    )
    assert fx.vin(spid) == SPID_VIN

    # failures: recorded with their reason, nothing half-written
    for vehicle, reason in (
        (malformed, "malformed_output"),
        (refusal, "refused"),
        (broken, "invalid_image"),
        (missing, "http_404"),
    ):
        (row,) = fx.images(vehicle)
        assert row["ai_last_scanned"] is None, vehicle
        assert row["ai_processing_status"] == "failed"
        assert row["ai_error"] == reason, (reason, row["ai_error_detail"])
        assert row["ai_attempts"] == 1 and row["ai_error_detail"]
        assert row["ai_scan_metadata"] is None
        assert fx.count("image_tags", vehicle) == 0
        assert fx.count("component_conditions", vehicle) == 0
    assert "failed malformed_output: 1" in log and "failed refused: 1" in log
    assert "e.g. " in log and "estimated cost $" in log and "images/min" in log
    assert "Batch 1:" in log and "ETA" in log

    # status shows the phase
    status = run_scrapy(["status", "--json"], fx.db_url)
    figures = json.loads(status.stdout)["image_analysis"]
    assert figures["images_analysed"] == 4
    assert figures["images_failed"] == 4
    assert figures["failures_by_reason"]["refused"] == 1

    # the next run picks the failures up again; the model now answers well for one,
    # and a SPID sheet whose VIN has a bad check digit does not fill the VIN
    fx.db.execute("UPDATE vehicles SET title = 'fixed' WHERE id = ?", [malformed])
    bad_sheet = copy.deepcopy(openai_server.SPID_ANSWER)
    bad_sheet["spid"]["vin"] = BAD_VIN
    bad_sheet["vin_from_plate"] = BAD_VIN
    monkeypatch.setattr(openai_server, "SPID_ANSWER", bad_sheet)
    bad_vin = fx.vehicle("scenario=spid second car", ["/img/s2.jpg"])
    analyse(fx.db_url, "-a", "providers=local,openai", env=openai_env(fake_openai))
    (row,) = fx.images(malformed)
    assert row["ai_processing_status"] == "completed" and row["ai_attempts"] == 2
    assert row["ai_error"] is None and row["ai_last_scanned"] is not None
    (row,) = fx.images(refusal)
    assert row["ai_error"] == "refused" and row["ai_attempts"] == 2
    assert fx.vin(bad_vin) is None
    sheet = fx.db.fetchone("SELECT * FROM vehicle_spid_data WHERE vehicle_id = ?", [bad_vin])
    assert sheet is not None and sheet["vin"] == BAD_VIN
    assert fx.count("vehicle_spid_data") == 2


SNAPSHOT_TABLES = (
    "vehicle_images",
    "vehicles",
    "image_tags",
    "component_conditions",
    "paint_quality_assessments",
    "vehicle_spid_data",
    "businesses",
    "organization_vehicles",
)


def snapshot(db: Database) -> dict[str, list[dict[str, Any]]]:
    """Every row of the tables an analysis could touch (to prove it touched none)."""
    return {t: db.fetchall(f"SELECT * FROM {t} ORDER BY id") for t in SNAPSHOT_TABLES}


def test_dry_run_calls_no_provider_and_writes_nothing(fx: Fixture, fake_openai: FakeOpenAI) -> None:
    first = fx.vehicle("Dry one", ["/img/d1.jpg", "/img/d2.jpg", "/img/d3.jpg"])
    fx.store_file(first, jpeg())
    other_org, _ = store.add_organization(fx.db, "https://other.example", name="Other Motors")
    store.upsert_vehicles(
        fx.db,
        [
            store.VehicleRecord(
                other_org.id,
                "https://other.example/v/1",
                {"title": "Dry two", "year": 1970},
                image_urls=[f"{fx.host}/img/o1.jpg"],
            )
        ],
    )
    before = snapshot(fx.db)
    proc = analyse(
        fx.db_url, "-a", "dry_run=1", "-a", "providers=local,openai", env=openai_env(fake_openai)
    )
    log = proc.stderr
    # no provider call at all: no preflight, no chat request
    assert fake_openai.chat_requests == 0 and fake_openai.model_requests == 0
    assert snapshot(fx.db) == before  # nothing claimed, nothing written
    assert "Dry run (nothing claimed, analysed or written): 4 images pending" in log
    assert "would analyse 4 (1 from stored copies, 3 downloaded from their external URLs" in log
    assert "of 2 vehicles in 2 organizations" in log
    assert "providers: local, openai (one openai call per image" in log
    assert f"organization Fixture ({fx.org.id}): 3 images" in log
    assert f"organization Other Motors ({other_org.id}): 1 images" in log
    assert f"vehicle Dry one ({first}): 3 images" in log
    assert "'nuke/analysis/dry_run/stored': 1" in log
    assert "'nuke/analysis/succeeded'" not in log
    # limit applies to the report too
    small = analyse(fx.db_url, "-a", "dry_run=1", "-a", "limit=2", env=openai_env(fake_openai))
    assert "would analyse 2 (" in small.stderr and "4 images pending" in small.stderr
    assert fake_openai.chat_requests == 0 and fake_openai.model_requests == 0
    assert snapshot(fx.db) == before


def test_rekognition_through_moto(fx: Fixture, tmp_path: Path) -> None:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        vehicle = fx.vehicle("Labels", ["/img/k1.jpg"])
        env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ENDPOINT_URL_REKOGNITION": f"http://{host}:{port}",
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
            "AWS_CONFIG_FILE": str(tmp_path / "none"),
        }
        analyse(fx.db_url, env=env)  # default providers: local + the configured rekognition
    finally:
        server.stop()
    (row,) = fx.images(vehicle)
    assert row["ai_processing_status"] == "completed"
    assert set(row["ai_scan_metadata"]) == {"local", "rekognition"}
    tags = fx.db.fetchall(
        "SELECT ai_detection_data FROM image_tags WHERE vehicle_id = ?", [vehicle]
    )
    assert any(
        (loads_json(t["ai_detection_data"]) or {}).get("provider") == "rekognition" for t in tags
    )


def test_check_reports_auth_failure(sqlite_url: str, fake_openai: FakeOpenAI) -> None:
    env = openai_env(fake_openai, key="sk-wrong-key-0123456789")
    proc = analyse(sqlite_url, "-a", "check=1", env=env, ok=False)
    assert proc.returncode == 1
    assert "auth_failed: HTTP 401" in proc.stderr
    assert "sk-wrong-key-0123456789" not in proc.stderr
    command = run_scrapy(["analyze-check", "--providers", "local,openai"], sqlite_url, **env)
    assert command.returncode == 1
    lines = {line.split()[0]: line.split()[1:] for line in command.stdout.splitlines()}
    assert lines["local"][0] == "OK"
    assert lines["openai"][:2] == ["FAILED", "auth_failed:"]
    good = run_scrapy(
        ["analyze-check", "--providers", "openai"], sqlite_url, **openai_env(fake_openai)
    )
    assert good.returncode == 0 and "OK" in good.stdout
    # a run refuses to start with a broken key: nothing is claimed
    run = analyse(sqlite_url, env=env, ok=False)
    assert run.returncode == 1 and "provider check failed" in run.stderr


@pytest.mark.parametrize(
    "args, name",
    [
        (["-a", "providers=local,gpt"], "providers"),
        (["-a", "limit=0"], "limit"),
        (["-a", "concurrency=many"], "concurrency"),
        (["-a", "vehicle_id=42"], "vehicle_id"),
        (["-a", "colour=red"], "colour"),
    ],
)
def test_bad_arguments_refused(sqlite_url: str, args: list[str], name: str) -> None:
    proc = run_scrapy(["crawl", "image_analysis", *args], sqlite_url)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert name in proc.stderr and "Traceback" not in proc.stderr
    assert not os.path.exists(sqlite_url.removeprefix("sqlite:///"))


def test_claims_do_not_overlap(db: Database) -> None:
    org, _ = store.add_organization(db, "https://lease.example")
    store.upsert_vehicles(
        db,
        [
            store.VehicleRecord(
                org.id,
                "https://lease.example/v/1",
                {"title": "x"},
                image_urls=[f"https://img.example/{i}.jpg" for i in range(5)],
            )
        ],
    )
    sel = analysis.Selection()
    first = analysis.claim_batch(db, sel, "a", 3, 600)
    second = analysis.claim_batch(db, sel, "b", 3, 600)
    assert len(first) == 3 and len(second) == 2
    assert not {w.image_id for w in first} & {w.image_id for w in second}
    assert analysis.claim_batch(db, sel, "c", 3, 600) == []
    assert analysis.release_leases(db, "a") == 3
    assert len(analysis.claim_batch(db, sel, "c", 5, 600)) == 3
    # a failure waits for its backoff, unless retry_failed
    work = second[0]
    analysis.record_failure(db, work, "timeout", "slow", backoff=3600)
    analysis.release_leases(db, "b")
    analysis.release_leases(db, "c")
    ids = {w.image_id for w in analysis.claim_batch(db, sel, "d", 10, 600)}
    assert work.image_id not in ids and len(ids) == 4
    analysis.release_leases(db, "d")
    retry = analysis.Selection(retry_failed=True)
    assert work.image_id in {w.image_id for w in analysis.claim_batch(db, retry, "e", 10, 600)}


def _image_hits(host: ImageHost) -> int:
    return sum(n for path, n in host.hits.items() if path != "/robots.txt")


def test_stored_copies_read_from_s3(db_url: str, tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    """image_backfill stores into s3://bucket/prefix (moto's server); image_analysis with
    the same IMAGES_STORE and AWS_ENDPOINT_URL reads those objects, not the vendor URLs."""
    import boto3
    from moto.server import ThreadedMotoServer

    from tests.test_backfill_crawl import crawl, seed

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    vendor = ImageHost(width=640, height=480)
    running = serve(vendor)
    try:
        host, port = moto.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        creds = {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
            "AWS_CONFIG_FILE": str(tmp_path / "none"),
        }
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        s3.create_bucket(Bucket="photos")
        seed(
            db_url,
            [
                ("http://dealer.example/s3a", [f"{running.url}/img/s{i}.jpg" for i in range(3)]),
                ("http://dealer.example/s3b", [f"{running.url}/img/t0.jpg"]),
            ],
        )
        backfill = crawl(
            db_url,
            "s3://photos/vehicles",
            "-s",
            f"AWS_ENDPOINT_URL={endpoint}",
            "-s",
            "NUKE_IMAGES_PUBLIC_URL=",
            **creds,
        )
        assert backfill.returncode == 0, backfill.stderr[-3000:]
        db = Database(db_url)
        try:
            rows = db.fetchall("SELECT storage_path, is_external FROM vehicle_images")
        finally:
            db.close()
        assert len(rows) == 4 and all(r["storage_path"] and not r["is_external"] for r in rows)
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket="photos")["Contents"]}
        assert {f"vehicles/{r['storage_path']}" for r in rows} <= keys
        hits = _image_hits(vendor)
        assert hits >= 4

        proc = analyse(
            db_url,
            "-a",
            "providers=local,openai",
            "-s",
            "IMAGES_STORE=s3://photos/vehicles",
            "-s",
            f"AWS_ENDPOINT_URL={endpoint}",
            env={**creds, **openai_env(fake_openai)},
        )
    finally:
        running.stop()
        moto.stop()
    assert _image_hits(vendor) == hits, "analysis downloaded vendor URLs instead of S3 copies"
    assert "stored copy unreadable" not in proc.stderr
    assert fake_openai.chat_requests == 4
    db = Database(db_url)
    try:
        done = db.fetchall("SELECT ai_processing_status, ai_scan_metadata FROM vehicle_images")
    finally:
        db.close()
    assert [r["ai_processing_status"] for r in done] == ["completed"] * 4
    assert all(
        (loads_json(r["ai_scan_metadata"]) or {})["local"]["data"]["width"] == 640 for r in done
    )


@pytest.mark.postgres
def test_two_runs_at_once_analyse_each_image_once(pg_url: str, tmp_path: Path) -> None:
    """Two image_analysis processes share one PostgreSQL: the leases split the work."""
    from nuke_crawl.demo.images import image_bytes

    vehicles, per_vehicle = 12, 5
    fixture = Fixture(pg_url, "http://unused.example", tmp_path / "images")
    try:
        for v in range(vehicles):
            fixture.vehicle(
                f"Race {v}", [f"https://img.example/{v}/{i}.jpg" for i in range(per_vehicle)]
            )
        rows = fixture.db.fetchall("SELECT id, vehicle_id FROM vehicle_images")
        for row in rows:  # every image a stored file with bytes of its own
            path = f"{row['vehicle_id']}/{row['id']}.jpg"
            (fixture.store_dir / row["vehicle_id"]).mkdir(parents=True, exist_ok=True)
            (fixture.store_dir / path).write_bytes(
                image_bytes(str(row["id"]), width=320, height=240, unique=True)
            )
            fixture.db.execute(
                "UPDATE vehicle_images SET is_external = false, storage_path = ?,"
                " mime_type = 'image/jpeg' WHERE id = ?",
                [path, row["id"]],
            )
        total = len(rows)
        assert total == vehicles * per_vehicle
        with FakeOpenAI(latency=0.15) as server:
            cmd = [
                sys.executable,
                "-m",
                "scrapy",
                "crawl",
                "image_analysis",
                "-a",
                "providers=local,openai",
                "-a",
                "concurrency=4",
                *FAST,
                "-s",
                f"IMAGES_STORE={fixture.store_dir}",
                "-s",
                "NUKE_ANALYSIS_BATCH_SIZE=4",
            ]
            env = scrapy_env(pg_url, **openai_env(server))
            procs = [
                subprocess.Popen(
                    cmd,
                    cwd=REPO,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(2)
            ]
            logs = [p.communicate(timeout=180)[1] for p in procs]
            for proc, log in zip(procs, logs, strict=True):
                assert proc.returncode == 0, log[-4000:]
                assert "Traceback" not in log, log[-4000:]
            seen = dict(server.images_seen)
            chat_requests = server.chat_requests
        done = [
            int(re.search(r"Image analysis finished \(\w+\): (\d+) images", log).group(1))
            if "Image analysis finished" in log
            else 0
            for log in logs
        ]
        assert sum(done) == total and min(done) > 0, done  # both really worked
        # every image sent to the model exactly once
        assert len(seen) == total and set(seen.values()) == {1}, seen
        assert chat_requests == total
        db = fixture.db
        assert db.scalar("SELECT COUNT(*) FROM vehicle_images WHERE ai_last_scanned IS NULL") == 0
        assert (
            db.scalar(
                "SELECT COUNT(*) FROM vehicle_images WHERE ai_lease_owner IS NOT NULL "
                "OR ai_attempts <> 1"
            )
            == 0
        )
        for table, key, per_image in (
            ("component_conditions", "component_name", 2),
            ("paint_quality_assessments", "panel_name", 2),
            ("image_tags", "tag_name", None),
        ):
            dupes = db.fetchall(
                f"SELECT image_id, {key}, COUNT(*) AS n FROM {table} "
                f"GROUP BY image_id, {key} HAVING COUNT(*) > 1"
            )
            assert dupes == [], (table, dupes)
            if per_image:
                assert db.scalar(f"SELECT COUNT(*) FROM {table}") == total * per_image
        assert db.scalar("SELECT COUNT(DISTINCT image_id) FROM image_tags") == total
    finally:
        fixture.close()
