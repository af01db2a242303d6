"""A pool of worker processes: CPU-bound work off the reactor and off its GIL.

Extracting a page (a few ms of pure-Python parsing) and writing a batch of
vehicles (binding twenty image rows each) would stall every download if they ran
on the reactor thread, and still compete with it for the GIL in a thread. A
small pool of worker processes takes both, so a crawl uses the machine's other
core(s):

- ``await pool.call(func, *args)`` runs a module-level function there;
- ``await pool.run_db(url, func, *args)`` runs ``func(db, *args)`` there with
  that worker's own :class:`~nuke_crawl.db.Database` connection to ``url``,
  opened on first use and kept for the run.

``processes=0`` runs the same work in one thread of the crawler instead.
Arguments and results cross a pipe: they must be picklable. A crawler's pool is
the :class:`~nuke_crawl.extensions.workers.WorkerPoolExtension`'s; this module knows
nothing of Scrapy.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import logging
import os
import pickle
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from nuke_crawl.workers.process import HEADER, close_connections, frame, with_db

T = TypeVar("T")

logger = logging.getLogger(__name__)

# ``python -m nuke_crawl.workers.process`` would find nuke_crawl on the default path
# before the parent's is applied: under scrapyd the crawler runs from a deployed egg,
# which only the parent's sys.path has. The worker module is found with the parent's path.
_BOOT = (
    "import json, os, runpy, sys; "
    "sys.path[:] = json.loads(os.environ['NUKE_WORKER_SYS_PATH']); "
    "runpy.run_module('nuke_crawl.workers.process', run_name='__main__', alter_sys=True)"
)


class WorkerError(Exception):
    """A worker process died, or could not be started."""


class _Worker:
    """One ``python -m nuke_crawl.workers.process`` process and its calls in flight."""

    def __init__(self, proc: asyncio.subprocess.Process, on_done: Callable[[], None]) -> None:
        self.proc = proc
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.on_done = on_done  # a call finished: the pool may send another
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        error: BaseException = WorkerError(f"worker process {self.proc.pid} exited")
        try:
            while True:
                header = await self.proc.stdout.readexactly(HEADER.size)
                size, call_id = HEADER.unpack(header)
                ok, value = pickle.loads(await self.proc.stdout.readexactly(size))
                future = self.pending.pop(call_id, None)
                if future is not None and not future.done():
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
                self.on_done()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception as exc:  # noqa: BLE001 - a corrupt reply: fail what is pending
            error = WorkerError(f"worker process {self.proc.pid}: unreadable reply ({exc!r})")
        for future in self.pending.values():
            if not future.done():
                future.set_exception(error)
        self.pending.clear()
        self.on_done()

    @property
    def alive(self) -> bool:
        return not self.reader.done()


class WorkerPool:
    """``processes`` worker processes (0: one thread of the crawler).

    Each worker is a fresh ``python -m nuke_crawl.workers.process`` (it imports only what
    its calls need) speaking length-prefixed pickles over its stdin and stdout,
    read and written by the event loop itself: no helper threads, no wake-ups
    from other threads. Each worker has at most ``depth`` calls in flight (one
    running, the others ready in its pipe: the event loop of a busy crawler can
    take a few milliseconds to send the next call, and with only one ready the
    worker sat idle ~35% of an org crawl; 8 measured best); the other calls wait in
    the crawler, highest ``priority`` first, so that a page which leads to more
    pages (an inventory page) is not stuck behind dozens of detail pages. A worker
    that dies fails its calls with :class:`WorkerError` and is replaced on the next
    call; at the end of the crawler's input (a crash included) the workers exit.
    :attr:`waiting` tells how far the workers are behind, and :meth:`add_listener`
    hears of each finished call (the Redis scheduler pauses its pops on both).
    ``nice`` (0-19) lowers the workers' CPU priority below the crawler's; each worker
    imports the ``preload`` modules as it starts (:meth:`start` starts the workers
    before the first call) and, with ``gc_threshold`` > 0, scans its youngest
    generation of objects every that many allocations instead of Python's 700.
    """

    def __init__(
        self,
        processes: int = 1,
        depth: int = 8,
        nice: int = 0,
        gc_threshold: int = 0,
        preload: tuple[str, ...] = (),
    ) -> None:
        if processes < 0:
            raise ValueError(f"processes={processes}: must be 0 or more")
        if not 0 <= nice <= 19:
            raise ValueError(f"nice={nice}: must be from 0 to 19")
        if gc_threshold < 0:
            raise ValueError(f"gc_threshold={gc_threshold}: must be 0 or more")
        self.processes = processes
        self.depth = max(1, depth)
        self.nice = nice
        self.gc_threshold = gc_threshold
        self.preload = preload
        self._workers: list[_Worker] = []
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []  # a heap
        self._starting: asyncio.Lock | None = None
        self._ids = itertools.count()
        self._thread = (
            ThreadPoolExecutor(1, thread_name_prefix="nuke-worker") if processes == 0 else None
        )
        self._listeners: list[Callable[[], None]] = []

    @property
    def waiting(self) -> int:
        """Calls waiting in the crawler because every worker's pipe is full (each worker
        holds ``depth``): how far the workers are behind. Always 0 with ``processes=0``."""
        return len(self._waiting)

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (in the event loop) each time a worker finishes a call or
        dies, after the calls waiting for its room are woken; an error it raises is
        logged and never reaches the pool."""
        self._listeners.append(callback)

    def _done(self) -> None:
        self._wake()
        for callback in self._listeners:
            try:
                callback()
            except Exception:  # a listener's bug must not stop the replies being read
                logger.exception("Error in a worker pool listener")

    async def _worker(self) -> _Worker:
        workers = self._workers
        if len(workers) == self.processes and all(w.alive for w in workers):
            # every worker is up (each call comes here): no lock, no list to rebuild
            return min(workers, key=lambda w: len(w.pending))
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            self._workers = [w for w in self._workers if w.alive]
            while len(self._workers) < self.processes:
                try:
                    proc = await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-c",
                        _BOOT,
                        stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.PIPE,
                        env={
                            **os.environ,
                            "NUKE_WORKER_SYS_PATH": json.dumps(sys.path),
                            "NUKE_WORKER_NICE": str(self.nice),
                            "NUKE_WORKER_GC_THRESHOLD": str(self.gc_threshold),
                            "NUKE_WORKER_PRELOAD": ",".join(self.preload),
                        },
                    )
                except OSError as exc:
                    raise WorkerError(f"cannot start a worker process: {exc}") from exc
                self._workers.append(_Worker(proc, self._done))
        return min(self._workers, key=lambda w: len(w.pending))

    async def start(self) -> None:
        """Start the workers now rather than at the first call (they import their
        ``preload`` modules while the crawler does other things)."""
        if self._thread is None:
            await self._worker()

    def _wake(self) -> None:
        """Wake as many waiting calls, highest priority first, as there are free slots."""
        free = sum(max(0, self.depth - len(w.pending)) for w in self._workers if w.alive)
        if len([w for w in self._workers if w.alive]) < self.processes:
            free = max(free, 1)  # a dead worker is replaced by the next call
        while free > 0 and self._waiting:
            _, _, waiter = heapq.heappop(self._waiting)
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    async def _acquire(self, priority: int) -> _Worker:
        woken = False
        while True:
            worker = await self._worker()
            if len(worker.pending) < self.depth and (woken or not self._waiting):
                return worker
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (-priority, next(self._ids), waiter))
            self._wake()
            await waiter
            woken = True

    async def call(self, func: Callable[..., T], *args: Any, priority: int = 0, **kwargs: Any) -> T:
        """``func(*args, **kwargs)`` in a worker (``func`` importable by name).
        ``priority`` (higher first) is the pool's, not passed to ``func``."""
        if self._thread is not None:
            return await asyncio.wrap_future(self._thread.submit(func, *args, **kwargs))
        call_id = next(self._ids)
        data = frame(call_id, (func, args, kwargs))  # an unpicklable call fails here
        worker = await self._acquire(priority)
        future: asyncio.Future[T] = await self._send(worker, call_id, data)
        return await future

    @staticmethod
    async def _send(worker: _Worker, call_id: int, data: bytes) -> asyncio.Future[Any]:
        """Write a framed call to ``worker``; the future of its result."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        worker.pending[call_id] = future
        assert worker.proc.stdin is not None
        try:
            worker.proc.stdin.write(data)
            await worker.proc.stdin.drain()
        except (ConnectionError, RuntimeError) as exc:
            worker.pending.pop(call_id, None)
            raise WorkerError(f"worker process {worker.proc.pid} is gone: {exc}") from exc
        return future

    async def run_db(
        self, url: str, func: Callable[..., T], *args: Any, priority: int = 0, **kwargs: Any
    ) -> T:
        """``func(db, *args, **kwargs)`` in a worker, ``db`` its connection to ``url``."""
        return await self.call(with_db, url, func, args, kwargs, priority=priority)

    async def close(self, timeout: float = 60) -> None:
        """Close the workers' connections and let them exit (killed after ``timeout``)."""
        if self._thread is not None:
            await asyncio.wrap_future(self._thread.submit(close_connections))
            self._thread.shutdown(wait=False)
            return
        workers, self._workers = self._workers, []
        for worker in workers:
            if not worker.alive:
                continue
            call_id = next(self._ids)
            try:
                future = await self._send(
                    worker, call_id, frame(call_id, (close_connections, (), {}))
                )
                await asyncio.wait_for(future, timeout)
            except Exception:  # noqa: BLE001 - a dead worker has nothing left to close
                pass
        for worker in workers:
            if worker.proc.stdin is not None:
                worker.proc.stdin.close()
            try:
                await asyncio.wait_for(worker.proc.wait(), timeout)
            except TimeoutError:
                worker.proc.kill()
                await worker.proc.wait()
            await asyncio.gather(worker.reader, return_exceptions=True)
