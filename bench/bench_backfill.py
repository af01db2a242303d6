"""Benchmark: ``image_backfill`` against img2dataset, and the claim query at scale.

Run from the repository root::

    .venv/bin/python bench/bench_backfill.py                 # everything
    .venv/bin/python bench/bench_backfill.py --skip-claim    # throughput only
    .venv/bin/python bench/bench_backfill.py --skip-download --claim-vehicles 1000000
    .venv/bin/python bench/bench_backfill.py --skip-claim --baseline-ref 8c65e01  # before/after

What it does, in one run:

1. Serves ``--images`` (5,000) realistic JPEGs (three sizes, 50-500 KB, distinct bytes)
   from ``--hosts`` (4) loopback hosts (127.0.0.2...), in a separate asyncio process.
2. img2dataset 1.47.0 downloads the URLs into a folder, no resizing, no re-encoding,
   2 processes x 64 threads (its own venv: ``--i2d-venv``, default ``bench/.venv-i2d``,
   created with ``pip install img2dataset==1.47.0`` when missing: it drags pyarrow,
   albumentations, wandb... so it is kept out of requirements.txt).
   Then the ceiling of any design that downloads through Scrapy and verifies each image
   by decoding it: a bare Scrapy spider fetching the same URLs (its CPU per image, and the
   image server's), plus the least decoding that verifies a JPEG (``draft()`` to 1/8
   scale, then ``load()``), or plus the image worker's whole work (verification, the
   default thumbnail, sha256), shared by the 2 cores.
3. ``image_backfill`` does the same work from a PostgreSQL schema of its own (vehicles
   with external image rows, as the org crawl writes them), into a folder, with its whole
   bookkeeping: ``--processes`` (1) ``scrapy crawl image_backfill`` processes sharing the
   work through leases (each with its image worker processes). AutoThrottle is off for the
   benchmark, as img2dataset has no throttling.
   With ``--baseline-ref REF`` the same work is also done, in the same run and before the
   current code's, by ``image_backfill`` as of git commit ``REF`` (``git archive`` into a
   temporary folder, a fresh schema): before/after figures measured side by side.
4. Runs ``image_backfill`` again: it must download nothing.
   With ``--cloudflare``, the same work is then done into ``cloudflare-images://`` against
   the tests' Cloudflare API server (``tests/cloudflare_server.py``, a child process on the
   same cores, ``--cf-latency`` seconds per request, no rate cap: Cloudflare's real
   1,200 requests per 5 minutes would cap any run at 4 images/s), on a fresh schema:
   images/s against the folder run above (the ratio: uploads add network work; no
   variant is made for this store), peak RSS (it must stay under 400 MB), then a second
   run that must upload nothing.
5. Times ``--claim-samples`` (100) claims on PostgreSQL with ``--claim-vehicles`` vehicles
   and 10 image rows each, built with ``INSERT ... SELECT generate_series`` in a schema that
   is dropped afterwards, then vacuumed, analysed and checkpointed as a database in steady
   state would be (``--claim-unsettled``: only analysed, so the claims meet the load's
   checkpoint and autovacuum); prints the median, p95 and max, interleaved with as many claims made
   with ``synchronous_commit`` on (waiting for their WAL flush, as claims did before).

Every figure line carries the load average: the machine is shared, so only figures of one
run, on a quiet machine, compare.

Everything is pinned to the same 2 cores (``taskset -c 0,1``), the image server included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from common import cache_bytecode, peak_rss_of_tree, tree_rss  # the bench folder: the script's own

REPO = Path(__file__).resolve().parents[1]
PG_BASE = os.environ.get("NUKE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
SIZES = [(800, 600), (1600, 1200), (2400, 1800)]
CORES = "0,1"


# -- the image server (child process) -------------------------------------------------


def serve_main(hosts: int, port_file: str) -> None:
    """Serve ``/img/<w>x<h>/<key>.jpg`` on 127.0.0.(2+i) with keep-alive; ``/__hits``."""
    sys.path.insert(0, str(REPO))
    from nuke_crawl.demo.images import image_bytes, warm_pool

    for w, h in SIZES:
        warm_pool(w, h, 85)
    hits = {"count": 0}
    pattern = re.compile(rb"^GET /img/(\d+)x(\d+)/([^ /]+)\.jpg ")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                match = pattern.match(head)
                if head.startswith(b"GET /__hits"):
                    body = json.dumps(hits).encode()
                    ctype = b"application/json"
                    status = b"200 OK"
                elif match:
                    hits["count"] += 1
                    w, h, key = int(match[1]), int(match[2]), match[3].decode()
                    body = image_bytes(key, width=w, height=h, quality=85, unique=True)
                    ctype = b"image/jpeg"
                    status = b"200 OK"
                else:
                    body, ctype, status = b"not found", b"text/plain", b"404 Not Found"
                writer.write(
                    b"HTTP/1.1 "
                    + status
                    + b"\r\nContent-Type: "
                    + ctype
                    + b"\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        urls = []
        servers = []
        for i in range(hosts):
            address = f"127.0.0.{2 + i}"
            server = await asyncio.start_server(handle, address, 0, backlog=1024)
            servers.append(server)
            urls.append(f"http://{address}:{server.sockets[0].getsockname()[1]}")
        Path(port_file).write_text("\n".join(urls))
        await asyncio.gather(*(s.serve_forever() for s in servers))

    asyncio.run(main())


def start_server(hosts: int, workdir: Path) -> tuple[subprocess.Popen[bytes], list[str]]:
    port_file = workdir / "hosts.txt"
    proc = subprocess.Popen(
        [
            "taskset",
            "-c",
            CORES,
            sys.executable,
            __file__,
            "serve",
            "--hosts",
            str(hosts),
            "--port-file",
            str(port_file),
        ],
    )
    deadline = time.monotonic() + 120
    while not port_file.exists() or not port_file.read_text().strip():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("the image server did not start")
        time.sleep(0.2)
    return proc, port_file.read_text().split()


def server_hits(base: str) -> int:
    import urllib.request

    with urllib.request.urlopen(f"{base}/__hits", timeout=10) as response:
        return int(json.loads(response.read())["count"])


def image_urls(hosts: list[str], n: int, per_vehicle: int) -> list[list[str]]:
    vehicles = []
    for v in range(n // per_vehicle):
        urls = []
        for j in range(per_vehicle):
            k = v * per_vehicle + j
            w, h = SIZES[k % len(SIZES)]
            urls.append(f"{hosts[k % len(hosts)]}/img/{w}x{h}/b{k}.jpg")
        vehicles.append(urls)
    return vehicles


# -- img2dataset -------------------------------------------------------------------------


def ensure_img2dataset(venv: Path) -> Path:
    exe = venv / "bin" / "img2dataset"
    if not exe.exists():
        print(f"installing img2dataset==1.47.0 into {venv} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", "img2dataset==1.47.0"], check=True
        )
    return exe


def run_img2dataset(exe: Path, urls: list[str], workdir: Path) -> dict[str, float]:
    url_file = workdir / "urls.txt"
    url_file.write_text("\n".join(urls))
    out = workdir / "i2d_out"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        "taskset",
        "-c",
        CORES,
        str(exe),
        "--url_list",
        str(url_file),
        "--output_folder",
        str(out),
        "--processes_count",
        "2",
        "--thread_count",
        "64",
        "--resize_mode",
        "no",
        "--disable_all_reencoding",
        "True",
        "--output_format",
        "files",
        "--input_format",
        "txt",
        "--timeout",
        "30",
        "--enable_wandb",
        "False",
        "--number_sample_per_shard",
        "2500",
        "--distributor",
        "multiprocessing",
    ]
    cpu = _children_cpu()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak, seconds = peak_rss_of_tree(proc)
    cpu = _children_cpu() - cpu
    stored = sum(1 for _ in out.rglob("*.jpg"))
    return {
        "images": stored,
        "seconds": seconds,
        "per_second": stored / seconds,
        "peak_rss_mb": peak / 2**20,
        "cpu_ms_per_image": 1000 * cpu / max(1, stored),
    }


def run_bare_fetch(urls: list[str], workdir: Path) -> dict[str, float]:
    """A Scrapy spider that only fetches the URLs (``bench/bare_fetch.py``), one process,
    the same downloader settings as ``image_backfill``: what Scrapy's downloader alone costs."""
    url_file = workdir / "bare_urls.txt"
    url_file.write_text("\n".join(urls))
    env = {**os.environ, "NUKE_ALLOW_PRIVATE_NETWORKS": "1", "PYTHONPATH": str(REPO)}
    cmd = [
        "taskset",
        "-c",
        CORES,
        sys.executable,
        "-m",
        "scrapy",
        "runspider",
        str(REPO / "bench" / "bare_fetch.py"),
        "-a",
        f"urls_file={url_file}",
        *BACKFILL_SETTINGS,
        "-s",
        "LOG_LEVEL=WARNING",
    ]
    cpu = _children_cpu()
    start = time.monotonic()
    subprocess.run(cmd, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
    seconds = time.monotonic() - start
    cpu = _children_cpu() - cpu
    return {
        "images": len(urls),
        "seconds": seconds,
        "per_second": len(urls) / seconds,
        "cpu_ms_per_image": 1000 * cpu / len(urls),
    }


def image_work_floor(urls: list[str], sample: int = 300) -> dict[str, float]:
    """CPU per image, in this process, of (1) the least decoding that verifies a JPEG:
    Pillow's ``draft()`` to the smallest DCT scale (1/8), then ``load()`` (every byte of
    the scan is still entropy-decoded: what catches truncation and corruption), and
    (2) :func:`nuke_crawl.imaging.process_image` as the image worker runs it:
    verification, the default 320x240 thumbnail and the sha256."""
    import io
    import urllib.request

    from PIL import Image

    sys.path.insert(0, str(REPO))
    from nuke_crawl.imaging import process_image

    bodies = []
    for url in urls[:: max(1, len(urls) // sample)][:sample]:
        with urllib.request.urlopen(url, timeout=30) as response:
            bodies.append(response.read())

    def verify(body: bytes) -> None:
        with Image.open(io.BytesIO(body)) as im:
            im.draft("RGB", (1, 1))
            im.load()

    out = {"images": float(len(bodies))}
    for name, work in (("verify_ms", verify), ("process_ms", process_image)):
        best = float("inf")
        for _ in range(3):
            start = time.process_time()
            for body in bodies:
                work(body)
            best = min(best, time.process_time() - start)
        out[name] = 1000 * best / len(bodies)
    return out


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a running process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes and their children:
    a figure that other load on a shared machine disturbs much less than images/s."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- image_backfill ------------------------------------------------------------------------


def make_schema() -> tuple[str, str]:
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_BASE else "?"
    return schema, f"{PG_BASE}{sep}options=-csearch_path%3D{schema}"


def drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def seed_vehicles(url: str, vehicles: list[list[str]]) -> None:
    sys.path.insert(0, str(REPO))
    from nuke_crawl.db import Database, migrate, store

    db = Database(url)
    migrate(db)
    org, _ = store.add_organization(db, "http://bench-dealer.example")
    recs = [
        store.VehicleRecord(
            org.id,
            f"http://bench-dealer.example/v/{i}",
            {
                "year": 2010,
                "make": "Volvo",
                "model": "240",
                "listing_url": f"http://bench-dealer.example/v/{i}",
            },
            urls,
        )
        for i, urls in enumerate(vehicles)
    ]
    for chunk in range(0, len(recs), 200):
        store.upsert_vehicles(db, recs[chunk : chunk + 200])
    db.close()


BACKFILL_SETTINGS = [
    "-s",
    "AUTOTHROTTLE_ENABLED=0",
    "-s",
    "CONCURRENT_REQUESTS=64",
    "-s",
    "CONCURRENT_REQUESTS_PER_DOMAIN=32",
    "-s",
    "ROBOTSTXT_OBEY=0",
    "-s",
    "LOG_LEVEL=INFO",
    "-s",
    "MEMUSAGE_ENABLED=1",
]


def export_ref(ref: str) -> Path:
    """The project's files at git ``ref``, in a temporary folder (``git archive``)."""
    dest = Path(tempfile.mkdtemp(prefix="bench_ref_"))
    tar = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", ref], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True)
    return dest


def run_backfill(
    db_url: str,
    out: Path | str,
    processes: int,
    extra: list[str],
    code: Path = REPO,
    env_extra: dict[str, str] | None = None,
) -> dict[str, float]:
    """``scrapy crawl image_backfill`` from the project at ``code`` (this checkout, or
    one exported by :func:`export_ref`: its folder comes first on ``sys.path``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(DATABASE_URL=db_url, NUKE_ALLOW_PRIVATE_NETWORKS="1", PYTHONPATH=str(code))
    env.update(env_extra or {})
    cmd = [
        "taskset",
        "-c",
        CORES,
        sys.executable,
        "-m",
        "scrapy",
        "crawl",
        "image_backfill",
        *BACKFILL_SETTINGS,
        "-s",
        f"IMAGES_STORE={out}",
        "-a",
        "limit=1000000",
        "-a",
        "batch_size=25",
        "-a",
        "max_images=50",
        *extra,
    ]
    start = time.monotonic()
    cpu = _children_cpu()
    # each child's stderr, read back once it exits (closed below)
    logs = [tempfile.TemporaryFile("w+") for _ in range(processes)]  # noqa: SIM115
    procs = [
        subprocess.Popen(cmd, cwd=code, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
        for log in logs
    ]
    peak_total = 0
    peak_one = 0
    while any(p.poll() is None for p in procs):
        sizes = [tree_rss(p.pid) for p in procs if p.poll() is None]
        peak_total = max(peak_total, sum(sizes))
        peak_one = max([peak_one, *sizes])
        time.sleep(0.2)
    seconds = time.monotonic() - start
    cpu = _children_cpu() - cpu
    errs = []
    for log in logs:
        log.seek(0)
        errs.append(log.read())
        log.close()
    stored = failed = 0
    for proc, err in zip(procs, errs, strict=True):
        if proc.returncode != 0:
            print(err[-3000:])
            raise SystemExit("image_backfill failed")
        stored += _stat(err, "nuke/images/stored")
        failed += _stat(err, "nuke/images/failed")
    # RSS of each crawl process with its image worker processes, sampled every 0.2 s
    return {
        "images": stored,
        "failed": failed,
        "seconds": seconds,
        "per_second": stored / seconds,
        "peak_rss_mb": peak_one / 2**20,
        "peak_rss_mb_sum": peak_total / 2**20,
        "cpu_ms_per_image": 1000 * cpu / max(1, stored + failed),
    }


def start_cloudflare(latency: float) -> tuple[subprocess.Popen[str], str]:
    """The tests' Cloudflare Images API server in a child process; its API base URL."""
    proc = subprocess.Popen(
        [
            "taskset",
            "-c",
            CORES,
            sys.executable,
            "-m",
            "tests.cloudflare_server",
            "--latency",
            str(latency),
            "--discard",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("http"):
        proc.terminate()
        raise SystemExit("the Cloudflare API server did not start")
    return proc, line


def cloudflare_stats(api_url: str) -> dict[str, object]:
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(api_url)
    with urllib.request.urlopen(
        f"{parts.scheme}://{parts.netloc}/__stats",
        timeout=10,
    ) as response:
        return dict(json.loads(response.read()))


def bench_cloudflare(
    vehicles: list[list[str]], processes: int, extra: list[str], latency: float, concurrency: int
) -> dict[str, object]:
    """``image_backfill`` into ``cloudflare-images://`` against the local API server."""
    sys.path.insert(0, str(REPO))
    from tests.cloudflare_server import ACCOUNT_HASH, ACCOUNT_ID, TOKEN

    server, api_url = start_cloudflare(latency)
    schema, db_url = make_schema()
    try:
        seed_vehicles(db_url, vehicles)
        settings = [
            *extra,
            "-s",
            f"CF_IMAGES_API_URL={api_url}",
            "-s",
            f"CF_IMAGES_ACCOUNT_HASH={ACCOUNT_HASH}",
            "-s",
            "CF_IMAGES_RATE_LIMIT=100000000",
            "-s",
            f"CF_IMAGES_CONCURRENCY={concurrency}",
        ]
        store = f"cloudflare-images://{ACCOUNT_ID}"
        env = {"CF_IMAGES_TOKEN": TOKEN}
        first = run_backfill(db_url, store, processes, settings, env_extra=env)
        uploads = int(cloudflare_stats(api_url)["uploads"])  # type: ignore[call-overload]
        server_cpu = process_cpu(server.pid)  # the local API server's share of the 2 cores
        second = run_backfill(db_url, store, processes, settings, env_extra=env)
        stats = cloudflare_stats(api_url)
        return {
            **first,
            "uploads": uploads,
            "server_cpu_ms_per_image": 1000 * server_cpu / max(1, uploads),
            "second_run_uploads": int(stats["uploads"]) - uploads,  # type: ignore[call-overload]
            "second_run_stored": second["images"],
            "api_statuses": stats["statuses"],
        }
    finally:
        server.terminate()
        server.wait()
        drop_schema(schema)


def _load() -> str:
    """The load average now: the figures are only comparable on a quiet machine."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def _stat(log: str, key: str) -> int:
    match = re.search(rf"'{re.escape(key)}': (\d+)", log)
    return int(match[1]) if match else 0


# -- the claim query at scale ----------------------------------------------------------------


def _spread(name: str, timings: list[float]) -> dict[str, float]:
    ordered = sorted(timings)
    return {
        f"{name}_median": statistics.median(ordered),
        f"{name}_p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        f"{name}_max": ordered[-1],
    }


def bench_claim(
    vehicles: int,
    per_vehicle: int,
    done_share: float,
    samples: int = 100,
    settle: bool = True,
) -> dict[str, float]:
    sys.path.insert(0, str(REPO))
    from nuke_crawl.db import Database, backfill, migrate

    schema, url = make_schema()
    try:
        db = Database(url)
        migrate(db)
        t0 = time.monotonic()
        db.execute(
            "INSERT INTO vehicles (id, year, make, model, is_public, origin_metadata, "
            "created_at, updated_at) SELECT gen_random_uuid(), 2000 + g % 25, 'Make', 'Model', "
            "true, jsonb_build_object('image_count', ?::int, 'images_backfilled', "
            "(g % 1000) < ?::int), now() - make_interval(secs => g), now() "
            "FROM generate_series(1, ?) AS g",
            [per_vehicle, int(done_share * 1000), vehicles],
        )
        t1 = time.monotonic()
        # Ten million rows go in far faster with the secondary indexes built afterwards.
        indexes = db.fetchall(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
            "AND tablename = 'vehicle_images' AND indexname <> 'vehicle_images_pkey'"
        )
        for index in indexes:
            db.execute(f"DROP INDEX {index['indexname']}")
        db.execute(
            "INSERT INTO vehicle_images (id, vehicle_id, image_url, source_url, is_external, "
            "position, is_primary, created_at, updated_at) "
            "SELECT gen_random_uuid(), v.id, u.url, u.url, true, p, p = 0, now(), now() "
            "FROM vehicles v CROSS JOIN generate_series(0, ? - 1) AS p "
            "CROSS JOIN LATERAL (SELECT 'https://img.example/' || v.id || '/' || p || '.jpg' "
            "AS url) u",
            [per_vehicle],
        )
        for index in indexes:
            db.execute(index["indexdef"])
        t2 = time.monotonic()
        if settle:
            # steady state: autovacuum would have set the visibility map and statistics
            db.execute("VACUUM (ANALYZE) vehicles")
            db.execute("VACUUM (ANALYZE) vehicle_images")
        else:  # right after the bulk load: checkpoint and autovacuum still to come
            db.execute("ANALYZE vehicles")
            db.execute("ANALYZE vehicle_images")
        images = int(db.scalar("SELECT COUNT(*) FROM vehicle_images"))
        if settle:
            db.execute("CHECKPOINT")  # the build's dirty pages are not flushed during the claims
        # Interleaved on the same data: as shipped (the claim does not wait for its WAL
        # flush) and with synchronous_commit on (what the claim did before).
        timings: list[float] = []
        synchronous: list[float] = []
        for n in range(2 * samples):
            start = time.perf_counter()
            works = backfill.claim_vehicles(
                db, "bench", limit=10, lease_seconds=600, synchronous_commit=bool(n % 2)
            )
            (synchronous if n % 2 else timings).append((time.perf_counter() - start) * 1000)
            assert len(works) == 10
        sql, params = backfill.claim_sql(db, backfill.Selection(), db.now(), 10)
        plan = db.fetchall("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
        db.close()
        return {
            "vehicles": vehicles,
            "images": images,
            "build_vehicles_s": t1 - t0,
            "build_images_s": t2 - t1,
            "samples": samples,
            **_spread("claim_ms", timings),
            **_spread("claim_sync_ms", synchronous),
            "claim_ms_first": timings[0],
            "plan": "\n".join(r["QUERY PLAN"] for r in plan),
        }

    finally:
        drop_schema(schema)


# -- main ------------------------------------------------------------------------------------


def main() -> None:
    cache_bytecode()  # before any process starts: the children inherit it
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve")
    serve.add_argument("--hosts", type=int, default=4)
    serve.add_argument("--port-file", required=True)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--per-vehicle", type=int, default=10)
    parser.add_argument("--processes", type=int, default=1, help="image_backfill processes")
    parser.add_argument("--i2d-venv", type=Path, default=REPO / "bench" / ".venv-i2d")
    parser.add_argument("--skip-img2dataset", action="store_true")
    parser.add_argument("--skip-download", action="store_true")
    parser.add_argument("--skip-claim", action="store_true")
    parser.add_argument("--claim-vehicles", type=int, default=1_000_000)
    parser.add_argument("--claim-per-vehicle", type=int, default=10)
    parser.add_argument(
        "--claim-done-share",
        type=float,
        default=0.5,
        help="share of the vehicles already backfilled",
    )
    parser.add_argument(
        "--claim-samples", type=int, default=100, help="claims timed (median, p95, max are printed)"
    )
    parser.add_argument(
        "--claim-unsettled",
        action="store_true",
        help="time the claims right after the bulk load (no VACUUM, no "
        "CHECKPOINT first: the server is still writing the load out)",
    )
    parser.add_argument(
        "--cloudflare",
        action="store_true",
        help="also backfill into cloudflare-images:// against the tests' "
        "local Cloudflare API server, and compare with the folder run",
    )
    parser.add_argument(
        "--cf-latency",
        type=float,
        default=0.0,
        help="seconds the local Cloudflare API server takes per request",
    )
    parser.add_argument(
        "--cf-concurrency", type=int, default=8, help="CF_IMAGES_CONCURRENCY for the Cloudflare run"
    )
    parser.add_argument(
        "--backfill-setting",
        action="append",
        default=[],
        help="extra -s NAME=VALUE for image_backfill",
    )
    parser.add_argument(
        "--baseline-ref",
        action="append",
        default=[],
        metavar="GIT_REF",
        help="also run image_backfill as of this git commit, in the same run, "
        "on a fresh schema (before/after comparisons); repeatable",
    )
    args = parser.parse_args()
    if args.command == "serve":
        serve_main(args.hosts, args.port_file)
        return
    results: dict[str, object] = {}
    if not args.skip_download:
        workdir = Path(tempfile.mkdtemp(prefix="bench_backfill_"))
        server, hosts = start_server(args.hosts, workdir)
        schema = None
        try:
            vehicles = image_urls(hosts, args.images, args.per_vehicle)
            urls = [u for v in vehicles for u in v]
            if not args.skip_img2dataset:
                exe = ensure_img2dataset(args.i2d_venv)
                results["img2dataset"] = i2d = run_img2dataset(exe, urls, workdir)
                print(
                    f"img2dataset: {i2d['images']} images in {i2d['seconds']:.1f}s = "
                    f"{i2d['per_second']:.0f} images/s, peak RSS {i2d['peak_rss_mb']:.0f} MB "
                    f"(all its processes), {i2d['cpu_ms_per_image']:.1f} ms CPU per image "
                    f"({_load()})",
                    flush=True,
                )
                served = process_cpu(server.pid)
                results["bare_fetch"] = bare = run_bare_fetch(urls, workdir)
                server_ms = 1000 * (process_cpu(server.pid) - served) / len(urls)
                floor = image_work_floor(urls)
                results["image_work_floor"] = {**floor, "server_ms": server_ms}
                cores = len(CORES.split(","))
                fetch = bare["cpu_ms_per_image"] + server_ms
                verify_ceiling = 1000 * cores / (fetch + floor["verify_ms"])
                thumb_ceiling = 1000 * cores / (fetch + floor["process_ms"])
                results["ceiling_per_second"] = {
                    "verify": verify_ceiling,
                    "verify_and_thumbnail": thumb_ceiling,
                }
                print(
                    f"bare Scrapy fetch (no storage, no decoding): {bare['per_second']:.0f} "
                    f"images/s = {bare['per_second'] / i2d['per_second']:.2f}x img2dataset, "
                    f"{bare['cpu_ms_per_image']:.1f} ms CPU per image, and the image server "
                    f"{server_ms:.1f} ms; decoding to verify (draft 1/8, the least) "
                    f"{floor['verify_ms']:.1f} ms; verifying, thumbnail and hash as the image "
                    f"worker does {floor['process_ms']:.1f} ms. So {cores} cores fetch and "
                    f"verify at most {verify_ceiling:.0f} images/s = "
                    f"{verify_ceiling / i2d['per_second']:.2f}x img2dataset, and with the "
                    f"thumbnail at most {thumb_ceiling:.0f} images/s = "
                    f"{thumb_ceiling / i2d['per_second']:.2f}x, before storing and bookkeeping "
                    f"({_load()})",
                    flush=True,
                )
            extra = [x for s in args.backfill_setting for x in ("-s", s)]
            for ref in args.baseline_ref:
                code = export_ref(ref)
                ref_schema, ref_url = make_schema()
                try:
                    seed_vehicles(ref_url, vehicles)
                    base = run_backfill(
                        ref_url, workdir / f"ref_{ref}", args.processes, extra, code=code
                    )
                finally:
                    drop_schema(ref_schema)
                    shutil.rmtree(code, ignore_errors=True)
                    shutil.rmtree(workdir / f"ref_{ref}", ignore_errors=True)
                results[f"image_backfill@{ref}"] = base
                print(
                    f"image_backfill as of {ref}: {base['images']} images stored "
                    f"({base['failed']} failed) in {base['seconds']:.1f}s = "
                    f"{base['per_second']:.0f} images/s, peak RSS {base['peak_rss_mb']:.0f} MB, "
                    f"{base['cpu_ms_per_image']:.1f} ms CPU per image"
                    + (
                        f" = {base['per_second'] / i2d['per_second']:.2f}x img2dataset"
                        if "img2dataset" in results
                        else ""
                    )
                    + f" ({_load()})",
                    flush=True,
                )
            schema, db_url = make_schema()
            seed_vehicles(db_url, vehicles)
            out = workdir / "backfill_out"
            results["image_backfill"] = bf = run_backfill(db_url, out, args.processes, extra)
            print(
                f"image_backfill: {bf['images']} images stored ({bf['failed']} failed) in "
                f"{bf['seconds']:.1f}s = {bf['per_second']:.0f} images/s, peak RSS "
                f"{bf['peak_rss_mb']:.0f} MB per process ({bf['peak_rss_mb_sum']:.0f} MB for "
                f"{args.processes}), {bf['cpu_ms_per_image']:.1f} ms CPU per image ({_load()})",
                flush=True,
            )
            if "img2dataset" in results:
                ratio = bf["per_second"] / i2d["per_second"]
                results["ratio"] = ratio
                cpu_ratio = i2d["cpu_ms_per_image"] / bf["cpu_ms_per_image"]
                results["cpu_ratio"] = cpu_ratio
                print(
                    f"ratio image_backfill / img2dataset: {ratio:.2f}x in images/s, "
                    f"{cpu_ratio:.2f}x in CPU per image (img2dataset's / ours)",
                    flush=True,
                )
            before = server_hits(hosts[0])
            again = run_backfill(db_url, out, args.processes, extra)
            downloaded_again = server_hits(hosts[0]) - before
            results["second_run_downloads"] = downloaded_again
            print(
                f"second run: {downloaded_again} images downloaded again, {again['images']} stored",
                flush=True,
            )
            if args.cloudflare:
                results["image_backfill_cloudflare"] = cf = bench_cloudflare(
                    vehicles, args.processes, extra, args.cf_latency, args.cf_concurrency
                )
                cf_ratio = float(cf["per_second"]) / bf["per_second"]  # type: ignore[arg-type]
                results["cloudflare_ratio"] = cf_ratio
                peak = float(cf["peak_rss_mb"])  # type: ignore[arg-type]
                print(
                    f"image_backfill into cloudflare-images:// (local API server, "
                    f"{args.cf_latency * 1000:.0f} ms per request, CF_IMAGES_CONCURRENCY="
                    f"{args.cf_concurrency}): {cf['images']} images stored ({cf['failed']} "
                    f"failed, {cf['uploads']} uploads) in {cf['seconds']:.1f}s = "
                    f"{cf['per_second']:.0f} images/s = {cf_ratio:.2f}x the folder run, "
                    f"peak RSS {peak:.0f} MB per process"
                    f"{'' if peak < 400 else ' (OVER the 400 MB bound)'}, "
                    f"{cf['cpu_ms_per_image']:.1f} ms CPU per image (and the local API server "
                    f"{cf['server_cpu_ms_per_image']:.1f} ms on the same cores); second run: "
                    f"{cf['second_run_uploads']} uploads; API answers {cf['api_statuses']} "
                    f"({_load()})",
                    flush=True,
                )
        finally:
            server.terminate()
            server.wait()
            if schema:
                drop_schema(schema)
            shutil.rmtree(workdir, ignore_errors=True)
    if not args.skip_claim:
        claim = bench_claim(
            args.claim_vehicles,
            args.claim_per_vehicle,
            args.claim_done_share,
            args.claim_samples,
            settle=not args.claim_unsettled,
        )
        results["claim"] = {k: v for k, v in claim.items() if k != "plan"}
        print(
            f"claim query: {claim['vehicles']:,} vehicles, {claim['images']:,} image rows "
            f"(built in {claim['build_vehicles_s']:.0f}s + {claim['build_images_s']:.0f}s): "
            f"{claim['samples']} claims of 10 vehicles: median "
            f"{claim['claim_ms_median']:.1f} ms, p95 {claim['claim_ms_p95']:.1f} ms, max "
            f"{claim['claim_ms_max']:.1f} ms, first {claim['claim_ms_first']:.1f} ms; "
            f"interleaved with {claim['samples']} claims waiting for their WAL flush "
            f"(synchronous_commit on): median {claim['claim_sync_ms_median']:.1f} ms, p95 "
            f"{claim['claim_sync_ms_p95']:.1f} ms, max {claim['claim_sync_ms_max']:.1f} ms "
            f"({_load()})",
            flush=True,
        )
        print(claim["plan"])
    print(json.dumps(results, default=str))


if __name__ == "__main__":
    main()
