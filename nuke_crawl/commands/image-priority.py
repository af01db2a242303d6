"""``scrapy image-priority N``: give vehicles a backfill priority (higher goes first)."""

from __future__ import annotations

import argparse
import sys

from scrapy.exceptions import UsageError

from nuke_crawl.cli.base import DatabaseCommand
from nuke_crawl.db import backfill, store
from nuke_crawl.params import ArgumentError, to_int, to_uuid


class Command(DatabaseCommand):
    def syntax(self) -> str:
        return "PRIORITY (--organization-id UUID | --vehicle-id UUID [--vehicle-id UUID ...])"

    def short_desc(self) -> str:
        return "Set vehicles' image backfill priority (higher first; 0 is the default)"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("--organization-id", help="every vehicle of this organization")
        parser.add_argument(
            "--vehicle-id", action="append", default=[], help="this vehicle (repeatable)"
        )

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if len(args) != 1:
            raise UsageError("give exactly one PRIORITY (a whole number, 0 is the default)")
        try:
            # vehicles.images_priority is an INTEGER
            priority = to_int("PRIORITY", args[0], minimum=-(2**31), maximum=2**31 - 1)
            org = (
                to_uuid("--organization-id", opts.organization_id) if opts.organization_id else None
            )
            vehicles = [to_uuid("--vehicle-id", v) for v in opts.vehicle_id]
        except ArgumentError as exc:
            raise UsageError(str(exc), print_help=False) from None
        if not org and not vehicles:
            raise UsageError("give --organization-id or --vehicle-id", print_help=False)
        db = self.open_database()
        try:
            if org and store.get_organization(db, org) is None:
                print(f"no organization with id {org}", file=sys.stderr)
                self.exitcode = 1
                return
            changed = backfill.set_priority(db, priority, vehicle_ids=vehicles, organization_id=org)
        finally:
            db.close()
        print(f"{changed} vehicles now have image backfill priority {priority}")
