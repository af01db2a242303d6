"""The admin page in real Chromium (Playwright driving Debian's ``chromium``): the totals of
a seeded database; "Process 5 vehicles" processes exactly five vehicles end to end against
a local image host, and the totals on screen change without a reload.

``NUKE_SERVICE_SCREENSHOT=path.png`` saves a screenshot of the page at the end (how
docs/service-admin.png is made)."""

from __future__ import annotations

import os

import pytest

from nuke_crawl.db import Database
from nuke_crawl.demo import ImageHost, serve
from tests.service_helpers import TOKEN, Service, seed

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def images():
    server = serve(ImageHost(width=640, height=480))
    try:
        yield server.url
    finally:
        server.stop()


def test_page_totals_and_process_five(sqlite_url, tmp_path, images):
    from playwright.sync_api import sync_playwright

    seed(
        sqlite_url,
        [
            (f"http://dealer.example/v/{i}", [f"{images}/img/car{i}-{p}.jpg" for p in range(2)])
            for i in range(8)
        ],
    )
    with Service(sqlite_url, tmp_path / "svc") as svc, sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(svc.url + "/")
            stat = "document.querySelector('[data-stat=\"{}\"]').textContent"
            assert page.text_content('[data-stat="totalVehicles"]') == "8"
            assert page.text_content('[data-stat="needingProcessing"]') == "8"
            assert page.text_content('[data-stat="fullyProcessed"]') == "0"
            page.evaluate("window.__notReloaded = true")
            prompts: list[str] = []

            def answer(dialog) -> None:
                prompts.append(dialog.message)
                dialog.accept(TOKEN)

            page.on("dialog", answer)
            page.get_by_role("button", name="Process 5 vehicles").click()
            page.wait_for_function(stat.format("fullyProcessed") + " === '5'", timeout=60_000)
            page.wait_for_function(stat.format("needingProcessing") + " === '3'", timeout=10_000)
            assert page.evaluate("window.__notReloaded === true")
            assert len(prompts) == 1  # asked once, kept for the tab
            assert page.evaluate("sessionStorage.getItem('nukeAdminToken')") == TOKEN
            assert page.context.cookies() == []
            # the job shows finished, the thumbnails strip shows stored images
            page.wait_for_selector("#jobs .badge.finished", timeout=10_000)
            page.wait_for_selector("#thumbs img", timeout=10_000)
            page.wait_for_function(
                "Array.from(document.querySelectorAll('#thumbs img'))"
                ".some(i => i.complete && i.naturalWidth > 0)",
                timeout=10_000,
            )
            # nothing came from anywhere but the service (no CDN)
            assert all(u.startswith(svc.url) for u in requests), requests
            shot = os.environ.get("NUKE_SERVICE_SCREENSHOT")
            if shot:
                page.wait_for_timeout(7000)  # the organizations table and bars catch up
                page.screenshot(path=shot, full_page=True)
        finally:
            browser.close()
    db = Database(sqlite_url)
    try:
        done = db.fetchall(
            "SELECT id FROM vehicles WHERE "
            "json_extract(origin_metadata, '$.images_backfilled') IN (1, 'true')"
        )
        stored = db.scalar("SELECT COUNT(*) FROM vehicle_images WHERE is_external = false")
    finally:
        db.close()
    assert len(done) == 5 and stored == 10
