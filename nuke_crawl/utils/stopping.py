"""Abandoning work in flight when a crawl stops (Ctrl-C, SIGTERM, scrapyd's cancel).

The leased spiders (:mod:`nuke_crawl.spiders.leased`) send
:data:`nuke_crawl.signals.work_stopping` as soon as the engine starts stopping; a
pipeline keeps a :class:`StopFlag` connected to it and runs each unit's work through
:meth:`StopFlag.run`, which cancels the work when the flag is set. What the work had
finished (committed rows, stored files) stays; the unit's lease is released at close
and the next run takes it again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

from scrapy.crawler import Crawler

from nuke_crawl import signals as nuke_signals

T = TypeVar("T")

CANCEL_GRACE = 2.0
"""Seconds a cancelled unit of work gets to unwind before it is left behind."""


class Stopped(Exception):
    """The work was abandoned because the crawl is stopping."""


class StopFlag:
    """Set once the crawler sends :data:`~nuke_crawl.signals.work_stopping`."""

    def __init__(self, crawler: Crawler) -> None:
        self.event = asyncio.Event()
        crawler.signals.connect(self._on_stopping, signal=nuke_signals.work_stopping)

    def _on_stopping(self, **kwargs: Any) -> None:
        self.event.set()

    @property
    def is_set(self) -> bool:
        return self.event.is_set()

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Await ``work``; raise :class:`Stopped` (``work`` cancelled) if the flag is
        set first, or was already set (``work`` not started)."""
        if self.event.is_set():
            work.close()
            raise Stopped
        task = asyncio.ensure_future(work)
        waiter = asyncio.ensure_future(self.event.wait())
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            task.cancel()
            raise
        finally:
            waiter.cancel()
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.wait({task}, timeout=CANCEL_GRACE)
        if task.done():
            with contextlib.suppress(BaseException):
                task.exception()  # retrieved: no "never retrieved" warning
        else:
            task.add_done_callback(_retrieve)
        raise Stopped


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
