"""What the service's API reads: plain functions of a :class:`~nuke_crawl.db.Database`.

The image status is ``scrapy status``'s own figures (:func:`nuke_crawl.commands.status.collect`),
reshaped into the original platform's answer; nothing here counts them a second time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from nuke_crawl.commands.status import collect
from nuke_crawl.db import Database, loads_json
from nuke_crawl.db.backfill import display_url, is_permanent


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return str(value)


def image_status(db: Database) -> dict[str, Any]:
    """``GET /api/image-status``: ``{"success": true, "stats": {totalVehicles,
    needingProcessing, fullyProcessed, partiallyProcessed}, ...}`` with the meanings of
    ``scrapy status --json``'s ``image_backfill`` section, plus ``images`` (stored /
    external / failed by reason), ``analysis`` and ``totals`` beside ``stats``."""
    started = time.perf_counter()
    figures = collect(db)
    backfill = figures.pop("image_backfill", {}) or {}
    analysis = figures.pop("image_analysis", {}) or {}
    return {
        "success": True,
        "stats": {
            key: int(backfill.get(key) or 0)
            for key in (
                "totalVehicles",
                "needingProcessing",
                "fullyProcessed",
                "partiallyProcessed",
            )
        },
        "images": {
            "stored": int(backfill.get("imagesStored") or 0),
            "external": int(backfill.get("imagesExternal") or 0),
            "failed": int(backfill.get("imagesFailed") or 0),
            "failedByReason": backfill.get("imagesFailedByReason") or {},
            "failedExamples": backfill.get("failedExamples") or {},
        },
        "analysis": analysis,
        "totals": figures,
        "asOf": _iso(datetime.now(UTC)),
        "computeSeconds": round(time.perf_counter() - started, 3),
    }


def organizations(db: Database, *, limit: int = 50, offset: int = 0) -> dict[str, Any]:
    """``GET /api/organizations``: a page of organizations (oldest first) with their
    vehicles, images stored / external / failed, last crawl summary and last error."""
    rows = db.fetchall(
        "SELECT b.id, b.business_name, b.website, b.business_type, b.created_at, "
        "c.started_at, c.finished_at, c.last_error, c.summary "
        "FROM businesses b LEFT JOIN nuke_org_crawls c ON c.organization_id = b.id "
        "ORDER BY b.created_at, b.id LIMIT ? OFFSET ?",
        [limit, offset],
    )
    ids = [str(r["id"]) for r in rows]
    counts: dict[str, dict[str, int]] = {i: {} for i in ids}
    if ids:
        marks = ", ".join("?" * len(ids))
        for r in db.fetchall(
            "SELECT organization_id AS org, COUNT(*) AS n FROM organization_vehicles "
            f"WHERE organization_id IN ({marks}) GROUP BY organization_id",
            ids,
        ):
            counts[str(r["org"])]["vehicles"] = int(r["n"])
        for r in db.fetchall(
            "SELECT v.origin_organization_id AS org, "
            "SUM(CASE WHEN i.is_external = false AND i.storage_path IS NOT NULL "
            "THEN 1 ELSE 0 END) AS stored, "
            "SUM(CASE WHEN i.is_external = true THEN 1 ELSE 0 END) AS external, "
            "SUM(CASE WHEN i.is_external = true AND i.download_error IS NOT NULL "
            "THEN 1 ELSE 0 END) AS failed "
            "FROM vehicles v JOIN vehicle_images i ON i.vehicle_id = v.id "
            f"WHERE v.origin_organization_id IN ({marks}) GROUP BY v.origin_organization_id",
            ids,
        ):
            counts[str(r["org"])].update(
                stored=int(r["stored"] or 0),
                external=int(r["external"] or 0),
                failed=int(r["failed"] or 0),
            )
    total = int(db.scalar("SELECT COUNT(*) FROM businesses") or 0)
    out = []
    for r in rows:
        c = counts[str(r["id"])]
        out.append(
            {
                "id": str(r["id"]),
                "name": r["business_name"],
                "website": r["website"],
                "type": r["business_type"],
                "vehicles": c.get("vehicles", 0),
                "images": {
                    "stored": c.get("stored", 0),
                    "external": c.get("external", 0),
                    "failed": c.get("failed", 0),
                },
                "lastCrawl": {
                    "startedAt": _iso(r["started_at"]),
                    "finishedAt": _iso(r["finished_at"]),
                    "summary": loads_json(r["summary"]),
                }
                if r["started_at"]
                else None,
                "lastError": r["last_error"],
            }
        )
    return {"success": True, "total": total, "limit": limit, "offset": offset, "organizations": out}


def failures(db: Database, *, reason: str | None = None, limit: int = 50) -> dict[str, Any]:
    """``GET /api/failures``: recent failed image downloads, newest first."""
    sql = (
        "SELECT id, vehicle_id, download_error, download_error_detail, source_url, "
        "download_failed_at, download_attempts FROM vehicle_images "
        "WHERE download_error IS NOT NULL AND is_external = true"
    )
    params: list[Any] = []
    if reason:
        sql += " AND download_error = ?"
        params.append(reason)
    rows = db.fetchall(sql + " ORDER BY download_failed_at DESC LIMIT ?", [*params, limit])
    return {
        "success": True,
        "failures": [
            {
                "imageId": str(r["id"]),
                "vehicleId": str(r["vehicle_id"]),
                "reason": r["download_error"],
                "detail": r["download_error_detail"],
                "permanent": is_permanent(r["download_error"]),
                "vendorUrl": r["source_url"],
                "failedAt": _iso(r["download_failed_at"]),
                "attempts": r["download_attempts"],
            }
            for r in rows
        ],
    }


def vehicle(db: Database, vehicle_id: str) -> dict[str, Any] | None:
    """``GET /api/vehicles/{id}``: the vehicle and its images (stored URL, vendor
    fallback, variants, analysis)."""
    v = db.fetchone(
        "SELECT id, year, make, model, title, listing_url, discovery_url, "
        "origin_organization_id, origin_metadata, primary_image_url FROM vehicles "
        "WHERE id = ?",
        [vehicle_id],
    )
    if v is None:
        return None
    has_ai = "ai_processing_status" in db.columns("vehicle_images")
    ai_cols = ", ai_processing_status, ai_error" if has_ai else ""
    images = db.fetchall(
        "SELECT id, image_url, source_url, storage_path, is_external, position, is_primary, "
        "width, height, mime_type, variants, download_error, download_attempts, "
        f"ai_last_scanned, ai_scan_metadata{ai_cols} FROM vehicle_images "
        "WHERE vehicle_id = ? ORDER BY position, id",
        [vehicle_id],
    )
    tags: dict[str, list[dict[str, Any]]] = {}
    if images and db.table_exists("image_tags"):
        for t in db.fetchall(
            "SELECT image_id, tag_name, tag_type, confidence FROM image_tags "
            "WHERE vehicle_id = ? ORDER BY confidence DESC",
            [vehicle_id],
        ):
            tags.setdefault(str(t["image_id"]), []).append(
                {"name": t["tag_name"], "type": t["tag_type"], "confidence": t["confidence"]}
            )
    meta = loads_json(v["origin_metadata"]) or {}
    out_images = []
    for i in images:
        stored = i["is_external"] in (False, 0) and bool(i["storage_path"])
        out_images.append(
            {
                "id": str(i["id"]),
                "position": i["position"],
                "isPrimary": i["is_primary"] in (True, 1),
                "stored": stored,
                "storedUrl": i["image_url"] if stored else None,
                "vendorUrl": i["source_url"] or (None if stored else i["image_url"]),
                "displayUrl": display_url(i),
                "width": i["width"],
                "height": i["height"],
                "mimeType": i["mime_type"],
                "variants": loads_json(i["variants"]) or {},
                "downloadError": i["download_error"],
                "downloadAttempts": i["download_attempts"],
                "analysis": {
                    "scannedAt": _iso(i["ai_last_scanned"]),
                    "status": i.get("ai_processing_status"),
                    "error": i.get("ai_error"),
                    "metadata": loads_json(i["ai_scan_metadata"]),
                    "tags": tags.get(str(i["id"]), []),
                },
            }
        )
    return {
        "success": True,
        "vehicle": {
            "id": str(v["id"]),
            "year": v["year"],
            "make": v["make"],
            "model": v["model"],
            "title": v["title"],
            "listingUrl": v["listing_url"] or v["discovery_url"],
            "organizationId": v["origin_organization_id"] and str(v["origin_organization_id"]),
            "primaryImageUrl": v["primary_image_url"],
            "imagesBackfilled": meta.get("images_backfilled") in (True, "true", 1),
            "images": out_images,
        },
    }


def thumbnails(db: Database, *, limit: int = 12) -> list[dict[str, Any]]:
    """The latest stored images (their ``thumb`` variant when there is one)."""
    rows = db.fetchall(
        "SELECT id, vehicle_id, image_url, storage_path, variants, updated_at "
        "FROM vehicle_images WHERE is_external = false AND storage_path IS NOT NULL "
        "ORDER BY updated_at DESC LIMIT ?",
        [limit],
    )
    out = []
    for r in rows:
        variants = loads_json(r["variants"]) or {}
        thumb = variants.get("thumb") if isinstance(variants, dict) else None
        path, url = r["storage_path"], r["image_url"]
        if isinstance(thumb, dict) and thumb.get("path"):
            path, url = thumb["path"], thumb.get("url") or url
        out.append(
            {
                "imageId": str(r["id"]),
                "vehicleId": str(r["vehicle_id"]),
                "path": path,
                "url": url,
                "storedAt": _iso(r["updated_at"]),
            }
        )
    return out


def vehicle_ids_exist(db: Database, ids: Sequence[str]) -> list[str]:
    """Those of ``ids`` that are not vehicles."""
    if not ids:
        return []
    marks = ", ".join("?" * len(ids))
    found = {
        str(r["id"])
        for r in db.fetchall(f"SELECT id FROM vehicles WHERE id IN ({marks})", list(ids))
    }
    return [i for i in ids if i not in found]
