"""Benchmark: ``scrapy crawl image_analysis`` against an OpenAI-compatible server that
answers after 1 s.

Usage: ``.venv/bin/python bench/bench_analysis.py [--images 2734] [--concurrency 10]
[--latency 1] [--failure-rate 0.1]``

Builds a fresh SQLite database with ``--images`` stored images (JPEG files under a
temporary IMAGES_STORE, six per vehicle), serves ``tests/openai_server.FakeOpenAI``
with the given latency, runs the real command (providers ``local,openai``) and prints
images per second against the ideal (concurrency / latency). Then does it again with
the server failing ``--failure-rate`` of the calls with a 500 (transient: the provider
retries them) and checks that 100% of the images end analysed.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from common import cache_bytecode  # noqa: E402 - the bench folder is on sys.path
from openai_server import API_KEY, FakeOpenAI  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from nuke_crawl.db import Database, migrate, store  # noqa: E402

PER_VEHICLE = 6


def _photos(n: int = 40) -> list[bytes]:
    out = []
    for i in range(n):
        img = Image.new("RGB", (800, 600), (40 + i * 5 % 200, 90, 160 - i * 3 % 150))
        draw = ImageDraw.Draw(img)
        for k in range(30):
            x = (i * 37 + k * 53) % 760
            y = (i * 29 + k * 41) % 560
            draw.rectangle((x, y, x + 40, y + 30), fill=((k * 40) % 255, (i * 20) % 255, 100))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def build(db_url: str, store_dir: Path, images: int) -> None:
    db = Database(db_url)
    migrate(db)
    org, _ = store.add_organization(db, "https://bench.example", name="Bench")
    records = []
    for v in range(0, images, PER_VEHICLE):
        count = min(PER_VEHICLE, images - v)
        records.append(
            store.VehicleRecord(
                org.id,
                f"https://bench.example/v/{v}",
                {"title": f"Car {v}", "year": 1970},
                image_urls=[f"https://img.bench.example/{v}/{i}.jpg" for i in range(count)],
            )
        )
    store.upsert_vehicles(db, records)
    photos = _photos()
    rows = db.fetchall("SELECT id, vehicle_id FROM vehicle_images")
    updates = []
    for n, row in enumerate(rows):
        path = f"{row['vehicle_id']}/{row['id']}.jpg"
        (store_dir / row["vehicle_id"]).mkdir(parents=True, exist_ok=True)
        (store_dir / path).write_bytes(photos[n % len(photos)])
        updates.append([path, "image/jpeg", row["id"]])
    with db.transaction():
        db.executemany(
            "UPDATE vehicle_images SET is_external = false, storage_path = ?, "
            "mime_type = ? WHERE id = ?",
            updates,
        )
    db.close()


def run(images: int, concurrency: int, latency: float, failure_rate: float) -> dict[str, float]:
    with (
        tempfile.TemporaryDirectory() as tmp,
        FakeOpenAI(latency=latency, failure_rate=failure_rate) as server,
    ):
        db_url = f"sqlite:///{tmp}/bench.db"
        store_dir = Path(tmp) / "images"
        build(db_url, store_dir, images)
        env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": server.url + "/v1",
            "PYTHONPATH": str(REPO),
            "SCRAPY_SETTINGS_MODULE": "nuke_crawl.settings",
        }
        cmd = [
            sys.executable,
            "-m",
            "scrapy",
            "crawl",
            "image_analysis",
            "-a",
            f"limit={images}",
            "-a",
            f"concurrency={concurrency}",
            "-a",
            "providers=local,openai",
            "-s",
            f"IMAGES_STORE={store_dir}",
            "-s",
            "LOG_LEVEL=INFO",
        ]
        started = time.monotonic()
        proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
        wall = time.monotonic() - started
        db = Database(db_url)
        analysed = int(
            db.scalar("SELECT COUNT(*) FROM vehicle_images WHERE ai_last_scanned IS NOT NULL") or 0
        )
        db.close()
        match = re.search(r"([\d.]+) images/min over", proc.stderr)
        per_minute = float(match.group(1)) if match else 0.0
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
        return {
            "images": images,
            "analysed": analysed,
            "wall_s": wall,
            "per_second": per_minute / 60,
            "ideal": concurrency / latency,
            "chat_requests": server.chat_requests,
            "failures_served": server.failures_served,
            "max_in_flight": server.max_in_flight,
            "exit": proc.returncode,
        }


def report(title: str, r: dict[str, float]) -> None:
    share = 100 * r["per_second"] / r["ideal"]
    print(
        f"{title}: {int(r['analysed'])}/{int(r['images'])} analysed "
        f"({100 * r['analysed'] / r['images']:.1f}%), "
        f"{r['per_second']:.2f} images/s in the spider = {share:.1f}% of the ideal "
        f"{r['ideal']:.1f}/s; {r['wall_s']:.0f} s wall including startup; "
        f"{int(r['chat_requests'])} chat requests, {int(r['failures_served'])} answered 500, "
        f"at most {int(r['max_in_flight'])} in flight; "
        f"exit {int(r['exit'])}",
        flush=True,
    )


def main() -> None:
    cache_bytecode()  # before any process starts: the children inherit it
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--images", type=int, default=2734)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--failure-rate", type=float, default=0.1)
    parser.add_argument("--only", choices=("clean", "failures"), default=None)
    args = parser.parse_args()
    if args.only in (None, "clean"):
        report("no failures", run(args.images, args.concurrency, args.latency, 0.0))
    if args.only in (None, "failures"):
        r = run(args.images, args.concurrency, args.latency, args.failure_rate)
        report(f"{100 * args.failure_rate:.0f}% transient failures", r)
        if r["analysed"] != r["images"]:
            print("NOT every image was analysed", file=sys.stderr)
            raise SystemExit(1)


if __name__ == "__main__":
    main()
