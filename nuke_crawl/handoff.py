"""Phase one hands off to phase two: start ``image_backfill`` when ``org`` closes.

:class:`BackfillHandoff` is an extension (``EXTENSIONS`` in settings). When the
``org`` spider closes having created vehicles, it starts an ``image_backfill`` run
for them (``-a created_after=<the org run's start> -a limit=<vehicles created>``)
without waiting for it:

- by default as a detached process (``python -m scrapy crawl image_backfill``, its
  own session, so it outlives the org crawl), logging to ``NUKE_BACKFILL_LOG_FILE``;
- through scrapyd's ``schedule.json`` when ``NUKE_SCRAPYD_URL`` is set (project
  ``NUKE_SCRAPYD_PROJECT``, default ``BOT_NAME``).

Settings (defaults): ``NUKE_TRIGGER_BACKFILL`` (False; off means the extension is
not configured), ``NUKE_SCRAPYD_URL`` (None), ``NUKE_SCRAPYD_PROJECT`` (``BOT_NAME``),
``NUKE_BACKFILL_LOG_FILE`` (``"image_backfill.log"``). The detached run gets the
org crawl's ``DATABASE_URL`` (through its environment) and the :data:`FORWARDED_SETTINGS`
given with ``-s``.

Stats: ``nuke/handoff/started`` (1) or ``nuke/handoff/error`` (the reason).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from typing import Any

from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured

from nuke_crawl.db import database_url, redact_url

logger = logging.getLogger(__name__)

SOURCE_SPIDER = "org"
TARGET_SPIDER = "image_backfill"


def backfill_arguments(started_at: datetime, created: int) -> dict[str, str]:
    """The ``image_backfill`` arguments covering the vehicles an org run created."""
    return {"created_after": started_at.isoformat(), "limit": str(max(1, created))}


#: Settings given on the org crawl's command line that the backfill run inherits.
FORWARDED_SETTINGS = (
    "IMAGES_STORE",
    "NUKE_IMAGES_PUBLIC_URL",
    "AWS_ENDPOINT_URL",
    "IMAGES_MIN_WIDTH",
    "IMAGES_MIN_HEIGHT",
    "NUKE_IMAGE_MAX_ATTEMPTS",
    "NUKE_ALLOW_PRIVATE_NETWORKS",
    "AUTOTHROTTLE_START_DELAY",
    "DOWNLOAD_TIMEOUT",
)


def forwarded_settings(settings: Any) -> dict[str, str]:
    """The :data:`FORWARDED_SETTINGS` set with ``-s`` on the org crawl (cmdline priority)."""
    out = {}
    for name in FORWARDED_SETTINGS:
        priority = settings.getpriority(name)
        if priority is not None and priority >= 40 and settings.get(name) is not None:
            out[name] = str(settings.get(name))
    return out


def backfill_command(arguments: dict[str, str], settings: dict[str, str] | None = None
                     ) -> list[str]:
    cmd = [sys.executable, "-m", "scrapy", "crawl", TARGET_SPIDER]
    for name, value in arguments.items():
        cmd += ["-a", f"{name}={value}"]
    for name, value in (settings or {}).items():
        cmd += ["-s", f"{name}={value}"]
    return cmd


def start_detached(
    arguments: dict[str, str], log_file: str | None, *, settings: dict[str, str] | None = None,
    database_url: str | None = None,
) -> int:
    """Start the backfill in its own session; return its pid. The database URL goes
    through the environment, never the command line (it may hold a password)."""
    env = dict(os.environ)
    if database_url:
        env["DATABASE_URL"] = database_url
    out: Any = subprocess.DEVNULL
    if log_file:
        out = open(log_file, "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            backfill_command(arguments, settings),
            cwd=os.getcwd(),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        if out is not subprocess.DEVNULL:
            out.close()
    return proc.pid


def schedule_scrapyd(url: str, project: str, arguments: dict[str, str]) -> str:
    """POST to scrapyd's ``schedule.json``; return the job id."""
    data = urllib.parse.urlencode(
        {"project": project, "spider": TARGET_SPIDER, **arguments}
    ).encode()
    endpoint = url.rstrip("/") + "/schedule.json"
    with urllib.request.urlopen(endpoint, data=data, timeout=30) as response:  # noqa: S310
        answer = json.loads(response.read().decode("utf-8"))
    if answer.get("status") != "ok":
        raise RuntimeError(f"scrapyd answered {answer}")
    return str(answer.get("jobid"))


class BackfillHandoff:
    """Starts ``image_backfill`` for the vehicles an ``org`` run created (see module doc)."""

    def __init__(self, crawler: Crawler) -> None:
        settings = crawler.settings
        if not settings.getbool("NUKE_TRIGGER_BACKFILL", False):
            # No reason given on purpose: Scrapy logs a reason as a WARNING on every
            # run, and off is the normal state.
            raise NotConfigured
        self.crawler = crawler
        self.scrapyd_url: str | None = settings.get("NUKE_SCRAPYD_URL") or None
        self.project = settings.get("NUKE_SCRAPYD_PROJECT") or settings.get("BOT_NAME")
        self.log_file: str | None = settings.get("NUKE_BACKFILL_LOG_FILE", "image_backfill.log")
        self.started_at = datetime.now(UTC)
        crawler.signals.connect(self.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> BackfillHandoff:
        return cls(crawler)

    def spider_opened(self, spider: Any) -> None:
        self.started_at = datetime.now(UTC)

    async def spider_closed(self, spider: Any, reason: str) -> None:
        if getattr(spider, "name", None) != SOURCE_SPIDER:
            return
        if getattr(spider, "args", {}).get("dry_run"):
            return
        stats = self.crawler.stats
        assert stats is not None
        created = int(stats.get_value("nuke/vehicles/created", 0) or 0)
        if not created:
            logger.info("No vehicles created: no image backfill to start")
            return
        arguments = backfill_arguments(self.started_at, created)
        try:
            if self.scrapyd_url:
                job = await asyncio.to_thread(
                    schedule_scrapyd, self.scrapyd_url, str(self.project), arguments
                )
                logger.info("Scheduled image_backfill for %d vehicles on scrapyd %s (job %s)",
                            created, redact_url(self.scrapyd_url), job)
            else:
                pid = start_detached(
                    arguments, self.log_file,
                    settings=forwarded_settings(self.crawler.settings),
                    database_url=database_url(self.crawler.settings),
                )
                logger.info("Started image_backfill for %d vehicles (pid %d, log %s)",
                            created, pid, self.log_file or "discarded")
            stats.set_value("nuke/handoff/started", 1)
        except Exception as exc:  # noqa: BLE001 - the crawl itself succeeded; say why
            logger.error("Could not start image_backfill: %s", exc)
            stats.set_value("nuke/handoff/error", str(exc))
