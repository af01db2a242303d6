"""``scrapy status``: the counts an operator watches."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scrapy.exceptions import UsageError

from nuke_crawl.cli.base import DatabaseCommand
from nuke_crawl.db import Database, analysis, backfill, database_url, redact_url, store

LABELS = {
    "organizations": "Organizations",
    "organizations_extracted": "Organizations extracted",
    "vehicles": "Vehicles",
    "public_vehicles": "Public vehicles",
    "vehicles_with_image_urls": "Vehicles with image URLs",
    "external_images": "External images",
    "vehicles_with_external_images": "Vehicles with external images",
    "stored_images": "Stored images",
    "vehicles_with_stored_images": "Vehicles with stored images",
    "vehicles_backfilled": "Vehicles backfilled",
    "images_never_analysed": "Images never analysed",
}

# Later phases add their figures here: name -> function(db) -> dict.
SECTIONS: dict[str, Callable[[Database], dict[str, Any]]] = {}
SECTIONS["image_backfill"] = backfill.backfill_status
SECTIONS["image_analysis"] = analysis.status_figures


def collect(db: Database) -> dict[str, Any]:
    figures: dict[str, Any] = dict(store.status_counts(db))
    for name, func in SECTIONS.items():
        figures[name] = func(db)
    return figures


def _sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:`` URL (as :class:`~nuke_crawl.db.Database` reads it), None
    for another database or an in-memory one."""
    if not url.startswith("sqlite:"):
        return None
    path = url[len("sqlite:") :]
    path = path[3:] if path.startswith("///") else path[2:] if path.startswith("//") else path
    if not path or path == ":memory:":
        return None
    return Path(path).expanduser()


def _print_text(figures: dict[str, Any], indent: str = "") -> None:
    width = max(len(LABELS.get(k, k)) for k in figures) + 2
    for key, value in figures.items():
        words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", key).replace("_", " ").lower()
        label = LABELS.get(key, words.capitalize())
        if isinstance(value, dict):
            print(f"{indent}{label}:")
            if value:
                _print_text(value, indent + "  ")
        else:
            print(f"{indent}{label + ':':<{width}} {value}")


class Command(DatabaseCommand):
    def syntax(self) -> str:
        return "[--json]"

    def short_desc(self) -> str:
        return "Print the counts an operator watches (organizations, vehicles, images)"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("--json", action="store_true", help="print JSON")

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        assert self.settings is not None
        path = _sqlite_path(database_url(self.settings))
        if path is not None and not path.exists():
            # a status never creates a database: a typo in the path would look like an empty one
            raise UsageError(f"no SQLite database at {path} (check DATABASE_URL)", print_help=False)
        db = self.open_database()
        try:
            figures = collect(db)
            where = redact_url(db.url)
        finally:
            db.close()
        try:
            if opts.json:
                print(json.dumps(figures, indent=2, sort_keys=False))
            else:
                print(f"nuke_crawl status ({where})")
                _print_text(figures)
            sys.stdout.flush()
        except BrokenPipeError:
            # the reader left (`scrapy status | head`): nothing more to say, and no
            # second error when Python flushes stdout at exit
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
