"""``scrapy org-import FILE.csv``: add organizations from a CSV file.

Columns (header row required): ``website`` (required), and optionally
``name`` (or ``business_name``), ``type`` (or ``business_type``),
``inventory_url``, ``render_js``. A bad row is reported with its line number
and skipped; the good rows are imported.
"""

from __future__ import annotations

import argparse
import csv
import sys

from scrapy.exceptions import UsageError

from nuke_crawl.cli.base import DatabaseCommand, organization_metadata
from nuke_crawl.db import store
from nuke_crawl.spiders.args import ArgumentError, to_bool, to_url


class Command(DatabaseCommand):
    def syntax(self) -> str:
        return "FILE.csv"

    def short_desc(self) -> str:
        return "Import organizations from a CSV file (website,name,type,inventory_url,render_js)"

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if len(args) != 1:
            raise UsageError("give exactly one CSV file")
        try:
            handle = open(args[0], newline="", encoding="utf-8-sig")  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"cannot read {args[0]}: {exc.strerror}", print_help=False) from None
        added = existing = bad = 0
        db = self.open_database()
        try:
            with handle:
                reader = csv.DictReader(handle)
                fields = {f.strip().lower() for f in reader.fieldnames or []}
                if "website" not in fields:
                    raise UsageError(f"{args[0]}: no 'website' column in the header",
                                     print_help=False)
                for row in reader:
                    row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
                    try:
                        website = to_url("website", row.get("website", ""))
                        inventory = row.get("inventory_url")
                        inventory = to_url("inventory_url", inventory) if inventory else None
                        render = row.get("render_js")
                        render_js = to_bool("render_js", render) if render else None
                    except ArgumentError as exc:
                        bad += 1
                        print(f"line {reader.line_num}: skipped: {exc}", file=sys.stderr)
                        continue
                    _, created = store.add_organization(
                        db, website,
                        name=row.get("name") or row.get("business_name") or None,
                        business_type=row.get("type") or row.get("business_type") or "dealer",
                        metadata=organization_metadata(inventory, render_js),
                    )
                    added += created
                    existing += not created
        finally:
            db.close()
        print(f"imported {added} new, {existing} already present, {bad} skipped")
        if bad:
            self.exitcode = 1
