"""The crawl's one database handle, as a Scrapy extension.

:class:`DatabaseExtension` (``EXTENSIONS`` in settings) owns the crawler's
:class:`~nuke_crawl.db.AsyncDatabase`: created on first use, closed when the engine
stops. Spiders, pipelines and other extensions find it with
``crawler.get_extension(DatabaseExtension)``, or :func:`crawler_database` for short,
from the moment the engine exists (a spider's ``start()``, a pipeline's ``__init__``,
``spider_opened``); not in a spider's ``from_crawler``, which Scrapy runs before it
builds its extensions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from scrapy import signals
from scrapy.crawler import Crawler

from nuke_crawl import settings as defaults
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


@dataclass(frozen=True)
class DatabaseConfig:
    """``DATABASE_URL`` (the environment first, then the setting; else
    ``sqlite:///nuke.db``) and ``NUKE_AUTO_MIGRATE`` (True)."""

    url: str
    auto_migrate: bool

    @classmethod
    def from_settings(cls, settings: Any) -> DatabaseConfig:
        return cls(
            url=database_url(settings),
            auto_migrate=settings.getbool("NUKE_AUTO_MIGRATE", defaults.NUKE_AUTO_MIGRATE),
        )


class DatabaseExtension:
    """The crawler's :class:`~nuke_crawl.db.AsyncDatabase` (one connection, in one thread
    of its own), created on first use and closed when the engine stops. Settings: see
    :class:`DatabaseConfig`."""

    def __init__(self, crawler: Crawler) -> None:
        self.config = DatabaseConfig.from_settings(crawler.settings)
        self._adb: AsyncDatabase | None = None
        crawler.signals.connect(self.engine_stopped, signal=signals.engine_stopped)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> DatabaseExtension:
        return cls(crawler)

    @property
    def database(self) -> AsyncDatabase:
        if self._adb is None:
            self._adb = AsyncDatabase(self.config.url)
        return self._adb

    async def prepare(self) -> AsyncDatabase:
        """Connect and make sure the schema is current: migrate it when
        ``NUKE_AUTO_MIGRATE`` is on (default), else raise :class:`SchemaMissing`."""
        adb = self.database
        auto = self.config.auto_migrate

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

    def engine_stopped(self) -> None:
        if self._adb is not None:
            self._adb.close()


def database_extension(crawler: Crawler) -> DatabaseExtension:
    """The crawler's :class:`DatabaseExtension`; a clear error when it is not enabled."""
    ext = crawler.get_extension(DatabaseExtension)
    if ext is None:
        raise RuntimeError(
            "nuke_crawl.extensions.database.DatabaseExtension is not in EXTENSIONS "
            "(nuke_crawl's settings.py enables it)"
        )
    return ext


def crawler_database(crawler: Crawler) -> AsyncDatabase:
    """The crawler's :class:`~nuke_crawl.db.AsyncDatabase` (``DatabaseExtension``'s)."""
    return database_extension(crawler).database


async def prepare_database(crawler: Crawler) -> AsyncDatabase:
    """:meth:`DatabaseExtension.prepare` of the crawler's extension."""
    return await database_extension(crawler).prepare()
