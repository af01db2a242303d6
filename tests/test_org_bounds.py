"""Hostile sites against the real `scrapy crawl org` (issue 12, items 2-4): endless
pagination, a page flooded with links, sitemap indexes that list themselves or nest
without end. Each crawl must end by itself, fetch the vehicles, stay under 300 MB
(the whole process tree, sampled), and record each cap it hit in the organization's
``metadata.last_crawl``. Local servers count every hit."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST, REPO, scrapy_env

from bench.common import tree_rss
from nuke_crawl.db import Database, migrate, store
from nuke_crawl.demo.server import Request, Response, serve
from nuke_crawl.spiders.bounds import MAX_NEXT_PAGES_PER_PAGE

pytestmark = pytest.mark.slow

MB = 1024 * 1024
RSS_LIMIT = 300 * MB


# -- a site made of functions, counting its hits ----------------------------------------


def vehicle_page(n: int) -> bytes:
    data = {
        "@context": "https://schema.org",
        "@type": "Car",
        "name": f"2015 Ford Mustang GT {n}",
        "vehicleModelDate": "2015",
        "brand": {"@type": "Brand", "name": "Ford"},
        "model": "Mustang",
        "offers": {"@type": "Offer", "price": str(20000 + n), "priceCurrency": "USD"},
    }
    return (
        f"<html><head><title>2015 Ford Mustang GT</title><script type='application/ld+json'>"
        f"{json.dumps(data)}</script></head><body><h1>2015 Ford Mustang GT</h1>"
        f"<p>Price $ {20000 + n}</p></body></html>"
    ).encode()


def vehicle_path(n: int) -> str:
    return f"/vehicle/{n}/2015-ford-mustang-gt"


def inventory_page(vehicles: Iterator[int] | range | list[int], next_pages: list[int]) -> bytes:
    cars = "".join(
        f'<li><a href="{vehicle_path(i)}">2015 Ford Mustang GT</a></li>' for i in vehicles
    )
    rel = f'<link rel="next" href="/inventory?page={next_pages[0]}">' if next_pages else ""
    pages = " ".join(f'<a href="/inventory?page={n}">{n}</a>' for n in next_pages)
    return (
        f"<html><head><title>Inventory</title>{rel}</head><body><h1>Used cars</h1>"
        f"<ul>{cars}</ul><nav>{pages}</nav></body></html>"
    ).encode()


def urlset(urls: list[str]) -> bytes:
    body = "".join(f"<url><loc>{u}</loc></url>" for u in urls)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><urlset '
        f'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{body}</urlset>'
    ).encode()


def sitemapindex(urls: list[str]) -> bytes:
    body = "".join(f"<sitemap><loc>{u}</loc></sitemap>" for u in urls)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><sitemapindex '
        f'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{body}</sitemapindex>'
    ).encode()


XML = "application/xml"


@dataclass
class HostileSite:
    """Answers with ``pages(path, query, base_url)`` (None: 404); ``hits`` counts each
    target, ``order`` keeps them in arrival order. Vehicle pages are served for every
    ``/vehicle/<n>/...`` path."""

    pages: Callable[[str, str, str], Response | None]
    hits: Counter[str] = field(default_factory=Counter)
    order: list[str] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def bind(self, url: str) -> None:
        self.url = url

    def __call__(self, request: Request) -> Response:
        with self._lock:
            self.hits[request.target] += 1
            self.order.append(request.target)
        if request.path.startswith("/vehicle/"):
            return Response(body=vehicle_page(int(request.path.split("/")[2])))
        if request.path == "/robots.txt":
            return Response(
                content_type="text/plain",
                body=f"User-agent: *\nAllow: /\nSitemap: {self.url}/sitemap.xml\n".encode(),
            )
        answer = self.pages(request.path, request.query, self.url)
        return answer if answer is not None else Response(404, body=b"not found")

    def vehicle_hits(self) -> Counter[str]:
        return Counter({t: n for t, n in self.hits.items() if t.startswith("/vehicle/")})

    def page_hits(self) -> Counter[str]:
        return Counter({t: n for t, n in self.hits.items() if t.startswith("/inventory")})


# -- running the real crawl, watching its memory -----------------------------------------


@dataclass
class Run:
    returncode: int
    stderr: str
    peak_rss: int
    seconds: float


def crawl(db_url: str, tmp_path: Path, *args: str, timeout: float = 90) -> Run:
    """``scrapy crawl org -a threshold=1`` in a child; it must end by itself within
    ``timeout`` seconds (else it is killed and the test fails)."""
    log = tmp_path / f"crawl-{time.monotonic_ns()}.log"
    started = time.monotonic()
    with log.open("w") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "scrapy", "crawl", "org", "-a", "threshold=1", *FAST, *args],
            cwd=REPO,
            env=scrapy_env(db_url),
            stdout=out,
            stderr=out,
        )
        peak = 0
        while child.poll() is None:
            peak = max(peak, tree_rss(child.pid))
            if time.monotonic() - started > timeout:
                child.kill()
                child.wait()
                pytest.fail(
                    f"the crawl did not end by itself within {timeout} s "
                    f"(peak {peak // MB} MB): {log.read_text()[-3000:]}"
                )
            time.sleep(0.1)
    text = log.read_text()
    assert child.returncode == 0, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    return Run(child.returncode, text, peak, time.monotonic() - started)


def add_org(db_url: str, url: str, **metadata: Any) -> str:
    database = Database(db_url)
    migrate(database)
    org, _ = store.add_organization(database, url, name="Hostile Motors", metadata=metadata)
    database.close()
    return org.id


def last_crawl(db_url: str, org_id: str) -> dict[str, Any]:
    database = Database(db_url)
    try:
        org = store.get_organization(database, org_id)
        assert org is not None
        return dict(org.metadata["last_crawl"])
    finally:
        database.close()


def stored_vehicles(db_url: str) -> int:
    database = Database(db_url)
    try:
        return int(database.scalar("SELECT COUNT(*) FROM vehicles") or 0)
    finally:
        database.close()


def page_number(query: str) -> int:
    return int(dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("page", "1"))


# -- item 2: endless pagination ----------------------------------------------------------


def test_endless_pagination_stops_and_fetches_its_vehicles(sqlite_url: str, tmp_path: Path) -> None:
    """``?page=N`` whose rel=next always points to N+1, every page the same two
    vehicles: page 2 adds no vehicle, so the chain ends there."""

    def pages(path: str, query: str, base: str) -> Response | None:
        if path != "/inventory":
            return None
        n = page_number(query)
        return Response(body=inventory_page([1, 2], [n + 1]))

    site = HostileSite(pages)
    with serve(site) as server:
        org_id = add_org(sqlite_url, server.url, inventory_url="/inventory?page=1")
        run = crawl(sqlite_url, tmp_path)
    assert site.vehicle_hits() == {vehicle_path(1): 1, vehicle_path(2): 1}
    assert site.page_hits() == {"/inventory?page=1": 1, "/inventory?page=2": 1}
    assert stored_vehicles(sqlite_url) == 2
    summary = last_crawl(sqlite_url, org_id)
    assert summary["pagination_stopped"] == 1 and summary["caps_hit"] == {}
    assert run.peak_rss < RSS_LIMIT, run.peak_rss // MB


def test_pagination_that_keeps_finding_vehicles_stops_at_the_page_cap(
    sqlite_url: str,
    tmp_path: Path,
) -> None:
    """Every page adds two new vehicles, forever: NUKE_ORG_MAX_PAGES ends it."""

    def pages(path: str, query: str, base: str) -> Response | None:
        if path != "/inventory":
            return None
        n = page_number(query)
        return Response(body=inventory_page([2 * n, 2 * n + 1], [n + 1]))

    site = HostileSite(pages)
    with serve(site) as server:
        org_id = add_org(sqlite_url, server.url, inventory_url="/inventory?page=1")
        crawl(sqlite_url, tmp_path, "-s", "NUKE_ORG_MAX_PAGES=5")
    assert site.page_hits() == {f"/inventory?page={n}": 1 for n in range(1, 6)}
    assert site.vehicle_hits() == {vehicle_path(i): 1 for i in range(2, 12)}
    assert stored_vehicles(sqlite_url) == 10
    summary = last_crawl(sqlite_url, org_id)
    assert summary["caps_hit"] == {"pages": 5}
    assert summary["pages"] == 15 and summary["vehicles_found"] == 10


# -- item 3: a page flooded with links ---------------------------------------------------


def test_pagination_flood_fetches_the_vehicles_first(sqlite_url: str, tmp_path: Path) -> None:
    """Page 1 links 200 vehicles and 20,000 ``?page=N`` pages; every other page lists
    the same vehicles. The vehicles are fetched before more pagination, at most
    MAX_NEXT_PAGES_PER_PAGE pages are taken from the flood, and each of those ends its
    chain (it adds no vehicle)."""
    flood = inventory_page(range(200), list(range(2, 20_002)))

    def pages(path: str, query: str, base: str) -> Response | None:
        if path != "/inventory":
            return None
        n = page_number(query)
        return Response(body=flood if n == 1 else inventory_page(range(200), [n + 1]))

    site = HostileSite(pages)
    with serve(site) as server:
        org_id = add_org(sqlite_url, server.url, inventory_url="/inventory?page=1")
        run = crawl(sqlite_url, tmp_path)
    assert site.vehicle_hits() == {vehicle_path(i): 1 for i in range(200)}
    assert stored_vehicles(sqlite_url) == 200
    assert sum(site.page_hits().values()) == 1 + MAX_NEXT_PAGES_PER_PAGE
    assert max(site.page_hits().values()) == 1
    # detail pages before more pagination (a few requests may cross on the wire)
    first_page = next(
        i
        for i, t in enumerate(site.order)
        if t.startswith("/inventory?page=") and t != "/inventory?page=1"
    )
    assert sum(1 for t in site.order[:first_page] if t.startswith("/vehicle/")) >= 190
    summary = last_crawl(sqlite_url, org_id)
    assert summary["pagination_stopped"] == MAX_NEXT_PAGES_PER_PAGE
    assert summary["caps_hit"] == {}
    assert run.peak_rss < RSS_LIMIT, run.peak_rss // MB


def test_pagination_flood_beyond_max_vehicles_stops_there(sqlite_url: str, tmp_path: Path) -> None:
    """5,000 vehicle links and 5,000 page links, max_vehicles=30: 30 vehicles are
    fetched, no pagination is followed (no more vehicles would be taken), and the cap
    is recorded."""
    flood = inventory_page(range(5000), list(range(2, 5002)))

    def pages(path: str, query: str, base: str) -> Response | None:
        return Response(body=flood) if path == "/inventory" else None

    site = HostileSite(pages)
    with serve(site) as server:
        org_id = add_org(sqlite_url, server.url, inventory_url="/inventory?page=1")
        run = crawl(sqlite_url, tmp_path, "-a", "max_vehicles=30")
    assert site.vehicle_hits() == {vehicle_path(i): 1 for i in range(30)}
    assert site.page_hits() == {"/inventory?page=1": 1}
    assert last_crawl(sqlite_url, org_id)["caps_hit"] == {"vehicles": 30}
    assert run.peak_rss < RSS_LIMIT, run.peak_rss // MB


def test_the_issues_pagination_flood_stays_under_300_mb(sqlite_url: str, tmp_path: Path) -> None:
    """The issue's case: one 6 MB page with 50,000 vehicle links and 50,000 ``?page=N``
    links. The 500 vehicles ``max_vehicles`` allows are fetched, no pagination (no
    more vehicles would be taken), the cap recorded, and the process tree (crawler and
    extraction worker) stays under 300 MB: extraction reads at most MAX_PAGE_LINKS
    links of a page and yields at most MAX_VEHICLE_LINKS / MAX_NEXT_PAGES of them
    (without those caps the tree peaked at 354 MB, the worker alone at 217 MB)."""
    flood = inventory_page(range(50_000), list(range(2, 50_002)))
    assert len(flood) > 5 * MB

    def pages(path: str, query: str, base: str) -> Response | None:
        return Response(body=flood) if path == "/inventory" else None

    site = HostileSite(pages)
    with serve(site) as server:
        org_id = add_org(sqlite_url, server.url, inventory_url="/inventory?page=1")
        run = crawl(sqlite_url, tmp_path)
    assert site.vehicle_hits() == {vehicle_path(i): 1 for i in range(500)}
    assert site.page_hits() == {"/inventory?page=1": 1}
    assert stored_vehicles(sqlite_url) == 500
    assert last_crawl(sqlite_url, org_id)["caps_hit"] == {"vehicles": 500}
    assert run.peak_rss < RSS_LIMIT, run.peak_rss // MB


# -- item 4: sitemaps --------------------------------------------------------------------


@pytest.mark.parametrize("copies", [1, 50])
def test_sitemap_index_that_lists_itself_is_read_once(
    sqlite_url: str, tmp_path: Path, copies: int
) -> None:
    def pages(path: str, query: str, base: str) -> Response | None:
        if path == "/":
            return Response(
                body=b"<html><head><title>Welcome</title></head><body><h1>Hello"
                b"</h1><p>We sell cars.</p></body></html>"
            )
        if path == "/sitemap.xml":  # itself, `copies` times, and the vehicles' sitemap
            return Response(
                content_type=XML,
                body=sitemapindex([f"{base}/sitemap.xml"] * copies + [f"{base}/vehicles.xml"]),
            )
        if path == "/vehicles.xml":
            return Response(
                content_type=XML, body=urlset([base + vehicle_path(i) for i in range(3)])
            )
        return None

    site = HostileSite(pages)
    with serve(site) as server:
        org_id = add_org(sqlite_url, server.url)
        run = crawl(sqlite_url, tmp_path)
    assert site.hits["/sitemap.xml"] == 1 and site.hits["/vehicles.xml"] == 1
    assert site.vehicle_hits() == {vehicle_path(i): 1 for i in range(3)}
    assert stored_vehicles(sqlite_url) == 3
    assert last_crawl(sqlite_url, org_id)["caps_hit"] == {}
    assert run.peak_rss < RSS_LIMIT, run.peak_rss // MB


def _sitemap_site(shape: str) -> Callable[[str, str, str], Response | None]:
    def pages(path: str, query: str, base: str) -> Response | None:
        if path == "/":
            return Response(
                body=b"<html><head><title>Welcome</title></head><body><h1>Hello</h1></body></html>"
            )
        if shape == "nested" and path.endswith(".xml"):
            # /sitemap.xml -> /s/1.xml -> /s/2.xml -> ... each a new index, forever
            n = 0 if path == "/sitemap.xml" else int(path.split("/")[-1].split(".")[0])
            return Response(content_type=XML, body=sitemapindex([f"{base}/s/{n + 1}.xml"]))
        if shape == "many" and path == "/sitemap.xml":
            return Response(
                content_type=XML, body=sitemapindex([f"{base}/s/{n}.xml" for n in range(1, 101)])
            )
        if shape == "many" and path.startswith("/s/"):
            n = int(path.split("/")[-1].split(".")[0])
            return Response(content_type=XML, body=urlset([base + vehicle_path(n)]))
        if shape == "long" and path == "/sitemap.xml":
            return Response(
                content_type=XML, body=urlset([base + vehicle_path(i) for i in range(100)])
            )
        return None

    return pages


@pytest.mark.parametrize(
    ("shape", "setting", "cap", "sitemap_hits", "vehicles"),
    [
        # depth 0 (robots' sitemap), 1 and 2 are read; 3 is not
        ("nested", "NUKE_SITEMAP_MAX_DEPTH=2", {"sitemap_depth": 2}, 3, 0),
        # the index and 4 of its 100 sitemaps, one vehicle each
        ("many", "NUKE_ORG_MAX_SITEMAPS=5", {"sitemaps": 5}, 5, 4),
        # 10 of one sitemap's 100 entries
        ("long", "NUKE_ORG_MAX_SITEMAP_ENTRIES=10", {"sitemap_entries": 10}, 1, 10),
    ],
)
def test_sitemap_caps(
    sqlite_url: str,
    tmp_path: Path,
    shape: str,
    setting: str,
    cap: dict[str, int],
    sitemap_hits: int,
    vehicles: int,
) -> None:
    site = HostileSite(_sitemap_site(shape))
    with serve(site) as server:
        org_id = add_org(sqlite_url, server.url)
        crawl(sqlite_url, tmp_path, "-s", setting, "-s", "NUKE_PROBE_COMMON_PATHS=0")
    xml = {t: n for t, n in site.hits.items() if t.endswith(".xml")}
    assert sum(xml.values()) == sitemap_hits and max(xml.values()) == 1, xml
    assert sum(site.vehicle_hits().values()) == vehicles
    assert last_crawl(sqlite_url, org_id)["caps_hit"] == cap


def test_a_bad_cap_setting_is_refused_without_a_traceback(sqlite_url: str) -> None:
    from conftest import run_scrapy

    proc = run_scrapy(["crawl", "org", "-s", "NUKE_ORG_MAX_PAGES=lots"], sqlite_url, timeout=60)
    assert proc.returncode == 1
    assert "Cannot start: setting NUKE_ORG_MAX_PAGES='lots': expected a whole number" in proc.stderr
    assert "Traceback" not in proc.stderr
