"""The image backfill's SQL: claiming work with leases, recording results, status.

Knows nothing of Scrapy; the ``image_backfill`` spider and its pipeline call these
through :class:`~nuke_crawl.db.connection.AsyncDatabase`.

Work selection
--------------
A vehicle needs backfill while ``origin_metadata.images_backfilled`` is not true
(the ``org`` crawl writes ``false`` and turns it back to ``false`` when new image
URLs appear). Vehicles are claimed highest ``images_priority`` first (0 unless an operator
set one: :func:`set_priority`), then newest first, ``batch_size`` at a time, with a
lease (``images_lease_owner``/``images_lease_until``): ``FOR UPDATE SKIP LOCKED``
on PostgreSQL, an UPDATE inside ``BEGIN IMMEDIATE`` on SQLite. A killed worker's
lease expires and its vehicles return. Image URLs known only from
``origin_metadata.image_urls`` get their external ``vehicle_images`` row in the
claim's transaction, so every image has a row to record its outcome on.

Failures
--------
*Permanent* reasons (``http_404``, ``http_410``, other 4xx, ``not_image``, ``empty``,
``too_large``, ``decompression_bomb``, ``too_small``, ``truncated``, ``corrupt``,
``unsupported_format``, ``refused``, ``storage_rejected``: the store's API refused the
image) settle the image at once: it stays external (its
vendor URL is the fallback) and is only retried with ``retry_failed``. *Transient*
reasons (``timeout``, ``connection``, ``http_5xx``, ``http_429``, ``http_408``,
``storage``) are retried by later runs after a growing backoff
(``retry_backoff * 2 ** (attempts - 1)``), until ``max_attempts`` attempts; then the
image counts as permanently failed too. A vehicle is complete when each of its selected
images is stored or permanently failed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .connection import Database, Json, loads_json, new_id

logger = logging.getLogger(__name__)

PERMANENT_REASONS = frozenset(
    {
        "http_404",
        "http_410",
        "http_4xx",
        "not_image",
        "empty",
        "too_large",
        "decompression_bomb",
        "too_small",
        "truncated",
        "corrupt",
        "unsupported_format",
        "refused",
        "bad_url",
        "storage_rejected",
    }
)


def is_permanent(reason: str | None) -> bool:
    """Whether a failure reason settles the image (no automatic retry)."""
    if not reason:
        return False
    if reason in PERMANENT_REASONS:
        return True
    return reason.startswith("http_4") and reason not in ("http_408", "http_429")


def display_url(image_row: Mapping[str, Any]) -> str | None:
    """The URL a front end should show for a ``vehicle_images`` row.

    The stored copy's public ``image_url`` once the image is stored
    (``is_external`` false and a ``storage_path``), else the vendor URL
    (``source_url``, then ``image_url``): an image that was never downloaded,
    or whose download failed, keeps showing from its original host.
    """
    external = image_row.get("is_external")
    stored = not _truthy(external) and bool(image_row.get("storage_path"))
    if stored and image_row.get("image_url"):
        return str(image_row["image_url"])
    return image_row.get("source_url") or image_row.get("image_url") or None


def _truthy(value: Any) -> bool:
    return value in (True, 1, "1", "true", "t")


def _todo_sql(db: Database) -> str:
    """SQL true for a vehicle whose images are not backfilled (matches the partial index)."""
    if db.dialect == "postgresql":
        return "(v.origin_metadata->>'images_backfilled') IS DISTINCT FROM 'true'"
    return "COALESCE(json_extract(v.origin_metadata, '$.images_backfilled'), 0) NOT IN (1, 'true')"


def _done_sql(db: Database) -> str:
    if db.dialect == "postgresql":
        return "(v.origin_metadata->>'images_backfilled') = 'true'"
    return "json_extract(v.origin_metadata, '$.images_backfilled') IN (1, 'true')"


def _parse_ts(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# -- work --------------------------------------------------------------------------


@dataclass
class ImageWork:
    """One image to download for a vehicle."""

    image_id: str
    url: str
    position: int | None
    is_primary: bool
    attempts: int = 0


@dataclass
class VehicleWork:
    """A claimed vehicle: what to download, and what its stored images already hold."""

    vehicle_id: str
    listing_url: str | None
    images: list[ImageWork] = field(default_factory=list)
    organization_id: str | None = None  # the vehicle's origin organization (store metadata)
    selected_ids: list[str] = field(default_factory=list)  # every image counted for completion
    known_hashes: dict[str, dict[str, Any]] = field(default_factory=dict)  # sha256 -> stored row
    waiting: int = 0  # transient failures still in their backoff


@dataclass(frozen=True)
class Selection:
    """Which vehicles a claim may take (the spider's arguments)."""

    organization_id: str | None = None
    vehicle_id: str | None = None
    vehicle_ids: tuple[str, ...] = ()  # only these (with vehicle_id: both must hold)
    created_after: datetime | None = None
    retry_failed: bool = False
    run_started: datetime | None = None  # retry_failed: vehicles checked since are skipped
    min_priority: int | None = None  # only vehicles with images_priority >= this


def _where(db: Database, sel: Selection, now: Any) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if sel.retry_failed:
        clauses.append(
            f"({_todo_sql(db)} OR EXISTS (SELECT 1 FROM vehicle_images i "
            "WHERE i.vehicle_id = v.id AND i.is_external = true AND i.download_error IS NOT NULL))"
        )
        if sel.run_started is not None:
            clauses.append("(v.images_checked_at IS NULL OR v.images_checked_at < ?)")
            params.append(db.ts(sel.run_started))
    else:
        clauses.append(_todo_sql(db))
        clauses.append("(v.images_next_attempt_at IS NULL OR v.images_next_attempt_at <= ?)")
        params.append(now)
    clauses.append("(v.images_lease_until IS NULL OR v.images_lease_until < ?)")
    params.append(now)
    if sel.vehicle_id:
        clauses.append("v.id = ?")
        params.append(sel.vehicle_id)
    if sel.vehicle_ids:
        clauses.append(f"v.id IN ({', '.join('?' * len(sel.vehicle_ids))})")
        params.extend(sel.vehicle_ids)
    if sel.organization_id:
        clauses.append(
            "(v.origin_organization_id = ? OR EXISTS (SELECT 1 FROM organization_vehicles ov "
            "WHERE ov.vehicle_id = v.id AND ov.organization_id = ?))"
        )
        params += [sel.organization_id, sel.organization_id]
    if sel.created_after is not None:
        clauses.append("v.created_at >= ?")
        params.append(db.ts(sel.created_after))
    if sel.min_priority is not None:
        clauses.append("v.images_priority >= ?")
        params.append(sel.min_priority)
    return " AND ".join(clauses), params


def claim_sql(db: Database, sel: Selection, now: Any, limit: int) -> tuple[str, list[Any]]:
    """The SELECT that finds claimable vehicle ids (PostgreSQL: locked, skip locked):
    highest ``images_priority`` first, then newest first (the order of the
    ``ix_vehicles_images_queue`` index, so a claim reads only the rows it takes)."""
    where, params = _where(db, sel, now)
    sql = (
        f"SELECT v.id FROM vehicles v WHERE {where} "
        "ORDER BY v.images_priority DESC, v.created_at DESC, v.id DESC LIMIT ?"
    )
    if db.dialect == "postgresql":
        sql += " FOR UPDATE OF v SKIP LOCKED"
    return sql, [*params, limit]


def count_claimable(db: Database, selection: Selection = Selection()) -> int:
    """How many vehicles a claim could take now (for progress lines)."""
    where, params = _where(db, selection, db.now())
    return int(db.scalar(f"SELECT COUNT(*) FROM vehicles v WHERE {where}", params) or 0)


def claim_vehicles(
    db: Database,
    owner: str,
    *,
    limit: int,
    lease_seconds: float,
    selection: Selection = Selection(),
    max_images: int = 20,
    max_attempts: int = 5,
    synchronous_commit: bool = False,
) -> list[VehicleWork]:
    """Claim up to ``limit`` vehicles for ``owner`` and return their work.

    One transaction: lock/lease the vehicles, give image URLs known only from
    ``origin_metadata.image_urls`` their external rows, read the image rows.

    On PostgreSQL the claim commits with ``synchronous_commit = off`` (unless
    ``synchronous_commit`` is true): it returns without waiting for its WAL flush, which
    was most of a claim's worst case on a busy server. Nothing is lost by it:

    - only a crash of the PostgreSQL server (not of a worker) can lose such a commit, and
      then only its last few hundred milliseconds (``wal_writer_delay``); the database is
      left as if the claim never happened: the vehicles unleased, the image rows it created
      from ``origin_metadata.image_urls`` absent (the next claim creates them again from
      the URLs, which are still there). Every worker lost its connection in that crash.
    - a worker recording a result after such a crash updates a row by its id: a row that
      no longer exists is not updated, so nothing is half-recorded; the file written at
      its deterministic path is overwritten by the download that the next claim makes.
      At worst an image in flight during the crash is downloaded a second time, to the
      same path (a server crash already costs the work in flight).
    - WAL is flushed in order: the first synchronous commit after the claim (a stored
      image, a failure, a vehicle completed) makes the claim durable too, so no recorded
      result can outlive the claim it belongs to.
    """
    now_dt = datetime.now(UTC)
    now = db.ts(now_dt)
    until = db.ts(now_dt + timedelta(seconds=lease_seconds))
    with db.transaction():
        if db.dialect == "postgresql" and not synchronous_commit:
            db.execute("SET LOCAL synchronous_commit = off")
        sql, params = claim_sql(db, selection, now, limit)
        ids = [r["id"] for r in db.fetchall(sql, params)]
        if not ids:
            return []
        marks = ", ".join("?" * len(ids))
        db.execute(
            f"UPDATE vehicles SET images_lease_owner = ?, images_lease_until = ? "
            f"WHERE id IN ({marks})",
            [owner, until, *ids],
        )
        vehicles = db.fetchall(
            f"SELECT id, listing_url, discovery_url, origin_metadata, created_at, "
            f"origin_organization_id FROM vehicles WHERE id IN ({marks})",
            ids,
        )
        rows = db.fetchall(
            "SELECT id, vehicle_id, image_url, source_url, storage_path, is_external, position, "
            "is_primary, file_hash, download_attempts, download_error, download_next_at "
            f"FROM vehicle_images WHERE vehicle_id IN ({marks})",
            ids,
        )
        by_vehicle: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
        for row in rows:
            by_vehicle[row["vehicle_id"]].append(row)
        new_rows: list[list[Any]] = []
        for vehicle in vehicles:
            have = by_vehicle[vehicle["id"]]
            known = {r["source_url"] for r in have} | {r["image_url"] for r in have}
            has_primary = any(_truthy(r["is_primary"]) for r in have)
            urls = (loads_json(vehicle["origin_metadata"]) or {}).get("image_urls") or []
            for position, url in enumerate(urls):
                if not isinstance(url, str) or not url or url in known:
                    continue
                known.add(url)
                row = {
                    "id": new_id(),
                    "vehicle_id": vehicle["id"],
                    "image_url": url,
                    "source_url": url,
                    "storage_path": None,
                    "is_external": True,
                    "position": position,
                    "is_primary": not has_primary and position == 0,
                    "file_hash": None,
                    "download_attempts": 0,
                    "download_error": None,
                    "download_next_at": None,
                }
                has_primary = has_primary or row["is_primary"]
                have.append(row)
                new_rows.append(
                    [
                        row["id"],
                        vehicle["id"],
                        url,
                        url,
                        True,
                        position,
                        row["is_primary"],
                        now,
                        now,
                    ]
                )
        db.executemany(
            "INSERT INTO vehicle_images (id, vehicle_id, image_url, source_url, is_external, "
            "position, is_primary, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            new_rows,
        )
    order = {vid: n for n, vid in enumerate(ids)}
    vehicles.sort(key=lambda v: order[v["id"]])
    return [
        _work(v, by_vehicle[v["id"]], now_dt, max_images, max_attempts, selection.retry_failed)
        for v in vehicles
    ]


def _work(
    vehicle: dict[str, Any],
    rows: list[dict[str, Any]],
    now: datetime,
    max_images: int,
    max_attempts: int,
    retry_failed: bool,
) -> VehicleWork:
    rows.sort(key=lambda r: (r["position"] is None, r["position"] or 0, str(r["id"])))
    selected = rows[:max_images]
    work = VehicleWork(
        vehicle_id=vehicle["id"],
        listing_url=vehicle.get("listing_url") or vehicle.get("discovery_url"),
        selected_ids=[r["id"] for r in selected],
        organization_id=(
            str(vehicle["origin_organization_id"])
            if vehicle.get("origin_organization_id")
            else None
        ),
    )
    for row in rows:
        if not _truthy(row["is_external"]) and row.get("file_hash") and row.get("storage_path"):
            work.known_hashes.setdefault(row["file_hash"], row)
    for row in selected:
        if not _truthy(row["is_external"]):
            continue
        url = row.get("source_url") or row.get("image_url")
        if not url:
            continue
        attempts = int(row.get("download_attempts") or 0)
        error = row.get("download_error")
        if error and not retry_failed:
            if is_permanent(error) or attempts >= max_attempts:
                continue  # settled
            next_at = _parse_ts(row.get("download_next_at"))
            if next_at is not None and next_at > now:
                work.waiting += 1
                continue
        work.images.append(
            ImageWork(row["id"], url, row.get("position"), _truthy(row["is_primary"]), attempts)
        )
    return work


def select_preview(
    db: Database,
    *,
    limit: int,
    selection: Selection = Selection(),
    max_images: int = 20,
    max_attempts: int = 5,
) -> list[VehicleWork]:
    """What a claim would take, without claiming or writing anything (``dry_run``)."""
    now_dt = datetime.now(UTC)
    sql, params = claim_sql(db, selection, db.ts(now_dt), limit)
    sql = sql.replace(" FOR UPDATE OF v SKIP LOCKED", "")
    ids = [r["id"] for r in db.fetchall(sql, params)]
    out = []
    for vid in ids:
        vehicle = db.fetchone(
            "SELECT id, listing_url, discovery_url, origin_metadata FROM vehicles WHERE id = ?",
            [vid],
        )
        assert vehicle is not None
        rows = db.fetchall(
            "SELECT id, vehicle_id, image_url, source_url, storage_path, is_external, position, "
            "is_primary, file_hash, download_attempts, download_error, download_next_at "
            "FROM vehicle_images WHERE vehicle_id = ?",
            [vid],
        )
        known = {r["source_url"] for r in rows} | {r["image_url"] for r in rows}
        urls = (loads_json(vehicle["origin_metadata"]) or {}).get("image_urls") or []
        for position, url in enumerate(urls):
            if isinstance(url, str) and url and url not in known:
                known.add(url)
                rows.append(
                    {
                        "id": f"new:{position}",
                        "vehicle_id": vid,
                        "image_url": url,
                        "source_url": url,
                        "storage_path": None,
                        "is_external": True,
                        "position": position,
                        "is_primary": False,
                        "file_hash": None,
                        "download_attempts": 0,
                        "download_error": None,
                        "download_next_at": None,
                    }
                )
        out.append(_work(vehicle, rows, now_dt, max_images, max_attempts, selection.retry_failed))
    return out


def set_priority(
    db: Database,
    priority: int,
    *,
    vehicle_ids: Sequence[str] = (),
    organization_id: str | None = None,
) -> int:
    """Give vehicles a backfill priority (higher is claimed first; 0 is the default);
    returns how many vehicles changed. Either ``vehicle_ids`` or ``organization_id``
    (its vehicles, as in the ``organization_id`` argument) must be given."""
    if not vehicle_ids and not organization_id:
        raise ValueError("set_priority needs vehicle_ids or organization_id")
    clauses: list[str] = []
    params: list[Any] = [int(priority)]
    if vehicle_ids:
        clauses.append(f"id IN ({', '.join('?' * len(vehicle_ids))})")
        params += list(vehicle_ids)
    if organization_id:
        clauses.append(
            "(origin_organization_id = ? OR id IN (SELECT vehicle_id FROM organization_vehicles "
            "WHERE organization_id = ?))"
        )
        params += [organization_id, organization_id]
    return db.execute(
        f"UPDATE vehicles SET images_priority = ? WHERE {' AND '.join(clauses)}", params
    )


def renew_leases(db: Database, owner: str, vehicle_ids: Sequence[str], lease_seconds: float) -> int:
    """Extend ``owner``'s leases on vehicles still in work."""
    if not vehicle_ids:
        return 0
    until = db.ts(datetime.now(UTC) + timedelta(seconds=lease_seconds))
    marks = ", ".join("?" * len(vehicle_ids))
    return db.execute(
        f"UPDATE vehicles SET images_lease_until = ? WHERE images_lease_owner = ? "
        f"AND id IN ({marks})",
        [until, owner, *vehicle_ids],
    )


def release_leases(db: Database, owner: str) -> int:
    """Give back every lease ``owner`` still holds (a clean shutdown)."""
    return db.execute(
        "UPDATE vehicles SET images_lease_owner = NULL, images_lease_until = NULL "
        "WHERE images_lease_owner = ?",
        [owner],
    )


# -- outcomes --------------------------------------------------------------------


@dataclass
class StoredImage:
    """A file durably stored for one image row."""

    image_id: str
    vehicle_id: str
    storage_path: str
    public_url: str
    file_hash: str
    file_size: int
    mime_type: str
    width: int
    height: int
    variants: dict[str, Any]


def record_stored(db: Database, images: Sequence[StoredImage]) -> None:
    """Turn external rows into stored images, all in one transaction (group commit:
    one WAL flush for many images; each image's row changes in one statement, so each
    image is atomic on its own). The statements go out together (psycopg's pipeline
    mode on PostgreSQL): one round trip for the batch, not one per image."""
    now = db.now()
    with db.transaction():
        db.executemany(
            "UPDATE vehicle_images SET is_external = false, storage_path = ?, image_url = ?, "
            "source_url = COALESCE(source_url, image_url), file_hash = ?, file_size = ?, "
            "mime_type = ?, width = ?, height = ?, variants = ?, download_error = NULL, "
            "download_error_detail = NULL, download_next_at = NULL, "
            "download_attempts = COALESCE(download_attempts, 0) + 1, updated_at = ? "
            "WHERE id = ?",
            [
                [
                    img.storage_path,
                    img.public_url,
                    img.file_hash,
                    img.file_size,
                    img.mime_type,
                    img.width,
                    img.height,
                    Json(img.variants),
                    now,
                    img.image_id,
                ]
                for img in images
            ],
        )


@dataclass
class FailedImage:
    image_id: str
    reason: str
    detail: str


def record_failed(
    db: Database, images: Iterable[FailedImage], *, retry_backoff: float = 3600.0
) -> None:
    """Record failures: attempts + 1, the reason, and for a transient one when to retry."""
    for img in images:
        now_dt = datetime.now(UTC)
        with db.transaction():
            row = db.fetchone(
                "SELECT download_attempts FROM vehicle_images WHERE id = ?", [img.image_id]
            )
            if row is None:
                continue
            attempts = int(row["download_attempts"] or 0) + 1
            next_at = None
            if not is_permanent(img.reason):
                next_at = db.ts(now_dt + timedelta(seconds=retry_backoff * 2 ** (attempts - 1)))
            db.execute(
                "UPDATE vehicle_images SET download_attempts = ?, download_error = ?, "
                "download_error_detail = ?, download_next_at = ?, download_failed_at = ?, "
                "updated_at = ? WHERE id = ? AND is_external = true",
                [
                    attempts,
                    img.reason,
                    img.detail[:500],
                    next_at,
                    db.ts(now_dt),
                    db.ts(now_dt),
                    img.image_id,
                ],
            )


@dataclass
class VehicleOutcome:
    vehicle_id: str
    complete: bool
    stored: int
    failed: int
    waiting: int
    last_error: str | None


def complete_vehicle(
    db: Database,
    vehicle_id: str,
    owner: str,
    selected_ids: Sequence[str],
    *,
    max_attempts: int = 5,
) -> VehicleOutcome:
    """Settle a vehicle after its images were tried, and release its lease.

    Complete when every selected image is stored or permanently failed:
    ``origin_metadata`` gains ``images_backfilled: true``, ``images_backfilled_at``,
    ``images_stored``, ``images_failed``, ``images_last_error``, and
    ``primary_image_url`` is set if empty. Otherwise the vehicle waits until its
    earliest transient retry (``images_next_attempt_at``).
    """
    now_dt = datetime.now(UTC)
    now = db.ts(now_dt)
    with db.transaction():
        lock = " FOR UPDATE" if db.dialect == "postgresql" else ""
        vehicle = db.fetchone(
            f"SELECT origin_metadata, primary_image_url FROM vehicles WHERE id = ?{lock}",
            [vehicle_id],
        )
        if vehicle is None:
            return VehicleOutcome(vehicle_id, False, 0, 0, 0, None)
        rows = db.fetchall(
            "SELECT id, image_url, storage_path, is_external, is_primary, position, "
            "download_attempts, download_error, download_error_detail, download_next_at, "
            "download_failed_at FROM vehicle_images WHERE vehicle_id = ?",
            [vehicle_id],
        )
        selected = set(selected_ids)
        stored = failed = waiting = 0
        next_at: datetime | None = None
        last_error: tuple[str, str] | None = None
        for row in rows:
            if row["id"] not in selected:
                continue
            if not _truthy(row["is_external"]) and row["storage_path"]:
                stored += 1
                continue
            error = row["download_error"]
            if not error:
                waiting += 1  # never tried (e.g. the run stopped early)
                continue
            failed_at = str(row["download_failed_at"] or "")
            if last_error is None or failed_at >= last_error[0]:
                last_error = (failed_at, f"{error}: {row['download_error_detail'] or ''}".strip())
            if is_permanent(error) or int(row["download_attempts"] or 0) >= max_attempts:
                failed += 1
            else:
                waiting += 1
                when = _parse_ts(row["download_next_at"])
                if when is not None and (next_at is None or when < next_at):
                    next_at = when
        meta = loads_json(vehicle["origin_metadata"]) or {}
        meta["images_stored"] = stored
        meta["images_failed"] = failed
        meta["images_last_error"] = last_error[1] if last_error else None
        complete = waiting == 0
        sets = [
            "images_lease_owner = NULL",
            "images_lease_until = NULL",
            "images_checked_at = ?",
            "updated_at = ?",
        ]
        params: list[Any] = [now, now]
        if complete:
            meta["images_backfilled"] = True
            meta["images_backfilled_at"] = now_dt.isoformat()
            sets.append("images_next_attempt_at = NULL")
            if not vehicle["primary_image_url"]:
                primary = _primary_url(rows)
                if primary:
                    sets.append("primary_image_url = ?")
                    params.append(primary)
        else:
            sets.append("images_next_attempt_at = ?")
            params.append(db.ts(next_at) if next_at else None)
        sets.append("origin_metadata = ?")
        params.append(Json(meta))
        db.execute(
            f"UPDATE vehicles SET {', '.join(sets)} WHERE id = ? "
            "AND (images_lease_owner = ? OR images_lease_owner IS NULL)",
            [*params, vehicle_id, owner],
        )
    return VehicleOutcome(
        vehicle_id, complete, stored, failed, waiting, last_error[1] if last_error else None
    )


def _primary_url(rows: list[dict[str, Any]]) -> str | None:
    stored = [r for r in rows if not _truthy(r["is_external"]) and r["storage_path"]]
    if not stored:
        return None
    stored.sort(
        key=lambda r: (not _truthy(r["is_primary"]), r["position"] is None, r["position"] or 0)
    )
    return str(stored[0]["image_url"])


# -- status ----------------------------------------------------------------------


def backfill_status(db: Database, *, examples: int = 3) -> dict[str, Any]:
    """The backfill's figures for ``scrapy status`` (``--json``: the same dict).

    - ``totalVehicles``: vehicles with at least one image (URL or row).
    - ``needingProcessing``: of those, vehicles not backfilled yet.
    - ``fullyProcessed``: backfilled with every selected image stored.
    - ``partiallyProcessed``: backfilled with some images failed, or not
      backfilled yet but with at least one image stored.
    - ``imagesStored``, ``imagesExternal``, ``imagesFailed`` and
      ``imagesFailedByReason`` (``{reason: count}``), with a few example URLs per reason
      in ``failedExamples``.
    """
    count = _json_text(db, "image_count")
    failed = _json_text(db, "images_failed")
    has_images = (
        f"(CAST(COALESCE({count}, '0') AS INTEGER) > 0 OR EXISTS "
        "(SELECT 1 FROM vehicle_images i WHERE i.vehicle_id = v.id))"
    )
    stored_any = (
        "EXISTS (SELECT 1 FROM vehicle_images i WHERE i.vehicle_id = v.id "
        "AND i.is_external = false AND i.storage_path IS NOT NULL)"
    )
    no_failed = f"CAST(COALESCE({failed}, '0') AS INTEGER) = 0"

    def n(sql: str) -> int:
        return int(db.scalar(sql) or 0)

    out: dict[str, Any] = {
        "totalVehicles": n(f"SELECT COUNT(*) FROM vehicles v WHERE {has_images}"),
        "needingProcessing": n(
            f"SELECT COUNT(*) FROM vehicles v WHERE {has_images} AND {_todo_sql(db)}"
        ),
        "fullyProcessed": n(
            f"SELECT COUNT(*) FROM vehicles v WHERE {_done_sql(db)} AND {has_images} "
            f"AND {no_failed}"
        ),
        "partiallyProcessed": n(
            f"SELECT COUNT(*) FROM vehicles v WHERE {has_images} AND (({_done_sql(db)} AND NOT "
            f"{no_failed}) OR ({_todo_sql(db)} AND {stored_any}))"
        ),
        "imagesStored": n(
            "SELECT COUNT(*) FROM vehicle_images WHERE is_external = false "
            "AND storage_path IS NOT NULL"
        ),
        "imagesExternal": n("SELECT COUNT(*) FROM vehicle_images WHERE is_external = true"),
    }
    reasons = db.fetchall(
        "SELECT download_error AS reason, COUNT(*) AS n FROM vehicle_images "
        "WHERE is_external = true AND download_error IS NOT NULL "
        "GROUP BY download_error ORDER BY COUNT(*) DESC"
    )
    by_reason = {r["reason"]: int(r["n"]) for r in reasons}
    out["imagesFailed"] = sum(by_reason.values())
    out["imagesFailedByReason"] = by_reason
    out["failedExamples"] = {
        reason: [
            r["source_url"]
            for r in db.fetchall(
                "SELECT source_url FROM vehicle_images WHERE is_external = true "
                "AND download_error = ? ORDER BY download_failed_at DESC LIMIT ?",
                [reason, examples],
            )
        ]
        for reason in list(by_reason)[:20]
    }
    return out


def _json_text(db: Database, key: str) -> str:
    if db.dialect == "postgresql":
        return f"(v.origin_metadata->>'{key}')"
    return f"json_extract(v.origin_metadata, '$.{key}')"
