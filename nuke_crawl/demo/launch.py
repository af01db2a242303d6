"""Start a whole demo deployment: image hosts first, then the site that links to them.

Image hosts listen on distinct loopback addresses (127.0.0.2, 127.0.0.3, ...,
so each is its own "domain" for per-host politeness), falling back to
127.0.0.1 on another port where those addresses cannot be bound.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from nuke_crawl.demo.images import ImageHost
from nuke_crawl.demo.server import RunningServer, serve
from nuke_crawl.demo.sites import Site, build_site

logger = logging.getLogger(__name__)

__all__ = ["Demo", "launch"]


@dataclass
class Demo:
    """A running site and its image hosts; a context manager that stops them all."""

    site: Site
    server: RunningServer
    image_hosts: list[ImageHost] = field(default_factory=list)
    image_servers: list[RunningServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The site's base URL (no trailing slash)."""
        return self.server.url

    @property
    def image_urls(self) -> list[str]:
        """The image hosts' base URLs."""
        return [s.url for s in self.image_servers]

    def url_for(self, path: str) -> str:
        """An absolute URL on the site."""
        return self.server.url + path

    def stop(self) -> None:
        """Stop the site, then the image hosts."""
        self.server.stop()
        for server in self.image_servers:
            server.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _serve_image_host(host: ImageHost, index: int) -> RunningServer:
    address = f"127.0.0.{2 + index}"
    try:
        return serve(host, host=address)
    except OSError:
        logger.info("Cannot bind %s; serving image host %d on 127.0.0.1", address, index)
        return serve(host, host="127.0.0.1")


def launch(
    style: str = "jsonld",
    *,
    n_vehicles: int = 12,
    per_page: int = 10,
    images_per_vehicle: int = 5,
    image_hosts: int = 1,
    seed: int = 0,
    noise: bool = False,
    host: str = "127.0.0.1",
    port: int = 0,
    slow_seconds: float = 5.0,
    unique_images: bool = True,
) -> Demo:
    """Serve ``image_hosts`` :class:`ImageHost` s and a :func:`build_site` site
    whose photos are spread over them (``image_hosts=0``: the site serves its
    own images). Hotlink protection on every host accepts the site's URL."""
    hosts: list[ImageHost] = []
    servers: list[RunningServer] = []
    try:
        for index in range(image_hosts):
            image_host = ImageHost(unique_bytes=unique_images, slow_seconds=slow_seconds)
            hosts.append(image_host)
            servers.append(_serve_image_host(image_host, index))
        site = build_site(
            style,
            n_vehicles=n_vehicles,
            per_page=per_page,
            images_per_vehicle=images_per_vehicle,
            image_base_urls=[s.url for s in servers],
            seed=seed,
            noise=noise,
        )
        if site.images is not None:
            site.images.slow_seconds = slow_seconds
            site.images.unique_bytes = unique_images
        site_server = serve(site, host=host, port=port)
    except BaseException:
        for server in servers:
            server.stop()
        raise
    for image_host in hosts:
        image_host.hotlink_referer = site_server.url
    return Demo(site=site, server=site_server, image_hosts=hosts, image_servers=servers)
