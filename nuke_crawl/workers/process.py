"""A worker process of :mod:`nuke_crawl.workers.pool`: ``python -m nuke_crawl.workers.process``.

It reads calls from stdin and writes results to stdout, each a pickle preceded by
a header: its length and the call's id (8 bytes each, big-endian). A call's pickle
is ``(func, args, kwargs)``; a result's is ``(ok, value)``, ``value`` being what
``func`` returned or the exception it raised. It exits at the end of its input:
when the crawler closes the pipe, or dies. ``NUKE_WORKER_SYS_PATH`` (JSON) gives
it its parent's ``sys.path``, so that it finds the same modules. Database calls
(:func:`with_db`) run in order on a thread of their own, the others on the main
thread, so a call may be answered before one sent earlier. Before its first call it
imports the modules named in ``NUKE_WORKER_PRELOAD`` (comma-separated), so that the
first page does not wait for them, and with ``NUKE_WORKER_GC_THRESHOLD`` set it
freezes what start-up created and scans the youngest generation every that many
allocations (see :mod:`nuke_crawl.extensions.gctune`).
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import importlib
import json
import os
import pickle
import struct
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, TypeVar

from nuke_crawl.db import Database

HEADER = struct.Struct("!QQ")  # payload size, call id
PIPE_SIZE = 1 << 20
T = TypeVar("T")

_connections: dict[str, Database] = {}  # this worker's connections, by URL


def with_db(url: str, func: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    """``func(db, *args, **kwargs)`` with this process's connection to ``url``."""
    db = _connections.get(url)
    if db is None:
        db = _connections[url] = Database(url)
    return func(db, *args, **kwargs)


def close_connections() -> None:
    while _connections:
        _, db = _connections.popitem()
        db.close()


def read_frame(stream: IO[bytes]) -> tuple[int, bytes] | None:
    """One frame's call id and payload, or None at the end of the input."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    size, call_id = HEADER.unpack(header)
    payload = stream.read(size)
    return (call_id, payload) if len(payload) == size else None


def frame(call_id: int, value: Any) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data), call_id) + data


def _result(call_id: int, ok: bool, value: Any) -> bytes:
    try:
        return frame(call_id, (ok, value))
    except Exception as exc:  # noqa: BLE001 - an unpicklable result or exception
        return frame(
            call_id,
            (False, RuntimeError(f"{type(value).__name__}: {value} (not picklable: {exc})")),
        )


def main() -> None:
    if os.environ.get("NUKE_WORKER_SYS_PATH"):
        sys.path[:] = json.loads(os.environ["NUKE_WORKER_SYS_PATH"])
    if os.environ.get("NUKE_WORKER_NICE"):
        # the priority is a preference: the work runs the same without it
        with contextlib.suppress(OSError, ValueError):
            os.nice(int(os.environ["NUKE_WORKER_NICE"]))
    for name in filter(None, os.environ.get("NUKE_WORKER_PRELOAD", "").split(",")):
        # a preference too: a call that needs the module fails with the reason
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    threshold = int(os.environ.get("NUKE_WORKER_GC_THRESHOLD") or 0)
    if threshold > 0:
        gc.freeze()
        gc.set_threshold(threshold, *gc.get_threshold()[1:])
    # Results go to the original stdout; anything the work prints goes to stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    stdin = sys.stdin.buffer
    for fd in (stdin.fileno(), out.fileno()):
        # 1 MiB pipes (Linux's default maximum, instead of 64 KiB): a call carrying a
        # downloaded image crosses in one write instead of several loop wake-ups.
        # (not a pipe, or a lower limit: the default size works too)
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
    lock = threading.Lock()  # both threads answer

    def send(reply: bytes) -> None:
        with lock:
            out.write(reply)
            out.flush()

    def run(call_id: int, func: Callable[..., Any], args: Any, kwargs: Any) -> None:
        try:
            reply = _result(call_id, True, func(*args, **kwargs))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
            reply = _result(call_id, False, exc)
        send(reply)

    # Database calls run, in order, on a thread of their own: while one waits for the
    # database (PostgreSQL's server, SQLite's own C code: both release the GIL), the
    # next page is extracted instead of waiting behind it.
    # (this file runs as __main__: the calls name the functions of the imported module)
    from nuke_crawl.workers import process as _worker

    db_calls = (_worker.with_db, _worker.close_connections)
    with ThreadPoolExecutor(1, thread_name_prefix="nuke-db") as db_thread:
        while (call := read_frame(stdin)) is not None:
            call_id, payload = call
            try:
                func, args, kwargs = pickle.loads(payload)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # noqa: BLE001 - e.g. a module it cannot import
                send(_result(call_id, False, exc))
                continue
            if func in db_calls:
                db_thread.submit(run, call_id, func, args, kwargs)
            else:
                run(call_id, func, args, kwargs)


if __name__ == "__main__":
    main()
