"""Extraction off the reactor: a small pool of worker processes.

Extraction is pure-Python CPU work (a few ms a page); on the reactor thread it
would stall every download and hold one core. A spawn-started process pool
moves it to the other core(s); ``processes=0`` runs it in a thread instead.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from nuke_crawl.extraction.extract import extract_page
from nuke_crawl.extraction.model import PageExtraction


def _warm() -> None:
    """Import the extraction stack in the worker before the first page."""
    import nuke_crawl.extraction  # noqa: F401


class ExtractionPool:
    """``await pool.extract(html, url, ...)`` runs :func:`extract_page` elsewhere."""

    def __init__(self, processes: int = 1) -> None:
        self.processes = processes
        self._executor: Executor
        if processes > 0:
            # spawn, not fork: the parent has threads (database, DNS)
            ctx = multiprocessing.get_context("spawn")
            self._executor = ProcessPoolExecutor(processes, mp_context=ctx, initializer=_warm)
        else:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="nuke-extract")

    async def extract(self, html: str, url: str, **kwargs: Any) -> PageExtraction:
        future = self._executor.submit(extract_page, html, url, **kwargs)
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
