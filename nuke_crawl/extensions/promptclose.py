"""Close a spider as soon as its last item is done, not up to 5 seconds later.

Scrapy's engine checks whether a spider is idle (and so can close) when a request
finishes or a new one is scheduled, and otherwise only on its heartbeat, every
5 seconds. The image spiders yield items from ``start()`` and no requests of their
own: after their last item, the engine noticed only at the next heartbeat, so every
run, however short, ended up to 5 s late (a 20 s benchmark run: up to a quarter of
its time). :class:`PromptClose` asks the engine for that check when an item is done.

Scrapy has no public way to ask for that check: :func:`engine_nextcall` is the one
place that reads the engine's private ``_slot.nextcall`` (Scrapy 2.19), and
tests/test_extensions.py fails loudly when a running engine no longer has it.
Without it the spider still closes, at the next heartbeat.
"""

from __future__ import annotations

import asyncio
from typing import Any

from scrapy import signals
from scrapy.crawler import Crawler


def engine_nextcall(crawler: Crawler) -> Any:
    """The running engine's ``_slot.nextcall`` (its loop, whose ``schedule()`` runs it
    soon), or None: before the spider opens, after it closes, or in a Scrapy without it."""
    slot = getattr(crawler.engine, "_slot", None)
    return getattr(slot, "nextcall", None)


def wake_engine(crawler: Crawler) -> None:
    """Have the engine run its loop soon (Scrapy runs it after each response and every
    5 seconds): it looks at its scheduler again, and closes an idle spider."""
    nextcall = engine_nextcall(crawler)
    if nextcall is not None:
        nextcall.schedule()


class PromptClose:
    """On ``item_scraped``, ``item_dropped`` and ``item_error``: run the engine's loop
    (which closes the spider if it is idle) :attr:`DELAY` seconds later, once for
    any number of items done meanwhile. Not at once: Scrapy counts an item as in
    progress until just after these signals. No settings."""

    DELAY = 0.05

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self._pending: asyncio.TimerHandle | None = None
        for signal in (signals.item_scraped, signals.item_dropped, signals.item_error):
            crawler.signals.connect(self.item_done, signal=signal)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> PromptClose:
        return cls(crawler)

    def item_done(self, **kwargs: Any) -> None:
        if self._pending is None:
            self._pending = asyncio.get_running_loop().call_later(self.DELAY, self._poke)

    def _poke(self) -> None:
        self._pending = None
        wake_engine(self.crawler)
