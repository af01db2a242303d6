"""Benchmark: ``scrapy serve`` on PostgreSQL with 1M vehicles and 10M image rows.

Run from the repository root (heavy: a few minutes of PostgreSQL work, ~3 GB in a schema
of its own, dropped at the end)::

    .venv/bin/python bench/bench_service.py [--vehicles 1000000] [--per-vehicle 10]

Seeds with ``generate_series`` (the claim benchmark's data, bench_backfill.bench_claim,
plus 1,000 organizations owning the vehicles, 30% of vehicles backfilled with their images
stored, 3% of the other images failed with a reason), then:

1. times the status and organizations queries themselves (what the service's background
   refresh costs the database);
2. starts ``scrapy serve`` on that schema and times ``GET /api/image-status`` and
   ``GET /api/organizations`` (targets: under 100 ms), answered from the refreshed
   figures, and ``/api/failures``, ``/api/jobs``, ``/api/thumbnails``;
3. loads the admin page in Chromium (Debian's ``/usr/bin/chromium``) and times its first
   load (target: under 1 s) to the ``load`` event and until its first API refresh is drawn.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_backfill import drop_schema, make_schema  # noqa: E402 - needs sys.path
from common import cache_bytecode  # noqa: E402 - needs sys.path


def seed(url: str, vehicles: int, per_vehicle: int, orgs: int = 1000) -> dict[str, float]:
    from nuke_crawl.db import Database, migrate

    db = Database(url)
    migrate(db)
    t0 = time.monotonic()
    db.execute(
        "INSERT INTO businesses (id, business_name, website, business_type, is_public, "
        "metadata, created_at, updated_at) SELECT gen_random_uuid(), 'Dealer ' || g, "
        "'https://dealer' || g || '.example', 'dealer', true, '{}', "
        "now() - make_interval(secs => g), now() FROM generate_series(1, ?) AS g",
        [orgs],
    )
    db.execute(
        "CREATE TEMP TABLE bench_orgs AS SELECT id, row_number() OVER (ORDER BY id) - 1 AS n "
        "FROM businesses"
    )
    db.execute(
        "INSERT INTO vehicles (id, year, make, model, is_public, origin_organization_id, "
        "origin_metadata, created_at, updated_at) SELECT gen_random_uuid(), 2000 + g % 25, "
        "'Make', 'Model', true, o.id, jsonb_build_object('image_count', ?::int, "
        "'images_backfilled', (g % 1000) < 300), now() - make_interval(secs => g), now() "
        "FROM generate_series(1, ?) AS g JOIN bench_orgs o ON o.n = g % ?",
        [per_vehicle, vehicles, orgs],
    )
    db.execute(
        "INSERT INTO organization_vehicles (id, organization_id, vehicle_id, status, "
        "created_at, updated_at) SELECT gen_random_uuid(), origin_organization_id, id, "
        "'active', now(), now() FROM vehicles"
    )
    db.execute(
        "INSERT INTO nuke_org_crawls (organization_id, started_at, finished_at, summary) "
        "SELECT id, now() - interval '1 hour', now(), '{\"vehicles\": 1000}' FROM businesses"
    )
    t1 = time.monotonic()
    indexes = db.fetchall(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
        "AND tablename = 'vehicle_images' AND indexname <> 'vehicle_images_pkey'"
    )
    for index in indexes:
        db.execute(f"DROP INDEX {index['indexname']}")
    done = "(v.origin_metadata->>'images_backfilled') = 'true'"
    db.execute(
        "INSERT INTO vehicle_images (id, vehicle_id, image_url, source_url, storage_path, "
        "is_external, position, is_primary, download_error, download_failed_at, "
        "created_at, updated_at) "
        "SELECT gen_random_uuid(), v.id, u.url, u.url, "
        f"CASE WHEN {done} THEN v.id || '/' || p || '.jpg' END, NOT {done}, p, p = 0, "
        f"CASE WHEN NOT {done} AND hashtext(u.url) % 33 = 0 THEN "
        "(ARRAY['http_404', 'timeout', 'not_image', 'http_410'])[1 + abs(hashtext(u.url)) % 4] "
        "END, "
        f"CASE WHEN NOT {done} AND hashtext(u.url) % 33 = 0 THEN now() END, now(), now() "
        "FROM vehicles v CROSS JOIN generate_series(0, ? - 1) AS p "
        "CROSS JOIN LATERAL (SELECT 'https://img.example/' || v.id || '/' || p || '.jpg' "
        "AS url) u",
        [per_vehicle],
    )
    for index in indexes:
        db.execute(index["indexdef"])
    t2 = time.monotonic()
    db.execute("VACUUM (ANALYZE) vehicles")
    db.execute("VACUUM (ANALYZE) vehicle_images")
    db.execute("VACUUM (ANALYZE) organization_vehicles")
    db.execute("ANALYZE businesses")
    images = int(db.scalar("SELECT COUNT(*) FROM vehicle_images"))
    db.close()
    return {
        "vehicles": vehicles,
        "images": images,
        "seed_vehicles_s": round(t1 - t0, 1),
        "seed_images_s": round(t2 - t1, 1),
    }


def spread(name: str, values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        f"{name}_median_ms": round(statistics.median(ordered), 2),
        f"{name}_p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
        f"{name}_max_ms": round(ordered[-1], 2),
    }


def get(url: str) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as res:
        res.read()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    cache_bytecode()  # before any process starts: the children inherit it
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vehicles", type=int, default=1_000_000)
    parser.add_argument("--per-vehicle", type=int, default=10)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--keep", action="store_true", help="keep the schema (prints its URL)")
    opts = parser.parse_args()
    from nuke_crawl.db import Database
    from nuke_crawl.service import queries

    schema, url = make_schema()
    out: dict[str, object] = {}
    proc = None
    try:
        out.update(seed(url, opts.vehicles, opts.per_vehicle))
        print(json.dumps(out), flush=True)
        db = Database(url)
        for name, func in (
            ("query_image_status", queries.image_status),
            ("query_organizations", queries.organizations),
            ("query_failures", queries.failures),
            ("query_thumbnails", queries.thumbnails),
        ):
            start = time.perf_counter()
            func(db)
            out[name + "_ms"] = round((time.perf_counter() - start) * 1000, 1)
        db.close()
        print(json.dumps(out), flush=True)

        env = {
            "DATABASE_URL": url,
            "PYTHONPATH": str(REPO),
            "SCRAPY_SETTINGS_MODULE": "nuke_crawl.settings",
            "PATH": "/usr/bin:/bin",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "scrapy", "serve", "--port", "0", "-s", "LOG_LEVEL=WARNING"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        base = line.split("service on ", 1)[1].split("/ ", 1)[0]
        start = time.perf_counter()
        for _ in range(600):  # ready once the first figures are computed
            try:
                get(base + "/api/image-status")
                break
            except OSError:
                time.sleep(0.2)
        out["service_first_status_ms"] = round((time.perf_counter() - start) * 1000, 1)
        for path, name in (
            ("/api/image-status", "image_status"),
            ("/api/organizations", "organizations"),
            ("/api/failures?limit=50", "failures"),
            ("/api/jobs", "jobs"),
            ("/api/thumbnails", "thumbnails"),
            ("/", "page_html"),
        ):
            out.update(spread(name, [get(base + path) for _ in range(opts.samples)]))
        out.update(page_load(base))
        print(json.dumps(out, indent=2), flush=True)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        if opts.keep:
            print("kept:", url)
        else:
            drop_schema(schema)


def page_load(base: str) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    out: dict[str, float] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path="/usr/bin/chromium",
            headless=True,
            args=["--no-sandbox", "--disable-gpu"],
        )
        try:
            loads, ready = [], []
            for _ in range(5):
                page = browser.new_page()
                start = time.perf_counter()
                page.goto(base + "/", wait_until="load")
                loads.append((time.perf_counter() - start) * 1000)
                # the first refresh from the API is drawn (the jobs table is filled)
                page.wait_for_selector("#jobs tr")
                ready.append((time.perf_counter() - start) * 1000)
                page.close()
            out["page_first_load_ms"] = round(loads[0], 1)
            out["page_load_median_ms"] = round(statistics.median(loads), 1)
            out["page_ready_first_ms"] = round(ready[0], 1)
            out["page_ready_median_ms"] = round(statistics.median(ready), 1)
        finally:
            browser.close()
    return out


if __name__ == "__main__":
    main()
