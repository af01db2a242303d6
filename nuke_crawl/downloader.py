"""Scrapy's downloader, with each slot's concurrency kept for bursts of requests too.

Scrapy 2.19 with the asyncio reactor starts each download of a slot's queue as an asyncio
task (``Downloader._process_queue``), and the task only marks its request as transferring
when it first runs. Requests enqueued in the same tick therefore all find the slot free
and start together, whatever ``CONCURRENT_REQUESTS_PER_DOMAIN`` says: a media pipeline,
which asks for all of an item's files at once, sent every image of a vehicle (and of a
claimed batch) to one host at the same moment (measured: 5 at once with a per-domain
limit of 1). :class:`SlotSafeDownloader` marks a request as transferring as soon as it
leaves the queue, so a slot never has more than its concurrency in flight.
"""

from __future__ import annotations

from time import monotonic

from scrapy.core.downloader import Downloader, Slot
from scrapy.utils.asyncio import call_later
from scrapy.utils.defer import _schedule_coro


class SlotSafeDownloader(Downloader):
    """:class:`scrapy.core.downloader.Downloader` honouring slot concurrency for bursts
    (``DOWNLOADER = "nuke_crawl.downloader.SlotSafeDownloader"``)."""

    def _process_queue(self, slot: Slot) -> None:
        # Scrapy 2.19's method, plus the transferring mark before the task is scheduled
        # (the task's own ``transferring.add`` is then a no-op; its ``finally`` removes it).
        if slot.latercall:
            return
        now = monotonic()
        delay = slot.download_delay()
        if delay:
            penalty = delay - now + slot.lastseen
            if penalty > 0:
                slot.latercall = call_later(penalty, self._latercall, slot)
                return
        while slot.queue and slot.free_transfer_slots() > 0:
            slot.lastseen = now
            request, queue_dfd = slot.queue.popleft()
            slot.transferring.add(request)
            _schedule_coro(self._wait_for_download(slot, request, queue_dfd))
            if delay:
                self._process_queue(slot)
                break
