"""Refuse requests to private, loopback, link-local and cloud-metadata addresses.

Page and image URLs come from third parties, so a listing can point the crawler (or the
image pipeline, or the OpenAI image path) at ``http://169.254.169.254/`` or at a service on
the crawler's own network. :class:`PrivateNetworkGuardMiddleware` refuses such requests in
Scrapy; :func:`check_url` and :func:`guard_url` give the same verdict to code outside
Scrapy.

DNS: the guard resolves a hostname itself, and a name it cannot resolve is never fetched
(:class:`UnresolvedHost`, a ``DNSLookupError`` that the retry middleware may retry: each
retry is resolved and checked again). The addresses it checked are pinned: the middleware
installs :class:`PinnedNameResolver` on the reactor, which answers the downloader's lookup
of a checked host with exactly the checked addresses, so a hostile DNS server cannot answer
the guard with a public address and the downloader with a private one (DNS rebinding).
:func:`guard_url` (whose caller fetches on its own) pins nothing: there the window stays
open, and only an egress firewall closes it for good.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import ParseResult, SplitResult, unquote, urlsplit

from scrapy.exceptions import IgnoreRequest
from scrapy.utils.asyncio import run_in_thread
from scrapy.utils.httpobj import urlparse_cached
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import IHostnameResolver
from zope.interface import implementer

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    # typing.Self requires Python 3.11
    from typing import Self

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
    "unresolved",
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


class UnresolvedHost(DNSLookupError):
    """The guard could not resolve a host, so it did not let the request through.

    A ``DNSLookupError``: the retry middleware retries it like the downloader's own DNS
    errors, and each retry is resolved and checked again.
    """

    def __init__(self, url: str, detail: str) -> None:
        super().__init__(f"Not fetching {url}: {detail}")
        self.url = url
        self.reason = "unresolved"


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
    """getaddrinfo() in a thread, with a small per-host cache of successful lookups.

    A failed lookup yields None and is not cached: a retry looks the name up again.
    """

    def __init__(self, ttl: float = 300.0, size: int = 4096):
        self.ttl = ttl
        self.size = size
        self._cache: dict[str, tuple[float, tuple[str, ...]]] = {}

    async def resolve(self, host: str, port: int) -> tuple[str, ...] | None:
        now = time.monotonic()
        cached = self._cache.get(host)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            infos = await run_in_thread(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return None
        ips = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
        if not ips:
            return None
        if len(self._cache) >= self.size:
            self._cache.clear()
        self._cache[host] = (time.monotonic() + self.ttl, ips)
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
        return ("unresolved", f"host {host} does not resolve"), ()
    return _check_host(host, ips), ips


async def guard_url(url: str) -> str | None:
    """Like :func:`check_url`, resolving the host first (in a thread, cached per host).

    For code outside Scrapy (e.g. handing an image URL to the OpenAI API). A host that
    does not resolve gets ``"unresolved"``. Pins nothing: subject to DNS rebinding (see
    the module docstring). Does not read
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
    cache for the run. A host that does not resolve is never let through: it raises
    :class:`UnresolvedHost` (a ``DNSLookupError``, which the retry middleware may retry;
    counted in ``nuke/netguard/unresolved``). The addresses checked are pinned for the
    downloader (:class:`PinnedNameResolver`): it connects to what was checked.

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
    """

    def __init__(self, crawler: Crawler):
        self.crawler = crawler
        settings = crawler.settings
        self.policy = GuardPolicy(settings)
        self.allow_private = self.policy.allow_private
        self._logged_hosts: set[str] = set()
        self._pins: PinnedNameResolver | None = None  # installed once the reactor runs
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
        if reason == "unresolved":
            stats.inc_value("nuke/netguard/unresolved")
            raise UnresolvedHost(request.url, detail)
        stats.inc_value("nuke/netguard/refused")
        stats.inc_value(f"nuke/netguard/refused/{reason}")
        host = urlparse_cached(request).hostname or request.url
        if host not in self._logged_hosts:
            self._logged_hosts.add(host)
            logger.info(
                "Refusing requests to %(host)s (%(reason)s), first: %(message)s",
                {
                    "host": host,
                    "reason": reason,
                    "message": refusal_message(request.url, reason, detail),
                },
                extra={"spider": self.crawler.spider},
            )
        raise RefusedRequest(request.url, reason, detail)

    async def _verdict(self, request: Request) -> tuple[str, str] | None:
        verdict, ips = await self.policy.verdict(request.url, urlparse_cached(request))
        hostname = urlparse_cached(request).hostname
        if verdict is None and ips and hostname:
            if self._pins is None:
                self._pins = install_pinned_resolver()
            self._pins.pin(hostname, ips)
        return verdict


class GuardPolicy:
    """The guard's rules for one crawler: its settings and its DNS cache.

    Shared by :class:`PrivateNetworkGuardMiddleware` and the browser's request guard
    (:mod:`nuke_crawl.middlewares.browserguard`), so both judge a URL the same way.
    """

    def __init__(self, settings: BaseSettings) -> None:
        self.allow_private: bool = private_networks_allowed(settings)
        self.allow_hosts: frozenset[str] = frozenset(
            _host_port(value) for value in settings.getlist("NUKE_PRIVATE_NETWORKS_ALLOW_HOSTS")
        )
        self.resolver = _HostResolver()

    def allowed_host(self, parts: SplitResult | ParseResult) -> bool:
        """Whether the URL's ``host:port`` is in ``NUKE_PRIVATE_NETWORKS_ALLOW_HOSTS``."""
        if not self.allow_hosts:
            return False
        try:
            port = parts.port or _DEFAULT_PORTS[parts.scheme.lower()]
        except (ValueError, KeyError):
            return False
        return f"{_normalise_host(parts.hostname or '')}:{port}" in self.allow_hosts

    async def verdict(
        self, url: str, parts: SplitResult | ParseResult | None = None
    ) -> tuple[tuple[str, str] | None, tuple[str, ...]]:
        """(reason, detail) when *url* is refused, else None; and the addresses checked
        (empty when nothing was resolved: a literal, an allowed host, allowed networks)."""
        if parts is None:
            try:
                parts = urlsplit(url)
            except ValueError:
                return ("no_host", "the URL cannot be parsed"), ()
        scheme = parts.scheme.lower()
        if scheme not in ALLOWED_SCHEMES:
            return ("scheme", f"scheme {scheme or '(none)'!r} is not http(s)"), ()
        if self.allow_private or self.allowed_host(parts):
            return None, ()
        return await _guard(url, self.resolver)


def _host_key(host: str | bytes) -> str:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = _normalise_host(host)
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


@implementer(IHostnameResolver)
class PinnedNameResolver:
    """The reactor's name resolver, answering pinned hosts with their checked addresses.

    :class:`PrivateNetworkGuardMiddleware` pins each host it resolved and accepted; the
    downloader's lookup of that host then gets exactly those addresses, never a second
    answer from DNS. Other hosts (address literals, allowed hosts) go to the resolver it
    wraps. At most ``size`` pins; the oldest go first (the guard pins again on its next
    request to that host).
    """

    def __init__(self, fallback: Any, size: int = 65536) -> None:
        self.fallback = fallback
        self.size = size
        self.pins: dict[str, tuple[str, ...]] = {}

    def pin(self, host: str, ips: tuple[str, ...]) -> None:
        key = _host_key(host)
        self.pins.pop(key, None)
        if len(self.pins) >= self.size:
            del self.pins[next(iter(self.pins))]
        self.pins[key] = ips

    def resolveHostName(
        self,
        resolutionReceiver: Any,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Sequence[type[Any]] | None = None,
        transportSemantics: str = "TCP",
    ) -> Any:
        ips = self.pins.get(_host_key(hostName))
        if ips is None:
            return self.fallback.resolveHostName(
                resolutionReceiver, hostName, portNumber, addressTypes, transportSemantics
            )
        from twisted.internet._resolver import HostResolution

        resolution = HostResolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)
        for ip in ips:
            kind = IPv6Address if ":" in ip else IPv4Address
            if addressTypes is None or kind in addressTypes:
                resolutionReceiver.addressResolved(kind("TCP", ip.split("%", 1)[0], portNumber))
        resolutionReceiver.resolutionComplete()
        return resolution


def install_pinned_resolver() -> PinnedNameResolver:
    """The reactor's :class:`PinnedNameResolver`, installed (once) over its resolver."""
    from twisted.internet import reactor

    current = reactor.nameResolver  # type: ignore[attr-defined]
    if isinstance(current, PinnedNameResolver):
        return current
    pinned = PinnedNameResolver(current)
    reactor.installNameResolver(pinned)  # type: ignore[attr-defined]
    return pinned
