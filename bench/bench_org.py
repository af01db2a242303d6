"""Benchmark of phase one: the `org` crawl end to end against a bare fetch.

Serves a generated dealer site of N vehicle pages (20 images each, image URLs
on several loopback hosts) and measures, in one run and with the same
downloader settings:

- bare: a Scrapy spider that only fetches the same pages (home, robots,
  inventory pages, every detail page), no parsing, no database;
- floor: a spider that follows the same links (from a map made beforehand) and
  yields a ready-made item per detail page: no extraction, no database. Its cost
  over bare is Scrapy's own for callbacks that yield requests and items;
- org/sqlite and org/postgresql: `scrapy crawl org -a threshold=1`, with
  extraction and database writes, with the project's one worker process
  (`NUKE_WORKER_PROCESSES`; `--worker-processes 1,2` compares counts).
- with `--redis-workers 1,2`: redis/postgresql x1 and x2, the same crawl through Redis
  (a private redis-server on a free port): `scrapy org-enqueue`, then that many
  `scrapy crawl org -a from_queue=1 -a exit_when_empty=1` processes at once, sharing the
  site's per-domain concurrency; wall time until the last exits. Against org/postgresql
  they give the Redis overhead per page (wall and crawler CPU) and Redis's own CPU.

These machines' speed drifts within minutes (the same bare fetch has taken from
14 to 18 s in one session), so every run is paired with a bare fetch made just
before it, and its ratio is taken against that one; ``--repeat`` pairs of each
(default 3) give a median. Prints pages per second, the ratios org/bare
(target >= 0.7), each process's peak memory (target < 300 MB), the CPU each part
used per page, and the ceiling those CPU figures leave on this machine's cores.
Usage:

    .venv/bin/python bench/bench_org.py [--vehicles 5000] [--skip-postgres]
        [--repeat 3] [--worker-processes 1[,2]] [--org-setting NAME=VALUE ...]
        [--redis-workers 1,2] [--only LABEL-PREFIX,...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import (  # noqa: E402 - after the sys.path set-up
    cache_bytecode,
    peak_rss_of_tree,
    private_redis,
)
from nuke_crawl.db import Database, migrate, store  # noqa: E402 - after the sys.path set-up
from nuke_crawl.demo.launch import launch  # noqa: E402 - after the sys.path set-up

SETTINGS = [
    "-s",
    "AUTOTHROTTLE_START_DELAY=0.01",
    "-s",
    "CONCURRENT_REQUESTS=32",
    "-s",
    "CONCURRENT_REQUESTS_PER_DOMAIN=16",
    "-s",
    "LOG_LEVEL=WARNING",
]


def run(args: list[str], env: dict[str, str], tmp: Path) -> dict[str, float]:
    """Run one scrapy command line; its wall seconds, peak memory and CPU seconds
    (the crawler, its children, and this process: the site's server threads)."""
    stats_file = tmp / f"stats-{uuid.uuid4().hex}"
    err_file = tmp / f"stderr-{uuid.uuid4().hex}"
    started = time.perf_counter()
    server_cpu = time.process_time()
    with err_file.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "bench" / "_child.py"), str(stats_file), *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        # the whole process tree: crawler, extraction worker, database writer, browser
        tree_peak, _ = peak_rss_of_tree(proc, sample=0.1)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{err_file.read_text()[-3000:]}")
    stats = json.loads(stats_file.read_text())
    return {
        "seconds": elapsed,
        "cpu_server": time.process_time() - server_cpu,
        "tree_peak_kib": tree_peak / 1024,
        **stats,
    }


def run_many(args: list[str], env: dict[str, str], tmp: Path, n: int) -> dict[str, float]:
    """Run ``n`` copies of one scrapy command line at once; wall seconds until the last
    exits, CPU seconds summed, peak memory summed (each process's peak)."""
    import threading

    procs, files = [], []
    started = time.perf_counter()
    server_cpu = time.process_time()
    for _ in range(n):
        stats_file = tmp / f"stats-{uuid.uuid4().hex}"
        err = (tmp / f"stderr-{uuid.uuid4().hex}").open("w")
        files.append((stats_file, err))
        procs.append(
            subprocess.Popen(
                [sys.executable, str(REPO / "bench" / "_child.py"), str(stats_file), *args],
                cwd=REPO,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        )
    peaks = [0.0] * n

    def watch(i: int) -> None:
        peaks[i], _ = peak_rss_of_tree(procs[i], sample=0.1)

    watchers = [threading.Thread(target=watch, args=(i,)) for i in range(n)]
    for thread in watchers:
        thread.start()
    for thread in watchers:
        thread.join()
    elapsed = time.perf_counter() - started
    total: dict[str, float] = {
        "seconds": elapsed,
        "tree_peak_kib": sum(peaks) / 1024,
        "cpu_server": time.process_time() - server_cpu,
    }
    for proc, (stats_file, err) in zip(procs, files, strict=True):
        err.close()
        if proc.returncode != 0:
            sys.exit(f"failed: {' '.join(args)}\n{Path(err.name).read_text()[-3000:]}")
        for key, value in json.loads(stats_file.read_text()).items():
            total[key] = total.get(key, 0.0) + value
    return total


def redis_cpu(url: str) -> float:
    import redis

    info = redis.Redis.from_url(url).info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def site_map(demo: Any) -> dict[str, dict[str, Any]]:
    """For the floor spider: each page's links as the org crawl finds them, and an
    item like the org crawl's for each detail page."""
    from nuke_crawl.extraction import extract_page

    out: dict[str, dict[str, Any]] = {}
    inventory = [demo.url_for(p) for p in demo.site.inventory_pages]
    out[demo.url + "/"] = {"links": inventory[:1]}
    for url in inventory:
        with urllib.request.urlopen(url) as response:
            page = extract_page(response.read(), url)
        # in the org spider's order: vehicle links, then the next page (the scheduler
        # is LIFO, so pagination goes on while the vehicles of this page are fetched)
        out[url] = {"links": page.vehicle_links + page.next_pages}
    for v in demo.site.vehicles:
        fields = {
            k: v[k]
            for k in (
                "year",
                "make",
                "model",
                "trim",
                "vin",
                "price",
                "mileage",
                "color",
                "interior_color",
                "transmission",
                "drivetrain",
                "body_style",
                "fuel_type",
                "engine",
                "title",
                "description",
            )
        }
        out[v["url"]] = {
            "item": {
                "discovery_url": v["url"],
                "listing_url": v["url"],
                "fields": fields,
                "image_urls": v["image_urls"],
            }
        }
    return out


def main() -> None:
    cache_bytecode()  # before any process starts: the children inherit it
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vehicles", type=int, default=5000)
    parser.add_argument("--per-page", type=int, default=50)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument(
        "--throttle-target",
        type=float,
        default=None,
        help="AUTOTHROTTLE_TARGET_CONCURRENCY for every run (default: the project's, 2.0)",
    )
    parser.add_argument(
        "--worker-processes",
        default="1",
        help="NUKE_WORKER_PROCESSES values to run the org crawl with, "
        "comma-separated (default: 1, the project's default)",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="pairs of (bare fetch, run) for each run (default 3)"
    )
    parser.add_argument(
        "--org-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra -s NAME=VALUE for the org runs only; repeatable",
    )
    parser.add_argument(
        "--redis-workers",
        default="",
        help="also crawl through Redis with this many from_queue workers, "
        "comma-separated (e.g. 1,2; needs PostgreSQL and redis-server)",
    )
    parser.add_argument(
        "--only",
        default="",
        help="run only the labels starting with these, comma-separated "
        "(e.g. org/postgresql,redis; default: all)",
    )
    opts = parser.parse_args()
    only = [p.strip() for p in opts.only.split(",") if p.strip()]
    redis_counts = [int(n) for n in opts.redis_workers.split(",") if n.strip()]
    if redis_counts and opts.skip_postgres:
        parser.error("--redis-workers needs PostgreSQL (several processes write at once)")
    if opts.throttle_target is not None:
        SETTINGS.extend(["-s", f"AUTOTHROTTLE_TARGET_CONCURRENCY={opts.throttle_target}"])
    tmp = Path(tempfile.mkdtemp(prefix="nuke-bench-"))
    env = {
        **os.environ,
        "NUKE_ALLOW_PRIVATE_NETWORKS": "1",
        "PYTHONPATH": str(REPO),
        "SCRAPY_SETTINGS_MODULE": "nuke_crawl.settings",
    }
    with launch(
        "jsonld",
        n_vehicles=opts.vehicles,
        per_page=opts.per_page,
        images_per_vehicle=20,
        image_hosts=3,
    ) as demo:
        site = demo.site
        pages = [demo.url + "/", demo.url + "/robots.txt"]
        pages += [demo.url_for(p) for p in site.inventory_pages]
        pages += [v["url"] for v in site.vehicles]
        for url in pages[:3]:  # warm the server's page cache paths
            urllib.request.urlopen(url).read()
        urls_file = tmp / "urls.txt"
        urls_file.write_text("\n".join(pages))
        print(
            f"site: {len(site.vehicles)} vehicles, {len(pages)} pages, "
            f"{sum(len(v['image_urls']) for v in site.vehicles)} image URLs on "
            f"{len(demo.image_hosts)} hosts"
        )

        map_file = tmp / "site-map.json"
        map_file.write_text(json.dumps(site_map(demo)))

        bare_args = [
            "runspider",
            str(REPO / "bench" / "bare_fetch.py"),
            "-a",
            f"urls_file={urls_file}",
            *SETTINGS,
        ]
        # label -> [(its adjacent bare fetch, the run), ...]
        pairs: dict[str, list[tuple[dict[str, float], dict[str, float]]]] = {}

        def paired(
            label: str,
            args: list[str],
            env_: dict[str, str],
            before: Any = None,
            after: Any = None,
            processes: int = 0,
        ) -> None:
            if only and not any(label.startswith(prefix) for prefix in only):
                return
            bare = run(bare_args, env, tmp)
            if before is not None:
                before()
            result = run_many(args, env_, tmp, processes) if processes else run(args, env_, tmp)
            if after is not None:
                after()
            pairs.setdefault(label, []).append((bare, result))
            print(
                f"{label}: {bare['seconds'] / result['seconds']:.2f}x its bare fetch "
                f"({result['seconds']:.1f} s against {bare['seconds']:.1f} s)",
                flush=True,
            )

        floor_args = [
            "runspider",
            str(REPO / "bench" / "floor_spider.py"),
            "-a",
            f"map_file={map_file}",
            "-a",
            f"start_url={demo.url}/",
            *SETTINGS,
        ]
        backends = {"sqlite": f"sqlite:///{tmp / 'bench.db'}"}
        schema = None
        if not opts.skip_postgres:
            import psycopg

            schema = f"bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(opts.postgres, autocommit=True) as admin:
                admin.execute(f"CREATE SCHEMA {schema}")
            backends["postgresql"] = f"{opts.postgres}?options=-csearch_path%3D{schema}"
        counts = [int(n) for n in opts.worker_processes.split(",") if n.strip()]

        def reset(url: str) -> None:
            db = Database(url)
            migrate(db)
            db.execute("DELETE FROM vehicle_images")
            db.execute("DELETE FROM organization_vehicles")
            db.execute("DELETE FROM vehicles")
            db.execute("DELETE FROM businesses")
            store.add_organization(db, demo.url, name="Bench Motors")
            db.close()

        def check(label: str, url: str) -> None:
            db = Database(url)
            stored = db.scalar("SELECT COUNT(*) FROM vehicles")
            images = db.scalar("SELECT COUNT(*) FROM vehicle_images")
            db.close()
            if stored != opts.vehicles:
                sys.exit(f"{label} stored {stored} vehicles, expected {opts.vehicles}")
            if images != 20 * opts.vehicles:
                sys.exit(f"{label} stored {images} image rows, expected {20 * opts.vehicles}")

        redis_proc = None
        redis_url = ""
        if redis_counts:
            redis_proc, redis_url = private_redis(tmp)
        redis_cpu_per_page: dict[str, list[float]] = {}

        def enqueue(url: str) -> None:
            import redis

            reset(url)
            redis.Redis.from_url(redis_url).flushdb()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "scrapy",
                    "org-enqueue",
                    "-a",
                    "threshold=1",
                    "-s",
                    f"NUKE_REDIS_URL={redis_url}",
                ],
                cwd=REPO,
                check=True,
                env={**env, "DATABASE_URL": url},
                stdout=subprocess.DEVNULL,
            )
            redis_cpu_per_page["_before"] = [redis_cpu(redis_url)]

        def redis_done(label: str, url: str) -> None:
            check(label, url)
            used = redis_cpu(redis_url) - redis_cpu_per_page["_before"][0]
            redis_cpu_per_page.setdefault(label, []).append(used / len(pages))

        try:
            for _ in range(opts.repeat):  # round-robin: drift spreads over every label
                paired("floor", floor_args, env)
                for name, url in backends.items():
                    for count in counts:
                        label = f"org/{name}" + (f" w{count}" if len(counts) > 1 else "")
                        paired(
                            label,
                            [
                                "crawl",
                                "org",
                                "-a",
                                "threshold=1",
                                "-a",
                                f"max_vehicles={opts.vehicles}",
                                *SETTINGS,
                                "-s",
                                f"NUKE_WORKER_PROCESSES={count}",
                                *(x for o in opts.org_setting for x in ("-s", o)),
                            ],
                            {**env, "DATABASE_URL": url},
                            before=lambda url=url: reset(url),
                            after=lambda label=label, url=url: check(label, url),
                        )
                for count in redis_counts:
                    url = backends["postgresql"]
                    label = f"redis/postgresql x{count}"
                    paired(
                        label,
                        [
                            "crawl",
                            "org",
                            "-a",
                            "from_queue=1",
                            "-a",
                            "exit_when_empty=1",
                            "-a",
                            f"max_vehicles={opts.vehicles}",
                            *SETTINGS,
                            "-s",
                            f"NUKE_REDIS_URL={redis_url}",
                            "-s",
                            "NUKE_REDIS_HEARTBEAT=0.2",
                            *(x for o in opts.org_setting for x in ("-s", o)),
                        ],
                        {**env, "DATABASE_URL": url},
                        before=lambda url=url: enqueue(url),
                        after=lambda label=label, url=url: redis_done(label, url),
                        processes=count,
                    )
        finally:
            if redis_proc is not None:
                redis_proc.terminate()
                redis_proc.wait()
            if schema:
                import psycopg

                with psycopg.connect(opts.postgres, autocommit=True) as admin:
                    admin.execute(f"DROP SCHEMA {schema} CASCADE")
    report(pairs, len(pages))
    if redis_counts:
        report_redis(pairs, len(pages), redis_cpu_per_page)


def report_redis(
    pairs: dict[str, list[tuple[dict[str, float], dict[str, float]]]],
    n_pages: int,
    redis_cpu_per_page: dict[str, list[float]],
) -> None:
    """The Redis-fed runs against the single-process crawl on the same database."""

    def seconds(label: str) -> float:
        return statistics.median(r["seconds"] for _, r in pairs[label])

    def crawler_cpu(label: str) -> float:
        return statistics.median(r["cpu_crawler"] for _, r in pairs[label])

    base = "org/postgresql"
    if base not in pairs:  # --only left it out: the Redis runs against their bare fetch only
        print(f"\n(no {base} run to compare the Redis-fed runs with)")
        for label in (k for k in pairs if k.startswith("redis/")):
            print(
                f"  {label}: {seconds(label):.1f} s; Redis server CPU "
                f"{1000 * statistics.median(redis_cpu_per_page[label]):.3f} ms a page"
            )
        return
    print(f"\nRedis-fed workers against {base} (same site, same per-domain limits):")
    for label in (k for k in pairs if k.startswith("redis/")):
        print(
            f"  {label}: {seconds(base) / seconds(label):.2f}x the single process "
            f"({seconds(label):.1f} s against {seconds(base):.1f} s); crawler CPU "
            f"{1000 * (crawler_cpu(label) - crawler_cpu(base)) / n_pages:+.2f} ms a page; "
            f"Redis server CPU {1000 * statistics.median(redis_cpu_per_page[label]):.3f} "
            "ms a page"
        )
    one = next((k for k in pairs if k == "redis/postgresql x1"), None)
    if one:
        print(
            f"  Redis overhead per page (x1 against one process): "
            f"{1000 * (seconds(one) - seconds(base)) / n_pages:+.2f} ms wall"
        )


def report(pairs: dict[str, list[tuple[dict[str, float], dict[str, float]]]], n_pages: int) -> None:
    """Each label's median ratio to its adjacent bare fetches, and its medians of the rest."""

    def med(values: list[float]) -> float:
        return statistics.median(values)

    bares = [bare for runs in pairs.values() for bare, _ in runs]
    print(
        f"\n{len(bares)} bare fetches of {n_pages} pages: {min(b['seconds'] for b in bares):.1f}"
        f"-{max(b['seconds'] for b in bares):.1f} s, median "
        f"{n_pages / med([b['seconds'] for b in bares]):.0f} pages/s, crawler "
        f"{1000 * med([b['cpu_crawler'] for b in bares]) / n_pages:.2f} ms CPU a page"
    )
    print(
        f"\n{'run':<20}{'ratios to their bare fetch':>30}{'median':>8}{'pages/s':>9}"
        f"{'peak MB':>9}{'tree MB':>9}{'CPU ms/page: crawler':>22}{'workers':>9}{'server':>8}"
    )
    for label, runs in pairs.items():
        ratios = [bare["seconds"] / r["seconds"] for bare, r in runs]
        rs = [r for _, r in runs]
        cpu = {
            k: 1000 * med([r[k] for r in rs]) / n_pages
            for k in ("cpu_crawler", "cpu_children", "cpu_server")
        }
        print(
            f"{label:<20}{' '.join(f'{x:.2f}' for x in ratios):>30}{med(ratios):>8.2f}"
            f"{n_pages / med([r['seconds'] for r in rs]):>9.0f}"
            f"{max(r['peak_kib'] for r in rs) / 1024:>9.0f}"
            f"{max(r['tree_peak_kib'] for r in rs) / 1024:>9.0f}"
            f"{cpu['cpu_crawler']:>22.2f}{cpu['cpu_children']:>9.2f}{cpu['cpu_server']:>8.2f}"
        )
    # The most any org crawl could reach on these cores: Scrapy's own work for these
    # requests and items (the floor's crawler CPU), the cheapest measured extraction and
    # database work (the workers' CPU of the org runs) and the site's server, all
    # perfectly spread over every core, with no other overhead; against the bare fetch's
    # median rate.
    cores = len(os.sched_getaffinity(0))
    if "floor" not in pairs or not any(label.startswith("org/") for label in pairs):
        return  # --only left out what the ceiling is made of
    floor = [r for _, r in pairs["floor"]]
    floor_cpu = med([r["cpu_crawler"] for r in floor]) / n_pages
    server_cpu = med([r["cpu_server"] for r in floor]) / n_pages
    work = (
        min(
            med([r["cpu_children"] for _, r in runs])
            for label, runs in pairs.items()
            if label.startswith("org/")
        )
        / n_pages
    )
    ceiling = cores / (floor_cpu + work + server_cpu)
    bare_rate = n_pages / med([b["seconds"] for b in bares])
    print(
        f"\nceiling: {cores} cores, Scrapy's floor {1000 * floor_cpu:.2f} + extraction and "
        f"database {1000 * work:.2f} + server {1000 * server_cpu:.2f} ms CPU a page: at most "
        f"{ceiling:.0f} pages/s = {ceiling / bare_rate:.2f}x the median bare fetch, were every "
        "core busy all the time"
    )
    print(
        "\ntargets: org ratio >= 0.70, peak memory < 300 MB (wall time includes process "
        "start-up for every run). peak MB: the crawler's peak RSS plus its largest child's;"
        " tree MB: the largest summed RSS of the crawler and all its children at one time, "
        "sampled every 0.1 s. CPU counts user + system time (medians); 'server' is the "
        "site's server threads (the PostgreSQL server's own CPU is not counted)."
    )


if __name__ == "__main__":
    main()
