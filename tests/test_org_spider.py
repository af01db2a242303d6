"""`scrapy crawl org` end to end: fixture dealer sites on 127.0.0.1, the real
command in a child process, and assertions on the database (SQLite and
PostgreSQL)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST, REPO, run_scrapy, scrapy_env

from nuke_crawl.db import Database, loads_json, migrate, store
from nuke_crawl.demo.launch import Demo, launch
from nuke_crawl.demo.server import CountingApp, Request, Response, dead_url, serve
from nuke_crawl.demo.sites import build_site
from nuke_crawl.extraction import canonical_listing_url

pytestmark = pytest.mark.slow


def crawl(db_url: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = run_scrapy(["crawl", "org", *args, *FAST], db_url, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


def add_org(db_url: str, url: str, **metadata: Any) -> str:
    database = Database(db_url)
    migrate(database)
    org, _ = store.add_organization(database, url, name="Fixture Motors", metadata=metadata)
    database.close()
    return org.id


def vehicles(db_url: str) -> list[dict[str, Any]]:
    database = Database(db_url)
    rows = database.fetchall("SELECT * FROM vehicles ORDER BY discovery_url")
    for row in rows:
        row["origin_metadata"] = loads_json(row["origin_metadata"])
    database.close()
    return rows


def scalar(db_url: str, sql: str, params: list[Any] | None = None) -> Any:
    database = Database(db_url)
    try:
        return database.scalar(sql, params or [])
    finally:
        database.close()


def org_metadata(db_url: str, org_id: str) -> dict[str, Any]:
    database = Database(db_url)
    org = store.get_organization(database, org_id)
    database.close()
    assert org is not None
    return org.metadata


def assert_matches_ground_truth(demo: Demo, rows: list[dict[str, Any]]) -> None:
    by_url = {r["discovery_url"]: r for r in rows}
    truth = [v for v in demo.site.vehicles]
    assert len(rows) == len(truth), sorted(by_url)
    for v in truth:
        row = by_url[canonical_listing_url(v["url"])]
        assert (row["year"], row["make"], row["model"]) == (v["year"], v["make"], v["model"])
        assert row["vin"] == v["vin"]  # None for the deliberately invalid VIN
        if v["price"] is not None and v["sale_status"] != "sold":
            assert Decimal(str(row["asking_price"])) == Decimal(str(v["price"]))
        assert row["mileage"] == v["mileage"]
        assert bool(row["is_public"])
        meta = row["origin_metadata"]
        expected_images = [u for u in v["image_urls"]]
        assert meta["image_urls"] == expected_images, (v["url"], meta["image_urls"])
        assert meta["image_count"] == len(expected_images)
        assert meta["images_backfilled"] is False
        if v["sale_status"] == "sold":
            assert row["sale_status"] == "sold"


@pytest.fixture
def site(request: pytest.FixtureRequest) -> Iterator[Demo]:
    style = getattr(request, "param", "jsonld")
    with launch(
        style, n_vehicles=14, per_page=5, images_per_vehicle=4, noise=True, image_hosts=1
    ) as demo:
        yield demo


@pytest.mark.parametrize("site", ["jsonld", "microdata", "plain", "sitemap"], indirect=True)
def test_crawl_each_site_style(site: Demo, db_url: str) -> None:
    org_id = add_org(db_url, site.url)
    proc = crawl(db_url, "-a", "threshold=1")
    rows = vehicles(db_url)
    assert_matches_ground_truth(site, rows)
    # no page needed a browser, so neither Playwright's driver nor Chromium started
    assert "Starting the browser" not in proc.stderr
    assert "Starting download handler" not in proc.stderr  # scrapy-playwright's own
    # one external image row per image URL, in page order, primary first
    n_images = sum(len(v["image_urls"]) for v in site.site.vehicles)
    assert (
        scalar(db_url, "SELECT COUNT(*) FROM vehicle_images WHERE is_external = true") == n_images
    )
    assert scalar(db_url, "SELECT COUNT(*) FROM vehicle_images WHERE is_primary = true") == len(
        rows
    )
    # noise: the blog post is not a vehicle, the 500 page is counted as an error
    meta = org_metadata(db_url, org_id)
    summary = meta["last_crawl"]
    assert summary["vehicles_found"] == len(rows) and summary["created"] == len(rows)
    assert summary["skipped"].get("not_a_listing", 0) >= 1
    # the card "Beautiful Convertible - Must See!" links like its neighbours: its page
    # is fetched, has no year or make, and is skipped for that reason, not stored
    assert summary["skipped"].get("missing_year_make") == 1
    assert (
        scalar(
            db_url,
            "SELECT COUNT(*) FROM vehicles WHERE discovery_url LIKE ?",
            [f"%{site.site.pages['missing_year_make']}"],
        )
        == 0
    )
    assert summary["errors"] >= 1  # the detail page that answers 500
    assert meta["last_error"] is None and meta["last_extracted_at"]
    sold = site.site.pages["sold"]
    assert (
        scalar(
            db_url,
            "SELECT ov.status FROM organization_vehicles ov JOIN vehicles v ON "
            "v.id = ov.vehicle_id WHERE v.listing_url LIKE ?",
            [f"%{sold}"],
        )
        == "past"
    )
    # no image was downloaded in this phase
    for host in site.image_hosts:
        assert host.hits.total() == 0

    # Re-running changes nothing and duplicates nothing.
    before = {r["id"]: r for r in rows}
    crawl(db_url, "-a", "threshold=100")
    after = vehicles(db_url)
    assert {r["id"] for r in after} == set(before)
    assert scalar(db_url, "SELECT COUNT(*) FROM vehicle_images") == n_images
    assert org_metadata(db_url, org_id)["last_crawl"]["unchanged"] == len(rows)


def test_playwright_is_imported_only_for_a_page_that_needs_it() -> None:
    # the org spider and its download handler leave scrapy-playwright's handler (and
    # Playwright) unimported until a request asks for a browser
    code = (
        "import sys\n"
        "from scrapy.utils.test import get_crawler\n"
        "from nuke_crawl.downloader.browser import LazyPlaywrightDownloadHandler\n"
        "from nuke_crawl.spiders.org import OrgSpider\n"
        "from nuke_crawl import settings\n"
        "from scrapy.utils.reactor import install_reactor\n"
        "install_reactor(settings.TWISTED_REACTOR)\n"
        "crawler = get_crawler(OrgSpider, {'TWISTED_REACTOR': settings.TWISTED_REACTOR, "
        "'TWISTED_REACTOR_ENABLED': True})\n"
        "handler = LazyPlaywrightDownloadHandler.from_crawler(crawler)\n"
        "assert not handler.launched\n"
        "print(sorted(m for m in sys.modules if m.startswith(('playwright', "
        "'scrapy_playwright.handler'))))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.browser
@pytest.mark.parametrize("site", ["js"], indirect=True)
def test_javascript_site_is_rendered_through_chromium(site: Demo, db_url: str) -> None:
    org_id = add_org(db_url, site.url)
    proc = crawl(db_url, "-a", "threshold=1", timeout=240)
    rows = vehicles(db_url)
    assert_matches_ground_truth(site, rows)
    # the browser started once, when the app shell was detected
    assert proc.stderr.count("Starting the browser (Playwright and Chromium)") == 1
    assert "'nuke/browser/launched': True" in proc.stderr
    summary = org_metadata(db_url, org_id)["last_crawl"]
    assert summary["render_js"] and summary["render_js_detected"]


def test_threshold_limit_offset_and_a_dead_site(db_url: str) -> None:
    with launch("jsonld", n_vehicles=3, per_page=10, images_per_vehicle=1, image_hosts=0) as alive:
        database = Database(db_url)
        migrate(database)
        dead_org, _ = store.add_organization(database, dead_url(), name="Dead Motors")
        alive_org, _ = store.add_organization(database, alive.url, name="Alive Motors")
        third, _ = store.add_organization(database, "https://third.invalid", name="Third")
        for i, org in enumerate((dead_org, alive_org, third)):
            database.execute(
                "UPDATE businesses SET created_at = ? WHERE id = ?",
                [database.ts(__import__("datetime").datetime(2024, 1, i + 1)), org.id],
            )
        database.close()
        proc = crawl(db_url, "-a", "limit=2", "-a", "threshold=1")
        assert "Next: scrapy crawl org -a threshold=1 -a limit=2 -a offset=2" in proc.stderr
        dead_meta = org_metadata(db_url, dead_org.id)
        assert (
            "Connection" in (dead_meta["last_error"] or "")
            or "refused" in (dead_meta["last_error"] or "").lower()
        ), dead_meta
        assert len(vehicles(db_url)) == 3
        assert "last_crawl" not in org_metadata(db_url, third.id)
        # Alive now has 3 active vehicles: threshold=3 skips it, threshold=4 does not.
        proc = crawl(
            db_url, "-a", "limit=2", "-a", "threshold=3", "-a", f"organization_id={alive_org.id}"
        )
        assert "Selected 0 of 1" in proc.stderr
        proc = crawl(db_url, "-a", "limit=5", "-a", "offset=2", "-a", "threshold=1")
        assert "No more organizations after this page" in proc.stderr


def test_url_argument_creates_the_organization_and_dry_run_writes_nothing(
    db_url: str,
    site: Demo,
) -> None:
    proc = crawl(db_url, "-a", f"url={site.url}", "-a", "dry_run=1", "-a", "max_vehicles=3")
    assert "vehicles found" in proc.stderr
    database = Database(db_url)
    assert (
        not database.table_exists("vehicles")
        or database.scalar("SELECT COUNT(*) FROM vehicles") == 0
    )
    database.close()
    crawl(db_url, "-a", f"url={site.url}", "-a", "max_vehicles=3")
    assert len(vehicles(db_url)) == 3
    assert scalar(db_url, "SELECT COUNT(*) FROM businesses") == 1


def test_scrapys_remote_control_is_off_unless_asked_for(db_url: str, site: Demo) -> None:
    """Like the Telnet console: no endpoint running code sent to it, unless asked for."""
    line = "Remote control HTTP server listening"
    for enabled in (False, True):
        on = ["-s", "REMOTE_CONTROL_ENABLED=True"] if enabled else []
        proc = crawl(db_url, "-a", f"url={site.url}", "-a", "max_vehicles=1", *on)
        assert (line in proc.stderr) is enabled, proc.stderr[-3000:]


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("threshold=abc", "argument threshold='abc': expected a whole number"),
        ("limit=0", "argument limit='0': must be at least 1"),
        ("organization_id=42", "argument organization_id='42': expected a UUID"),
        ("url=ftp://x.example", "argument url='ftp://x.example': expected an http(s) URL"),
        ("dry_run=maybe", "argument dry_run='maybe'"),
        ("colour=red", "unknown argument(s) for spider 'org': colour"),
    ],
)
def test_bad_arguments_are_refused_before_any_request(
    sqlite_url: str, arg: str, message: str
) -> None:
    proc = run_scrapy(["crawl", "org", "-a", arg], sqlite_url, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()


def test_without_auto_migration_the_spider_says_to_run_migrate(sqlite_url: str) -> None:
    proc = run_scrapy(["crawl", "org", "-s", "NUKE_AUTO_MIGRATE=0"], sqlite_url, timeout=60)
    assert proc.returncode == 1
    assert "run `scrapy migrate` first" in proc.stderr
    assert "Traceback" not in proc.stderr


class SlowSite:
    """Wraps a site so that detail pages take a while: room for a SIGKILL."""

    def __init__(self, demo: Demo, delay: float) -> None:
        self.site = demo.site
        self.delay = delay

    def bind(self, url: str) -> None:
        pass

    def __call__(self, request: Request) -> Response:
        response = self.site(request)
        if "/vehicle/" in request.path:
            return dataclasses.replace(response, delay=self.delay)
        return response


def test_jobdir_crawl_killed_with_sigkill_resumes_without_loss_or_duplicates(
    db_url: str,
    tmp_path: Path,
) -> None:
    with (
        launch("jsonld", n_vehicles=30, per_page=10, images_per_vehicle=3, image_hosts=0) as demo,
        serve(SlowSite(demo, 0.4)) as slow,
    ):
        # the site builds its absolute links from the Host header
        add_org(db_url, slow.url)
        args = [
            sys.executable,
            "-m",
            "scrapy",
            "crawl",
            "org",
            "-a",
            "threshold=1",
            "-s",
            f"JOBDIR={tmp_path / 'job'}",
            "-s",
            "CONCURRENT_REQUESTS_PER_DOMAIN=2",
            "-s",
            "NUKE_DB_BATCH_SIZE=5",
            *FAST,
        ]
        log = (tmp_path / "killed.log").open("w")
        child = subprocess.Popen(args, cwd=REPO, env=scrapy_env(db_url), stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        stored = 0
        while time.monotonic() < deadline:
            try:
                stored = int(scalar(db_url, "SELECT COUNT(*) FROM vehicles") or 0)
            except Exception:  # noqa: BLE001 - schema may not exist yet
                stored = 0
            if stored >= 5:
                break
            time.sleep(0.1)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        log.close()
        assert 5 <= stored < 30, stored
        crawl(db_url, "-a", "threshold=1", "-s", f"JOBDIR={tmp_path / 'job'}")
        rows = vehicles(db_url)
        assert len(rows) == 30
        assert len({r["discovery_url"] for r in rows}) == 30
        assert scalar(db_url, "SELECT COUNT(*) FROM vehicle_images") == 90
        assert scalar(db_url, "SELECT COUNT(*) FROM organization_vehicles") == 30
        assert sorted(r["vin"] for r in rows) == sorted(v["vin"] for v in demo.site.vehicles)
        assert all(r["origin_metadata"]["image_count"] == 3 for r in rows)


def test_commands_migrate_org_add_import_and_status(db_url: str, tmp_path: Path) -> None:
    proc = run_scrapy(["migrate"], db_url)
    assert proc.returncode == 0 and "schema version 0 ->" in proc.stdout
    assert "schema is current" in run_scrapy(["migrate"], db_url).stdout
    proc = run_scrapy(
        [
            "org-add",
            "https://www.dealer.example",
            "--name",
            "Dealer",
            "--inventory-url",
            "https://www.dealer.example/used/",
            "--render-js",
        ],
        db_url,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("added "), proc.stderr
    assert run_scrapy(["org-add", "dealer.example"], db_url).stdout.startswith("exists ")
    csv = tmp_path / "orgs.csv"
    csv.write_text(
        "website,name,type,inventory_url,render_js\n"
        "https://a.example,A,auction,,\n"
        "not a url,B,,,\n"
        "https://c.example,C,,https://c.example/stock,yes\n"
    )
    proc = run_scrapy(["org-import", str(csv)], db_url)
    assert proc.returncode == 1
    assert "imported 2 new, 0 already present, 1 skipped" in proc.stdout
    assert "line 3: skipped: argument website='not a url'" in proc.stderr
    proc = run_scrapy(["status", "--json"], db_url)
    figures = json.loads(proc.stdout)
    assert figures["organizations"] == 3 and figures["public_vehicles"] == 0
    assert {"totalVehicles", "needingProcessing", "fullyProcessed", "partiallyProcessed"} <= set(
        figures["image_backfill"]
    )
    assert "images_analysed" in figures["image_analysis"]
    database = Database(db_url)
    org = store.find_organization_by_website(database, "https://c.example")
    assert org is not None and org.metadata == {
        "inventory_url": "https://c.example/stock",
        "render_js": True,
    }
    database.close()
    text = run_scrapy(["status"], db_url).stdout
    assert "Organizations:" in text and "Images never analysed:" in text
    assert "Needing processing:" in text
    bad = run_scrapy(["status"], "mysql://nope")
    assert bad.returncode == 2 and "not supported" in bad.stderr


def test_user_agent_is_honest_and_configurable(sqlite_url: str) -> None:
    seen: list[str] = []

    class App:
        def __call__(self, request: Request) -> Response:
            seen.append(request.header("User-Agent") or "")
            return Response(404, body=b"nothing here")

    with serve(App()) as server:
        crawl(
            sqlite_url,
            "-a",
            f"url={server.url}",
            "-a",
            "max_vehicles=1",
            "-s",
            "NUKE_PROBE_COMMON_PATHS=0",
        )
        assert seen and all(ua.startswith("nuke_crawl/") for ua in seen), seen
        seen.clear()
        crawl(
            sqlite_url,
            "-a",
            f"url={server.url}",
            "-s",
            "NUKE_USER_AGENT=AcmeBot/2.0",
            "-s",
            "NUKE_PROBE_COMMON_PATHS=0",
        )
        assert seen and set(seen) == {"AcmeBot/2.0"}, seen


def test_per_domain_concurrency_holds_when_a_page_yields_many_links(sqlite_url: str) -> None:
    """An inventory page yields its 12 vehicle links at once; the site still never
    sees more than CONCURRENT_REQUESTS_PER_DOMAIN requests at a time."""
    counting = CountingApp(
        build_site("jsonld", n_vehicles=12, per_page=12, images_per_vehicle=1), delay=0.2
    )
    server = serve(counting)
    try:
        add_org(sqlite_url, server.url)
        crawl(sqlite_url, "-a", "threshold=1", "-s", "CONCURRENT_REQUESTS_PER_DOMAIN=2")
        assert len(vehicles(sqlite_url)) == 12
        assert counting.most == 2, counting.most
    finally:
        server.stop()
