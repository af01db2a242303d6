"""The image backfill's SQL on SQLite and PostgreSQL: claims, leases, outcomes, status."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from nuke_crawl.db import Json, backfill, loads_json, store
from nuke_crawl.db.backfill import FailedImage, Selection, StoredImage


def _seed(db, n: int = 3, per: int = 3, org: str = "http://dealer.example") -> list[str]:
    org_row, _ = store.add_organization(db, org)
    recs = [
        store.VehicleRecord(
            org_row.id,
            f"{org}/v/{i}",
            {"year": 2001, "make": "Ford", "model": "T", "listing_url": f"{org}/v/{i}"},
            [f"http://img.example/{org[-7:]}/{i}-{j}.jpg" for j in range(per)],
        )
        for i in range(n)
    ]
    store.upsert_vehicles(db, recs)
    rows = db.fetchall("SELECT id FROM vehicles ORDER BY created_at, id")
    return [r["id"] for r in rows]


def _stored(image_id: str, vehicle_id: str, sha: str = "ab" * 32) -> StoredImage:
    return StoredImage(
        image_id,
        vehicle_id,
        f"{vehicle_id}/{image_id}.jpg",
        f"https://cdn.example/{vehicle_id}/{image_id}.jpg",
        sha,
        1234,
        "image/jpeg",
        800,
        600,
        {"thumb": {"width": 320}},
    )


def test_claim_leases_each_vehicle_once(db):
    ids = _seed(db, n=5)
    a = backfill.claim_vehicles(db, "a", limit=3, lease_seconds=60)
    b = backfill.claim_vehicles(db, "b", limit=3, lease_seconds=60)
    got_a = {w.vehicle_id for w in a}
    got_b = {w.vehicle_id for w in b}
    assert len(got_a) == 3 and len(got_b) == 2
    assert not got_a & got_b and got_a | got_b == set(ids)
    assert backfill.claim_vehicles(db, "c", limit=3, lease_seconds=60) == []
    work = a[0]
    assert [i.position for i in work.images] == [0, 1, 2]
    assert work.listing_url and work.listing_url.startswith("http://dealer.example/v/")
    assert sum(i.is_primary for i in work.images) == 1


def test_expired_lease_returns_the_work(db):
    _seed(db, n=1)
    assert backfill.claim_vehicles(db, "dead", limit=5, lease_seconds=0.2)
    assert backfill.claim_vehicles(db, "other", limit=5, lease_seconds=60) == []
    time.sleep(0.3)
    again = backfill.claim_vehicles(db, "other", limit=5, lease_seconds=60)
    assert len(again) == 1


def test_image_urls_without_rows_get_external_rows(db):
    ids = _seed(db, n=1, per=0)
    meta = {
        "image_urls": ["http://img.example/x/1.jpg", "http://img.example/x/2.jpg"],
        "image_count": 2,
        "images_backfilled": False,
    }
    db.execute("UPDATE vehicles SET origin_metadata = ? WHERE id = ?", [Json(meta), ids[0]])
    assert db.scalar("SELECT COUNT(*) FROM vehicle_images") == 0
    (work,) = backfill.claim_vehicles(db, "w", limit=1, lease_seconds=60)
    assert [i.url for i in work.images] == meta["image_urls"]
    rows = db.fetchall("SELECT source_url, is_external FROM vehicle_images ORDER BY position")
    assert [r["source_url"] for r in rows] == meta["image_urls"]
    assert all(r["is_external"] in (True, 1) for r in rows)


def test_stored_failed_and_completion(db):
    (vid,) = _seed(db, n=1, per=3)
    (work,) = backfill.claim_vehicles(db, "w", limit=1, lease_seconds=60)
    one, two, three = work.images
    backfill.record_stored(db, [_stored(one.image_id, vid)])
    backfill.record_failed(db, [FailedImage(two.image_id, "http_404", "HTTP 404")])
    backfill.record_failed(
        db, [FailedImage(three.image_id, "timeout", "took too long")], retry_backoff=3600
    )
    outcome = backfill.complete_vehicle(db, vid, "w", work.selected_ids, max_attempts=5)
    assert (outcome.complete, outcome.stored, outcome.failed, outcome.waiting) == (False, 1, 1, 1)
    # the transient failure waits for its backoff: nothing to claim now
    assert backfill.claim_vehicles(db, "w2", limit=1, lease_seconds=60) == []
    row = db.fetchone("SELECT * FROM vehicle_images WHERE id = ?", [one.image_id])
    assert row["is_external"] in (False, 0)
    assert row["source_url"] == one.url and row["image_url"].startswith("https://cdn.example/")
    assert row["position"] == 0 and row["is_primary"] in (True, 1)
    assert backfill.display_url(row) == row["image_url"]
    failed = db.fetchone("SELECT * FROM vehicle_images WHERE id = ?", [two.image_id])
    assert backfill.display_url(failed) == two.url
    assert failed["download_error"] == "http_404"
    # its backoff over, the transient image is retried; a second timeout at max_attempts=2
    db.execute(
        "UPDATE vehicle_images SET download_next_at = ? WHERE id = ?",
        [db.ts(datetime.now(UTC) - timedelta(seconds=1)), three.image_id],
    )
    db.execute("UPDATE vehicles SET images_next_attempt_at = NULL")
    (again,) = backfill.claim_vehicles(db, "w3", limit=1, lease_seconds=60, max_attempts=2)
    assert [i.image_id for i in again.images] == [three.image_id]
    backfill.record_failed(db, [FailedImage(three.image_id, "timeout", "again")])
    outcome = backfill.complete_vehicle(db, vid, "w3", again.selected_ids, max_attempts=2)
    assert outcome.complete and outcome.stored == 1 and outcome.failed == 2
    vehicle = db.fetchone(
        "SELECT origin_metadata, primary_image_url, images_lease_owner FROM vehicles WHERE id = ?",
        [vid],
    )
    meta = loads_json(vehicle["origin_metadata"])
    assert meta["images_backfilled"] is True and meta["images_stored"] == 1
    assert meta["images_failed"] == 2 and meta["images_last_error"].startswith("timeout")
    assert meta["images_backfilled_at"]
    assert vehicle["primary_image_url"].startswith("https://cdn.example/")
    assert vehicle["images_lease_owner"] is None
    # complete: nothing to claim, except with retry_failed
    assert backfill.claim_vehicles(db, "w4", limit=1, lease_seconds=60) == []
    (retry,) = backfill.claim_vehicles(
        db, "w4", limit=1, lease_seconds=60, selection=Selection(retry_failed=True)
    )
    assert {i.image_id for i in retry.images} == {two.image_id, three.image_id}
    status = backfill.backfill_status(db)
    assert status["totalVehicles"] == 1 and status["needingProcessing"] == 0
    assert status["partiallyProcessed"] == 1 and status["fullyProcessed"] == 0
    assert status["imagesFailedByReason"] == {"http_404": 1, "timeout": 1}
    assert status["imagesStored"] == 1


@pytest.mark.postgres
def test_platform_queries_on_postgres(pg_url):
    from nuke_crawl.db import Database, migrate

    db = Database(pg_url)
    migrate(db)
    try:
        ids = _seed(db, n=2, per=1)
        works = backfill.claim_vehicles(db, "w", limit=2, lease_seconds=60)
        for work in works:
            backfill.record_stored(db, [_stored(work.images[0].image_id, work.vehicle_id)])
            backfill.complete_vehicle(db, work.vehicle_id, "w", work.selected_ids)
        assert (
            db.scalar(
                "SELECT COUNT(*) FROM vehicles v WHERE v.is_public = true AND "
                "(v.origin_metadata->>'images_backfilled')::boolean = true;"
            )
            == 2
        )
        assert (
            db.scalar(
                "SELECT COUNT(DISTINCT vehicle_id) FROM vehicle_images WHERE is_external = false "
                "AND storage_path IS NOT NULL;"
            )
            == 2
        )
        plan = "\n".join(
            r["QUERY PLAN"]
            for r in db.fetchall(
                "EXPLAIN "
                + backfill.claim_sql(db, Selection(), db.now(), 10)[0].replace("?", "NULL")
            )
        )
        assert "ix_vehicles_images_queue" in plan or "Seq Scan" in plan
        assert len(ids) == 2
    finally:
        db.close()


def test_organization_and_vehicle_filters(db):
    first = _seed(db, n=2, org="http://one.example")
    second = _seed(db, n=4, org="http://two.example")
    org_two = store.find_organization_by_website(db, "http://two.example")
    assert org_two is not None
    works = backfill.claim_vehicles(
        db, "w", limit=10, lease_seconds=60, selection=Selection(organization_id=org_two.id)
    )
    assert {w.vehicle_id for w in works} == set(second) - set(first)
    (only,) = backfill.claim_vehicles(
        db, "w", limit=10, lease_seconds=60, selection=Selection(vehicle_id=first[0])
    )
    assert only.vehicle_id == first[0]


def test_vehicle_ids_filter_counts_previews_and_claims_only_those(db):
    ids = _seed(db, n=6)
    chosen = (ids[1], ids[4], ids[5])
    sel = Selection(vehicle_ids=chosen)
    assert backfill.count_claimable(db, sel) == 3
    assert {w.vehicle_id for w in backfill.select_preview(db, limit=10, selection=sel)} == set(
        chosen
    )
    works = backfill.claim_vehicles(db, "w", limit=2, lease_seconds=60, selection=sel)
    assert len(works) == 2 and {w.vehicle_id for w in works} < set(chosen)  # limit holds
    (rest,) = backfill.claim_vehicles(db, "w", limit=10, lease_seconds=60, selection=sel)
    assert {rest.vehicle_id, *(w.vehicle_id for w in works)} == set(chosen)
    assert backfill.claim_vehicles(db, "w", limit=10, lease_seconds=60, selection=sel) == []
    assert backfill.count_claimable(db, sel) == 0
    # the others were not touched, and vehicle_id and vehicle_ids both hold when given
    assert backfill.count_claimable(db) == 3
    both = Selection(vehicle_id=ids[0], vehicle_ids=(ids[0], ids[2]))
    assert backfill.count_claimable(db, both) == 1
    assert backfill.count_claimable(db, Selection(vehicle_id=ids[0], vehicle_ids=chosen)) == 0
    leased = db.fetchall("SELECT id FROM vehicles WHERE images_lease_owner IS NOT NULL")
    assert {r["id"] for r in leased} == set(chosen)


def test_preview_writes_nothing(db):
    _seed(db, n=2)
    before = db.fetchall("SELECT * FROM vehicles ORDER BY id")
    preview = backfill.select_preview(db, limit=5)
    assert len(preview) == 2 and all(len(w.images) == 3 for w in preview)
    assert db.fetchall("SELECT * FROM vehicles ORDER BY id") == before


def test_display_url():
    assert (
        backfill.display_url(
            {"is_external": True, "image_url": "http://v/a.jpg", "source_url": "http://v/a.jpg"}
        )
        == "http://v/a.jpg"
    )
    assert (
        backfill.display_url(
            {
                "is_external": False,
                "storage_path": "x/a.jpg",
                "image_url": "https://cdn/x/a.jpg",
                "source_url": "http://v/a.jpg",
            }
        )
        == "https://cdn/x/a.jpg"
    )
    assert backfill.display_url(
        {"is_external": 0, "storage_path": None, "image_url": None, "source_url": "http://v/b.jpg"}
    ) == ("http://v/b.jpg")


def _dated(db, ids: list[str]) -> None:
    """Give the vehicles distinct created_at times, ids[-1] the newest."""
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for n, vid in enumerate(ids):
        db.execute(
            "UPDATE vehicles SET created_at = ? WHERE id = ?",
            [db.ts(base + timedelta(hours=n)), vid],
        )


def test_priority_first_then_newest(db):
    ids = _seed(db, n=5)
    _dated(db, ids)
    assert [w.vehicle_id for w in backfill.select_preview(db, limit=5)] == ids[::-1]
    assert backfill.set_priority(db, 5, vehicle_ids=[ids[0]]) == 1
    assert backfill.set_priority(db, 1, vehicle_ids=[ids[1], ids[2]]) == 2
    assert backfill.set_priority(db, -1, vehicle_ids=[ids[4]]) == 1
    expected = [ids[0], ids[2], ids[1], ids[3], ids[4]]
    assert [w.vehicle_id for w in backfill.select_preview(db, limit=5)] == expected
    first = backfill.claim_vehicles(db, "w", limit=2, lease_seconds=60)
    assert [w.vehicle_id for w in first] == expected[:2]
    # min_priority: only vehicles at or above it (ids[1]; the others are leased or below)
    urgent = backfill.claim_vehicles(
        db, "w", limit=5, lease_seconds=60, selection=Selection(min_priority=1)
    )
    assert [w.vehicle_id for w in urgent] == [ids[1]]
    rest = backfill.claim_vehicles(db, "w", limit=5, lease_seconds=60)
    assert [w.vehicle_id for w in rest] == [ids[3], ids[4]]


def test_set_priority_by_organization(db):
    first = _seed(db, n=2, org="http://one.example")
    both = _seed(db, n=3, org="http://two.example")
    second = [v for v in both if v not in first]
    org_two = store.find_organization_by_website(db, "http://two.example")
    assert org_two is not None
    assert backfill.set_priority(db, 3, organization_id=org_two.id) == 3
    works = backfill.claim_vehicles(db, "w", limit=3, lease_seconds=60)
    assert {w.vehicle_id for w in works} == set(second)
    with pytest.raises(ValueError, match="vehicle_ids or organization_id"):
        backfill.set_priority(db, 1)


@pytest.mark.postgres
def test_priority_claim_walks_the_queue_index(pg_url):
    """At a few thousand vehicles the planner has a choice: the claim must read the
    queue index in its order (no Sort node), priorities and min_priority included."""
    from nuke_crawl.db import Database, migrate

    db = Database(pg_url)
    migrate(db)
    try:
        db.execute(
            "INSERT INTO vehicles (id, year, make, model, is_public, origin_metadata, "
            "images_priority, created_at, updated_at) SELECT gen_random_uuid(), 2000, 'M', 'X', "
            "true, jsonb_build_object('images_backfilled', g % 2 = 0), "
            "CASE WHEN g % 100 = 1 THEN 10 ELSE 0 END, now() - make_interval(secs => g), "
            "now() FROM generate_series(1, 20000) AS g"
        )
        db.execute("VACUUM (ANALYZE) vehicles")
        for selection in (Selection(), Selection(min_priority=5)):
            sql, params = backfill.claim_sql(db, selection, db.now(), 10)
            plan = "\n".join(r["QUERY PLAN"] for r in db.fetchall("EXPLAIN " + sql, params))
            assert "ix_vehicles_images_queue" in plan, plan
            assert "Sort" not in plan, plan
        works = backfill.claim_vehicles(db, "w", limit=10, lease_seconds=60)
        priorities = db.fetchall(
            f"SELECT images_priority FROM vehicles WHERE id IN ({', '.join('?' * len(works))})",
            [w.vehicle_id for w in works],
        )
        assert len(works) == 10 and all(r["images_priority"] == 10 for r in priorities)
    finally:
        db.close()


def test_image_priority_command(sqlite_url):
    from nuke_crawl.db import Database, migrate
    from tests.conftest import run_scrapy

    db = Database(sqlite_url)
    migrate(db)
    try:
        ids = _seed(db, n=3)
        _dated(db, ids)
    finally:
        db.close()
    done = run_scrapy(["image-priority", "7", "--vehicle-id", ids[0]], sqlite_url)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "1 vehicles now have image backfill priority 7"
    db = Database(sqlite_url)
    try:
        order = [w.vehicle_id for w in backfill.select_preview(db, limit=3)]
    finally:
        db.close()
    assert order == [ids[0], ids[2], ids[1]]
    for bad, message in (
        (["image-priority", "high", "--vehicle-id", ids[0]], "expected a whole number"),
        (["image-priority", "3", "--vehicle-id", "nope"], "expected a UUID"),
        (["image-priority", "3"], "give --organization-id or --vehicle-id"),
        (["image-priority", str(2**31), "--vehicle-id", ids[0]], "must be at most 2147483647"),
    ):
        refused = run_scrapy(bad, sqlite_url)
        assert refused.returncode == 2, (bad, refused.stderr[-2000:])
        assert message in refused.stderr and "Traceback" not in refused.stderr
