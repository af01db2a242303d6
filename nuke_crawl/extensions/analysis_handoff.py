"""Phase two hands off to phase three: analyse what ``image_backfill`` stored.

With ``NUKE_ANALYZE_AFTER_BACKFILL`` (default False), when an ``image_backfill``
run closes, the images it stored that were never analysed are handed to
``image_analysis`` without waiting for it, through
:func:`nuke_crawl.spiders.image_analysis.schedule_analysis` (a detached process,
or scrapyd's ``schedule.json`` when ``NUKE_SCRAPYD_URL`` is set).

Stats: ``nuke/handoff/analysis_images`` and ``nuke/handoff/analysis_runs``, or
``nuke/handoff/analysis_error`` with the reason.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from nuke_crawl.db import Database, DatabaseError
from nuke_crawl.dbglue import crawler_database
from nuke_crawl.handoff import Handoff

logger = logging.getLogger(__name__)

SOURCE_SPIDER = "image_backfill"


def stored_since(db: Database, since: datetime) -> list[str]:
    """Ids of images stored (file and record) since ``since`` and never analysed."""
    rows = db.fetchall(
        "SELECT id FROM vehicle_images WHERE is_external = false AND storage_path IS NOT NULL "
        "AND ai_last_scanned IS NULL AND updated_at >= ? ORDER BY updated_at",
        [db.ts(since)],
    )
    return [r["id"] for r in rows]


class AnalysisHandoff(Handoff):
    """Starts ``image_analysis`` for the images an ``image_backfill`` run stored."""

    enabled_setting = "NUKE_ANALYZE_AFTER_BACKFILL"
    source_spider = SOURCE_SPIDER
    started_slack = 1.0  # for clocks that store whole seconds

    async def hand_off(self, spider: Any) -> None:
        from nuke_crawl.spiders.image_analysis import schedule_analysis

        stats = self.crawler.stats
        assert stats is not None
        try:
            ids = await crawler_database(self.crawler).run(stored_since, self.started_at)
            if not ids:
                logger.info("No newly stored images to hand to image_analysis")
                return
            # urllib or a process start: off the reactor thread
            runs = await asyncio.to_thread(schedule_analysis, self.crawler.settings,
                                           image_ids=ids)
        except (DatabaseError, OSError, RuntimeError, ValueError) as exc:
            stats.set_value("nuke/handoff/analysis_error", str(exc))
            logger.error("Could not start image_analysis: %s", exc)
            return
        stats.set_value("nuke/handoff/analysis_images", len(ids))
        stats.set_value("nuke/handoff/analysis_runs", len(runs))
        logger.info("Handed %d stored images to image_analysis (%s)", len(ids), ", ".join(runs))
