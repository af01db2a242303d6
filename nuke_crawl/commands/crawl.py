"""``scrapy crawl``, with spider arguments validated before anything starts.

A nuke_crawl spider declares its arguments as a :class:`~nuke_crawl.params.SpiderArgs`
class (its ``Arguments`` attribute); a bad
one is refused here with a message naming it (exit code 2, no traceback), and the
parsed arguments go to the spider (``PARSED``), which does not parse them again.
A run that could not start (``nuke/error`` in its stats) exits with 1; one that never
started (``nuke/cannot_start``) also prints ``Cannot start: ...`` as its last line on
stderr, whatever ``LOG_FILE`` and ``LOG_LEVEL`` say.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from scrapy.commands.crawl import Command as ScrapyCrawlCommand
from scrapy.exceptions import UsageError

from nuke_crawl.params import PARSED, ArgumentError, SpiderArgs


class Command(ScrapyCrawlCommand):
    _crawler: Any = None

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if len(args) == 1 and self.crawler_process is not None:
            try:
                spidercls = self.crawler_process.spider_loader.load(args[0])
            except KeyError:
                raise UsageError(f"Spider not found: {args[0]}", print_help=False) from None
            arguments = getattr(spidercls, "Arguments", None)
            if isinstance(arguments, type) and issubclass(arguments, SpiderArgs):
                given = {k: v for k, v in opts.spargs.items() if not k.startswith("_")}
                try:
                    parsed = arguments.parse(given, args[0])
                except ArgumentError as exc:
                    raise UsageError(str(exc), print_help=False) from None
                opts.spargs = {**opts.spargs, PARSED: parsed}
        super().run(args, opts)
        stats = getattr(self._crawler, "stats", None)
        if self.exitcode == 0 and stats is not None and stats.get_value("nuke/error"):
            self.exitcode = 1
        cannot_start = stats.get_value("nuke/cannot_start") if stats is not None else None
        if cannot_start:
            # the last thing printed, on stderr whatever LOG_FILE/LOG_LEVEL say
            sys.stderr.flush()
            print(f"Cannot start: {cannot_start}", file=sys.stderr, flush=True)

    def _create_crawler(self, spidercls: Any) -> Any:
        self._crawler = super()._create_crawler(spidercls)
        return self._crawler
