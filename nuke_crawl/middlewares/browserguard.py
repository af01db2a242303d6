"""The private-network guard for the browser's own requests.

Chromium's requests for a rendered page (images, scripts, CSS, fetch/XHR, iframes, a
redirect of the page itself) never pass Scrapy's downloader middlewares. scrapy-playwright
calls its ``PLAYWRIGHT_ABORT_REQUEST`` predicate for every request a page makes,
navigation and each redirect included; :class:`BrowserRequestGuard` is that predicate,
judging each URL by the rules of :class:`~nuke_crawl.middlewares.netguard.GuardPolicy`
(the address after DNS, ``NUKE_ALLOW_PRIVATE_NETWORKS``,
``NUKE_PRIVATE_NETWORKS_ALLOW_HOSTS``). A refused request is aborted and counted in
``nuke/netguard/browser/refused`` and ``nuke/netguard/refused/<reason>`` (scrapy-playwright
counts it in ``playwright/request_count/aborted`` too); the first refusal per host is logged.

Chromium does not route a redirect through that predicate, and it resolves names itself
(a hostile DNS server could answer the guard and the browser differently: DNS rebinding).
So the browser also sends all its traffic through :class:`CheckingProxy`, a small HTTP proxy
on 127.0.0.1 in the crawler's own event loop: it checks each request (each redirect is a new
one, WebSockets too) and connects to the very address it checked. A refused one gets a 403
and is counted in ``nuke/netguard/browser/refused``. Not started when
``NUKE_ALLOW_PRIVATE_NETWORKS`` is on (nothing to enforce but the scheme).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from nuke_crawl.middlewares.netguard import GuardPolicy, refusal_message

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)

#: Schemes the browser handles without the network.
_LOCAL_SCHEMES = frozenset({"data", "blob", "about"})


class BrowserRequestGuard:
    """``PLAYWRIGHT_ABORT_REQUEST`` for one crawler: True (abort) for a refused URL.

    Reads ``NUKE_ALLOW_PRIVATE_NETWORKS`` and ``NUKE_PRIVATE_NETWORKS_ALLOW_HOSTS`` like the
    downloader middleware; a predicate already set in ``PLAYWRIGHT_ABORT_REQUEST`` (e.g. to
    skip images) still applies after it.
    """

    def __init__(
        self, crawler: Crawler, then: Callable[[Any], bool | Awaitable[bool]] | None = None
    ) -> None:
        self.crawler = crawler
        self.policy = GuardPolicy(crawler.settings)
        self.then = then
        self._logged_hosts: set[str] = set()

    async def __call__(self, playwright_request: Any) -> bool:
        url: str = playwright_request.url
        if await self.refused(url):
            return True
        if self.then is None:
            return False
        answer = self.then(playwright_request)
        if isinstance(answer, Awaitable):
            answer = await answer
        return bool(answer)

    async def refused(self, url: str) -> bool:
        """Whether the guard refuses *url* (counted and logged when it does)."""
        refused, _ = await self.check(url)
        return refused

    async def check(self, url: str) -> tuple[bool, tuple[str, ...]]:
        """(refused, the addresses checked) for *url*; a refusal is counted and logged.
        No addresses for a URL that was not resolved (a literal, an allowed host)."""
        try:
            parts = urlsplit(url)
        except ValueError:
            parts = None
        if parts is not None and parts.scheme.lower() in _LOCAL_SCHEMES:
            return False, ()
        verdict, ips = await self.policy.verdict(url, parts)
        if verdict is None:
            return False, ips
        reason, detail = verdict
        stats = self.crawler.stats
        if stats is not None:
            stats.inc_value("nuke/netguard/browser/refused")
            stats.inc_value(f"nuke/netguard/refused/{reason}")
        host = (parts.hostname if parts is not None else None) or url
        if host not in self._logged_hosts:
            self._logged_hosts.add(host)
            logger.info(
                "Browser: refusing requests to %(host)s (%(reason)s), first: %(message)s",
                {"host": host, "reason": reason, "message": refusal_message(url, reason, detail)},
                extra={"spider": self.crawler.spider},
            )
        return True, ()


_MAX_HEAD = 64 * 1024
_CONNECT_TIMEOUT = 15.0


class CheckingProxy:
    """An HTTP proxy (plain requests and ``CONNECT``) that lets through only what the
    guard accepts, connecting to the addresses it checked (see the module docstring)."""

    connect_timeout = _CONNECT_TIMEOUT

    def __init__(self, guard: BrowserRequestGuard) -> None:
        self.guard = guard
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > _MAX_HEAD:
            return
        line, _, rest = head.partition(b"\r\n")
        method, target, version = line.decode("latin-1").split(" ", 2)
        url = f"https://{target}/" if method.upper() == "CONNECT" else target
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
        refused, ips = await self.guard.check(url)
        if refused:
            writer.write(
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            await writer.drain()
            return
        address = ips[0] if ips else host  # the address checked, never a second lookup
        up_reader, up_writer = await asyncio.wait_for(
            asyncio.open_connection(address, port), self.connect_timeout
        )
        try:
            if method.upper() == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                path = parts.path or "/"
                if parts.query:
                    path += "?" + parts.query
                headers = [
                    h
                    for h in rest.split(b"\r\n")
                    if h
                    and not h.lower().startswith(
                        (b"proxy-connection:", b"connection:", b"keep-alive:")
                    )
                ]
                # one request per connection: the next may be for another host
                up_writer.write(
                    f"{method} {path} {version}\r\n".encode("latin-1")
                    + b"\r\n".join([*headers, b"Connection: close"])
                    + b"\r\n\r\n"
                )
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            writer.write_eof()


class _PageFailureFilter(logging.Filter):
    """scrapy-playwright logs every page that fails (a dead host, a refused redirect) as a
    WARNING with a traceback, before the spider's errback reports the same failure in one
    line: an expected event in the wild, so its line is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Closing page due to failed request")


_page_failure_filter = _PageFailureFilter()


async def install_browser_guard(crawler: Crawler, handler: Any) -> CheckingProxy | None:
    """Make *handler* (scrapy-playwright's download handler, not launched yet) abort what
    the guard refuses (its page failures logged by the spider only, in one line), and send
    its browser's traffic through a :class:`CheckingProxy` (returned, to be closed with the
    browser) unless private networks are allowed."""
    guard = BrowserRequestGuard(crawler, then=handler.abort_request)
    handler.abort_request = guard
    logging.getLogger("scrapy-playwright").addFilter(_page_failure_filter)
    if guard.policy.allow_private:
        return None
    proxy = CheckingProxy(guard)
    await proxy.start()
    options = handler.config.launch_options
    options["proxy"] = {"server": f"http://127.0.0.1:{proxy.port}"}
    return proxy
