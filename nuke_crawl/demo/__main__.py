"""``python -m nuke_crawl.demo serve ...``: run a demo dealer site until interrupted.

The site URL is the first stdout line (flushed), so a Makefile can read it;
image host URLs and a summary follow. ``--url-file`` also writes the site URL
to a file once the site is listening.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from nuke_crawl.demo.launch import launch
from nuke_crawl.demo.sites import STYLES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m nuke_crawl.demo", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="serve a generated dealer site until interrupted")
    run.add_argument("--style", choices=STYLES, default="jsonld")
    run.add_argument("--vehicles", type=int, default=24, help="regular vehicles (default 24)")
    run.add_argument("--per-page", type=int, default=10)
    run.add_argument("--images-per-vehicle", type=int, default=5)
    run.add_argument(
        "--image-hosts",
        type=int,
        default=1,
        help="image hosts on 127.0.0.2, .3, ... (0: the site serves images)",
    )
    run.add_argument("--noise", action="store_true", help="add the noise pages and images")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=0, help="site port (default: any free port)")
    run.add_argument(
        "--slow-seconds", type=float, default=5.0, help="delay of /edge/slow.jpg (default 5)"
    )
    run.add_argument("--url-file", type=Path, help="also write the site URL to this file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.vehicles < 1 or args.per_page < 1 or args.images_per_vehicle < 1:
        print("--vehicles, --per-page and --images-per-vehicle must be at least 1", file=sys.stderr)
        return 2
    demo = launch(
        args.style,
        n_vehicles=args.vehicles,
        per_page=args.per_page,
        images_per_vehicle=args.images_per_vehicle,
        image_hosts=args.image_hosts,
        seed=args.seed,
        noise=args.noise,
        host=args.host,
        port=args.port,
        slow_seconds=args.slow_seconds,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with demo:
        if args.url_file:
            args.url_file.write_text(demo.url + "\n")
        print(demo.url, flush=True)
        for url in demo.image_urls:
            print(f"image host: {url}")
        site = demo.site
        print(
            f"{site.dealer}: {args.style} style, {len(site.vehicles)} vehicles, "
            f"start at {demo.url_for(site.pages.get('inventory', '/robots.txt'))}"
        )
        print("Ctrl-C to stop.", flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
