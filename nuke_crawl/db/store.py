"""What nuke_crawl reads and writes, as plain functions of a :class:`Database`.

Knows nothing of Scrapy: the spiders and pipelines call these through
:class:`~nuke_crawl.db.connection.AsyncDatabase` so they run off the reactor.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from .connection import Database, Json, loads_json, new_id, new_ids

logger = logging.getLogger(__name__)

RELATIONSHIP_TYPE = "inventory"
PROFILE_ORIGIN = "nuke_crawl"

# Vehicle columns an extracted listing may set.
VEHICLE_FIELDS = (
    "year",
    "make",
    "model",
    "trim",
    "vin",
    "mileage",
    "asking_price",
    "currency",
    "sold_price",
    "color",
    "interior_color",
    "transmission",
    "drivetrain",
    "body_style",
    "fuel_type",
    "engine",
    "description",
    "location",
    "title",
    "listing_url",
    "sale_status",
)


def json_text(db: Database, column: str, key: str) -> str:
    """SQL for ``column->>'key'`` on either backend (``key`` is a constant)."""
    if not key.replace("_", "").isalnum():
        raise ValueError(f"bad JSON key {key!r}")
    if db.dialect == "postgresql":
        return f"({column}->>'{key}')"
    return f"json_extract({column}, '$.{key}')"


def website_host(url: str | None) -> str:
    """The comparable host of a website: lowercase, no ``www.``, with a
    non-default port (two sites on one host are two websites)."""
    if not url:
        return ""
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    host = host.removeprefix("www.")
    try:
        port = parts.port
    except ValueError:
        port = None
    if port and port not in (80, 443):
        host = f"{host}:{port}"
    return host


# -- organizations ------------------------------------------------------------


@dataclass
class Organization:
    id: str
    business_name: str | None
    website: str
    business_type: str | None
    metadata: dict[str, Any]
    active_vehicles: int = 0
    resume: bool = False  # a previous crawl of it never finished


def _org(row: dict[str, Any]) -> Organization:
    return Organization(
        id=row["id"],
        business_name=row.get("business_name"),
        website=row.get("website") or "",
        business_type=row.get("business_type"),
        metadata=loads_json(row.get("metadata")) or {},
        active_vehicles=int(row.get("active_vehicles") or 0),
        resume=bool(row.get("unfinished")),
    )


_ORG_COLUMNS = """
    b.id, b.business_name, b.website, b.business_type, b.metadata,
    (SELECT COUNT(*) FROM organization_vehicles ov
      WHERE ov.organization_id = b.id AND ov.status = 'active') AS active_vehicles,
    (SELECT COUNT(*) FROM nuke_org_crawls c
      WHERE c.organization_id = b.id AND c.started_at IS NOT NULL
        AND (c.finished_at IS NULL OR c.finished_at < c.started_at)) AS unfinished
"""


def find_organization_by_website(db: Database, url: str) -> Organization | None:
    host = website_host(url)
    if not host:
        return None
    rows = db.fetchall(
        f"SELECT {_ORG_COLUMNS} FROM businesses b WHERE lower(b.website) LIKE ? "
        "ORDER BY b.created_at, b.id",
        [f"%{host}%"],
    )
    for row in rows:
        if website_host(row.get("website")) == host:
            return _org(row)
    return None


def get_organization(db: Database, org_id: str) -> Organization | None:
    row = db.fetchone(f"SELECT {_ORG_COLUMNS} FROM businesses b WHERE b.id = ?", [org_id])
    return _org(row) if row else None


def add_organization(
    db: Database,
    website: str,
    *,
    name: str | None = None,
    business_type: str | None = "dealer",
    metadata: dict[str, Any] | None = None,
) -> tuple[Organization, bool]:
    """Find the organization with this website, or create it. Returns (org, created).

    For an existing organization, given ``metadata`` keys are merged in and a
    given name or type fills an empty one.
    """
    with db.transaction():
        existing = find_organization_by_website(db, website)
        if existing:
            merged = {**existing.metadata, **(metadata or {})}
            if merged != existing.metadata or (name and not existing.business_name):
                db.execute(
                    "UPDATE businesses SET metadata = ?, "
                    "business_name = COALESCE(business_name, ?), updated_at = ? WHERE id = ?",
                    [Json(merged), name, db.now(), existing.id],
                )
                existing.metadata = merged
                existing.business_name = existing.business_name or name
            return existing, False
        org_id = new_id()
        now = db.now()
        db.execute(
            "INSERT INTO businesses (id, business_name, website, business_type, is_public, "
            "metadata, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                org_id,
                name or website_host(website),
                website,
                business_type,
                True,
                Json(metadata or {}),
                now,
                now,
            ],
        )
    org = get_organization(db, org_id)
    assert org is not None
    return org, True


@dataclass
class OrganizationPage:
    organizations: list[Organization]  # the page, after the threshold filter
    page_size: int  # organizations in the page before the filter
    total: int  # organizations matching the filters, all pages


def select_organizations(
    db: Database,
    *,
    threshold: int,
    limit: int,
    offset: int = 0,
    business_type: str | None = None,
    organization_id: str | None = None,
) -> OrganizationPage:
    """A page of public organizations with a website, in a stable order
    (``created_at``, then ``id``); the threshold filters within the page.

    An organization whose last crawl never finished (killed) passes the
    threshold too, so that it is resumed.
    """
    where = ["b.is_public = true", "b.website IS NOT NULL", "b.website <> ''"]
    params: list[Any] = []
    if business_type:
        where.append("b.business_type = ?")
        params.append(business_type)
    if organization_id:
        where.append("b.id = ?")
        params.append(organization_id)
    where_sql = " AND ".join(where)
    total = int(db.scalar(f"SELECT COUNT(*) FROM businesses b WHERE {where_sql}", params) or 0)
    rows = db.fetchall(
        f"SELECT {_ORG_COLUMNS} FROM businesses b WHERE {where_sql} "
        "ORDER BY b.created_at, b.id LIMIT ? OFFSET ?",
        [*params, limit, offset],
    )
    orgs = [_org(r) for r in rows]
    selected = [o for o in orgs if o.active_vehicles < threshold or o.resume]
    return OrganizationPage(selected, len(orgs), total)


def mark_crawls_started(db: Database, org_ids: Sequence[str]) -> None:
    now = db.now()
    with db.transaction():
        for org_id in org_ids:
            db.execute(
                "INSERT INTO nuke_org_crawls (organization_id, started_at) VALUES (?, ?) "
                "ON CONFLICT (organization_id) DO UPDATE SET started_at = excluded.started_at",
                [org_id, now],
            )


def record_crawl_result(
    db: Database, org_id: str, summary: dict[str, Any], error: str | None, *, finished: bool
) -> None:
    """Store a crawl's outcome on the organization (``metadata.last_extracted_at``,
    ``metadata.last_error``, ``metadata.last_crawl``) and in ``nuke_org_crawls``."""
    now = db.now()
    with db.transaction():
        row = db.fetchone("SELECT metadata FROM businesses WHERE id = ?", [org_id])
        if row is None:
            return
        meta = loads_json(row["metadata"])
        if not isinstance(meta, dict):  # kept, not lost, when another writer broke it
            meta = {} if meta is None else {"invalid_metadata": meta}
        meta["last_extracted_at"] = str(now)
        meta["last_error"] = error
        meta["last_crawl"] = summary
        db.execute(
            "UPDATE businesses SET metadata = ?, updated_at = ? WHERE id = ?",
            [Json(meta), now, org_id],
        )
        db.execute(
            "INSERT INTO nuke_org_crawls (organization_id, started_at, finished_at, last_error, "
            "summary) VALUES (?, ?, ?, ?, ?) ON CONFLICT (organization_id) DO UPDATE SET "
            "finished_at = excluded.finished_at, last_error = excluded.last_error, "
            "summary = excluded.summary",
            [org_id, now, now if finished else None, error, Json(summary)],
        )


def known_listing_urls(db: Database, org_id: str) -> set[str]:
    rows = db.fetchall(
        "SELECT v.discovery_url FROM vehicles v JOIN organization_vehicles ov "
        "ON ov.vehicle_id = v.id WHERE ov.organization_id = ? AND v.discovery_url IS NOT NULL",
        [org_id],
    )
    return {r["discovery_url"] for r in rows}


# -- vehicles -------------------------------------------------------------------


@dataclass
class VehicleRecord:
    """One listing to upsert; ``discovery_url`` is its canonical URL."""

    organization_id: str
    discovery_url: str
    fields: dict[str, Any]
    image_urls: list[str] = field(default_factory=list)
    extracted_at: str = ""
    extra_metadata: dict[str, Any] = field(default_factory=dict)


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, (Decimal, float, int)) and isinstance(b, (Decimal, float, int)):
        return abs(float(a) - float(b)) < 0.005
    return bool(str(a) == str(b))


def upsert_vehicle(
    db: Database,
    rec: VehicleRecord,
    *,
    external_images: bool,
    batch: _BatchWrites,
    known: _Prefetched,
) -> str:
    """Insert or update one listing, its organization link and its external
    image rows. Returns ``created``, ``updated`` or ``unchanged``.

    Call inside a transaction, from :func:`upsert_vehicles`. One row per listing:
    matched on the canonical ``discovery_url``, then on VIN within the
    organization. Images already downloaded are never turned back into external
    records. New vehicles, organization links and image rows are collected in
    ``batch``, for the caller to write together (:meth:`_BatchWrites.write`, in the
    same transaction); the lookups ``known`` already answered (:func:`_prefetch`: the
    batch's rows, read and locked at once) are not made again.
    """
    fields = {k: v for k, v in rec.fields.items() if k in VEHICLE_FIELDS}
    vin = fields.get("vin")
    if known.answers(rec.discovery_url):
        row = known.by_url.get(rec.discovery_url)
    else:
        batch.write_vehicles(db)
        row = db.fetchone(
            f"SELECT {_COLS} FROM vehicles WHERE discovery_url = ? ORDER BY created_at LIMIT 1",
            [rec.discovery_url],
        )
    if row is None and vin:
        if known.answers_vin(rec.organization_id, vin):
            row = known.by_vin.get(str(vin))
        else:
            batch.write_vehicles(db)
            row = db.fetchone(
                f"SELECT {_COLS} FROM vehicles WHERE origin_organization_id = ? AND vin = ? "
                "ORDER BY created_at LIMIT 1",
                [rec.organization_id, vin],
            )
    known.touched(rec.discovery_url, vin, row)
    now = db.now()
    is_public = bool(fields.get("year") and fields.get("make") and fields.get("model"))
    image_urls = list(rec.image_urls)
    meta_update = {
        **rec.extra_metadata,
        "image_urls": image_urls,
        "image_count": len(image_urls),
        "organization_id": rec.organization_id,
        "extracted_at": rec.extracted_at or str(now),
    }
    if row is None:
        vehicle_id = new_id()
        meta = {**meta_update, "images_backfilled": False}
        names = [
            "id",
            *fields.keys(),
            "discovery_url",
            "is_public",
            "origin_organization_id",
            "profile_origin",
            "origin_metadata",
            "created_at",
            "updated_at",
        ]
        values = [
            vehicle_id,
            *fields.values(),
            rec.discovery_url,
            is_public,
            rec.organization_id,
            PROFILE_ORIGIN,
            Json(meta),
            now,
            now,
        ]
        batch.vehicles.setdefault(tuple(names), []).append(values)
        outcome = "created"
    else:
        batch.write_vehicles(db)
        vehicle_id = row["id"]
        old_meta = loads_json(row["origin_metadata"]) or {}
        changed = {k: v for k, v in fields.items() if v is not None and not _same(row.get(k), v)}
        meta = {**old_meta, **meta_update}
        if old_meta.get("image_urls") != image_urls:
            new_urls = set(image_urls) - set(old_meta.get("image_urls") or [])
            meta["images_backfilled"] = bool(old_meta.get("images_backfilled")) and not new_urls
        else:
            meta["images_backfilled"] = bool(old_meta.get("images_backfilled", False))
        meta_changed = {k: v for k, v in meta.items() if k != "extracted_at"} != {
            k: v for k, v in old_meta.items() if k != "extracted_at"
        }
        sets = [f"{k} = ?" for k in changed]
        params: list[Any] = list(changed.values())
        sets += ["origin_metadata = ?", "updated_at = ?"]
        params += [Json(meta), now]
        if is_public:
            sets.append("is_public = ?")
            params.append(True)
        db.execute(f"UPDATE vehicles SET {', '.join(sets)} WHERE id = ?", [*params, vehicle_id])
        outcome = "updated" if (changed or meta_changed) else "unchanged"

    status = "past" if fields.get("sale_status") == "sold" else "active"
    batch.links.append(
        [new_id(), rec.organization_id, vehicle_id, RELATIONSHIP_TYPE, status, now, now]
    )
    if external_images and image_urls:
        if vehicle_id in batch.images:
            # the same listing came earlier in this batch: its rows go in first
            insert_image_rows(db, batch.images.pop(vehicle_id))
        batch.images[vehicle_id] = _external_image_rows(
            db, vehicle_id, image_urls, now, new=outcome == "created"
        )
    return outcome


_LINK_COLUMNS = (
    "id",
    "organization_id",
    "vehicle_id",
    "relationship_type",
    "status",
    "created_at",
    "updated_at",
)
_LINK_CONFLICT = (
    "ON CONFLICT (organization_id, vehicle_id, relationship_type) DO UPDATE SET "
    "status = excluded.status, updated_at = excluded.updated_at"
)


@dataclass
class _BatchWrites:
    """A batch's new vehicles (by column list), organization links and image rows (by
    vehicle), written together (:meth:`Database.insert_rows`): a few statements a
    batch where a statement a row took a hundred round trips to PostgreSQL.

    :func:`upsert_vehicle` writes the vehicles before it reads or updates anything
    itself (:meth:`write_vehicles`), so that it sees the batch's earlier records;
    links and image rows wait for :meth:`write`, which puts each table's rows in
    after the rows they refer to."""

    vehicles: dict[tuple[str, ...], list[list[Any]]] = field(default_factory=dict)
    links: list[list[Any]] = field(default_factory=list)
    images: dict[str, list[list[Any]]] = field(default_factory=dict)

    def write_vehicles(self, db: Database) -> None:
        for names, rows in self.vehicles.items():
            db.insert_rows("vehicles", names, rows)
        self.vehicles.clear()

    def write(self, db: Database) -> None:
        self.write_vehicles(db)
        db.insert_rows(
            "organization_vehicles", _LINK_COLUMNS, self.links, on_conflict=_LINK_CONFLICT
        )
        self.links.clear()
        insert_image_rows(db, [row for rows in self.images.values() for row in rows])
        self.images.clear()


def _external_image_rows(
    db: Database, vehicle_id: str, urls: list[str], now: Any, *, new: bool
) -> list[list[Any]]:
    """The ``vehicle_images`` rows still missing for ``urls`` (a vehicle just
    created has none yet, so its images need no lookup)."""
    rows = (
        []
        if new
        else db.fetchall(
            "SELECT source_url, image_url, is_primary FROM vehicle_images WHERE vehicle_id = ?",
            [vehicle_id],
        )
    )
    known = {r["source_url"] for r in rows} | {r["image_url"] for r in rows}
    has_primary = any(r["is_primary"] for r in rows)
    missing = [(position, url) for position, url in enumerate(urls) if url not in known]
    return [
        [
            image_id,
            vehicle_id,
            url,
            url,
            True,
            position,
            not has_primary and position == 0,
            now,
            now,
        ]
        for image_id, (position, url) in zip(new_ids(len(missing)), missing, strict=True)
    ]


IMAGE_ROW_COLUMNS = (
    "id",
    "vehicle_id",
    "image_url",
    "source_url",
    "is_external",
    "position",
    "is_primary",
    "created_at",
    "updated_at",
)


def insert_image_rows(db: Database, rows: list[list[Any]]) -> None:
    """Insert external image rows built by :func:`upsert_vehicle` in one statement batch."""
    db.insert_rows("vehicle_images", IMAGE_ROW_COLUMNS, rows)


_COLS = ", ".join(("id", "discovery_url", "origin_metadata", *VEHICLE_FIELDS))


@dataclass
class _Prefetched:
    """A batch's existing vehicles, read in two queries instead of one or two per
    record. An answer holds until a record of the batch writes that listing or VIN,
    or the vehicle it found (whose URL and old VIN then answer nothing): later
    records look again, and see the write."""

    organization_id: str | None
    by_url: dict[str, dict[str, Any]]
    by_vin: dict[str, dict[str, Any]]
    urls: set[str]
    vins: set[str]

    def answers(self, url: str) -> bool:
        return url in self.urls

    def answers_vin(self, organization_id: str, vin: Any) -> bool:
        return organization_id == self.organization_id and str(vin) in self.vins

    def touched(self, url: str, vin: Any, row: dict[str, Any] | None) -> None:
        self.urls.discard(url)
        self.vins.discard(str(vin))
        if row is not None:
            self.urls.discard(row["discovery_url"])
            self.vins.discard(str(row["vin"]))


def _prefetch(db: Database, records: Sequence[VehicleRecord]) -> _Prefetched:
    """Lock (PostgreSQL) and read the batch's existing rows by URL, then by VIN
    within the organization (when the whole batch has one)."""
    urls = sorted({r.discovery_url for r in records})
    if db.dialect == "postgresql":
        # Serialises two workers upserting the same listing at once; always in the
        # same (sorted) order, so that two overlapping batches cannot deadlock.
        db.execute("SELECT pg_advisory_xact_lock(hashtext(k)) FROM unnest(?::text[]) AS k", [urls])
    by_url: dict[str, dict[str, Any]] = {}
    for row in _rows_in(db, "discovery_url = ", urls):
        by_url.setdefault(row["discovery_url"], row)
    orgs = {r.organization_id for r in records}
    org = next(iter(orgs)) if len(orgs) == 1 else None
    vins = sorted({str(r.fields["vin"]) for r in records if r.fields.get("vin")})
    by_vin: dict[str, dict[str, Any]] = {}
    if org is not None and vins:
        for row in _rows_in(db, "origin_organization_id = ? AND vin = ", vins, org):
            by_vin.setdefault(row["vin"], row)
    return _Prefetched(org, by_url, by_vin, set(urls), set(vins) if org is not None else set())


def _rows_in(db: Database, where: str, values: list[str], *before: Any) -> list[dict[str, Any]]:
    """``SELECT`` the vehicles whose column (the end of ``where``) is one of ``values``,
    oldest first (``before``: the parameters of the rest of ``where``)."""
    if db.dialect == "postgresql":
        cond, params = f"{where}ANY(?)", [*before, values]
    else:
        cond = where.rstrip().removesuffix("=") + f" IN ({', '.join('?' * len(values))})"
        params = [*before, *values]
    return db.fetchall(f"SELECT {_COLS} FROM vehicles WHERE {cond} ORDER BY created_at", params)


def upsert_vehicles(
    db: Database, records: Sequence[VehicleRecord], *, external_images: bool = True
) -> list[str]:
    """Upsert a batch in one transaction; if the batch fails, each record is
    retried alone so that one bad record cannot lose the others. A record
    that still fails gets the outcome ``error: <message>``."""
    try:
        with db.transaction():
            batch = _BatchWrites()
            known = _prefetch(db, records)
            outcomes = [
                upsert_vehicle(db, r, external_images=external_images, batch=batch, known=known)
                for r in records
            ]
            batch.write(db)
            return outcomes
    except Exception as exc:  # noqa: BLE001 - narrowed below, per record
        if len(records) == 1:
            logger.warning("Could not store %s: %s", records[0].discovery_url, exc)
            return [f"error: {type(exc).__name__}: {exc}"]
    outcomes = []
    for rec in records:
        outcomes.extend(upsert_vehicles(db, [rec], external_images=external_images))
    return outcomes


# -- status ----------------------------------------------------------------------


def status_counts(db: Database) -> dict[str, int]:
    """The figures an operator watches (``scrapy status``)."""
    image_count = json_text(db, "v.origin_metadata", "image_count")
    backfilled = json_text(db, "v.origin_metadata", "images_backfilled")
    true_values = "('true', '1')"
    queries = {
        "organizations": "SELECT COUNT(*) FROM businesses",
        "organizations_extracted": (
            "SELECT COUNT(DISTINCT organization_id) FROM organization_vehicles"
        ),
        "vehicles": "SELECT COUNT(*) FROM vehicles",
        "public_vehicles": "SELECT COUNT(*) FROM vehicles WHERE is_public = true",
        "vehicles_with_image_urls": (
            f"SELECT COUNT(*) FROM vehicles v WHERE CAST({image_count} AS INTEGER) > 0"
        ),
        "external_images": "SELECT COUNT(*) FROM vehicle_images WHERE is_external = true",
        "vehicles_with_external_images": (
            "SELECT COUNT(DISTINCT vehicle_id) FROM vehicle_images WHERE is_external = true"
        ),
        "stored_images": (
            "SELECT COUNT(*) FROM vehicle_images "
            "WHERE is_external = false AND storage_path IS NOT NULL"
        ),
        "vehicles_with_stored_images": (
            "SELECT COUNT(DISTINCT vehicle_id) FROM vehicle_images "
            "WHERE is_external = false AND storage_path IS NOT NULL"
        ),
        "vehicles_backfilled": (
            f"SELECT COUNT(*) FROM vehicles v WHERE CAST({backfilled} AS TEXT) IN {true_values}"
        ),
        "images_never_analysed": (
            "SELECT COUNT(*) FROM vehicle_images WHERE ai_last_scanned IS NULL"
        ),
    }
    return {name: int(db.scalar(sql) or 0) for name, sql in queries.items()}
