"""A timer-based write batcher: items arriving close together share one write."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

Batch = list[tuple[T, "asyncio.Future[R]"]]


class TimedBatcher(Generic[T, R]):
    """Collects values and hands them to ``write`` in batches: when ``size`` are
    waiting, or ``wait`` seconds after the first of a batch arrived, or as soon as
    ``idle()`` (if given) says no more values are coming soon (looked at every
    :attr:`IDLE_POLL` seconds while a partial batch waits).

    ``write`` receives ``[(value, future), ...]`` and settles every future (a result
    or an exception); :meth:`submit` returns once its value's future is settled.
    Writes run as tasks on the running loop; :meth:`drain` flushes and waits for all.
    """

    #: seconds between two looks at ``idle`` while a partial batch waits
    IDLE_POLL = 0.05

    def __init__(
        self,
        write: Callable[[Batch[T, R]], Awaitable[None]],
        *,
        size: int,
        wait: float,
        idle: Callable[[], bool] | None = None,
    ) -> None:
        self._write = write
        self.size = max(1, size)
        self.wait = max(0.0, wait)
        # when it says nothing more is coming soon, a partial batch is written at once
        self.idle = idle
        self._pending: Batch[T, R] = []
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._writing: set[asyncio.Future[None]] = set()

    async def submit(self, value: T) -> R:
        """Queue ``value``; return its result once its batch is written."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((value, future))
        if len(self._pending) >= self.size:
            self.flush()
        elif self._timer is None:
            self._deadline = loop.time() + self.wait
            self._arm(loop)
        return await future

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        left = self._deadline - loop.time()
        if self.idle is None or left <= self.IDLE_POLL:
            self._timer = loop.call_later(max(0.0, left), self.flush)
        else:
            self._timer = loop.call_later(self.IDLE_POLL, self._look, loop)

    def _look(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        if self.idle is not None and self.idle():
            self.flush()
        elif self._pending:
            self._arm(loop)

    def flush(self) -> None:
        """Start writing what is waiting now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        task = asyncio.ensure_future(self._write(batch))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def drain(self) -> None:
        """Flush and wait until every write started so far has finished."""
        self.flush()
        while self._writing:
            await asyncio.gather(*list(self._writing))
