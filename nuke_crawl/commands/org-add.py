"""``scrapy org-add URL``: add (or update) one organization."""

from __future__ import annotations

import argparse

from scrapy.exceptions import UsageError

from nuke_crawl.cli.base import DatabaseCommand, organization_metadata
from nuke_crawl.db import store
from nuke_crawl.params import ArgumentError, to_url


class Command(DatabaseCommand):
    def syntax(self) -> str:
        return "URL [--name NAME] [--type TYPE] [--inventory-url URL] [--render-js]"

    def short_desc(self) -> str:
        return "Add an organization (dealer, auction house) by its website"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("--name", help="business name (default: the website's host)")
        parser.add_argument(
            "--type", dest="business_type", default="dealer", help="business_type (default: dealer)"
        )
        parser.add_argument("--inventory-url", help="the inventory page, if not discoverable")
        parser.add_argument(
            "--render-js",
            action="store_true",
            default=None,
            help="the site needs a browser (scrapy-playwright)",
        )

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if len(args) != 1:
            raise UsageError("give exactly one website URL")
        try:
            website = to_url("URL", args[0])
            inventory = (
                to_url("--inventory-url", opts.inventory_url) if opts.inventory_url else None
            )
        except ArgumentError as exc:
            raise UsageError(str(exc), print_help=False) from None
        db = self.open_database()
        try:
            org, created = store.add_organization(
                db,
                website,
                name=opts.name,
                business_type=opts.business_type,
                metadata=organization_metadata(inventory, opts.render_js),
            )
        finally:
            db.close()
        print(f"{'added' if created else 'exists'} {org.id} {org.business_name} {org.website}")
