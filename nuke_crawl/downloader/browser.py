"""The org crawl's download handler: Scrapy's HTTP/1.1 handler, with scrapy-playwright's
created only when a page needs a browser.

scrapy-playwright starts its Node.js driver (about 60 MB, and a second of CPU)
when the engine starts, whether or not any request asks for ``playwright``, and
importing it costs every crawl about 0.15 s more. Most organizations' sites need
no browser, so :class:`LazyPlaywrightDownloadHandler` downloads with Scrapy's own
HTTP/1.1 handler and imports, creates and starts scrapy-playwright's handler at
the first request with ``meta["playwright"]``: a crawl of plain HTML sites never
imports Playwright nor starts Node.js.

Scrapy builds one handler per scheme; ``http`` and ``https`` share one browser, the
:class:`Browser` component (an extension the org spider enables with the handlers).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from scrapy import signals
from scrapy.core.downloader.handlers.http11 import HTTP11DownloadHandler
from scrapy.crawler import Crawler
from scrapy.http import Request, Response

from nuke_crawl.middlewares.browserguard import CheckingProxy, install_browser_guard

if TYPE_CHECKING:
    from scrapy_playwright.handler import ScrapyPlaywrightDownloadHandler

logger = logging.getLogger(__name__)

#: scrapy-playwright's private members :func:`launch_late` relies on (0.0.4x): it has no
#: public way to launch a handler created after ``engine_started``.
#: tests/test_org_spider.py checks that the installed version still has them.
PLAYWRIGHT_PRIVATE_API = (
    "_maybe_launch_in_thread",
    "_engine_started",
    "_maybe_future_from_coro",
    "_launch",
)


async def launch_late(handler: ScrapyPlaywrightDownloadHandler, crawler: Crawler) -> None:
    """Launch scrapy-playwright's ``handler``, created after ``engine_started`` fired.

    The one place that uses scrapy-playwright's private API (:data:`PLAYWRIGHT_PRIVATE_API`):
    the handler connects its launch to ``engine_started``, which has fired, so this
    disconnects those receivers and runs the launch itself."""
    for receiver in (handler._maybe_launch_in_thread, handler._engine_started):
        crawler.signals.disconnect(receiver, signals.engine_started)
    await handler._maybe_future_from_coro(handler._launch())


class Browser:
    """The crawler's one scrapy-playwright handler (its http and https handlers share
    it), created and launched on first use. An extension without settings, found by
    the handlers with ``crawler.get_extension(Browser)``."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.lock = asyncio.Lock()
        self.handler: ScrapyPlaywrightDownloadHandler | None = None
        self.proxy: CheckingProxy | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Browser:
        return cls(crawler)

    async def get(self, request: Request) -> ScrapyPlaywrightDownloadHandler:
        async with self.lock:
            if self.handler is None:
                from scrapy_playwright.handler import ScrapyPlaywrightDownloadHandler

                logger.info("Starting the browser (Playwright and Chromium) for %s", request.url)
                handler = ScrapyPlaywrightDownloadHandler.from_crawler(self.crawler)
                # the network guard for Chromium's own requests
                self.proxy = await install_browser_guard(self.crawler, handler)
                try:
                    await launch_late(handler, self.crawler)
                except BaseException:
                    await handler.close()
                    raise
                self.handler = handler
                if self.crawler.stats is not None:
                    self.crawler.stats.set_value("nuke/browser/launched", True)
            return self.handler

    async def close(self) -> None:
        async with self.lock:
            handler, self.handler = self.handler, None
        if handler is not None:
            await handler.close()
        if self.proxy is not None:
            await self.proxy.close()


class LazyPlaywrightDownloadHandler(HTTP11DownloadHandler):
    """Scrapy's HTTP/1.1 handler; requests with ``meta["playwright"]`` go to
    scrapy-playwright's handler, which the first of them creates and starts (once
    a crawler, under a lock: the :class:`Browser` component). ``launched`` tells
    whether it did."""

    def __init__(self, crawler: Crawler) -> None:
        super().__init__(crawler)
        browser = crawler.get_extension(Browser)
        if browser is None:
            raise RuntimeError(
                "LazyPlaywrightDownloadHandler needs the nuke_crawl.downloader.browser.Browser "
                "extension in EXTENSIONS (the org spider enables both)"
            )
        self._browser = browser

    @property
    def launched(self) -> bool:
        return self._browser.handler is not None

    async def download_request(self, request: Request) -> Response:
        if request.meta.get("playwright"):
            handler = await self._browser.get(request)
            return await handler.download_request(request)
        return await super().download_request(request)

    async def close(self) -> None:
        await super().close()
        await self._browser.close()
