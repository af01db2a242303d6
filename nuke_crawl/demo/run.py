"""``python -m nuke_crawl.demo.run``: the whole job end to end on embedded defaults.

Serves the bundled sample dealer site on loopback, registers it as an
organization, runs ``scrapy crawl org -a threshold=1`` against it with a
SQLite file and a local image folder under ``demo-data/``, then runs every
later phase that is installed and prints ``scrapy status``. Each step is the
real ``scrapy`` command, as an operator would type it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from nuke_crawl.demo.launch import launch

# Later phases join the demo here: (spider name, arguments).
PHASES: list[tuple[str, list[str]]] = [
    ("image_backfill", ["-a", "limit=500"]),
    ("image_analysis", ["-a", "providers=local", "-a", "limit=500"]),
]


def _scrapy(args: list[str], env: dict[str, str], cwd: Path) -> int:
    print(f"\n$ scrapy {shlex.join(args)}", flush=True)
    return subprocess.call([sys.executable, "-m", "scrapy", *args], env=env, cwd=cwd)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nuke_crawl.demo.run", description=__doc__)
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("demo-data"),
        help="where the SQLite file and images go (default demo-data/)",
    )
    parser.add_argument("--vehicles", type=int, default=24)
    parser.add_argument("--fresh", action="store_true", help="start from an empty database")
    args = parser.parse_args(argv)
    project = Path(__file__).resolve().parents[2]
    data = args.data.resolve()
    data.mkdir(parents=True, exist_ok=True)
    db_path = data / "nuke.db"
    if args.fresh:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{db_path}",
        "NUKE_ALLOW_PRIVATE_NETWORKS": "1",  # the sample site is on loopback
        "SCRAPY_SETTINGS_MODULE": "nuke_crawl.settings",
        "PYTHONPATH": str(project),
    }
    fast = [
        "-s",
        "AUTOTHROTTLE_START_DELAY=0.1",
        "-s",
        f"IMAGES_STORE={data / 'images'}",
        "-s",
        "LOG_LEVEL=INFO",
    ]
    with launch("jsonld", n_vehicles=args.vehicles, noise=True, image_hosts=2) as demo:
        print(
            f"Sample dealer site: {demo.url} (images on {', '.join(demo.image_urls) or demo.url})",
            flush=True,
        )
        steps = [
            ["migrate"],
            ["org-add", demo.url, "--name", "Demo Motors", "--type", "dealer"],
            ["crawl", "org", "-a", "threshold=1", *fast],
            *(["crawl", spider, *spargs, *fast] for spider, spargs in PHASES),
            ["status"],
        ]
        for step in steps:
            code = _scrapy(step, env, project)
            if code != 0:
                print(
                    f"step failed with exit code {code}: scrapy {shlex.join(step)}", file=sys.stderr
                )
                return code
    print(f"\nDone. Database: {db_path}  (DATABASE_URL=sqlite:///{db_path} scrapy status)")
    print(
        "\nOpen the admin page: run `make serve` (or `NUKE_ADMIN_TOKEN=<a secret> make serve`"
        " to enable its buttons), then open http://127.0.0.1:6810/ in a browser."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
