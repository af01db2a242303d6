"""Database access for the service: a few threads, each with its own connection."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from nuke_crawl.db import Database

T = TypeVar("T")


class DatabasePool:
    """Runs ``func(db, ...)`` in one of ``size`` threads, each owning one
    :class:`~nuke_crawl.db.Database` (a connection is never shared between threads),
    so the event loop never waits on the database."""

    def __init__(self, url: str, size: int = 4) -> None:
        self.url = url
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="nuke-svc-db")
        self._local = threading.local()
        self._all: list[Database] = []
        self._lock = threading.Lock()

    def _db(self) -> Database:
        db = getattr(self._local, "db", None)
        if db is None:
            db = Database(self.url)
            self._local.db = db
            with self._lock:
                self._all.append(db)
        return db

    async def run(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def call() -> T:
            return func(self._db(), *args, **kwargs)

        return await asyncio.wrap_future(self._executor.submit(call))

    def run_sync(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self._executor.submit(lambda: func(self._db(), *args, **kwargs)).result()

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        with self._lock:
            for db in self._all:
                with contextlib.suppress(Exception):  # closing at shutdown
                    db.close()
            self._all.clear()
