"""``scrapy serve`` through a real HTTP client: the API on both backends, auth, bad input,
job supervision (overlap, cancel, a service restart), schedules."""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from pathlib import Path

import pytest

from nuke_crawl.commands.status import collect
from nuke_crawl.db import Database, migrate, store
from nuke_crawl.demo import ImageHost, serve
from nuke_crawl.service.jobs import Job, process_start_time, progress
from tests.conftest import run_scrapy
from tests.service_helpers import TOKEN, Service, kill_group, seed

pytestmark = pytest.mark.slow


@pytest.fixture
def image_host():
    host = ImageHost(slow_seconds=30.0)
    server = serve(host)
    try:
        yield server.url
    finally:
        server.stop()


def _mark_outcomes(db_url: str, vehicle_ids: list[str]) -> None:
    """The first vehicle's first image stored, its second failed (http_404)."""
    db = Database(db_url)
    try:
        rows = db.fetchall(
            "SELECT id FROM vehicle_images WHERE vehicle_id = ? ORDER BY position", [vehicle_ids[0]]
        )
        db.execute(
            "UPDATE vehicle_images SET is_external = false, storage_path = ?, "
            "image_url = ?, variants = ?, updated_at = ? WHERE id = ?",
            [
                "a/b.jpg",
                "https://cdn.example/a/b.jpg",
                '{"thumb": {"path": "a/b_thumb.jpg", "url": "https://cdn.example/t.jpg"}}',
                db.now(),
                rows[0]["id"],
            ],
        )
        db.execute(
            "UPDATE vehicle_images SET download_error = 'http_404', "
            "download_failed_at = ? WHERE id = ?",
            [db.now(), rows[1]["id"]],
        )
    finally:
        db.close()


def test_api_reads_auth_and_bad_input(db_url, tmp_path):
    org_id, ids = seed(
        db_url,
        [
            (f"http://dealer.example/v/{i}", [f"http://img.example/{i}/{p}.jpg" for p in range(3)])
            for i in range(4)
        ],
    )
    _mark_outcomes(db_url, ids)
    with Service(db_url, tmp_path / "svc") as svc:
        status, body = svc.get("/api/image-status")
        assert status == 200 and body["success"] is True
        db = Database(db_url)
        try:
            expected = collect(db)["image_backfill"]
        finally:
            db.close()
        # the original's shape, with scrapy status --json's meanings
        assert set(body["stats"]) == {
            "totalVehicles",
            "needingProcessing",
            "fullyProcessed",
            "partiallyProcessed",
        }
        for key in body["stats"]:
            assert body["stats"][key] == expected[key], key
        assert body["stats"]["totalVehicles"] == 4
        assert body["stats"]["partiallyProcessed"] == 1
        assert body["images"]["stored"] == 1 and body["images"]["failed"] == 1
        assert body["images"]["failedByReason"] == {"http_404": 1}

        status, orgs = svc.get("/api/organizations")
        assert status == 200 and orgs["total"] == 1
        org = orgs["organizations"][0]
        assert org["id"] == org_id and org["vehicles"] == 4
        assert org["images"] == {"stored": 1, "external": 11, "failed": 1}

        status, fails = svc.get("/api/failures?reason=http_404&limit=5")
        assert status == 200 and len(fails["failures"]) == 1
        assert fails["failures"][0]["vehicleId"] == ids[0]
        assert fails["failures"][0]["vendorUrl"] == "http://img.example/0/1.jpg"
        assert fails["byReason"] == {"http_404": 1}

        status, veh = svc.get(f"/api/vehicles/{ids[0]}")
        assert status == 200
        images = veh["vehicle"]["images"]
        assert images[0]["stored"] and images[0]["storedUrl"] == "https://cdn.example/a/b.jpg"
        assert images[0]["vendorUrl"] == "http://img.example/0/0.jpg"
        assert images[0]["variants"]["thumb"]["path"] == "a/b_thumb.jpg"
        assert images[1]["displayUrl"] == "http://img.example/0/1.jpg"
        assert svc.get("/api/thumbnails")[1]["thumbnails"][0]["url"] == "https://cdn.example/t.jpg"

        # 422 naming the field; nothing starts
        for body_, field in [
            ({"batchSize": 0}, "batchSize"),
            ({"batchSize": 10_000}, "batchSize"),
            ({"batchSize": "many"}, "batchSize"),
            ({"organizationId": "nope"}, "organizationId"),
            ({"vehicleIds": ["x"]}, "vehicleIds[0]"),
            ({"vehicleIds": [ids[0], ids[1], "x"]}, "vehicleIds[2]"),
            ({"vehicleIds": []}, "vehicleIds"),
            ({"colour": "red"}, "colour"),
        ]:
            status, answer = svc.post("/api/process-images", body_)
            assert status == 422 and answer["field"] == field, (body_, answer)
            assert field in answer["error"]
        status, answer = svc.post("/api/process-images", raw=b"{not json")
        assert status == 422 and answer["field"] == "body"
        status, answer = svc.post("/api/jobs", {"spider": "nope"})
        assert status == 422 and answer["field"] == "spider"
        status, answer = svc.post("/api/jobs", {"spider": "org", "args": {"limit": "x"}})
        assert status == 422 and answer["field"] == "args.limit"
        bad = {"vehicle_id": ids[0], "vehicle_ids": f"{ids[1]},x"}  # the list is the bad one
        status, answer = svc.post("/api/jobs", {"spider": "image_backfill", "args": bad})
        assert status == 422 and answer["field"] == "args.vehicle_ids", answer
        status, answer = svc.post("/api/analyze-images", {"providers": ["nope"]})
        assert status == 422 and answer["field"] == "providers"
        assert svc.get("/api/vehicles/123")[0] == 422
        assert svc.get("/api/jobs/not-a-uuid")[0] == 422
        assert svc.get(f"/api/vehicles/{uuid.uuid4()}")[0] == 404
        assert svc.get("/api/failures?limit=0")[0] == 422
        assert svc.get("/api/jobs")[1]["jobs"] == []

        # 401 without the token or with a wrong one
        status, answer = svc.post("/api/process-images", {"batchSize": 5}, token=None)
        assert status == 401
        assert svc.post("/api/process-images", {"batchSize": 5}, token="wrong")[0] == 401
        assert svc.post(f"/api/jobs/{uuid.uuid4()}/cancel", token=None)[0] == 401
        assert svc.get("/api/jobs")[1]["jobs"] == []

        status, page = svc.request("GET", "/")
        assert status == 200 and "Process 5 vehicles" in page and "Dealer Example" in page
        assert '<p class="figure" data-stat="totalVehicles">4</p>' in page
    assert TOKEN not in "".join(svc.output)


def test_process_images_runs_exactly_the_given_vehicle_ids(sqlite_url, tmp_path):
    host = serve(ImageHost(width=320, height=240))
    try:
        _, ids = seed(
            sqlite_url,
            [(f"http://dealer.example/v/{i}", [f"{host.url}/img/ids{i}.jpg"]) for i in range(5)],
        )
        chosen = [ids[3], ids[0], ids[4]]
        with Service(sqlite_url, tmp_path / "svc") as svc:
            status, answer = svc.post("/api/process-images", {"vehicleIds": chosen})
            assert status == 200, answer
            job = answer["job"]
            assert job["spider"] == "image_backfill"
            assert job["args"]["vehicle_ids"] == ",".join(chosen)
            assert job["args"]["limit"] == "10" and "vehicle_id" not in job["args"]
            done = svc.wait_job(job["id"], ("finished", "failed", "lost"), timeout=60)
            assert done["state"] == "finished", done
            assert done["summary"]["counts"]["imagesStored"] == 3
        db = Database(sqlite_url)
        try:
            stored = db.fetchall(
                "SELECT vehicle_id FROM vehicle_images WHERE storage_path IS NOT NULL"
            )
        finally:
            db.close()
        assert sorted(r["vehicle_id"] for r in stored) == sorted(chosen)
    finally:
        host.stop()


def test_no_token_refuses_writes_and_non_loopback(sqlite_url, tmp_path):
    result = run_scrapy(
        ["serve", "--host", "0.0.0.0", "--port", "0"], sqlite_url, timeout=60, NUKE_ADMIN_TOKEN=""
    )
    assert result.returncode != 0
    assert "loopback only" in result.stderr + result.stdout
    with Service(sqlite_url, tmp_path / "svc", token=None) as svc:
        status, answer = svc.post("/api/process-images", {"batchSize": 5}, token="anything")
        assert status == 403 and "NUKE_ADMIN_TOKEN" in answer["error"]
        assert svc.post("/api/crawl-organizations", {}, token=None)[0] == 403
        assert svc.get("/api/image-status")[0] == 200


def test_jobs_overlap_cancel_and_restart(sqlite_url, tmp_path, image_host):
    # (PostgreSQL's job records: test_jobs_through_scrapyd)
    # vehicles whose image answers slowly: their runs stay running while we look
    seed(
        sqlite_url,
        [(f"http://dealer.example/v/{i}", [f"{image_host}/edge/slow.jpg?{i}"]) for i in range(3)],
    )
    home = tmp_path / "svc"
    svc = Service(sqlite_url, home).start()
    try:
        status, first = svc.post("/api/process-images", {"batchSize": 1})
        assert status == 200 and first["success"] is True
        job = first["job"]
        assert job["spider"] == "image_backfill" and job["args"]["limit"] == "1"
        assert job["state"] == "running"
        assert TOKEN not in str(job["args"])
        status, clash = svc.post("/api/process-images", {"batchSize": 2})
        assert status == 409 and clash["job"]["id"] == job["id"]
        status, second = svc.post("/api/process-images", {"batchSize": 1, "allowConcurrent": True})
        assert status == 200 and second["job"]["id"] != job["id"]
        status, cancelled = svc.post(f"/api/jobs/{second['job']['id']}/cancel")
        assert status == 200
        done = svc.wait_job(second["job"]["id"], ("cancelled",), timeout=40)
        assert done["finishedAt"]
        pid = int(_external_id(sqlite_url, job["id"]))
        log = (home / "logs" / f"{job['id']}.log").read_text()
        assert TOKEN not in log
        assert TOKEN.encode() not in Path(f"/proc/{pid}/environ").read_bytes()
    finally:
        svc.stop()
    # The run outlives the service; a new service adopts it...
    svc = Service(sqlite_url, home).start()
    try:
        status, seen = svc.get(f"/api/jobs/{job['id']}")
        assert seen["job"]["state"] == "running"
        assert any("Crawled" in line or "Spider opened" in line for line in seen["job"]["logTail"])
    finally:
        svc.stop()
    # ...and one whose process died while no service watched is marked lost.
    kill_group(pid)
    for _ in range(50):
        if process_start_time(pid) is None:  # gone, or a zombie
            break
        time.sleep(0.1)
    with Service(sqlite_url, home) as svc:
        status, seen = svc.get(f"/api/jobs/{job['id']}")
        assert seen["job"]["state"] == "lost" and "not watching" in seen["job"]["error"]


def _external_id(db_url: str, job_id: str) -> str:
    db = Database(db_url)
    try:
        return str(db.scalar("SELECT external_id FROM nuke_service_jobs WHERE id = ?", [job_id]))
    finally:
        db.close()


def test_schedule_fires_and_is_skipped_while_running(sqlite_url, tmp_path, image_host):
    seed(
        sqlite_url,
        [(f"http://dealer.example/v/{i}", [f"{image_host}/edge/slow.jpg?{i}"]) for i in range(2)],
    )
    schedules = tmp_path / "schedules.json"
    schedules.write_text(
        '[{"name": "trickle", "cron": "* * * * * */2", '
        '"spider": "image_backfill", "args": {"limit": 1}}]'
    )
    with Service(sqlite_url, tmp_path / "svc", extra=["--schedules", str(schedules)]) as svc:
        status, listed = svc.get("/api/schedules")
        assert (
            listed["schedules"][0]["nextRun"] and listed["schedules"][0]["cron"] == "* * * * * */2"
        )
        deadline = time.monotonic() + 30
        jobs: list[dict] = []
        while time.monotonic() < deadline:
            jobs = svc.get("/api/jobs")[1]["jobs"]
            if any(j["state"] == "skipped" for j in jobs):
                break
            time.sleep(0.3)
        started = [j for j in jobs if j["state"] in ("running", "pending")]
        skipped = [j for j in jobs if j["state"] == "skipped"]
        assert len(started) == 1 and started[0]["schedule"] == "trickle", jobs
        assert skipped and started[0]["id"] in skipped[0]["error"]
        sched = svc.get("/api/schedules")[1]["schedules"][0]
        assert sched["runs"] == 1 and sched["skips"] >= 1 and sched["lastOutcome"] == "skipped"
        svc.post(f"/api/jobs/{started[0]['id']}/cancel")
        svc.wait_job(started[0]["id"], ("cancelled",), timeout=40)


def test_bad_schedules_are_refused_naming_the_field(sqlite_url, tmp_path):
    from nuke_crawl.service.schedules import ScheduleError, parse_schedules

    for text, where in [
        ('[{"cron": "61 * * * *", "spider": "image_backfill"}]', "[0].cron"),
        ('[{"cron": "* * * * *", "spider": "nope"}]', "[0].spider"),
        ('[{"cron": "* * * * *", "spider": "org", "args": {"limit": 0}}]', "[0].args.limit"),
        ('[{"cron": "* * * * *", "spider": "org", "every": 1}]', "[0].every"),
        (
            '[{"name": "a", "cron": "* * * * *", "spider": "org"}, '
            '{"name": "a", "cron": "0 * * * *", "spider": "org"}]',
            "[1].name",
        ),
        ("{not json", "not valid JSON"),
    ]:
        with pytest.raises(ScheduleError, match=re.escape(where)):
            parse_schedules(text)
    ok = parse_schedules(
        '[{"cron": "0 2 * * *", "spider": "image_backfill", "args": {"limit": 1000}}]'
    )
    assert ok[0].args == {"limit": "1000"} and ok[0].name == "image_backfill 0 2 * * *"
    bad = tmp_path / "s.toml"
    bad.write_text('[[schedules]]\ncron = "61 * * * *"\nspider = "image_backfill"\n')
    result = run_scrapy(["serve", "--port", "0", "--schedules", str(bad)], sqlite_url, timeout=60)
    assert result.returncode != 0 and "[0].cron" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.postgres
def test_jobs_through_scrapyd(pg_url, tmp_path):
    from tests.conftest import scrapy_env
    from tests.scrapyd_server import Scrapyd

    sqlite_url = pg_url  # the job records on PostgreSQL (the overlap test has SQLite's)
    host = serve(ImageHost(width=320, height=240))
    try:
        seed(
            sqlite_url,
            [(f"http://dealer.example/v/{i}", [f"{host.url}/img/s{i}.jpg"]) for i in range(3)],
        )
        with (
            Scrapyd(tmp_path / "scrapyd", scrapy_env("")) as scrapyd,
            Service(
                sqlite_url, tmp_path / "svc", extra=["-s", f"NUKE_SCRAPYD_URL={scrapyd.url}"]
            ) as svc,
        ):
            assert svc.get("/api/health")[1]["backend"] == "scrapyd"
            status, answer = svc.post("/api/process-images", {"batchSize": 2})
            assert status == 200, answer
            job = answer["job"]
            assert job["backend"] == "scrapyd"
            done = svc.wait_job(job["id"], ("finished", "failed", "lost"), timeout=60)
            assert done["state"] == "finished", (done, scrapyd.job_logs()[-3000:])
            assert done["summary"]["counts"]["imagesStored"] == 2
            assert scrapyd.listjobs()["finished"][0]["spider"] == "image_backfill"
            assert TOKEN not in scrapyd.everything_written()
    finally:
        host.stop()


REDIS = os.environ.get("NUKE_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.mark.redis
def test_crawl_organizations_queues_in_redis_when_configured(sqlite_url, tmp_path):
    import redis

    db = Database(sqlite_url)
    migrate(db)
    try:
        ids = {
            store.add_organization(db, f"http://dealer{i}.example", name=f"Dealer {i}")[0].id
            for i in range(3)
        }
    finally:
        db.close()
    ns = f"nuketest:svc:{uuid.uuid4().hex[:10]}"
    key = f"{ns}:org:queue"
    client = redis.Redis.from_url(REDIS)

    def queued() -> list[str]:
        return [m.decode() for m in client.zrange(key, 0, -1)]

    try:
        env = {"NUKE_REDIS_URL": REDIS}
        extra = ["-s", f"NUKE_REDIS_NAMESPACE={ns}"]
        with Service(sqlite_url, tmp_path / "svc", env=env, extra=extra) as svc:
            assert "organizations queued in redis://127.0.0.1:" in "".join(svc.output)
            status, answer = svc.post("/api/crawl-organizations", {"limit": 2})
            assert status == 200 and answer["success"] is True, answer
            first = answer["queued"]
            assert first["queue"] == key and first["total"] == 3 and first["nextOffset"] == 2
            assert len(first["organizationIds"]) == 2 and set(first["organizationIds"]) <= ids
            assert (first["enqueued"], first["alreadyQueued"], first["waiting"]) == (2, 0, 2)
            assert queued() == first["organizationIds"]  # in the selection's order
            # the whole selection: the two waiting keep their place, the third is added
            status, answer = svc.post("/api/crawl-organizations", {"limit": 10})
            again = answer["queued"]
            assert status == 200 and set(again["organizationIds"]) == ids
            assert (again["enqueued"], again["alreadyQueued"], again["waiting"]) == (1, 2, 3)
            assert again["nextOffset"] is None
            assert queued()[:2] == first["organizationIds"] and set(queued()) == ids
            one = sorted(ids)[0]
            status, answer = svc.post("/api/crawl-organizations", {"organizationId": one})
            assert status == 200 and answer["queued"]["organizationIds"] == [one]
            assert answer["queued"]["enqueued"] == 0
            # bad input is refused naming the field, before Redis; no run was started
            status, answer = svc.post("/api/crawl-organizations", {"limit": 0})
            assert status == 422 and answer["field"] == "limit"
            assert svc.post("/api/crawl-organizations", {}, token=None)[0] == 401
            assert svc.get("/api/jobs")[1]["jobs"] == []
            assert len(queued()) == 3
    finally:
        client.delete(key)
        client.close()
    # Redis unreachable: 503 naming it (its password hidden), nothing started instead
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"NUKE_REDIS_URL": f"redis://user:s3cret@127.0.0.1:{port}/0"}
    with Service(sqlite_url, tmp_path / "svc2", env=env) as svc:
        status, answer = svc.post("/api/crawl-organizations", {"limit": 2})
        assert status == 503 and answer["success"] is False, answer
        assert f"Redis at redis://user:***@127.0.0.1:{port}/0 failed" in answer["error"]
        assert "s3cret" not in answer["error"]
        assert svc.get("/api/jobs")[1]["jobs"] == []


def test_job_progress_counts_items_against_the_limit_until_the_job_is_done(
    tmp_path: Path,
) -> None:
    log = tmp_path / "run.log"
    log.write_text(
        "... [scrapy.extensions.logstats] INFO: Crawled 0 pages (at 0 pages/min), "
        "scraped 120 items (at 240 items/min)\n"
    )
    running = Job("1", "image_backfill", {"limit": "500"}, "running", "process", log_path=str(log))
    assert progress(running) == {"items": 120, "target": 500, "percent": 24.0}
    # it ran out of work at 130: done, not 26% done
    finished = Job(
        "1", "image_backfill", {"limit": "500"}, "finished", "process", summary={"items": 130}
    )
    assert progress(finished) == {"items": 130, "target": 500, "percent": 100.0}
    failed = Job("2", "image_backfill", {"limit": "500"}, "failed", "process", summary={"items": 5})
    assert progress(failed) == {"items": 5, "target": 500, "percent": 1.0}
    org = Job("3", "org", {"threshold": "1"}, "finished", "process", summary={"items": 7})
    assert progress(org) == {"items": 7, "target": None, "percent": 100.0}
