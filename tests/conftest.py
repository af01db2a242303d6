"""Shared fixtures: a database URL for each backend, and a real `scrapy` runner.

Every database test runs on SQLite and on the real PostgreSQL at
127.0.0.1:5432 (database ``test``), each PostgreSQL test in a schema of its
own. A PostgreSQL that is not there is a failure, never a skip.

``make test`` runs the suite in parallel (pytest-xdist): tests share nothing that
needs keeping apart (each has a PostgreSQL schema, a Redis namespace, ports and folders
of its own). A test that asserts a tight wall-clock bound is marked ``serial`` and runs
while no other test runs (:class:`_RunLock`): another test's processes would take the
cores it times.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.common import cache_bytecode

REPO = Path(__file__).resolve().parents[1]

# The suite starts a few hundred Python processes (scrapy runs, their worker processes,
# scrapyd): they cache their bytecode in a folder of their own (where the environment
# forbids writing it beside the sources). Set here, where the pytest (and xdist)
# processes start them.
cache_bytecode("nuke_crawl-tests-pycache")
PG_BASE = os.environ.get("NUKE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("NUKE_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _pg_schema_url(schema: str) -> str:
    sep = "&" if "?" in PG_BASE else "?"
    return f"{PG_BASE}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_BASE, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required at {PG_BASE} and is not reachable: {exc}")
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield _pg_schema_url(schema)
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'nuke.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty database on each backend."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def db(db_url: str) -> Iterator[object]:
    from nuke_crawl.db import Database, migrate

    database = Database(db_url)
    migrate(database)
    try:
        yield database
    finally:
        database.close()


def scrapy_env(db_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AWS_"))}
    env.update(
        DATABASE_URL=db_url,
        NUKE_ALLOW_PRIVATE_NETWORKS="1",
        PYTHONPATH=str(REPO),
        SCRAPY_SETTINGS_MODULE="nuke_crawl.settings",
    )
    env.update(extra)
    return env


# Fast, still polite: tests talk to loopback servers.
FAST = [
    "-s",
    "AUTOTHROTTLE_START_DELAY=0.01",
    "-s",
    "NUKE_BACKOFF_BASE=0.05",
    "-s",
    "DOWNLOAD_TIMEOUT=10",
    "-s",
    "NUKE_DB_BATCH_WAIT=0.05",
]


def run_scrapy(
    args: list[str],
    db_url: str,
    *,
    timeout: float = 120,
    cwd: Path | None = None,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """Run the real ``scrapy`` command line in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "scrapy", *args],
        cwd=cwd or REPO,
        env=scrapy_env(db_url, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class _RunLock:
    """A readers-writer lock shared by the xdist workers, on two lock files: every test
    holds ``run`` shared, a ``serial`` test holds it exclusively. A serial test takes
    ``gate`` first and keeps it while it waits and runs, so that the other workers'
    next tests queue behind it rather than keep it waiting. A worker keeps the lock
    from one serial test to the next."""

    def __init__(self, folder: Path) -> None:
        self.gate = (folder / "serial-gate.lock").open("a")
        self.run = (folder / "serial-run.lock").open("a")
        self.exclusive = False

    def acquire(self, exclusive: bool) -> None:
        fcntl.flock(self.gate, fcntl.LOCK_EX)
        if not exclusive:
            fcntl.flock(self.gate, fcntl.LOCK_UN)
        fcntl.flock(self.run, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        self.exclusive = exclusive

    def release(self) -> None:
        fcntl.flock(self.run, fcntl.LOCK_UN)
        if self.exclusive:
            fcntl.flock(self.gate, fcntl.LOCK_UN)
        self.exclusive = False


_run_lock: _RunLock | None = None


def _run_folder(config: pytest.Config) -> Path:
    """A folder of this run's own, the same for all its workers."""
    if config.option.basetemp:  # xdist gives each worker a folder in the run's basetemp
        return Path(config.option.basetemp).parent
    folder = Path(tempfile.gettempdir()) / f"nuke_crawl-tests-{config.workerinput['testrunuid']}"
    folder.mkdir(exist_ok=True)
    return folder


def _serial(item: pytest.Item | None) -> bool:
    return item is not None and item.get_closest_marker("serial") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not hasattr(config, "workerinput"):  # not under xdist: one test at a time
        return

    # The same order on every worker. The serial tests first: xdist hands the first
    # tests out in turn, so the workers start on them together and take turns at the
    # lock, with no other test to wait for in between. Then the longest (the browser's,
    # then the scrapy runs), so that the short ones even out the workers' ends.
    def rank(item: pytest.Item) -> int:
        if _serial(item):
            return 0
        if item.get_closest_marker("browser"):
            return 1
        return 2 if item.get_closest_marker("slow") else 3

    items.sort(key=rank)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    global _run_lock
    if not hasattr(item.config, "workerinput"):
        return (yield)
    if _run_lock is None:
        _run_lock = _RunLock(_run_folder(item.config))
    lock = _run_lock
    if not (lock.exclusive and _serial(item)):
        lock.acquire(exclusive=_serial(item))
    try:
        return (yield)
    finally:
        if not (lock.exclusive and _serial(nextitem)):
            lock.release()


@pytest.fixture
def ns() -> Iterator[str]:
    """A namespace of this test's own on the shared Redis (``NUKE_TEST_REDIS``), cleaned
    afterwards. A Redis that is not there is a failure, never a skip."""
    import redis

    client = redis.Redis.from_url(REDIS)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        pytest.fail(f"Redis is required at {REDIS} and is not reachable: {exc}")
    name = f"nuketest:{uuid.uuid4().hex[:10]}"
    yield name
    for key in client.scan_iter(f"{name}:*", count=1000):
        client.delete(key)
    client.close()
