"""Refuse requests to private, loopback, link-local and cloud-metadata addresses.

Page and image URLs come from third parties, so a listing can point the crawler (or the
image pipeline, or the OpenAI image path) at ``http://169.254.169.254/`` or at a service on
the crawler's own network. :class:`PrivateNetworkGuardMiddleware` refuses such requests in
Scrapy; :func:`check_url` and :func:`guard_url` give the same verdict to code outside
Scrapy.

Limitation (DNS rebinding): the guard resolves a hostname itself and the downloader
resolves it again when it connects. A hostile DNS server can answer with a public address
to the guard and a private one to the downloader (short TTLs make this easy). With
Scrapy's default resolver (``TWISTED_DNS_RESOLVER`` = ``CachingThreadedResolver``, DNS
cache on, installed by ``scrapy crawl``) the middleware narrows that window by writing
the IPv4 address it checked into Scrapy's DNS cache, which the downloader then connects
to; with another resolver or download handler, with an IPv6-only host, after that cache evicts the entry, and in :func:`guard_url` (whose caller
fetches on its own) the window stays open. Only an egress firewall closes it for good.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
import time
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from scrapy.exceptions import IgnoreRequest
from scrapy.resolver import CachingThreadedResolver, dnscache
from scrapy.utils.asyncio import run_in_thread
from scrapy.utils.httpobj import urlparse_cached
from scrapy.utils.reactor import is_reactor_installed

if TYPE_CHECKING:
    from collections.abc import Iterable

    # typing.Self requires Python 3.11
    from typing_extensions import Self

    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOWED_SCHEMES = frozenset({"http", "https"})
_DEFAULT_PORTS = {"http": 80, "https": 443}

METADATA_HOSTS = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
METADATA_IPS = frozenset(
    ipaddress.ip_address(ip)
    for ip in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack...
        "169.254.170.2",  # AWS ECS task metadata
        "100.100.100.200",  # Alibaba Cloud
        "fd00:ec2::254",  # AWS over IPv6
    )
)
_SHARED_V4 = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598 carrier-grade NAT
_NAT64_V6 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052, embeds an IPv4 address

# Hosts that inet_aton() reads as IPv4 although ipaddress does not: 2130706433, 0x7f.1,
# 0177.0.0.1, 127.1. getaddrinfo() (hence the downloader) accepts them too.
_NUMERIC_HOST = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}", re.I)

_TRUE = frozenset({"1", "true", "yes", "on"})

#: Reasons a URL is refused; each is also the suffix of a ``nuke/netguard/refused/<reason>``
#: stats key.
REASONS = (
    "scheme",
    "no_host",
    "metadata",
    "unspecified",
    "loopback",
    "link_local",
    "multicast",
    "shared",
    "private",
    "reserved",
)


#: How an operator allows what the guard refuses, appended to refusals of addresses.
WAY_OUT = (
    "to allow it, set NUKE_ALLOW_PRIVATE_NETWORKS=1 (every private address) or "
    "NUKE_PRIVATE_NETWORKS_ALLOW_HOSTS=host:port (this one host)"
)


def refusal_message(url: str, reason: str, detail: str) -> str:
    """The message of a refusal: the URL, why, and (for an address) how to allow it."""
    if reason in ("scheme", "no_host"):
        return f"Refused {url}: {detail}"
    return f"Refused {url}: {detail}; {WAY_OUT}"


class RefusedRequest(IgnoreRequest):
    """The guard refused a request; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, url: str, reason: str, detail: str) -> None:
        super().__init__(refusal_message(url, reason, detail))
        self.url = url
        self.reason = reason


def _parse_ip(host: str) -> IPAddress | None:
    """The address a host names literally (including numeric IPv4 forms), else None."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_HOST.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _classify_ip(ip: IPAddress) -> str | None:
    """Why an address must not be fetched, or None for a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64_V6:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            reason = _classify_ip(embedded)
            if reason is not None:
                return reason
    if ip in METADATA_IPS:
        return "metadata"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link_local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED_V4:
        return "shared"
    if ip.is_private:  # RFC 1918, fc00::/7, and the other special-purpose blocks
        return "private"
    if ip.is_reserved or not ip.is_global:
        return "reserved"
    return None


def _normalise_host(host: str) -> str:
    return unquote(host).strip().rstrip(".").lower()


def _check_host(host: str, resolved_ips: Iterable[str] | None) -> tuple[str, str] | None:
    """(reason, detail) for a refused host, None for an acceptable one."""
    if not host:
        return "no_host", "no host in the URL"
    if host in METADATA_HOSTS:
        return "metadata", f"host {host} is a cloud metadata service"
    if host == "localhost" or host.endswith(".localhost"):  # RFC 6761
        return "loopback", f"host {host} is a loopback name"
    ip = _parse_ip(host)
    if ip is not None:
        reason = _classify_ip(ip)
        if reason is not None:
            return reason, f"host {host} is a {reason} address ({ip})"
        return None
    for resolved in resolved_ips or ():
        try:
            ip = ipaddress.ip_address(resolved)
        except ValueError:
            continue
        reason = _classify_ip(ip)
        if reason is not None:
            return reason, f"host {host} resolves to a {reason} address ({ip})"
    return None


def _check(url: str, resolved_ips: Iterable[str] | None = None) -> tuple[str, str] | None:
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return "no_host", "the URL cannot be parsed"
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        return "scheme", f"scheme {scheme or '(none)'!r} is not http(s)"
    return _check_host(_normalise_host(host), resolved_ips)


def check_url(url: str, resolved_ips: Iterable[str] | None = None) -> str | None:
    """Return why *url* must not be fetched (one of :data:`REASONS`), or None.

    Pure: it resolves nothing. A hostname that is not an address literal is only judged by
    its name and by *resolved_ips*, the addresses it resolves to, when given. Does not
    read ``NUKE_ALLOW_PRIVATE_NETWORKS``: the caller decides whether to enforce.
    """
    verdict = _check(url, resolved_ips)
    return verdict[0] if verdict else None


class _HostResolver:
    """getaddrinfo() in a thread, with a small per-host cache.

    A failed lookup yields None (cached briefly), so that the caller can let the request
    proceed and the downloader report the real DNS error.
    """

    def __init__(self, ttl: float = 300.0, failure_ttl: float = 10.0, size: int = 4096):
        self.ttl = ttl
        self.failure_ttl = failure_ttl
        self.size = size
        self._cache: dict[str, tuple[float, tuple[str, ...] | None]] = {}

    async def resolve(self, host: str, port: int) -> tuple[str, ...] | None:
        now = time.monotonic()
        cached = self._cache.get(host)
        if cached is not None and cached[0] > now:
            return cached[1]
        ips: tuple[str, ...] | None
        try:
            infos = await run_in_thread(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            ips, ttl = None, self.failure_ttl
        else:
            ips, ttl = tuple(dict.fromkeys(str(info[4][0]) for info in infos)), self.ttl
        if len(self._cache) >= self.size:
            self._cache.clear()
        self._cache[host] = (time.monotonic() + ttl, ips)
        return ips


_default_resolver = _HostResolver()


async def _guard(
    url: str, resolver: _HostResolver
) -> tuple[tuple[str, str] | None, tuple[str, ...]]:
    """The verdict on *url*, and the addresses checked when its host was resolved."""
    verdict = _check(url)
    if verdict is not None:
        return verdict, ()
    parts = urlsplit(url)
    host = _normalise_host(parts.hostname or "")
    if _parse_ip(host) is not None:
        return None, ()  # an acceptable address literal: nothing to resolve
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme.lower()]
    except ValueError:
        return ("no_host", "the URL has an invalid port"), ()
    ips = await resolver.resolve(host, port)
    if ips is None:
        return None, ()
    return _check_host(host, ips), ips


async def guard_url(url: str) -> str | None:
    """Like :func:`check_url`, resolving the host first (in a thread, cached per host).

    For code outside Scrapy (e.g. handing an image URL to the OpenAI API). A host that
    does not resolve gets None: fetching it will fail on its own. Subject to the DNS
    rebinding limitation described in the module docstring. Does not read
    ``NUKE_ALLOW_PRIVATE_NETWORKS``: see :func:`private_networks_allowed`.
    """
    verdict, _ = await _guard(url, _default_resolver)
    return verdict[0] if verdict else None


def private_networks_allowed(settings: BaseSettings | None = None) -> bool:
    """Whether ``NUKE_ALLOW_PRIVATE_NETWORKS`` is on in *settings* or in the environment."""
    if settings is not None and settings.getbool("NUKE_ALLOW_PRIVATE_NETWORKS"):
        return True
    return os.environ.get("NUKE_ALLOW_PRIVATE_NETWORKS", "").strip().lower() in _TRUE


def _host_port(value: str) -> str:
    host, sep, port = value.strip().rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(
            f"NUKE_PRIVATE_NETWORKS_ALLOW_HOSTS entries must be host:port, got {value!r}"
        )
    return f"{_normalise_host(host.strip('[]'))}:{int(port)}"


class PrivateNetworkGuardMiddleware:
    """Downloader middleware refusing requests to non-public addresses and non-http(s) URLs.

    A refused request raises :class:`RefusedRequest` (an ``IgnoreRequest``) naming the URL
    and the reason, counts ``nuke/netguard/refused`` and ``nuke/netguard/refused/<reason>``
    and is logged at INFO once per host. Hostnames are resolved in a thread with a per-host
    cache for the run. A host that does not resolve is let through, so that the downloader
    reports the real DNS error (and the retry middleware can retry it): refusing it would
    hide the cause and gains nothing, as nothing can be fetched from it anyway.

    Redirects and retries are covered: in Scrapy 2.19 a request returned by a downloader
    middleware goes through every ``process_request`` again, via the scheduler for crawl
    requests and via the loop in ``ExecutionEngine.download_async`` for media downloads.
    Enable it early (e.g. at 40) so no other middleware works on a refused request.

    Settings:

    - ``NUKE_ALLOW_PRIVATE_NETWORKS`` (``False``): allow private, loopback... addresses
      (for local development); also on when the environment variable of that name is
      ``1``/``true``/``yes``/``on``. Non-http(s) schemes stay refused.
    - ``NUKE_PRIVATE_NETWORKS_ALLOW_HOSTS`` (``[]``): exact ``host:port`` pairs allowed
      despite their address (default ports: 80 for http, 443 for https), e.g. one local
      fixture server in tests or a known internal image host, without opening the rest of
      the network.

    - ``DNSCACHE_ENABLED`` (Scrapy's, ``True``): when the reactor resolves through
      Scrapy's ``CachingThreadedResolver`` (``TWISTED_DNS_RESOLVER``'s default, installed
      by ``scrapy crawl``), the checked IPv4 address of a host is written to Scrapy's DNS
      cache, so that the downloader connects to that address.

    Subject to the DNS rebinding limitation described in the module docstring.
    """

    def __init__(self, crawler: Crawler):
        self.crawler = crawler
        settings = crawler.settings
        self.allow_private: bool = private_networks_allowed(settings)
        self.allow_hosts: frozenset[str] = frozenset(
            _host_port(value) for value in settings.getlist("NUKE_PRIVATE_NETWORKS_ALLOW_HOSTS")
        )
        self._resolver = _HostResolver()
        self._logged_hosts: set[str] = set()
        self._pin_dns: bool | None = None  # known once the reactor runs
        if self.allow_private:
            logger.info(
                "NUKE_ALLOW_PRIVATE_NETWORKS is on: requests to private networks are allowed"
            )

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    async def process_request(self, request: Request) -> None:
        verdict = await self._verdict(request)
        if verdict is None:
            return
        reason, detail = verdict
        stats = self.crawler.stats
        assert stats is not None
        stats.inc_value("nuke/netguard/refused")
        stats.inc_value(f"nuke/netguard/refused/{reason}")
        host = urlparse_cached(request).hostname or request.url
        if host not in self._logged_hosts:
            self._logged_hosts.add(host)
            logger.info(
                "Refusing requests to %(host)s (%(reason)s), first: %(message)s",
                {"host": host, "reason": reason,
                 "message": refusal_message(request.url, reason, detail)},
                extra={"spider": self.crawler.spider},
            )
        raise RefusedRequest(request.url, reason, detail)

    async def _verdict(self, request: Request) -> tuple[str, str] | None:
        parts = urlparse_cached(request)
        scheme = parts.scheme.lower()
        if scheme not in ALLOWED_SCHEMES:
            return "scheme", f"scheme {scheme or '(none)'!r} is not http(s)"
        if self.allow_private:
            return None
        if self.allow_hosts:
            try:
                port = parts.port or _DEFAULT_PORTS[scheme]
            except ValueError:
                port = None
            host = _normalise_host(parts.hostname or "")
            if f"{host}:{port}" in self.allow_hosts:
                return None
        verdict, ips = await _guard(request.url, self._resolver)
        if verdict is None and ips and self._dns_pinning():
            ipv4 = next((ip for ip in ips if ":" not in ip), None)
            if ipv4 is not None and parts.hostname:
                dnscache[parts.hostname] = ipv4
        return verdict

    def _dns_pinning(self) -> bool:
        """Whether the reactor resolves through Scrapy's DNS cache.

        True for ``scrapy crawl`` and ``(Async)CrawlerProcess`` with the default
        ``TWISTED_DNS_RESOLVER`` and ``DNSCACHE_ENABLED``: writing the checked address
        into ``scrapy.resolver.dnscache`` then makes the downloader connect to it.
        """
        if self._pin_dns is None:
            self._pin_dns = False
            if self.crawler.settings.getbool("DNSCACHE_ENABLED") and is_reactor_installed():
                from twisted.internet import reactor  # noqa: PLC0415 (installed already)

                resolver = getattr(reactor, "resolver", None)
                self._pin_dns = isinstance(resolver, CachingThreadedResolver)
        return self._pin_dns
