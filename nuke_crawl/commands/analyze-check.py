"""``scrapy analyze-check``: check each image analysis provider before a long run."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any, ClassVar

from scrapy.commands import ScrapyCommand
from scrapy.exceptions import UsageError

from nuke_crawl.analysis.registry import check_providers
from nuke_crawl.params import ArgumentError, to_providers


class Command(ScrapyCommand):
    """Prints one line per provider: ``OK`` or the exact reason (missing key, 401, model
    not found, unreachable endpoint). Exit code 1 when a requested (or configured)
    provider fails. Reads the same settings as ``scrapy crawl image_analysis``."""

    requires_project = True
    requires_crawler_process = False
    default_settings: ClassVar[dict[str, Any]] = {"LOG_LEVEL": "WARNING"}

    def syntax(self) -> str:
        return "[--providers local,openai,rekognition]"

    def short_desc(self) -> str:
        return "Check the image analysis providers' credentials (no image is analysed)"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument(
            "--providers",
            help="comma list (default: every provider; unconfigured ones are reported, not failed)",
        )

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        assert self.settings is not None
        try:
            requested = to_providers("--providers", opts.providers) if opts.providers else None
        except ArgumentError as exc:
            raise UsageError(str(exc), print_help=False) from None
        results = asyncio.run(check_providers(self.settings, requested))
        width = max(len(name) for name, _, _ in results)
        for name, ok, message in results:
            label = "SKIP  " if message.startswith("skipped") else ("OK    " if ok else "FAILED")
            print(f"{name:<{width}}  {label}  {message}")
        if not all(ok for _, ok, _ in results):
            self.exitcode = 1
