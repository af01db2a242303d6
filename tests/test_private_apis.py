"""Guards on the private APIs of Scrapy and scrapy-playwright that nuke_crawl relies on,
each used in one place only (see the module each test names). When one of these tests
fails after an upgrade, that module needs updating: it does not fail silently."""

from __future__ import annotations

import hashlib
import inspect
import subprocess
import sys

from conftest import REPO


def test_slotsafe_downloader_copies_the_installed_scrapys_process_queue() -> None:
    # nuke_crawl/downloader/slotsafe.py overrides Downloader._process_queue with a copy
    # plus one line; a changed original must be copied again.
    from scrapy.core.downloader import Downloader, Slot

    from nuke_crawl.downloader.slotsafe import SCRAPY_PROCESS_QUEUE_SHA256

    source = inspect.getsource(Downloader._process_queue)
    assert hashlib.sha256(source.encode()).hexdigest() == SCRAPY_PROCESS_QUEUE_SHA256, (
        "Scrapy's Downloader._process_queue changed: update SlotSafeDownloader's copy "
        "and SCRAPY_PROCESS_QUEUE_SHA256 in nuke_crawl/downloader/slotsafe.py"
    )
    for name in ("_latercall", "_wait_for_download"):
        assert callable(getattr(Downloader, name, None)), name
    for name in ("latercall", "lastseen", "queue", "transferring"):
        assert hasattr(Slot(1, 0), name), name


def test_scrapy_playwright_still_has_what_launch_late_uses() -> None:
    # nuke_crawl/downloader/browser.py: launch_late()
    from scrapy_playwright.handler import ScrapyPlaywrightDownloadHandler

    from nuke_crawl.downloader.browser import PLAYWRIGHT_PRIVATE_API

    for name in PLAYWRIGHT_PRIVATE_API:
        assert callable(getattr(ScrapyPlaywrightDownloadHandler, name, None)), (
            f"scrapy-playwright's ScrapyPlaywrightDownloadHandler.{name} is gone: "
            "update launch_late() in nuke_crawl/downloader/browser.py"
        )
    assert inspect.iscoroutinefunction(ScrapyPlaywrightDownloadHandler._launch)


_ENGINE_CHECK = """
import asyncio
import scrapy
from scrapy.utils.test import get_crawler
from nuke_crawl.extensions.promptclose import engine_nextcall
seen = []
class Probe(scrapy.Spider):
    name = "probe"
    async def start(self):
        seen.append(engine_nextcall(self.crawler))
        return
        yield
async def main():
    crawler = get_crawler(Probe, {"TWISTED_REACTOR_ENABLED": False, "LOG_LEVEL": "ERROR"})
    await crawler.crawl_async()
    assert engine_nextcall(crawler) is None  # closed: nothing to poke
asyncio.run(main())
assert seen and seen[0] is not None and callable(seen[0].schedule), seen
print("ok")
"""


def test_a_running_engine_has_the_loop_promptclose_pokes() -> None:
    # nuke_crawl/extensions/promptclose.py: engine_nextcall() reads engine._slot.nextcall
    proc = subprocess.run(
        [sys.executable, "-c", _ENGINE_CHECK],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (
        "Scrapy's engine no longer has _slot.nextcall while running: update "
        f"engine_nextcall() in nuke_crawl/extensions/promptclose.py\n{proc.stderr}"
    )
