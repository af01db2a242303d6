"""scrapy-playwright's download handler, started only when a page needs a browser.

scrapy-playwright starts its Node.js driver (about 60 MB, and a second of CPU)
when the engine starts, whether or not any request asks for ``playwright``.
Most organizations' sites need no browser, so :class:`LazyPlaywrightDownloadHandler`
defers that start to the first request with ``meta["playwright"]``: a crawl of
plain HTML sites runs on the plain HTTP/1.1 handler and never starts Node.js.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.http import Request, Response
from scrapy_playwright.handler import ScrapyPlaywrightDownloadHandler

logger = logging.getLogger(__name__)


class LazyPlaywrightDownloadHandler(ScrapyPlaywrightDownloadHandler):
    """``ScrapyPlaywrightDownloadHandler`` that launches Playwright on first use.

    Requests without ``meta["playwright"]`` go to Scrapy's HTTP/1.1 handler, as
    with the parent class; the first one with it starts the driver (once, under
    a lock) before the page is rendered. ``launched`` tells whether it did.
    """

    def __init__(self, crawler: Crawler) -> None:
        super().__init__(crawler)
        # The parent connected its launch to engine_started; take it back.
        for receiver in (self._maybe_launch_in_thread, self._engine_started):
            crawler.signals.disconnect(receiver, signals.engine_started)
        self._launch_lock = asyncio.Lock()
        self.launched = False

    async def _ensure_launched(self, request: Request) -> None:
        async with self._launch_lock:
            if not self.launched:
                logger.info("Starting the browser (Playwright and Chromium) for %s", request.url)
                await self._maybe_future_from_coro(self._launch())
                self.launched = True
                if self.stats is not None:
                    self.stats.set_value("nuke/browser/launched", True)

    async def download_request(self, request: Request, *args: Any) -> Response:
        if request.meta.get("playwright") and not self.launched:
            await self._ensure_launched(request)
        return await super().download_request(request, *args)
