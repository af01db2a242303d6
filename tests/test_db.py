"""The database layer on SQLite and PostgreSQL: schema, upserts, selection, status."""

from __future__ import annotations

from decimal import Decimal

import pytest

from nuke_crawl.db import (
    Database,
    DatabaseError,
    current_version,
    latest_version,
    loads_json,
    migrate,
    store,
)


def _rec(
    org_id: str, url: str, images: list[str] | None = None, **fields: object
) -> store.VehicleRecord:
    base = {"year": 2015, "make": "Ford", "model": "Mustang", "asking_price": Decimal(18995)}
    base.update(fields)
    return store.VehicleRecord(
        org_id, url, base, images if images is not None else [f"{url}/1.jpg", f"{url}/2.jpg"]
    )


def test_migrate_is_idempotent_and_versioned(db_url: str) -> None:
    database = Database(db_url)
    assert current_version(database) == 0
    assert migrate(database) == list(range(1, latest_version() + 1))
    assert migrate(database) == []
    assert current_version(database) == latest_version()
    # the platform's own queries run unchanged
    assert database.scalar("SELECT COUNT(*) FROM vehicles WHERE is_public = true;") == 0
    assert database.scalar("SELECT COUNT(*) FROM vehicle_images WHERE is_external = true;") == 0
    database.close()


def _index_names(database: Database) -> set[str]:
    if database.dialect == "postgresql":
        rows = database.fetchall(
            "SELECT indexname AS name FROM pg_indexes WHERE schemaname = current_schema()"
        )
    else:
        rows = database.fetchall("SELECT name FROM sqlite_master WHERE type = 'index'")
    return {r["name"] for r in rows}


def test_migration_5_drops_the_unused_image_indexes_and_keeps_the_rest(db_url: str) -> None:
    from nuke_crawl.db.migrations import MIGRATIONS, UNUSED_INDEXES

    database = Database(db_url)
    full = MIGRATIONS[:]
    try:
        MIGRATIONS[:] = [m for m in full if m[0] < 5]  # a database of the previous release
        migrate(database)
        assert set(UNUSED_INDEXES) <= _index_names(database)
    finally:
        MIGRATIONS[:] = full
    assert migrate(database) == list(range(5, latest_version() + 1))
    names = _index_names(database)
    assert not set(UNUSED_INDEXES) & names
    assert {"ix_vehicle_images_vehicle", "ix_vehicle_images_analysis_todo"} <= names
    database.close()


def test_migration_7_adds_currency_and_sold_price_to_an_older_vehicles_table(db_url: str) -> None:
    from nuke_crawl.db.migrations import MONEY_COLUMNS

    database = Database(db_url)
    migrate(database)
    # a database of the previous release: no money columns, version 7 not applied
    for name, _, _ in MONEY_COLUMNS:
        database.execute(f"ALTER TABLE vehicles DROP COLUMN {name}")
    database.execute("DELETE FROM nuke_schema_migrations WHERE version = 7")
    database.execute(
        "INSERT INTO vehicles (id, make) VALUES (?, ?)",
        ["6f1c3f2e-2b1d-4f0e-9d57-0d6f4f1f2a12", "Toyota"],
    )
    assert not {"currency", "sold_price"} & database.columns("vehicles")
    assert migrate(database) == [7]
    assert {"currency", "sold_price"} <= database.columns("vehicles")
    database.execute(
        "UPDATE vehicles SET currency = ?, sold_price = ? WHERE make = ?", ["ZAR", 139900, "Toyota"]
    )
    row = database.fetchone("SELECT make, currency, sold_price FROM vehicles")
    assert row is not None and (row["currency"], float(row["sold_price"])) == ("ZAR", 139900.0)
    assert migrate(database) == []  # idempotent
    database.close()


def test_migrate_adds_missing_columns_to_an_existing_platform_table(db_url: str) -> None:
    database = Database(db_url)
    uuid_type = "uuid" if database.dialect == "postgresql" else "TEXT"
    database.execute(f"CREATE TABLE businesses (id {uuid_type} PRIMARY KEY, business_name text)")
    database.execute(
        "INSERT INTO businesses (id, business_name) VALUES (?, ?)",
        ["6f1c3f2e-2b1d-4f0e-9d57-0d6f4f1f2a11", "Old Dealer"],
    )
    migrate(database)
    assert {"website", "metadata", "is_public", "created_at"} <= database.columns("businesses")
    assert database.scalar("SELECT business_name FROM businesses") == "Old Dealer"
    database.close()


def test_unsupported_url_is_refused_with_a_message() -> None:
    with pytest.raises(DatabaseError, match="not supported"):
        Database("mysql://root@localhost/x")


def test_postgres_password_is_not_in_error_messages() -> None:
    with pytest.raises(DatabaseError) as info:
        Database("postgresql://u:s3cret@127.0.0.1:1/nope")
    assert "s3cret" not in str(info.value)
    assert "***" in str(info.value)


def test_add_organization_finds_by_website(db: Database) -> None:
    org, created = store.add_organization(db, "https://www.dealer.example/", name="Dealer")
    assert created
    again, created2 = store.add_organization(
        db, "http://dealer.example/inventory", metadata={"render_js": True}
    )
    assert not created2 and again.id == org.id
    assert again.metadata == {"render_js": True}
    other, created3 = store.add_organization(db, "https://dealer.example.net/")
    assert created3 and other.id != org.id


def test_upsert_is_idempotent_and_updates_changed_fields(db: Database) -> None:
    org, _ = store.add_organization(db, "https://d.example")
    rec = _rec(org.id, "https://d.example/v/1")
    assert store.upsert_vehicles(db, [rec]) == ["created"]
    assert store.upsert_vehicles(db, [rec]) == ["unchanged"]
    rec.fields["asking_price"] = Decimal(17995)
    assert store.upsert_vehicles(db, [rec]) == ["updated"]
    assert db.scalar("SELECT COUNT(*) FROM vehicles") == 1
    assert float(db.scalar("SELECT asking_price FROM vehicles")) == 17995
    assert db.scalar("SELECT COUNT(*) FROM vehicle_images WHERE is_external = true") == 2
    row = db.fetchone("SELECT origin_metadata, is_public, origin_organization_id FROM vehicles")
    assert row is not None
    meta = store.loads_json(row["origin_metadata"])
    assert meta["image_urls"] == rec.image_urls and meta["image_count"] == 2
    assert meta["images_backfilled"] is False and meta["organization_id"] == org.id
    assert "extracted_at" in meta
    assert bool(row["is_public"]) and row["origin_organization_id"] == org.id
    link = db.fetchone("SELECT status, relationship_type FROM organization_vehicles")
    assert link == {"status": "active", "relationship_type": store.RELATIONSHIP_TYPE}


def test_same_vin_in_one_organization_is_one_vehicle(db: Database) -> None:
    org, _ = store.add_organization(db, "https://d.example")
    vin = "1FA6P8CF5F5300001"
    store.upsert_vehicles(db, [_rec(org.id, "https://d.example/a", vin=vin)])
    assert store.upsert_vehicles(db, [_rec(org.id, "https://d.example/b", vin=vin)]) == ["updated"]
    assert db.scalar("SELECT COUNT(*) FROM vehicles") == 1


def test_images_positions_primary_and_no_duplicates(db: Database) -> None:
    org, _ = store.add_organization(db, "https://d.example")
    urls = [f"https://img.example/{i}.jpg" for i in range(4)]
    store.upsert_vehicles(db, [_rec(org.id, "https://d.example/v", urls[:3])])
    store.upsert_vehicles(db, [_rec(org.id, "https://d.example/v", urls)])
    rows = db.fetchall(
        "SELECT image_url, source_url, position, is_primary, is_external "
        "FROM vehicle_images ORDER BY position"
    )
    assert [r["image_url"] for r in rows] == urls
    assert all(r["source_url"] == r["image_url"] and r["is_external"] for r in rows)
    assert [bool(r["is_primary"]) for r in rows] == [True, False, False, False]
    meta = store.loads_json(db.scalar("SELECT origin_metadata FROM vehicles"))
    assert meta["image_count"] == 4


def test_one_vehicle_twice_in_a_batch_gets_each_image_once(db: Database) -> None:
    # The image rows of a batch are inserted together at its end: the second
    # record of the same listing must still see the first one's images.
    org, _ = store.add_organization(db, "https://d.example")
    urls = [f"https://img.example/{i}.jpg" for i in range(4)]
    outcomes = store.upsert_vehicles(
        db,
        [
            _rec(org.id, "https://d.example/v", urls[:3]),
            _rec(org.id, "https://d.example/v", urls[1:]),
        ],
    )
    assert outcomes == ["created", "updated"]
    rows = db.fetchall("SELECT image_url, is_primary FROM vehicle_images")
    assert sorted(r["image_url"] for r in rows) == urls
    assert [r["image_url"] for r in rows if r["is_primary"]] == urls[:1]


def _state(db: Database) -> list[tuple[object, ...]]:
    vehicles = db.fetchall("SELECT id, discovery_url, vin, asking_price FROM vehicles")
    urls = {v["id"]: v["discovery_url"] for v in vehicles}
    images = db.fetchall("SELECT vehicle_id, image_url, position, is_primary FROM vehicle_images")
    return sorted(
        [("v", v["discovery_url"], v["vin"], float(v["asking_price"])) for v in vehicles]
        + [
            ("i", urls[i["vehicle_id"]], i["image_url"], i["position"], bool(i["is_primary"]))
            for i in images
        ]
    )


def test_a_batch_gives_what_its_records_one_by_one_give(db: Database, tmp_path) -> None:
    """A batch reads its existing vehicles at once (by URL, then VIN); records of
    the batch that write a listing or a VIN again must see the earlier writes."""
    vin_a, vin_b = "1FA6P8CF5F5300001", "1HGCM82633A004352"
    vin_c, vin_d = "2HGES16575H591835", "1G1JC5444R7252367"
    other_db = Database(f"sqlite:///{tmp_path / 'one-by-one.db'}")
    migrate(other_db)
    try:
        for database in (db, other_db):  # the same vehicles already stored in both
            org, _ = store.add_organization(database, "https://d.example")
            store.upsert_vehicles(
                database,
                [
                    _rec(org.id, "https://d.example/old"),
                    _rec(org.id, "https://d.example/vin", vin=vin_a),
                    _rec(org.id, "https://d.example/vin2", vin=vin_d),
                ],
            )

        def batch(org_id: str) -> list[store.VehicleRecord]:
            return [
                _rec(org_id, "https://d.example/old", asking_price=Decimal(1)),  # update
                _rec(org_id, "https://d.example/new"),  # create
                # the VIN of a stored vehicle, then that vehicle's own URL
                _rec(org_id, "https://d.example/other-url", vin=vin_a, asking_price=Decimal(5)),
                _rec(org_id, "https://d.example/vin"),
                _rec(org_id, "https://d.example/new", ["https://d.example/new/3.jpg"]),  # again
                _rec(org_id, "https://d.example/b1", vin=vin_b),  # create with a new VIN
                _rec(org_id, "https://d.example/b2", vin=vin_b),  # that VIN again
                _rec(org_id, "https://d.example/vin2", vin=vin_c),  # its VIN changes...
                _rec(org_id, "https://d.example/c2", vin=vin_d),  # ...so the old one is free
            ]

        org_id = store.add_organization(db, "https://d.example")[0].id
        together = store.upsert_vehicles(db, batch(org_id))
        other_org = store.add_organization(other_db, "https://d.example")[0].id
        alone = [store.upsert_vehicles(other_db, [r])[0] for r in batch(other_org)]
        assert (
            together
            == alone
            == [
                "updated",
                "created",
                "updated",
                "updated",
                "updated",
                "created",
                "updated",
                "updated",
                "created",
            ]
        )
        assert _state(db) == _state(other_db)
        assert db.scalar("SELECT COUNT(*) FROM vehicles") == 6
    finally:
        other_db.close()


def test_downloaded_images_are_never_turned_back_into_external_records(db: Database) -> None:
    org, _ = store.add_organization(db, "https://d.example")
    url = "https://img.example/1.jpg"
    store.upsert_vehicles(db, [_rec(org.id, "https://d.example/v", [url])])
    db.execute(
        "UPDATE vehicle_images SET is_external = false, storage_path = 'v/1.jpg', "
        "image_url = 'https://cdn.example/v/1.jpg'"
    )
    store.upsert_vehicles(db, [_rec(org.id, "https://d.example/v", [url])])
    rows = db.fetchall("SELECT is_external, storage_path FROM vehicle_images")
    assert len(rows) == 1 and not rows[0]["is_external"] and rows[0]["storage_path"] == "v/1.jpg"


def test_external_image_records_can_be_turned_off(db: Database) -> None:
    org, _ = store.add_organization(db, "https://d.example")
    store.upsert_vehicles(db, [_rec(org.id, "https://d.example/v")], external_images=False)
    assert db.scalar("SELECT COUNT(*) FROM vehicle_images") == 0
    meta = store.loads_json(db.scalar("SELECT origin_metadata FROM vehicles"))
    assert meta["image_count"] == 2


def test_sold_vehicle_is_linked_as_past_and_incomplete_one_is_not_public(db: Database) -> None:
    org, _ = store.add_organization(db, "https://d.example")
    store.upsert_vehicles(
        db,
        [
            _rec(org.id, "https://d.example/sold", sale_status="sold"),
            _rec(org.id, "https://d.example/nomodel", model=None),
        ],
    )
    assert (
        db.scalar(
            "SELECT status FROM organization_vehicles ov JOIN vehicles v "
            "ON v.id = ov.vehicle_id WHERE v.discovery_url = ?",
            ["https://d.example/sold"],
        )
        == "past"
    )
    assert db.scalar("SELECT COUNT(*) FROM vehicles WHERE is_public = true") == 1


def test_a_bad_record_does_not_lose_its_batch(db: Database) -> None:
    org, _ = store.add_organization(db, "https://d.example")
    good = _rec(org.id, "https://d.example/good")
    bad = _rec(org.id, "https://d.example/bad", year="not a year")
    outcomes = store.upsert_vehicles(db, [good, bad])
    if db.dialect == "postgresql":
        assert outcomes[0] == "created" and outcomes[1].startswith("error")
        assert db.scalar("SELECT COUNT(*) FROM vehicles") == 1
    else:  # SQLite's flexible typing stores the text
        assert outcomes == ["created", "created"]


def test_select_organizations_pages_and_filters(db: Database) -> None:
    orgs = []
    for i in range(5):
        org, _ = store.add_organization(
            db, f"https://d{i}.example", business_type="dealer" if i % 2 == 0 else "auction"
        )
        orgs.append(org)
        db.execute(
            "UPDATE businesses SET created_at = ? WHERE id = ?",
            [
                f"2024-01-0{i + 1}T00:00:00.000000Z"
                if db.dialect == "sqlite"
                else f"2024-01-0{i + 1}T00:00:00Z",
                org.id,
            ],
        )
    store.upsert_vehicles(db, [_rec(orgs[1].id, "https://d1.example/v")])
    page = store.select_organizations(db, threshold=1, limit=3, offset=0)
    assert page.page_size == 3 and page.total == 5
    assert [o.id for o in page.organizations] == [orgs[0].id, orgs[2].id]
    page2 = store.select_organizations(db, threshold=1, limit=3, offset=3)
    assert [o.id for o in page2.organizations] == [orgs[3].id, orgs[4].id]
    assert [o.id for o in store.select_organizations(db, threshold=2, limit=10).organizations] == [
        o.id for o in orgs
    ]
    auctions = store.select_organizations(db, threshold=10, limit=10, business_type="auction")
    assert {o.id for o in auctions.organizations} == {orgs[1].id, orgs[3].id}
    one = store.select_organizations(db, threshold=10, limit=10, organization_id=orgs[4].id)
    assert [o.id for o in one.organizations] == [orgs[4].id]
    # a crawl that started and never finished is resumed despite the threshold
    store.mark_crawls_started(db, [orgs[1].id])
    resumed = store.select_organizations(db, threshold=1, limit=10).organizations
    assert orgs[1].id in {o.id for o in resumed}
    assert next(o for o in resumed if o.id == orgs[1].id).resume
    store.record_crawl_result(db, orgs[1].id, {"pages": 1}, None, finished=True)
    assert orgs[1].id not in {
        o.id for o in store.select_organizations(db, threshold=1, limit=10).organizations
    }
    meta = store.get_organization(db, orgs[1].id).metadata  # type: ignore[union-attr]
    assert meta["last_crawl"] == {"pages": 1} and meta["last_error"] is None
    assert meta["last_extracted_at"]


def test_status_counts(db: Database) -> None:
    org, _ = store.add_organization(db, "https://d.example")
    store.add_organization(db, "https://e.example")
    store.upsert_vehicles(
        db, [_rec(org.id, "https://d.example/a"), _rec(org.id, "https://d.example/b", images=[])]
    )
    counts = store.status_counts(db)
    assert counts["organizations"] == 2 and counts["organizations_extracted"] == 1
    assert counts["public_vehicles"] == 2 and counts["vehicles_with_image_urls"] == 1
    assert counts["external_images"] == 2 and counts["vehicles_with_external_images"] == 1
    assert counts["stored_images"] == 0 and counts["vehicles_backfilled"] == 0
    assert counts["images_never_analysed"] == 2


def test_new_ids_are_distinct_time_ordered_uuids() -> None:
    import time
    import uuid

    from nuke_crawl.db.connection import new_id, new_ids

    before = time.time_ns() // 1_000_000
    ids = new_ids(2000)
    later = new_id()
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == 2000 and new_ids(0) == []
    assert ids == sorted(ids) and later not in ids
    for text in [*ids, later]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert before <= parsed.int >> 80 <= after  # its first 48 bits: Unix milliseconds
    # random where they are not time: 74 bits an id
    assert len({text[19:] for text in ids}) == 2000


def test_bulk_rows_convert_only_what_needs_it(db_url: str) -> None:
    from datetime import UTC, datetime

    from nuke_crawl.db import Json

    database = Database(db_url)
    migrate(database)
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    rows = [
        [
            f"00000000-0000-4000-8000-00000000000{i}",
            None,
            f"https://bulk.example/{i}",
            Json({"n": i}) if i else None,
            when,
        ]
        for i in range(3)
    ]
    database.insert_rows(
        "vehicles", ("id", "vin", "discovery_url", "origin_metadata", "created_at"), rows
    )
    got = database.fetchall(
        "SELECT discovery_url, origin_metadata, created_at FROM vehicles ORDER BY discovery_url"
    )
    assert [loads_json(r["origin_metadata"]) for r in got] == [None, {"n": 1}, {"n": 2}]
    assert all(str(r["created_at"]).startswith("2026-01-02") for r in got)
    assert rows[1][3] == Json({"n": 1})  # the caller's rows are left as they were
    database.close()
