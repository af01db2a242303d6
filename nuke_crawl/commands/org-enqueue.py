"""``scrapy org-enqueue -a threshold=1 -a limit=500``: queue organizations in Redis for
``scrapy crawl org -a from_queue=1`` workers (docs/scale.md)."""

from __future__ import annotations

import argparse
from dataclasses import fields

import redis
from scrapy.exceptions import UsageError

from nuke_crawl.cli.base import DatabaseCommand
from nuke_crawl.db import DatabaseError, store
from nuke_crawl.distributed import (
    enqueue_organizations,
    keys_from_settings,
    redact_redis_url,
    redis_url,
)
from nuke_crawl.params import ArgumentError, OrgSelection

# the org spider's selection arguments (its OrgArgs extends OrgSelection)
SELECTION = tuple(f.name for f in fields(OrgSelection))


class Command(DatabaseCommand):
    def syntax(self) -> str:
        return (
            "[-a threshold=N] [-a limit=N] [-a offset=N] [-a business_type=T] "
            "[-a organization_id=UUID]"
        )

    def short_desc(self) -> str:
        return "Queue organizations in Redis for `crawl org -a from_queue=1` workers"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument(
            "-a",
            dest="spargs",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="selection argument, as for `scrapy crawl org`",
        )

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        assert self.settings is not None
        if args:
            raise UsageError("no positional arguments; use -a NAME=VALUE", print_help=False)
        given: dict[str, str] = {}
        for item in opts.spargs:
            name, sep, value = item.partition("=")
            if not sep:
                raise UsageError(f"invalid -a value, use -a NAME=VALUE: {item!r}", print_help=False)
            if name not in SELECTION:
                raise UsageError(
                    f"unknown argument {name!r}; accepted: {', '.join(SELECTION)}", print_help=False
                )
            given[name] = value
        try:
            selection = OrgSelection.parse(given, "org-enqueue").as_dict()
        except ArgumentError as exc:
            raise UsageError(str(exc), print_help=False) from None
        url = redis_url(self.settings)
        if not url:
            raise UsageError(
                "NUKE_REDIS_URL is not set (environment or -s NUKE_REDIS_URL=...)", print_help=False
            )
        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=3)
        try:
            client.ping()
        except redis.exceptions.RedisError as exc:
            raise UsageError(
                f"Redis at {redact_redis_url(url)} is unreachable ({exc})", print_help=False
            ) from None
        db = self.open_database()
        try:
            page = store.select_organizations(db, **selection)
        except DatabaseError as exc:
            raise UsageError(str(exc), print_help=False) from None
        finally:
            db.close()
        keys = keys_from_settings(self.settings)
        ids = [org.id for org in page.organizations]
        try:
            new = enqueue_organizations(client, keys.org_queue, ids)
            waiting = int(client.zcard(keys.org_queue))
        except redis.exceptions.RedisError as exc:
            raise UsageError(
                f"Redis at {redact_redis_url(url)} failed ({exc})", print_help=False
            ) from None
        next_offset = selection["offset"] + page.page_size
        print(
            f"enqueued {new} organizations ({len(ids) - new} already queued; "
            f"{waiting} waiting in {keys.org_queue})"
        )
        if next_offset < page.total:
            print(f"more remain ({page.total} in all): next -a offset={next_offset}")
        else:
            print(f"no more organizations after this page ({page.total} in all)")
