"""``scrapy migrate``: create or upgrade the schema (idempotent)."""

from __future__ import annotations

import argparse

from nuke_crawl.cli.base import DatabaseCommand
from nuke_crawl.db import current_version, latest_version, migrate, redact_url


class Command(DatabaseCommand):
    migrate_first = False

    def short_desc(self) -> str:
        return "Create or upgrade nuke_crawl's database schema"

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        db = self.open_database()
        try:
            before = current_version(db)
            applied = migrate(db)
            where = redact_url(db.url)
            if applied:
                print(
                    f"{where}: schema version {before} -> {applied[-1]} "
                    f"(applied {', '.join(map(str, applied))})"
                )
            else:
                print(f"{where}: schema is current (version {latest_version()})")
        finally:
            db.close()
