"""The crawler's worker processes: CPU-bound work off the reactor and off its GIL.

Extracting a page (a few ms of pure-Python parsing) and writing a batch of
vehicles (binding twenty image rows each) would stall every download if they ran
on the reactor thread, and still compete with it for the GIL in a thread. A
small pool of spawn-started processes takes both, so a crawl uses the machine's
other core(s):

- ``await pool.call(func, *args)`` runs a module-level function there;
- ``await pool.run_db(url, func, *args)`` runs ``func(db, *args)`` there with
  that worker's own :class:`~nuke_crawl.db.Database` connection to ``url``,
  opened on first use and kept for the run.

``processes=0`` runs the same work in one thread of the crawler instead.
Arguments and results cross a pipe: they must be picklable.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, TypeVar

from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured

from nuke_crawl.db import Database

T = TypeVar("T")

_connections: dict[str, Database] = {}  # this worker's connections, by URL


def _warm() -> None:
    """Import the extraction stack in each worker before its first page."""
    import nuke_crawl.extraction  # noqa: F401


def _with_db(url: str, func: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    db = _connections.get(url)
    if db is None:
        db = _connections[url] = Database(url)
    return func(db, *args, **kwargs)


def _close_connections() -> None:
    while _connections:
        _, db = _connections.popitem()
        db.close()


class WorkerPool:
    """``processes`` spawn-started worker processes (0: one thread)."""

    def __init__(self, processes: int = 1) -> None:
        if processes < 0:
            raise ValueError(f"processes={processes}: must be 0 or more")
        self.processes = processes
        self._executor: Executor
        if processes > 0:
            # spawn, not fork: the crawler has threads (database, DNS)
            ctx = multiprocessing.get_context("spawn")
            self._executor = ProcessPoolExecutor(processes, mp_context=ctx, initializer=_warm)
        else:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="nuke-worker")

    async def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``func(*args, **kwargs)`` in a worker."""
        return await asyncio.wrap_future(self._executor.submit(func, *args, **kwargs))

    async def run_db(self, url: str, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``func(db, *args, **kwargs)`` in a worker, ``db`` its connection to ``url``."""
        return await self.call(_with_db, url, func, args, kwargs)

    def close(self) -> None:
        """Close the workers' connections, then stop the workers (blocking)."""
        for _ in range(max(1, self.processes)):
            try:
                self._executor.submit(_close_connections).result(timeout=60)
            except Exception:  # noqa: BLE001 - a dead worker has nothing left to close
                break
        self._executor.shutdown(wait=True, cancel_futures=True)


def crawler_workers(crawler: Crawler) -> WorkerPool:
    """The crawler's :class:`WorkerPool` (``NUKE_WORKER_PROCESSES``, default 1),
    created on first use and closed when the engine stops."""
    pool: WorkerPool | None = getattr(crawler, "_nuke_workers", None)
    if pool is None:
        processes = crawler.settings.getint("NUKE_WORKER_PROCESSES", 1)
        if processes < 0:
            raise NotConfigured(f"NUKE_WORKER_PROCESSES={processes}: must be 0 or more")
        pool = WorkerPool(processes)
        crawler._nuke_workers = pool  # type: ignore[attr-defined]

        async def close() -> None:
            await asyncio.to_thread(pool.close)

        crawler.signals.connect(close, signal=signals.engine_stopped, weak=False)
    return pool
