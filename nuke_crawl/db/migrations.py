"""Versioned, idempotent schema migrations for SQLite and PostgreSQL.

The tables follow the platform's PostgreSQL (Supabase) schema, so the tool can
run against it: every statement is ``IF NOT EXISTS``, and a column that an
existing table lacks is added beside the others. Applied versions are kept in
``nuke_schema_migrations``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .connection import Database

logger = logging.getLogger(__name__)

# Column types per dialect: (sqlite, postgresql)
_T = {
    "uuid": ("TEXT", "uuid"),
    "json": ("TEXT", "jsonb"),
    "bool": ("INTEGER", "boolean"),
    "ts": ("TEXT", "timestamptz"),
    "text": ("TEXT", "text"),
    "int": ("INTEGER", "integer"),
    "bigint": ("INTEGER", "bigint"),
    "num": ("REAL", "numeric"),
    "real": ("REAL", "double precision"),
}


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    extra: str = ""  # e.g. "NOT NULL DEFAULT 'x'"; dialect-neutral SQL only

    def ddl(self, dialect: str) -> str:
        sql_type = _T[self.type][0 if dialect == "sqlite" else 1]
        return f"{self.name} {sql_type} {self.extra}".strip()


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: str | None = "id"
    constraints: tuple[str, ...] = ()


def _c(name: str, type_: str, extra: str = "") -> Column:
    return Column(name, type_, extra)


BUSINESSES = Table(
    "businesses",
    (
        _c("id", "uuid", "NOT NULL"),
        _c("business_name", "text"),
        _c("website", "text"),
        _c("business_type", "text"),
        _c("is_public", "bool", "DEFAULT true"),
        _c("metadata", "json", "DEFAULT '{}'"),
        _c("created_at", "ts"),
        _c("updated_at", "ts"),
    ),
)

VEHICLES = Table(
    "vehicles",
    (
        _c("id", "uuid", "NOT NULL"),
        _c("year", "int"),
        _c("make", "text"),
        _c("model", "text"),
        _c("trim", "text"),
        _c("vin", "text"),
        _c("mileage", "int"),
        _c("asking_price", "num"),
        _c("currency", "text"),
        _c("sold_price", "num"),
        _c("color", "text"),
        _c("interior_color", "text"),
        _c("transmission", "text"),
        _c("drivetrain", "text"),
        _c("body_style", "text"),
        _c("fuel_type", "text"),
        _c("engine", "text"),
        _c("description", "text"),
        _c("location", "text"),
        _c("title", "text"),
        _c("discovery_url", "text"),
        _c("listing_url", "text"),
        _c("sale_status", "text"),
        _c("is_public", "bool", "DEFAULT false"),
        _c("origin_organization_id", "uuid"),
        _c("profile_origin", "text"),
        _c("primary_image_url", "text"),
        _c("origin_metadata", "json", "DEFAULT '{}'"),
        _c("created_at", "ts"),
        _c("updated_at", "ts"),
    ),
)

ORGANIZATION_VEHICLES = Table(
    "organization_vehicles",
    (
        _c("id", "uuid", "NOT NULL"),
        _c("organization_id", "uuid", "NOT NULL"),
        _c("vehicle_id", "uuid", "NOT NULL"),
        _c("relationship_type", "text", "NOT NULL DEFAULT 'seller'"),
        _c("status", "text", "NOT NULL DEFAULT 'active'"),
        _c("created_at", "ts"),
        _c("updated_at", "ts"),
    ),
    constraints=("UNIQUE (organization_id, vehicle_id, relationship_type)",),
)

VEHICLE_IMAGES = Table(
    "vehicle_images",
    (
        _c("id", "uuid", "NOT NULL"),
        _c("vehicle_id", "uuid", "NOT NULL"),
        _c("image_url", "text"),
        _c("source_url", "text"),
        _c("storage_path", "text"),
        _c("is_external", "bool", "DEFAULT false"),
        _c("position", "int"),
        _c("is_primary", "bool", "DEFAULT false"),
        _c("file_hash", "text"),
        _c("file_size", "bigint"),
        _c("mime_type", "text"),
        _c("width", "int"),
        _c("height", "int"),
        _c("variants", "json"),
        _c("ai_last_scanned", "ts"),
        _c("ai_scan_metadata", "json"),
        _c("created_at", "ts"),
        _c("updated_at", "ts"),
    ),
)

# Per-organization crawl bookkeeping: lets a killed crawl resume from the
# database's state (Scrapy's JOBDIR alone does not survive SIGKILL).
ORG_CRAWLS = Table(
    "nuke_org_crawls",
    (
        _c("organization_id", "uuid", "NOT NULL"),
        _c("started_at", "ts"),
        _c("finished_at", "ts"),
        _c("last_error", "text"),
        _c("summary", "json"),
    ),
    primary_key="organization_id",
)

V1_TABLES = (BUSINESSES, VEHICLES, ORGANIZATION_VEHICLES, VEHICLE_IMAGES, ORG_CRAWLS)

V1_INDEXES = (
    "CREATE INDEX IF NOT EXISTS ix_businesses_created ON businesses (created_at, id)",
    "CREATE INDEX IF NOT EXISTS ix_vehicles_discovery_url ON vehicles (discovery_url)",
    "CREATE INDEX IF NOT EXISTS ix_vehicles_org_vin ON vehicles (origin_organization_id, vin)",
    "CREATE INDEX IF NOT EXISTS ix_org_vehicles_org "
    "ON organization_vehicles (organization_id, status)",
    "CREATE INDEX IF NOT EXISTS ix_vehicle_images_vehicle ON vehicle_images (vehicle_id, position)",
    "CREATE INDEX IF NOT EXISTS ix_vehicle_images_source "
    "ON vehicle_images (vehicle_id, source_url)",
)


def _create_table(db: Database, table: Table) -> None:
    if db.table_exists(table.name):
        have = db.columns(table.name)
        for col in table.columns:
            if col.name not in have:
                # A platform table may lack our bookkeeping columns; defaults
                # only, never NOT NULL, so existing rows stay valid.
                ddl = Column(col.name, col.type, col.extra.replace("NOT NULL", "").strip()).ddl(
                    db.dialect
                )
                db.execute(f"ALTER TABLE {table.name} ADD COLUMN {ddl}")
        return
    parts = [c.ddl(db.dialect) for c in table.columns]
    if table.primary_key:
        parts.append(f"PRIMARY KEY ({table.primary_key})")
    parts.extend(table.constraints)
    db.execute(f"CREATE TABLE {table.name} (\n  " + ",\n  ".join(parts) + "\n)")


def _v1(db: Database) -> None:
    for table in V1_TABLES:
        _create_table(db, table)
    for sql in V1_INDEXES:
        db.execute(sql)


MIGRATIONS: list[tuple[int, str, object]] = [
    (1, "core tables: businesses, vehicles, organization_vehicles, vehicle_images", _v1),
]


def latest_version() -> int:
    return max(v for v, _, _ in MIGRATIONS)


def current_version(db: Database) -> int:
    if not db.table_exists("nuke_schema_migrations"):
        return 0
    return int(db.scalar("SELECT COALESCE(MAX(version), 0) FROM nuke_schema_migrations") or 0)


def migrate(db: Database) -> list[int]:
    """Apply every migration not applied yet; return the versions applied."""
    applied: list[int] = []
    with db.transaction():
        if db.dialect == "postgresql":
            # Two processes migrating at once queue here instead of colliding.
            db.execute("SELECT pg_advisory_xact_lock(724573901)")
        db.execute(
            "CREATE TABLE IF NOT EXISTS nuke_schema_migrations ("
            "version INTEGER PRIMARY KEY, description TEXT, applied_at TEXT)"
        )
        done = {r["version"] for r in db.fetchall("SELECT version FROM nuke_schema_migrations")}
        for version, description, func in MIGRATIONS:
            if version in done:
                continue
            logger.info("Applying migration %d: %s", version, description)
            func(db)  # type: ignore[operator]
            db.execute(
                "INSERT INTO nuke_schema_migrations (version, description, applied_at) "
                "VALUES (?, ?, ?)",
                [version, description, str(db.now())],
            )
            applied.append(version)
    return applied


def needs_migration(db: Database) -> bool:
    return current_version(db) < latest_version()


# -- migration 2: image backfill bookkeeping (nuke_crawl.db.backfill) -------------

V2_VEHICLE_COLUMNS = (
    _c("images_lease_owner", "text"),  # the image_backfill worker holding the vehicle
    _c("images_lease_until", "ts"),  # its lease expires then (a killed worker's work returns)
    _c("images_next_attempt_at", "ts"),  # transient failures: not claimed again before this
    _c("images_checked_at", "ts"),  # last time a worker finished with the vehicle
)

V2_IMAGE_COLUMNS = (
    _c("download_attempts", "int", "DEFAULT 0"),
    _c("download_error", "text"),  # the reason of the last failure (http_404, not_image...)
    _c("download_error_detail", "text"),
    _c("download_next_at", "ts"),  # a transient failure is retried after this
    _c("download_failed_at", "ts"),
)


def _v2(db: Database) -> None:
    for table, columns in (("vehicles", V2_VEHICLE_COLUMNS), ("vehicle_images", V2_IMAGE_COLUMNS)):
        have = db.columns(table)
        for col in columns:
            if col.name not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {col.ddl(db.dialect)}")
    if db.dialect == "postgresql":
        # The claim query walks this partial index newest first: vehicles whose
        # images are backfilled are not in it, so it stays small and the claim fast.
        db.execute(
            "CREATE INDEX IF NOT EXISTS ix_vehicles_images_todo ON vehicles "
            "(created_at DESC, id DESC) "
            "WHERE (origin_metadata->>'images_backfilled') IS DISTINCT FROM 'true'"
        )
    else:
        db.execute(
            "CREATE INDEX IF NOT EXISTS ix_vehicles_images_todo ON vehicles (created_at DESC, id)"
        )
    db.execute(
        "CREATE INDEX IF NOT EXISTS ix_vehicle_images_failed ON vehicle_images (vehicle_id) "
        "WHERE is_external = true AND download_error IS NOT NULL"
    )
    db.execute(
        "CREATE INDEX IF NOT EXISTS ix_vehicle_images_hash "
        "ON vehicle_images (vehicle_id, file_hash)"
    )


MIGRATIONS.append((2, "image backfill: leases, download attempts and errors", _v2))


# -- migration 3: image analysis results and bookkeeping (nuke_crawl.db.analysis) -------

IMAGE_TAGS = Table(
    "image_tags",
    (
        _c("id", "uuid", "NOT NULL"),
        _c("image_id", "uuid"),
        _c("vehicle_id", "uuid"),
        _c("image_url", "text"),
        _c("tag_name", "text"),
        _c("tag_type", "text"),  # part, tool, brand, process, issue, custom
        _c("confidence", "real"),  # 0-100
        _c("x_position", "real"),  # box, percent of the image's width/height
        _c("y_position", "real"),
        _c("width", "real"),
        _c("height", "real"),
        _c("ai_detection_data", "json"),
        _c("source_type", "text"),  # "ai"
        _c("created_at", "ts"),
    ),
)

COMPONENT_CONDITIONS = Table(
    "component_conditions",
    (
        _c("id", "uuid", "NOT NULL"),
        _c("image_id", "uuid"),
        _c("vehicle_id", "uuid"),
        _c("component_name", "text"),
        _c("condition_rating", "int"),  # 1-10
        _c("damage_types", "json"),
        _c("needs_attention", "bool", "DEFAULT false"),
        _c("confidence", "real"),
        _c("detected_by_model", "text"),
        _c("created_at", "ts"),
    ),
)

PAINT_QUALITY_ASSESSMENTS = Table(
    "paint_quality_assessments",
    (
        _c("id", "uuid", "NOT NULL"),
        _c("image_id", "uuid"),
        _c("vehicle_id", "uuid"),
        _c("panel_name", "text"),
        _c("appears_original", "bool"),
        _c("defects", "json"),
        _c("paint_quality_score", "int"),  # 1-10
        _c("confidence", "real"),
        _c("assessed_by_model", "text"),
        _c("created_at", "ts"),
    ),
)

VEHICLE_SPID_DATA = Table(
    "vehicle_spid_data",
    (
        _c("id", "uuid", "NOT NULL"),
        _c("vehicle_id", "uuid", "NOT NULL"),
        _c("image_id", "uuid"),
        _c("vin", "text"),
        _c("model_code", "text"),
        _c("build_date", "text"),
        _c("paint_codes", "json"),
        _c("rpo_codes", "json"),
        _c("engine_code", "text"),
        _c("transmission_code", "text"),
        _c("axle_code", "text"),
        _c("raw_data", "json"),
        _c("extracted_by_model", "text"),
        _c("created_at", "ts"),
        _c("updated_at", "ts"),
    ),
)

V3_TABLES = (IMAGE_TAGS, COMPONENT_CONDITIONS, PAINT_QUALITY_ASSESSMENTS, VEHICLE_SPID_DATA)

V3_IMAGE_COLUMNS = (
    _c("is_document", "bool", "DEFAULT false"),
    _c("document_category", "text"),
    _c("ai_processing_status", "text"),  # completed, failed
    _c("ai_attempts", "int", "DEFAULT 0"),
    _c("ai_error", "text"),  # the reason of the last failure (rate_limited, invalid_image...)
    _c("ai_error_detail", "text"),
    _c("ai_next_attempt_at", "ts"),  # a failed image is not claimed again before this
    _c("ai_lease_owner", "text"),  # the image_analysis worker holding the image
    _c("ai_lease_until", "ts"),  # ...until then (a killed worker's images return)
)

V3_INDEXES = (
    "CREATE INDEX IF NOT EXISTS ix_image_tags_image ON image_tags (image_id)",
    "CREATE INDEX IF NOT EXISTS ix_image_tags_vehicle ON image_tags (vehicle_id, tag_type)",
    "CREATE INDEX IF NOT EXISTS ix_component_conditions_image ON component_conditions (image_id)",
    "CREATE INDEX IF NOT EXISTS ix_paint_quality_image ON paint_quality_assessments (image_id)",
    # one row per vehicle, upserted (ON CONFLICT (vehicle_id))
    "CREATE UNIQUE INDEX IF NOT EXISTS ux_vehicle_spid_data_vehicle ON vehicle_spid_data "
    "(vehicle_id)",
    # the work queue: never-analysed images, newest first
    "CREATE INDEX IF NOT EXISTS ix_vehicle_images_analysis_todo ON vehicle_images "
    "(created_at DESC, id) WHERE ai_last_scanned IS NULL",
)


def _v3(db: Database) -> None:
    for table in V3_TABLES:
        _create_table(db, table)
    have = db.columns("vehicle_images")
    for col in V3_IMAGE_COLUMNS:
        if col.name not in have:
            db.execute(f"ALTER TABLE vehicle_images ADD COLUMN {col.ddl(db.dialect)}")
    for sql in V3_INDEXES:
        db.execute(sql)


MIGRATIONS.append((3, "image analysis: tags, conditions, paint, SPID data, scan bookkeeping", _v3))


# -- migration 4: image backfill priority (nuke_crawl.db.backfill) ---------------------


def _v4(db: Database) -> None:
    if "images_priority" not in db.columns("vehicles"):
        # NOT NULL DEFAULT 0: instant on PostgreSQL 11+ (no table rewrite); existing rows get 0
        db.execute("ALTER TABLE vehicles ADD COLUMN images_priority INTEGER NOT NULL DEFAULT 0")
    if db.dialect == "postgresql":
        # The claim walks this partial index: highest priority first, then newest first.
        db.execute(
            "CREATE INDEX IF NOT EXISTS ix_vehicles_images_queue ON vehicles "
            "(images_priority DESC, created_at DESC, id DESC) "
            "WHERE (origin_metadata->>'images_backfilled') IS DISTINCT FROM 'true'"
        )
    else:
        db.execute(
            "CREATE INDEX IF NOT EXISTS ix_vehicles_images_queue ON vehicles "
            "(images_priority DESC, created_at DESC, id)"
        )


MIGRATIONS.append((4, "image backfill: per-vehicle priority (vehicles.images_priority)", _v4))


# -- migration 5: indexes no query uses ---------------------------------------------------

# Every query on vehicle_images looks rows up by vehicle_id (ix_vehicle_images_vehicle
# serves them all): the first two only cost each new row two more index entries (the
# org crawl writes twenty a vehicle: measured, about a tenth of its database time).
# The image claim has walked ix_vehicles_images_queue (priority first, the same
# condition) since migration 4, which leaves ix_vehicles_images_todo to no query.
UNUSED_INDEXES = ("ix_vehicle_images_source", "ix_vehicle_images_hash", "ix_vehicles_images_todo")


def _v5(db: Database) -> None:
    for name in UNUSED_INDEXES:
        db.execute(f"DROP INDEX IF EXISTS {name}")


MIGRATIONS.append(
    (5, "drop indexes no query uses (image source_url and file_hash, images_todo)", _v5)
)


# -- migration 6: the platform's column defaults on PostgreSQL -----------------------------

#: Columns that carry a default on the platform, and that default. Other writers insert
#: without them (e.g. ``INSERT INTO organization_vehicles (organization_id, vehicle_id,
#: relationship_type, status)``): without the default such an insert fails on ``id``.
PLATFORM_DEFAULTS = {
    "id": ("uuid", "gen_random_uuid()"),
    "created_at": ("timestamp", "now()"),
    "updated_at": ("timestamp", "now()"),
}
PLATFORM_TABLES = (
    "businesses",
    "vehicles",
    "organization_vehicles",
    "vehicle_images",
    "image_tags",
    "component_conditions",
    "paint_quality_assessments",
    "vehicle_spid_data",
)


def _v6(db: Database) -> None:
    """Set each missing default of :data:`PLATFORM_DEFAULTS` (PostgreSQL only; SQLite
    cannot alter a default, and nothing but this tool writes its file). A column that
    already has a default, or whose type differs (e.g. a ``text`` timestamp), is left as
    it is; no row is read or written."""
    if db.dialect != "postgresql":
        return
    rows = db.fetchall(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND column_default IS NULL "
        f"AND table_name IN ({', '.join('?' * len(PLATFORM_TABLES))}) "
        f"AND column_name IN ({', '.join('?' * len(PLATFORM_DEFAULTS))})",
        [*PLATFORM_TABLES, *PLATFORM_DEFAULTS],
    )
    for row in rows:
        type_prefix, default = PLATFORM_DEFAULTS[row["column_name"]]
        if not str(row["data_type"]).startswith(type_prefix):
            continue
        # names come from the two constant lists above, never from input
        db.execute(
            f'ALTER TABLE "{row["table_name"]}" ALTER COLUMN "{row["column_name"]}" '
            f"SET DEFAULT {default}"
        )


MIGRATIONS.append((6, "the platform's defaults: id gen_random_uuid(), created/updated now()", _v6))


# -- migration 7: money with its currency, and what a sold vehicle went for ----------------

# ``currency``: the ISO 4217 code of asking_price and sold_price (a CAD, ZAR or EUR price is
# no dollar figure). ``sold_price``: a sold vehicle's price, an auction's winning bid (never
# stored as an asking price), with sale_status 'sold'.
MONEY_COLUMNS = (("currency", "TEXT", "text"), ("sold_price", "REAL", "numeric"))


def _v7(db: Database) -> None:
    have = db.columns("vehicles")
    for name, sqlite_type, pg_type in MONEY_COLUMNS:
        if name not in have:
            sql_type = sqlite_type if db.dialect == "sqlite" else pg_type
            db.execute(f"ALTER TABLE vehicles ADD COLUMN {name} {sql_type}")


MIGRATIONS.append((7, "vehicles: currency and sold_price", _v7))


# -- migration 8: the service's job records (nuke_crawl.service.jobs) ---------------------

SERVICE_JOBS = Table(
    "nuke_service_jobs",
    (
        _c("id", "uuid", "NOT NULL"),
        _c("spider", "text", "NOT NULL"),
        _c("args", "json", "DEFAULT '{}'"),
        _c("state", "text", "NOT NULL"),  # pending running finished failed cancelled lost skipped
        _c("backend", "text"),  # process, scrapyd
        _c("external_id", "text"),  # the child's pid (process) or scrapyd's job id
        _c("process_start", "text"),  # the pid's start time (/proc), so a reused pid is not taken
        _c("schedule", "text"),  # the schedule that started (or skipped) it
        _c("log_path", "text"),
        _c("exit_code", "int"),
        _c("summary", "json"),  # the run's summary (nuke_crawl.extensions.notify)
        _c("error", "text"),
        _c("cancel_requested", "bool", "DEFAULT false"),
        _c("created_at", "ts"),
        _c("started_at", "ts"),
        _c("finished_at", "ts"),
    ),
)


def _v8(db: Database) -> None:
    _create_table(db, SERVICE_JOBS)
    db.execute(
        "CREATE INDEX IF NOT EXISTS ix_service_jobs_created ON nuke_service_jobs "
        "(created_at DESC, id)"
    )
    db.execute(
        "CREATE INDEX IF NOT EXISTS ix_service_jobs_active ON nuke_service_jobs "
        "(spider) WHERE state IN ('pending', 'running')"
    )
    # The service's "recent failures" and "latest thumbnails": small partial indexes (only
    # failed rows; only stored rows, which the org crawl's inserts never enter).
    db.execute(
        "CREATE INDEX IF NOT EXISTS ix_vehicle_images_failed_at ON vehicle_images "
        "(download_failed_at DESC) WHERE download_error IS NOT NULL"
    )
    db.execute(
        "CREATE INDEX IF NOT EXISTS ix_vehicle_images_stored_at ON vehicle_images "
        "(updated_at DESC) WHERE is_external = false AND storage_path IS NOT NULL"
    )


MIGRATIONS.append((8, "service: job records; indexes for recent failures and thumbnails", _v8))
