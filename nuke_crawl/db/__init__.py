"""Database access: one API over SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import os
from typing import Any

from .connection import (
    DEFAULT_DATABASE_URL,
    AsyncDatabase,
    Database,
    DatabaseError,
    Json,
    loads_json,
    new_id,
    redact_url,
)
from .migrations import current_version, latest_version, migrate, needs_migration

__all__ = [
    "DEFAULT_DATABASE_URL",
    "AsyncDatabase",
    "Database",
    "DatabaseError",
    "Json",
    "current_version",
    "database_url",
    "latest_version",
    "loads_json",
    "migrate",
    "needs_migration",
    "new_id",
    "redact_url",
]


def database_url(settings: Any = None) -> str:
    """``DATABASE_URL`` from the environment, else the Scrapy setting, else
    the embedded default ``sqlite:///nuke.db``."""
    env = os.environ.get("DATABASE_URL")
    if env:
        return env
    if settings is not None:
        value = settings.get("DATABASE_URL")
        if value:
            return str(value)
    return DEFAULT_DATABASE_URL
