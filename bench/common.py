"""Set-up every benchmark shares."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def cache_bytecode(folder: str = "nuke_crawl-bench-pycache") -> None:
    """Let the processes started from here on cache their bytecode, as a deployment's do.

    Where the environment forbids writing bytecode (``PYTHONDONTWRITEBYTECODE``, set on
    these machines), every crawler and worker process compiled nuke_crawl again as it
    started: about 0.1 CPU second each, which no installed copy pays. They cache it in
    ``folder`` of the temporary directory instead (``PYTHONPYCACHEPREFIX``), never beside
    the sources. The benchmarks and the test suite (tests/conftest.py) call it."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ.setdefault("PYTHONPYCACHEPREFIX", str(Path(tempfile.gettempdir()) / folder))


def private_redis(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server of one's own on a free port of 127.0.0.1, keeping nothing on disk
    (``folder`` is its working folder), answering once this returns: its process (to
    stop, or to kill as a lost Redis) and its URL. For the benchmarks and the tests."""
    import redis

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [
            shutil.which("redis-server") or "/usr/bin/redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
    finally:
        client.close()
    return proc, url


def peak_rss_of_tree(proc: subprocess.Popen[bytes], sample: float = 0.2) -> tuple[int, float]:
    """Wait for ``proc``; return (peak summed RSS of it and its children in bytes, seconds)."""
    start = time.monotonic()
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(sample)
    return peak, time.monotonic() - start


def tree_rss(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants, in bytes (Linux's /proc)."""
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            with open(f"/proc/{p}/task/{p}/children") as fh:
                todo += [int(c) for c in fh.read().split()]
        except (OSError, ValueError):
            continue
    return total
