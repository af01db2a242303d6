"""Learned selectors (issue 13): the org crawl asks the tests' own OpenAI-compatible server
for a site's CSS selectors when the rules read no vehicle there, once per site, checks
them on two other pages, stores them on the organization and uses them without a call on
the next crawl; selectors that stop working are dropped and learned again."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import FAST, run_scrapy
from openai_server import API_KEY, SELECTORS_ANSWER, FakeOpenAI

from nuke_crawl.db import Database, loads_json, migrate, store
from nuke_crawl.demo.server import Request, Response, serve
from nuke_crawl.extraction import extract_page
from nuke_crawl.extraction.learn import parse_selectors, trim_page, verify_selectors

pytestmark = pytest.mark.slow

CARS = [
    (10001, 2016, "Toyota", "Tacoma", 27995, 41210),
    (10002, 2019, "Honda", "Civic", 18450, 30500),
    (10003, 2014, "Ford", "Mustang", 21900, 65000),
    (10004, 2021, "Subaru", "Outback", 29990, 22000),
]


def detail_html(car: tuple, layout: str = "spans") -> str:
    """A detail page the rules cannot read: no year/make in the title or an h1, no
    labels, no structured data; the fields in classed spans only."""
    cid, year, make, model, price, miles = car
    if layout == "spans":
        specs = (
            f"<span class='spec-yr'>{year}</span> <span class='spec-mk'>{make}</span> "
            f"<span class='spec-md'>{model}</span>"
        )
    else:  # a redesign: the same data in other classes
        specs = f"<b class='c-y'>{year}</b> <b class='c-m'>{make}</b> <b class='c-d'>{model}</b>"
    return (
        f"<html><head><title>Offer {cid}</title></head><body><div class='top'>Offer no. {cid}"
        f"</div><div class='box'>{specs}</div><div class='amt'>${price:,}</div>"
        f"<div class='odo'>{miles:,} mi</div><div class='pics'>"
        f"<img src='/img/{cid}-1.jpg'><img src='/img/{cid}-2.jpg'></div></body></html>"
    )


class Site:
    def __init__(self) -> None:
        self.layout = "spans"
        self.url = ""

    def bind(self, url: str) -> None:
        self.url = url

    def __call__(self, request: Request) -> Response:
        path = request.target.split("?")[0]
        if path in ("/", "/inventory"):
            links = "".join(f"<li><a href='/vehicle/{c[0]}'>Offer {c[0]}</a></li>" for c in CARS)
            return Response(
                body=f"<html><body><h1>Our offers</h1><ul>{links}</ul></body></html>".encode()
            )
        for car in CARS:
            if path == f"/vehicle/{car[0]}":
                return Response(body=detail_html(car, self.layout).encode())
        if path.startswith("/img/"):
            return Response(content_type="image/jpeg", body=b"\xff\xd8\xff")
        return Response(404, body=b"not found")


def crawl(db_url: str, ai: FakeOpenAI, *extra: str) -> str:
    proc = run_scrapy(
        [
            "crawl",
            "org",
            "-a",
            "threshold=1",
            *FAST,
            "-s",
            "NUKE_PROBE_COMMON_PATHS=0",
            "-s",
            "NUKE_RENDER_JS=0",
            *extra,
        ],
        db_url,
        OPENAI_API_KEY=API_KEY,
        OPENAI_BASE_URL=ai.url + "/v1",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert API_KEY not in proc.stderr
    return proc.stderr


def org_state(db_url: str, org_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    db = Database(db_url)
    org = store.get_organization(db, org_id)
    rows = db.fetchall(
        "SELECT year, make, model, asking_price, mileage FROM vehicles ORDER BY discovery_url"
    )
    db.close()
    assert org is not None
    return org.metadata, rows


@pytest.fixture
def site_and_org(db_url: str):
    yield from _site_and_org(db_url)


@pytest.fixture
def site_and_org_sqlite(sqlite_url: str):
    yield from _site_and_org(sqlite_url)


def _site_and_org(db_url: str):
    site = Site()
    with serve(site) as server, FakeOpenAI(default="selectors") as ai:
        db = Database(db_url)
        migrate(db)
        org, _ = store.add_organization(db, server.url, name="Plain Offers")
        db.close()
        yield site, server, ai, org.id


def test_the_rules_cannot_read_the_site() -> None:
    r = extract_page(detail_html(CARS[0]), "https://plain.example/vehicle/10001")
    assert r.vehicle is None


def test_learned_once_verified_stored_and_reused(site_and_org, db_url: str) -> None:
    site, server, ai, org_id = site_and_org
    log = crawl(db_url, ai, "-s", "NUKE_LEARN_SELECTORS=1")
    assert ai.chat_requests == 1  # one call for the site, not one per page
    sent = json.dumps(ai.last_body)
    assert "spec-yr" in sent and "Offer no." in sent  # the outline and the visible text
    meta, rows = org_state(db_url, org_id)
    want = {k: v for k, v in SELECTORS_ANSWER.items() if k not in ("bogus_key", "vin")}
    assert meta["selectors"] == want
    assert meta["selectors_learned"]["model"] == "gpt-4o-mini"
    assert meta["selectors_learned"]["learned_at"]
    assert [
        (r["year"], r["make"], r["model"], float(r["asking_price"]), r["mileage"]) for r in rows
    ] == [c[1:] for c in CARS]  # the sample pages are read again too
    assert "Learned selectors for" in log
    # the next crawl uses them without a call
    ai.reset()
    crawl(db_url, ai, "-s", "NUKE_LEARN_SELECTORS=1")
    assert ai.chat_requests == 0


def test_selectors_that_stop_working_are_dropped_and_relearned(
    site_and_org_sqlite, sqlite_url: str
) -> None:
    site, server, ai, org_id = site_and_org_sqlite
    crawl(sqlite_url, ai, "-s", "NUKE_LEARN_SELECTORS=1")
    db = Database(sqlite_url)
    db.execute("DELETE FROM organization_vehicles")
    db.execute("DELETE FROM vehicle_images")
    db.execute("DELETE FROM vehicles")
    db.close()
    site.layout = "bold"  # the site's redesign: the learned classes are gone
    ai.reset()
    ai.selectors_answer = {"year": ".c-y", "make": ".c-m", "model": ".c-d", "price": ".amt"}
    log = crawl(sqlite_url, ai, "-s", "NUKE_LEARN_SELECTORS=1")
    assert "stopped working" in log
    assert ai.chat_requests == 1
    meta, rows = org_state(sqlite_url, org_id)
    assert "Learned selectors for" in log, log[-3000:]
    assert meta["selectors"] == ai.selectors_answer
    assert len(rows) == len(CARS)


def test_off_by_default_and_capped(site_and_org_sqlite, sqlite_url: str) -> None:
    site, server, ai, org_id = site_and_org_sqlite
    crawl(sqlite_url, ai)  # NUKE_LEARN_SELECTORS off
    assert ai.chat_requests == 0
    crawl(sqlite_url, ai, "-s", "NUKE_LEARN_SELECTORS=1", "-s", "NUKE_LEARN_MAX_CALLS=0")
    assert ai.chat_requests == 0
    meta, rows = org_state(sqlite_url, org_id)
    assert "selectors" not in meta and rows == []


def test_selectors_that_do_not_read_other_pages_are_not_kept(
    site_and_org_sqlite, sqlite_url: str
) -> None:
    site, server, ai, org_id = site_and_org_sqlite
    ai.selectors_answer = {"year": ".spec-yr", "make": ".top"}  # "Offer no. ..." is no make
    log = crawl(sqlite_url, ai, "-s", "NUKE_LEARN_SELECTORS=1")
    assert ai.chat_requests == 1 and "not kept" in log
    meta, rows = org_state(sqlite_url, org_id)
    assert "selectors" not in meta and rows == []


def test_a_failing_endpoint_costs_one_call_and_no_traceback(
    site_and_org_sqlite, sqlite_url: str
) -> None:
    site, server, ai, org_id = site_and_org_sqlite
    ai.default = "server_error"
    log = crawl(sqlite_url, ai, "-s", "NUKE_LEARN_SELECTORS=1")
    assert ai.chat_requests == 3  # one call, the client's two retries
    assert "Selector learning for" in log
    assert "selectors" not in org_state(sqlite_url, org_id)[0]


@pytest.mark.parametrize(
    "content, want",
    [
        ('{"year": ".y", "make": ".m"}', {"year": ".y", "make": ".m"}),
        ('```json\n{"selectors": {"title": "h2.name"}}\n```', {"title": "h2.name"}),
        ('Sure! {"price": ".p", "vehicle_link": "a", "year": 5, "make": "::bad"}', {"price": ".p"}),
        ("not json", {}),
        (None, {}),
        ('["a"]', {}),
    ],
)
def test_parse_selectors(content: str | None, want: dict[str, str]) -> None:
    assert parse_selectors(content) == want


def test_trim_page_is_bounded_and_verification_needs_two_pages() -> None:
    html = detail_html(CARS[0]) + "<p>" + "filler text " * 5000 + "</p>"
    trimmed = trim_page(html, "https://plain.example/vehicle/10001")
    assert len(trimmed) < 16_000 and 'span.spec-yr "2016"' in trimmed
    sel = {"year": ".spec-yr", "make": ".spec-mk"}
    pages = [(detail_html(c), f"https://plain.example/vehicle/{c[0]}") for c in CARS[1:3]]
    assert verify_selectors(sel, pages)
    assert not verify_selectors(sel, pages[:1])
    assert not verify_selectors({"price": ".amt"}, pages)
    assert loads_json('{"a": 1}') == {"a": 1}
