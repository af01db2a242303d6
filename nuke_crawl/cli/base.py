"""Base classes and helpers of nuke_crawl's scrapy commands.

Not in ``commands/``: Scrapy registers every ``ScrapyCommand`` subclass defined in a
module of ``COMMANDS_MODULE`` as a command (see :mod:`nuke_crawl.cli`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from scrapy.commands import ScrapyCommand
from scrapy.exceptions import UsageError

from nuke_crawl.db import Database, DatabaseError, database_url, migrate, needs_migration


class DatabaseCommand(ScrapyCommand):
    """A command that opens ``DATABASE_URL`` (environment, then setting)."""

    requires_project = True
    requires_crawler_process = False
    default_settings: ClassVar[dict[str, Any]] = {"LOG_LEVEL": "WARNING"}
    migrate_first = True

    def open_database(self) -> Database:
        assert self.settings is not None
        try:
            db = Database(database_url(self.settings))
            if self.migrate_first and needs_migration(db):
                migrate(db)
            return db
        except DatabaseError as exc:
            raise UsageError(str(exc), print_help=False) from None


def organization_metadata(inventory_url: str | None, render_js: bool | None) -> dict[str, object]:
    """``businesses.metadata`` keys given on the command line or in a CSV."""
    meta: dict[str, object] = {}
    if inventory_url:
        meta["inventory_url"] = inventory_url
    if render_js is not None:
        meta["render_js"] = render_js
    return meta
