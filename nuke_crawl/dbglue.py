"""The crawler's one database handle, shared by its spider and pipelines."""

from __future__ import annotations

import logging

from scrapy import signals
from scrapy.crawler import Crawler

from nuke_crawl.db import (
    AsyncDatabase,
    Database,
    database_url,
    migrate,
    needs_migration,
    redact_url,
)

logger = logging.getLogger(__name__)


class SchemaMissing(Exception):
    """The database has no (or an old) nuke_crawl schema and auto-migration is off."""


def crawler_database(crawler: Crawler) -> AsyncDatabase:
    """The crawler's :class:`AsyncDatabase`, created on first use and closed
    when the engine stops (``DATABASE_URL``: environment, then setting)."""
    adb: AsyncDatabase | None = getattr(crawler, "_nuke_db", None)
    if adb is None:
        adb = AsyncDatabase(database_url(crawler.settings))
        crawler._nuke_db = adb  # type: ignore[attr-defined]
        crawler.signals.connect(adb.close, signal=signals.engine_stopped)
    return adb


async def prepare_database(crawler: Crawler) -> AsyncDatabase:
    """Connect and make sure the schema is current: migrate it when
    ``NUKE_AUTO_MIGRATE`` is on (default), else raise :class:`SchemaMissing`."""
    adb = crawler_database(crawler)
    auto = crawler.settings.getbool("NUKE_AUTO_MIGRATE", True)

    def check(db: Database) -> list[int]:
        if not needs_migration(db):
            return []
        if not auto:
            raise SchemaMissing(
                f"the database {redact_url(db.url)} has no current nuke_crawl schema: "
                "run `scrapy migrate` first (or set NUKE_AUTO_MIGRATE=1)"
            )
        return migrate(db)

    applied = await adb.run(check)
    if applied:
        logger.info("Migrated %s to schema version %s", redact_url(adb.url), applied[-1])
    return adb
