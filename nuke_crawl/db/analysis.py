"""What the ``image_analysis`` spider reads and writes, as plain functions of a Database.

Knows nothing of Scrapy (the spider and its pipeline call these through
:class:`~nuke_crawl.db.connection.AsyncDatabase`); it knows the analysis results
(:mod:`nuke_crawl.analysis.results`), which are pure dataclasses.

The work queue is ``vehicle_images`` itself: an image is *pending* while
``ai_last_scanned IS NULL``, it belongs to an existing vehicle, and ``image_backfill``
did not fail it permanently (a 404, not an image...: it has no stored copy, and a
download would fail again). A worker *claims* a
batch (newest first) by writing its name and a lease expiry into ``ai_lease_owner`` /
``ai_lease_until``; other workers skip leased images until the lease expires, so
parallel runs never analyse one image twice and a killed run's images return to the
pool. On PostgreSQL the claim uses ``FOR UPDATE SKIP LOCKED``; SQLite serialises
writers (``BEGIN IMMEDIATE``).

An attempt is counted (``ai_attempts + 1``, :func:`count_attempt`) before the
providers are called, so that a paid call whose outcome cannot be written (or whose
process dies) still counts against ``max_attempts``. Text written is cleaned of what
the databases refuse (:func:`clean_for_db`: NUL, lone surrogates). A failed image gets
``ai_error`` (a reason such as
``rate_limited`` or ``invalid_image``), ``ai_error_detail`` and ``ai_next_attempt_at``
(``backoff * 2**(attempts-1)`` seconds later, at most :data:`MAX_RETRY_BACKOFF`); it is
claimed again after that time, up to ``max_attempts`` attempts (``retry_failed``
ignores both limits). A succeeded image is written in one transaction
(:func:`record_success`): its tags, component conditions and paint assessments
(replacing any earlier rows of that image), the vehicle's SPID row (upserted), an empty
``vehicles.vin`` filled from a SPID sheet or VIN plate whose check digit is valid,
``ai_scan_metadata``, ``is_document``, ``document_category``,
``ai_processing_status = 'completed'`` and ``ai_last_scanned``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ..analysis.results import ProviderResult, SpidData, scan_metadata
from ..extraction.vin import is_valid_vin
from .backfill import PERMANENT_REASONS
from .connection import Database, Json, loads_json, new_id

logger = logging.getLogger(__name__)

MAX_RETRY_BACKOFF = 86_400.0
"""Longest wait (s) before a failed image is tried again by a later run."""

STATUS_COMPLETED = "completed"
STATUS_FAILED = "failed"

_PERMANENT = tuple(sorted(PERMANENT_REASONS))
"""The backfill's permanent failure reasons (with other 4xx but 408/429, as
:func:`nuke_crawl.db.backfill.is_permanent`): such images are not analysed."""

_CONTEXT_COLUMNS = ("year", "make", "model", "trim", "vin", "title", "body_style")


@dataclass
class AnalysisWork:
    """One image to analyse, with what the analysis needs of its vehicle."""

    image_id: str
    vehicle_id: str
    image_url: str | None
    source_url: str | None
    storage_path: str | None
    is_external: bool
    mime_type: str | None
    attempts: int = 0
    context: dict[str, Any] = field(default_factory=dict)
    referer: str | None = None
    attempt_counted: bool = False
    """True once :func:`count_attempt` counted this run's attempt (``attempts`` includes it)."""

    @property
    def url(self) -> str | None:
        """The URL to download when there is no stored copy (source first)."""
        return self.source_url or self.image_url

    @property
    def stored(self) -> bool:
        """True when a stored copy (``storage_path``) should be read instead."""
        return not self.is_external and bool(self.storage_path)


@dataclass(frozen=True)
class Selection:
    """Which pending images a run may take."""

    organization_id: str | None = None
    vehicle_id: str | None = None
    vehicle_ids: tuple[str, ...] = ()
    image_ids: tuple[str, ...] = ()
    retry_failed: bool = False
    max_attempts: int = 5
    run_started: datetime | None = None
    """A run never takes again an image it failed itself: failures recorded after this
    time (their ``ai_next_attempt_at`` is later) wait for the next run."""


def _where(db: Database, sel: Selection, now: Any, *, leases: bool) -> tuple[str, list[Any]]:
    """WHERE clause (over ``vehicle_images vi``) of the pending images ``sel`` allows."""
    clauses = [
        "vi.ai_last_scanned IS NULL",
        "vi.vehicle_id IS NOT NULL",
        "EXISTS (SELECT 1 FROM vehicles v WHERE v.id = vi.vehicle_id)",
        # the backfill failed it permanently (404, not an image...): no stored copy, and
        # downloading it again would fail the same way
        f"NOT (vi.storage_path IS NULL AND vi.download_error IS NOT NULL AND "
        f"(vi.download_error IN ({', '.join('?' * len(_PERMANENT))}) OR "
        "(vi.download_error LIKE 'http_4%' AND vi.download_error NOT IN "
        "('http_408', 'http_429'))))",
    ]
    params: list[Any] = [*_PERMANENT]
    if leases:
        clauses.append("(vi.ai_lease_until IS NULL OR vi.ai_lease_until < ?)")
        params.append(now)
    started = db.ts(sel.run_started) if sel.run_started is not None else now
    if not sel.retry_failed:
        clauses.append("(vi.ai_next_attempt_at IS NULL OR vi.ai_next_attempt_at <= ?)")
        params.append(min(now, started))
        clauses.append("COALESCE(vi.ai_attempts, 0) < ?")
        params.append(sel.max_attempts)
    elif sel.run_started is not None:
        # failures of this very run (their updated_at is later) wait for the next one
        clauses.append("(vi.ai_error IS NULL OR vi.updated_at < ?)")
        params.append(started)
    if sel.vehicle_id:
        clauses.append("vi.vehicle_id = ?")
        params.append(sel.vehicle_id)
    if sel.vehicle_ids:
        clauses.append(f"vi.vehicle_id IN ({', '.join('?' * len(sel.vehicle_ids))})")
        params.extend(sel.vehicle_ids)
    if sel.image_ids:
        clauses.append(f"vi.id IN ({', '.join('?' * len(sel.image_ids))})")
        params.extend(sel.image_ids)
    if sel.organization_id:
        clauses.append(
            "(EXISTS (SELECT 1 FROM organization_vehicles ov WHERE ov.vehicle_id = vi.vehicle_id"
            " AND ov.organization_id = ?) OR EXISTS (SELECT 1 FROM vehicles v2 WHERE"
            " v2.id = vi.vehicle_id AND v2.origin_organization_id = ?))"
        )
        params.extend([sel.organization_id, sel.organization_id])
    return " AND ".join(clauses), params


def count_pending(db: Database, sel: Selection) -> int:
    """How many images ``sel`` would take now (leased ones excluded)."""
    where, params = _where(db, sel, db.now(), leases=True)
    return int(db.scalar(f"SELECT COUNT(*) FROM vehicle_images vi WHERE {where}", params) or 0)


_WORK_SQL = (
    "SELECT vi.id, vi.vehicle_id, vi.image_url, vi.source_url, vi.storage_path, "
    "vi.is_external, vi.mime_type, vi.ai_attempts, vi.created_at, "
    "v.year, v.make, v.model, v.trim, v.vin, v.title, v.body_style, v.listing_url, "
    "v.discovery_url FROM vehicle_images vi JOIN vehicles v ON v.id = vi.vehicle_id "
)
_ORDER = " ORDER BY vi.created_at DESC, vi.id DESC"


def _work(row: dict[str, Any]) -> AnalysisWork:
    return AnalysisWork(
        image_id=str(row["id"]),
        vehicle_id=str(row["vehicle_id"]),
        image_url=row["image_url"],
        source_url=row["source_url"],
        storage_path=row["storage_path"],
        is_external=bool(row["is_external"]),
        mime_type=row["mime_type"],
        attempts=int(row["ai_attempts"] or 0),
        context={k: row[k] for k in _CONTEXT_COLUMNS if row.get(k) not in (None, "")},
        referer=row["listing_url"] or row["discovery_url"],
    )


def claim_batch(
    db: Database, sel: Selection, owner: str, size: int, lease_seconds: float
) -> list[AnalysisWork]:
    """Lease up to ``size`` pending images (newest first) to ``owner``; return them."""
    with db.transaction():
        now_dt = datetime.now(UTC)
        where, params = _where(db, sel, db.ts(now_dt), leases=True)
        lock = " FOR UPDATE OF vi SKIP LOCKED" if db.dialect == "postgresql" else ""
        ids = [
            str(r["id"])
            for r in db.fetchall(
                f"SELECT vi.id FROM vehicle_images vi WHERE {where}{_ORDER} LIMIT ?{lock}",
                [*params, size],
            )
        ]
        if not ids:
            return []
        marks = ", ".join("?" * len(ids))
        db.execute(
            "UPDATE vehicle_images SET ai_lease_owner = ?, ai_lease_until = ? "
            f"WHERE id IN ({marks})",
            [owner, db.ts(now_dt + timedelta(seconds=lease_seconds)), *ids],
        )
        rows = db.fetchall(f"{_WORK_SQL}WHERE vi.id IN ({marks}){_ORDER}", ids)
    return [_work(r) for r in rows]


@dataclass
class Plan:
    """What a run would analyse now (a dry run's report): nothing is claimed."""

    pending: int
    images: int = 0
    stored: int = 0
    external: int = 0
    retries: int = 0
    """Images already tried and failed before (``ai_attempts`` > 0)."""
    vehicles: list[tuple[str, str, int]] = field(default_factory=list)
    """``(vehicle_id, label, images)``, most images first."""
    organizations: list[tuple[str | None, str, int]] = field(default_factory=list)
    """``(organization_id or None, name, images)``, most images first."""


def plan(db: Database, sel: Selection, limit: int) -> Plan:
    """The first ``limit`` images ``sel`` would take (in claim order), counted: stored
    copies vs external URLs, per vehicle and per organization. Reads only."""
    where, params = _where(db, sel, db.now(), leases=True)
    pending = int(db.scalar(f"SELECT COUNT(*) FROM vehicle_images vi WHERE {where}", params) or 0)
    rows = db.fetchall(
        "SELECT vehicle_id, COUNT(*) AS n, "
        "SUM(CASE WHEN is_external = false AND storage_path IS NOT NULL THEN 1 ELSE 0 END) "
        "AS stored, SUM(CASE WHEN COALESCE(ai_attempts, 0) > 0 THEN 1 ELSE 0 END) AS retries "
        "FROM (SELECT vi.vehicle_id, vi.is_external, vi.storage_path, vi.ai_attempts "
        f"FROM vehicle_images vi WHERE {where}{_ORDER} LIMIT ?) AS picked "
        "GROUP BY vehicle_id",
        [*params, limit],
    )
    out = Plan(pending)
    per_vehicle = {str(r["vehicle_id"]): int(r["n"]) for r in rows}
    out.images = sum(per_vehicle.values())
    out.stored = sum(int(r["stored"] or 0) for r in rows)
    out.external = out.images - out.stored
    out.retries = sum(int(r["retries"] or 0) for r in rows)
    labels: dict[str, str] = {}
    org_of: dict[str, str | None] = {}
    ids = list(per_vehicle)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ", ".join("?" * len(chunk))
        for r in db.fetchall(
            "SELECT id, title, year, make, model, origin_organization_id FROM vehicles "
            f"WHERE id IN ({marks})",
            chunk,
        ):
            vid = str(r["id"])
            label = r["title"] or " ".join(str(r[k]) for k in ("year", "make", "model") if r[k])
            labels[vid] = str(label or "")
            org_of[vid] = str(r["origin_organization_id"]) if r["origin_organization_id"] else None
        for r in db.fetchall(
            "SELECT vehicle_id, organization_id FROM organization_vehicles "
            f"WHERE vehicle_id IN ({marks}) ORDER BY created_at, organization_id",
            chunk,
        ):
            vid = str(r["vehicle_id"])
            if org_of.get(vid) is None:
                org_of[vid] = str(r["organization_id"])
    per_org: dict[str | None, int] = {}
    for vid, n in per_vehicle.items():
        per_org[org_of.get(vid)] = per_org.get(org_of.get(vid), 0) + n
    known = [o for o in per_org if o is not None]
    names: dict[str, str] = {}
    for start in range(0, len(known), 500):
        chunk = known[start : start + 500]
        for r in db.fetchall(
            "SELECT id, business_name, website FROM businesses "
            f"WHERE id IN ({', '.join('?' * len(chunk))})",
            chunk,
        ):
            names[str(r["id"])] = str(r["business_name"] or r["website"] or "")
    out.vehicles = sorted(
        ((v, labels.get(v, ""), n) for v, n in per_vehicle.items()), key=lambda t: (-t[2], t[0])
    )
    out.organizations = sorted(
        ((o, names.get(o, "") if o else "(no organization)", n) for o, n in per_org.items()),
        key=lambda t: (-t[2], t[0] or ""),
    )
    return out


def release_leases(db: Database, owner: str) -> int:
    """Give back every image ``owner`` still holds (a run ending early); return how many."""
    return db.execute(
        "UPDATE vehicle_images SET ai_lease_owner = NULL, ai_lease_until = NULL "
        "WHERE ai_lease_owner = ?",
        [owner],
    )


def known_hashes(db: Database, vehicle_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """``{vehicle_id: {image_id: dhash_hex}}`` of the analysed images of these vehicles."""
    out: dict[str, dict[str, str]] = {v: {} for v in vehicle_ids}
    ids = list(dict.fromkeys(vehicle_ids))
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows = db.fetchall(
            "SELECT id, vehicle_id, ai_scan_metadata FROM vehicle_images WHERE vehicle_id IN "
            f"({', '.join('?' * len(chunk))}) AND ai_last_scanned IS NOT NULL",
            chunk,
        )
        for row in rows:
            meta = loads_json(row["ai_scan_metadata"]) or {}
            local = meta.get("local") if isinstance(meta, dict) else None
            dhash = (
                (local or {}).get("data", {}).get("dhash_hex") if isinstance(local, dict) else None
            )
            if dhash:
                out.setdefault(str(row["vehicle_id"]), {})[str(row["id"])] = str(dhash)
    return out


# -- writing ------------------------------------------------------------------------


def _clean_text(text: str) -> str:
    if "\x00" in text:
        text = text.replace("\x00", "")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: neither driver can encode them
            text = "".join(ch for ch in text if not "\ud800" <= ch <= "\udfff")
    return text


def clean_for_db(value: Any) -> Any:
    """``value`` without what PostgreSQL or SQLite refuse in text and JSON: NUL
    (``\\u0000``: PostgreSQL's text and jsonb) and lone surrogates (not UTF-8: both
    drivers fail to encode them). Strings, :class:`Json` values, dicts (keys too), lists
    and tuples are cleaned recursively; anything else is returned as is."""
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, Json):
        return Json(clean_for_db(value.value))
    if isinstance(value, dict):
        return {clean_for_db(k): clean_for_db(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(clean_for_db(v) for v in value)
    return value


def count_attempt(db: Database, work: AnalysisWork) -> None:
    """Count this run's attempt at ``work`` durably, before any provider is called."""
    db.execute(
        "UPDATE vehicle_images SET ai_attempts = COALESCE(ai_attempts, 0) + 1, updated_at = ? "
        "WHERE id = ? AND ai_last_scanned IS NULL",
        [db.now(), work.image_id],
    )
    work.attempts += 1
    work.attempt_counted = True


@dataclass
class WriteOutcome:
    """What :func:`record_success` wrote (for stats and logs)."""

    written: bool
    tags: int = 0
    components: int = 0
    paint: int = 0
    spid: bool = False
    vin_filled: str | None = None
    vin_rejected: str | None = None
    skipped_reason: str | None = None


def _spid_of(results: Sequence[ProviderResult]) -> tuple[SpidData | None, str | None]:
    for result in results:
        if result.ok and result.spid is not None:
            return result.spid, result.model
    return None, None


def _vin_candidates(results: Sequence[ProviderResult]) -> list[str]:
    out: list[str] = []
    for result in results:
        if not result.ok:
            continue
        for vin in ((result.spid.vin if result.spid else None), result.vin_from_plate):
            if vin and vin not in out:
                out.append(vin)
    return out


def record_success(
    db: Database, work: AnalysisWork, results: Sequence[ProviderResult], owner: str | None
) -> WriteOutcome:
    """Write an analysed image's findings, all in one transaction (see the module doc).

    Nothing is written when another worker finished the image meanwhile (its lease
    had expired): ``written=False, skipped_reason="already_analysed"``.
    """
    del owner  # the lease guards the claim; completion is guarded by ai_last_scanned
    count = 0 if work.attempt_counted else 1

    def execute(sql: str, params: list[Any]) -> int:
        return db.execute(sql, clean_for_db(params))

    def executemany(sql: str, rows: list[list[Any]]) -> None:
        db.executemany(sql, [clean_for_db(row) for row in rows])

    with db.transaction():
        if db.dialect == "postgresql":
            row = db.fetchone(
                "SELECT ai_last_scanned FROM vehicle_images WHERE id = ? FOR UPDATE",
                [work.image_id],
            )
        else:
            row = db.fetchone(
                "SELECT ai_last_scanned FROM vehicle_images WHERE id = ?", [work.image_id]
            )
        if row is None:
            return WriteOutcome(False, skipped_reason="image_deleted")
        if row["ai_last_scanned"] is not None:
            return WriteOutcome(False, skipped_reason="already_analysed")
        now = db.now()
        for table in ("image_tags", "component_conditions", "paint_quality_assessments"):
            execute(f"DELETE FROM {table} WHERE image_id = ?", [work.image_id])
        out = WriteOutcome(True)
        image_url = work.image_url or work.source_url
        tag_rows = []
        comp_rows = []
        paint_rows = []
        for result in results:
            if not result.ok:
                continue
            for tag in result.tags:
                data = dict(tag.ai_detection_data)
                data.setdefault("provider", result.provider)
                tag_rows.append(
                    [
                        new_id(),
                        work.image_id,
                        work.vehicle_id,
                        image_url,
                        tag.tag_name,
                        tag.tag_type,
                        tag.confidence,
                        tag.x,
                        tag.y,
                        tag.width,
                        tag.height,
                        Json(data),
                        "ai",
                        now,
                    ]
                )
            for comp in result.components:
                comp_rows.append(
                    [
                        new_id(),
                        work.image_id,
                        work.vehicle_id,
                        comp.component_name,
                        comp.condition_rating,
                        Json(comp.damage_types),
                        comp.needs_attention,
                        comp.confidence,
                        comp.detected_by_model or result.model,
                        now,
                    ]
                )
            for panel in result.paint:
                paint_rows.append(
                    [
                        new_id(),
                        work.image_id,
                        work.vehicle_id,
                        panel.panel_name,
                        panel.appears_original,
                        Json(panel.defects),
                        panel.paint_quality_score,
                        panel.confidence,
                        panel.assessed_by_model or result.model,
                        now,
                    ]
                )
        executemany(
            "INSERT INTO image_tags (id, image_id, vehicle_id, image_url, tag_name, tag_type, "
            "confidence, x_position, y_position, width, height, ai_detection_data, source_type, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            tag_rows,
        )
        executemany(
            "INSERT INTO component_conditions (id, image_id, vehicle_id, component_name, "
            "condition_rating, damage_types, needs_attention, confidence, detected_by_model, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            comp_rows,
        )
        executemany(
            "INSERT INTO paint_quality_assessments (id, image_id, vehicle_id, panel_name, "
            "appears_original, defects, paint_quality_score, confidence, assessed_by_model, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            paint_rows,
        )
        out.tags, out.components, out.paint = len(tag_rows), len(comp_rows), len(paint_rows)

        spid, spid_model = _spid_of(results)
        if spid is not None:
            execute(
                "INSERT INTO vehicle_spid_data (id, vehicle_id, image_id, vin, model_code, "
                "build_date, paint_codes, rpo_codes, engine_code, transmission_code, axle_code, "
                "raw_data, extracted_by_model, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (vehicle_id) DO UPDATE SET image_id = excluded.image_id, "
                "vin = COALESCE(excluded.vin, vehicle_spid_data.vin), "
                "model_code = COALESCE(excluded.model_code, vehicle_spid_data.model_code), "
                "build_date = COALESCE(excluded.build_date, vehicle_spid_data.build_date), "
                "paint_codes = excluded.paint_codes, rpo_codes = excluded.rpo_codes, "
                "engine_code = COALESCE(excluded.engine_code, vehicle_spid_data.engine_code), "
                "transmission_code = COALESCE(excluded.transmission_code, "
                "vehicle_spid_data.transmission_code), "
                "axle_code = COALESCE(excluded.axle_code, vehicle_spid_data.axle_code), "
                "raw_data = excluded.raw_data, extracted_by_model = excluded.extracted_by_model, "
                "updated_at = excluded.updated_at",
                [
                    new_id(),
                    work.vehicle_id,
                    work.image_id,
                    spid.vin,
                    spid.model_code,
                    spid.build_date,
                    Json(spid.paint_codes),
                    Json(spid.rpo_codes),
                    spid.engine_code,
                    spid.transmission_code,
                    spid.axle_code,
                    Json(spid.raw),
                    spid_model,
                    now,
                    now,
                ],
            )
            out.spid = True

        for vin in _vin_candidates(results):
            if not is_valid_vin(vin):
                out.vin_rejected = vin
                continue
            changed = execute(
                "UPDATE vehicles SET vin = ?, updated_at = ? WHERE id = ? "
                "AND (vin IS NULL OR vin = '')",
                [vin, now, work.vehicle_id],
            )
            if changed > 0:
                out.vin_filled = vin
            break

        document = next((r for r in results if r.ok and r.document is not None), None)
        execute(
            "UPDATE vehicle_images SET ai_scan_metadata = ?, is_document = ?, "
            "document_category = ?, ai_processing_status = ?, ai_last_scanned = ?, "
            "ai_attempts = COALESCE(ai_attempts, 0) + ?, ai_error = NULL, "
            "ai_error_detail = NULL, ai_next_attempt_at = NULL, ai_lease_owner = NULL, "
            "ai_lease_until = NULL, updated_at = ? WHERE id = ?",
            [
                Json(scan_metadata(list(results))),
                bool(document.is_document) if document else False,
                document.document_category if document else None,
                STATUS_COMPLETED,
                now,
                count,
                now,
                work.image_id,
            ],
        )
    return out


def retry_delay(attempts: int, backoff: float, maximum: float = MAX_RETRY_BACKOFF) -> float:
    """Seconds before attempt ``attempts + 1``: ``backoff * 2**(attempts-1)``, capped."""
    if backoff <= 0:
        return 0.0
    return float(min(maximum, backoff * 2 ** max(0, attempts - 1)))


def record_failure(
    db: Database, work: AnalysisWork, reason: str, detail: str, *, backoff: float
) -> datetime:
    """Record a failed attempt (nothing else is touched); return the next attempt time."""
    count = 0 if work.attempt_counted else 1
    attempts = work.attempts + count
    next_at = datetime.now(UTC) + timedelta(seconds=retry_delay(attempts, backoff))
    now = db.now()
    db.execute(
        "UPDATE vehicle_images SET ai_attempts = COALESCE(ai_attempts, 0) + ?, ai_error = ?, "
        "ai_error_detail = ?, ai_next_attempt_at = ?, ai_processing_status = ?, "
        "ai_lease_owner = NULL, ai_lease_until = NULL, updated_at = ? "
        "WHERE id = ? AND ai_last_scanned IS NULL",
        clean_for_db(
            [count, reason, detail[:2000], db.ts(next_at), STATUS_FAILED, now, work.image_id]
        ),
    )
    return next_at


# -- status -------------------------------------------------------------------------


def status_figures(db: Database) -> dict[str, Any]:
    """``scrapy status``'s image analysis section."""
    if "ai_processing_status" not in db.columns("vehicle_images"):
        return {}
    queries = {
        "images_analysed": "SELECT COUNT(*) FROM vehicle_images WHERE ai_last_scanned IS NOT NULL",
        "images_never_analysed": (
            "SELECT COUNT(*) FROM vehicle_images WHERE ai_last_scanned IS NULL"
        ),
        "images_failed": (
            "SELECT COUNT(*) FROM vehicle_images WHERE ai_last_scanned IS NULL "
            "AND ai_error IS NOT NULL"
        ),
        "document_images": "SELECT COUNT(*) FROM vehicle_images WHERE is_document = true",
        "image_tags": "SELECT COUNT(*) FROM image_tags",
        "component_conditions": "SELECT COUNT(*) FROM component_conditions",
        "paint_assessments": "SELECT COUNT(*) FROM paint_quality_assessments",
        "vehicles_with_spid": "SELECT COUNT(*) FROM vehicle_spid_data",
    }
    figures: dict[str, Any] = {name: int(db.scalar(sql) or 0) for name, sql in queries.items()}
    rows = db.fetchall(
        "SELECT tag_type, COUNT(*) AS n FROM image_tags GROUP BY tag_type ORDER BY tag_type"
    )
    figures["tags_by_type"] = {str(r["tag_type"]): int(r["n"]) for r in rows}
    rows = db.fetchall(
        "SELECT ai_error, COUNT(*) AS n FROM vehicle_images WHERE ai_last_scanned IS NULL "
        "AND ai_error IS NOT NULL GROUP BY ai_error ORDER BY n DESC"
    )
    figures["failures_by_reason"] = {str(r["ai_error"]): int(r["n"]) for r in rows}
    return figures
