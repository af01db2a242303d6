"""``scrapy status``: the counts an operator watches."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from typing import Any

from nuke_crawl.cli.base import DatabaseCommand
from nuke_crawl.db import Database, analysis, backfill, redact_url, store

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
        db = self.open_database()
        try:
            figures = collect(db)
            where = redact_url(db.url)
        finally:
            db.close()
        if opts.json:
            print(json.dumps(figures, indent=2, sort_keys=False))
        else:
            print(f"nuke_crawl status ({where})")
            _print_text(figures)
