"""Hostile sites and bad input (issue 12, part A): the real ``scrapy`` command in a child
process, real local servers counting their hits, real databases."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import FAST, run_scrapy

from nuke_crawl.db import Database, migrate, store
from nuke_crawl.demo.server import Request, Response, serve


class Counting:
    """A site answering one page per path; every request is counted in ``hits``."""

    def __init__(self, pages: dict[str, tuple[int, dict[str, str], bytes]] | None = None):
        self.pages = pages or {}
        self.hits: list[str] = []

    def __call__(self, request: Request) -> Response:
        self.hits.append(request.path)
        status, headers, body = self.pages.get(request.path, (404, {}, b"not found"))
        return Response(status, body=body, headers=headers)


def add_org(db_url: str, url: str, **metadata: Any) -> str:
    database = Database(db_url)
    migrate(database)
    org, _ = store.add_organization(database, url, name="Fixture Motors", metadata=metadata)
    database.close()
    return org.id


def org_metadata(db_url: str, org_id: str) -> dict[str, Any]:
    database = Database(db_url)
    org = store.get_organization(database, org_id)
    database.close()
    assert org is not None
    return org.metadata


# 7. The refusal names the way out


def test_refused_website_names_the_settings_that_allow_it(sqlite_url: str) -> None:
    site = Counting({"/": (200, {}, b"<html><body>home</body></html>")})
    with serve(site) as server:
        org_id = add_org(sqlite_url, server.url)
        proc = run_scrapy(["crawl", "org", "-a", "threshold=1", *FAST], sqlite_url,
                          NUKE_ALLOW_PRIVATE_NETWORKS="0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert site.hits == []
    assert "website refused by the private-network guard" in proc.stderr
    error = org_metadata(sqlite_url, org_id)["last_error"]
    for text in (error, proc.stderr):
        assert "NUKE_ALLOW_PRIVATE_NETWORKS=1" in text
        assert "NUKE_PRIVATE_NETWORKS_ALLOW_HOSTS=host:port" in text
    assert "Traceback" not in proc.stderr
