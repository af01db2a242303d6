"""Scrapy's downloader, with each slot's concurrency kept for bursts of requests too.

Scrapy 2.19 with the asyncio reactor starts each download of a slot's queue as an asyncio
task (``Downloader._process_queue``), and the task only marks its request as transferring
when it first runs. Requests enqueued in the same tick therefore all find the slot free
and start together, whatever ``CONCURRENT_REQUESTS_PER_DOMAIN`` says: a media pipeline,
which asks for all of an item's files at once, sent every image of a vehicle (and of a
claimed batch) to one host at the same moment (measured: 5 at once with a per-domain
limit of 1). :class:`SlotSafeDownloader` marks a request as transferring as soon as it
leaves the queue, so a slot never has more than its concurrency in flight.

Scrapy offers no public hook for this: the override is a copy of its private
``Downloader._process_queue`` plus one line. :data:`SCRAPY_PROCESS_QUEUE_SHA256` is the
hash of the Scrapy method it was copied from; tests/test_middlewares.py fails loudly
when the installed Scrapy's differs, so that the copy is brought up to date.
"""

from __future__ import annotations

from time import monotonic

from scrapy.core.downloader import Downloader, Slot
from scrapy.utils.asyncio import call_later
from scrapy.utils.defer import _schedule_coro

#: sha256 of ``inspect.getsource(scrapy.core.downloader.Downloader._process_queue)`` in
#: Scrapy 2.19.0, the method :meth:`SlotSafeDownloader._process_queue` copies.
SCRAPY_PROCESS_QUEUE_SHA256 = "872b81a4bbb4cb1ad45b25c6f8803344a3a18fd5743dec234733891ab94559c8"


class SlotSafeDownloader(Downloader):
    """:class:`scrapy.core.downloader.Downloader` honouring slot concurrency for bursts
    (``DOWNLOADER = "nuke_crawl.downloader.slotsafe.SlotSafeDownloader"``)."""

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
