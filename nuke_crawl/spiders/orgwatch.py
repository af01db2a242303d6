"""The org crawl's progress while it runs: a progress line, and each organization's
summary as soon as it is finished.

:class:`OrgWatch` runs beside the crawl (started when the organizations are selected,
stopped when the spider closes). Every :data:`CHECK_EVERY` seconds it asks the spider
to report the organizations finished since (``OrgSpider.report_finished``: their
summary logged and recorded in the database at once, not only at the close); every
``NUKE_PROGRESS_INTERVAL`` seconds (default 60; 0: never) it logs a line like::

    Progress: 3 of 10 organizations done, 1234 pages, 456 vehicles found,
    20.6 pages/s, ETA 4m10s

The ETA is the time the finished organizations took on average times those left
("ETA unknown" until one is finished). Nothing here runs per page.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

logger = logging.getLogger(__name__)

CHECK_EVERY = 0.5  # seconds between two looks for finished organizations


def duration(seconds: float) -> str:
    """``42s``, ``4m10s``, ``2h05m``."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def progress_line(done: int, selected: int, pages: int, vehicles: int, elapsed: float) -> str:
    """The progress line for ``done`` of ``selected`` organizations after ``elapsed``
    seconds."""
    elapsed = max(elapsed, 1e-6)
    left = max(0, selected - done)
    if not left:
        eta = "ETA 0s"
    elif done:
        eta = f"ETA {duration(elapsed / done * left)}"
    else:
        eta = "ETA unknown"
    return (
        f"Progress: {done} of {selected} organizations done, {pages} pages, "
        f"{vehicles} vehicles found, {pages / elapsed:.1f} pages/s, {eta}"
    )


class OrgWatch:
    """Reports an org crawl's progress (see the module doc); reads
    ``NUKE_PROGRESS_INTERVAL`` through the spider (``interval``)."""

    def __init__(self, spider: Any, interval: float) -> None:
        self.spider = spider
        self.interval = max(0.0, interval)
        self.started = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self.started = time.monotonic()
            self._task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def line(self, done: int) -> str:
        progress = self.spider.progress.values()
        return progress_line(
            done,
            len(self.spider.progress),
            sum(p.pages for p in progress),
            sum(p.vehicles_found for p in progress),
            time.monotonic() - self.started,
        )

    async def _run(self) -> None:
        next_line = self.started + self.interval
        while True:
            await asyncio.sleep(min(CHECK_EVERY, self.interval or CHECK_EVERY))
            try:
                done = self.spider.report_finished()
                if self.interval and time.monotonic() >= next_line:
                    next_line = time.monotonic() + self.interval
                    logger.info("%s", self.line(done))
            except Exception:  # a report must never end the crawl
                logger.exception("Could not report the crawl's progress")
