"""Shared fixtures: a database URL for each backend, and a real `scrapy` runner.

Every database test runs on SQLite and on the real PostgreSQL at
127.0.0.1:5432 (database ``test``), each PostgreSQL test in a schema of its
own. A PostgreSQL that is not there is a failure, never a skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PG_BASE = os.environ.get("NUKE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


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
