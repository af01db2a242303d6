"""Generated dealer sites and image hosts served on loopback, for tests,
``make demo`` and benchmarks. Everything is deterministic from a seed and
generated in memory.

Typical use::

    with launch("jsonld", n_vehicles=24, image_hosts=2, noise=True) as demo:
        start = demo.url_for(demo.site.pages["inventory"])
        truth = demo.site.vehicles

Lower-level pieces: :func:`build_site` (a :class:`Site` mapping targets to
responses, with ground truth), :class:`ImageHost` and :func:`image_bytes`,
:func:`serve` and :func:`dead_url`.
"""

from __future__ import annotations

from nuke_crawl.demo.images import EDGE_CASES, ImageHost, image_bytes, warm_pool
from nuke_crawl.demo.launch import Demo, launch
from nuke_crawl.demo.server import Request, Response, RunningServer, dead_url, serve
from nuke_crawl.demo.sites import STYLES, Site, build_site
from nuke_crawl.demo.vehicles import is_valid_vin, vin_check_digit

__all__ = [
    "EDGE_CASES",
    "STYLES",
    "Demo",
    "ImageHost",
    "Request",
    "Response",
    "RunningServer",
    "Site",
    "build_site",
    "dead_url",
    "image_bytes",
    "is_valid_vin",
    "launch",
    "serve",
    "vin_check_digit",
    "warm_pool",
]
