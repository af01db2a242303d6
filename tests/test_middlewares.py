"""Tests for nuke_crawl.middlewares.netguard and nuke_crawl.middlewares.backoff.

Crawls are real: local HTTP servers on 127.0.0.1 (threads of the test process) and a
crawler built with ``scrapy.utils.test.get_crawler`` and run with ``crawl_async()`` on the
asyncio reactor. A Twisted reactor cannot be restarted and is global to the process, so
each crawl runs in a child Python process (this module imported there, see
``_child_main``): no pytest plugin, and no reactor left behind for other test modules.
The child prints the crawl's stats and the spider's records as JSON; timings are measured
on the server side, in this process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import scrapy
from scrapy import signals

from nuke_crawl.middlewares.backoff import BackoffRetryMiddleware, parse_retry_after
from nuke_crawl.middlewares.netguard import check_url, guard_url

REPO = Path(__file__).resolve().parents[1]
_RESULT_MARK = "@@RESULT@@ "

GUARD = "nuke_crawl.middlewares.netguard.PrivateNetworkGuardMiddleware"
BACKOFF = "nuke_crawl.middlewares.backoff.BackoffRetryMiddleware"
BASE_SETTINGS: dict[str, Any] = {
    "DOWNLOADER_MIDDLEWARES": {
        "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,
        GUARD: 40,
        BACKOFF: 550,
    },
    "LOG_LEVEL": "DEBUG",
    "DOWNLOAD_DELAY_JITTER": 0,
    "DOWNLOAD_TIMEOUT": 10,
    "NUKE_BACKOFF_BASE": 0.2,
}


# Local HTTP servers


class _Server:
    """A threaded HTTP server on 127.0.0.1 answering from a script per path.

    ``routes`` maps a path to a list of ``(status, headers, body)``; the n-th request to
    the path gets the n-th answer, the last one repeating. Every request is recorded in
    ``hits`` as ``(time.monotonic(), path)``.
    """

    def __init__(self, routes: dict[str, list[tuple[int, dict[str, str], bytes]]] | None = None):
        self.routes = routes or {}
        self.hits: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                with server._lock:
                    count = sum(1 for _, p in server.hits if p == path)
                    server.hits.append((time.monotonic(), path))
                script = server.routes.get(path, [(404, {}, b"not found")])
                status, headers, body = script[min(count, len(script) - 1)]
                self.send_response(status)
                headers = {"Content-Type": "text/html", **headers}
                for name, value in headers.items():
                    self.send_header(name, value.replace("{origin}", server.origin))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return self.origin + path

    def hit_times(self, path: str) -> list[float]:
        return [t for t, p in self.hits if p == path]

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:], strict=False)]


OK = (200, {}, b"<html><body>ok</body></html>")
PNG = (200, {"Content-Type": "image/png"}, b"\x89PNG\r\n\x1a\n" + b"\0" * 64)


# Spiders (imported by name in the child process)


class UrlsSpider(scrapy.Spider):
    """Requests ``urls``; records every response and failure in ``records``.

    ``follow`` maps a URL to URLs requested from its callback.
    """

    name = "urls"
    # Final error responses reach the callback, so they can be recorded.
    handle_httpstatus_list = [404, 408, 429, 500, 502, 503]

    def __init__(self, urls: list[str] = (), follow: dict[str, list[str]] | None = None, **kw):
        super().__init__(**kw)
        self.urls = list(urls)
        self.follow = follow or {}
        self.records: list[dict[str, Any]] = []
        self.reached: list[str] = []
        self.slot_delays: dict[str, float] = {}

    @classmethod
    def from_crawler(cls, crawler, *args, **kwargs):
        spider = super().from_crawler(crawler, *args, **kwargs)
        crawler.signals.connect(spider._reached, signal=signals.request_reached_downloader)
        crawler.signals.connect(spider._scraped, signal=signals.item_scraped)
        return spider

    def _reached(self, request):
        self.reached.append(request.url)

    def _scraped(self, item):
        self.records.append({"item": dict(item)})

    async def start(self):
        for url in self.urls:
            yield scrapy.Request(url, callback=self.parse, errback=self.failed, dont_filter=True)

    def parse(self, response):
        self.records.append(
            {
                "url": response.url,
                "status": response.status,
                "retry_times": response.meta.get("retry_times", 0),
                "time": time.time(),
            }
        )
        for url in self.follow.get(response.url, []):
            yield scrapy.Request(url, callback=self.parse, errback=self.failed, dont_filter=True)

    def failed(self, failure):
        self.records.append(
            {
                "url": failure.request.url,
                "error": type(failure.value).__name__,
                "reason": getattr(failure.value, "reason", None),
                "message": str(failure.value),
            }
        )

    def closed(self, reason):
        self.slot_delays = {k: s.delay for k, s in self.crawler.engine.downloader.slots.items()}


class FilesSpider(UrlsSpider):
    """Yields one item with ``file_urls`` from the first page, for a real FilesPipeline."""

    name = "files"

    def __init__(self, file_urls: list[str] = (), **kw):
        super().__init__(**kw)
        self.file_urls = list(file_urls)

    def parse(self, response):
        yield {"file_urls": self.file_urls}


def _child_main(spec: dict[str, Any]) -> None:
    """Run one crawl on the asyncio reactor and print its outcome as JSON."""
    from scrapy.utils.log import configure_logging
    from scrapy.utils.reactor import install_reactor

    install_reactor("twisted.internet.asyncioreactor.AsyncioSelectorReactor")
    from scrapy.utils.defer import deferred_from_coro
    from scrapy.utils.test import get_crawler
    from twisted.internet import reactor

    settings = {**BASE_SETTINGS, **spec["settings"]}
    configure_logging({"LOG_LEVEL": settings["LOG_LEVEL"]})
    crawler = get_crawler(globals()[spec["spider"]], settings)
    errors: list[str] = []

    async def run() -> None:
        try:
            await crawler.crawl_async(**spec["kwargs"])
        except Exception as exc:  # reported to the parent
            logging.getLogger(__name__).exception("crawl failed")
            errors.append(repr(exc))
        finally:
            reactor.stop()

    reactor.callWhenRunning(lambda: deferred_from_coro(run()))
    reactor.run(installSignalHandlers=False)
    spider = crawler.spider
    outcome = {
        "errors": errors,
        "stats": crawler.stats.get_stats(),
        "records": getattr(spider, "records", []),
        "reached": getattr(spider, "reached", []),
        "slot_delays": getattr(spider, "slot_delays", {}),
    }
    print(_RESULT_MARK + json.dumps(outcome, default=str), flush=True)


class Crawl:
    def __init__(self, outcome: dict[str, Any], log: str):
        self.__dict__.update(outcome)
        self.log = log

    def by_url(self, url: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("url") == url]


def crawl(
    spider: str,
    settings: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    dns: dict[str, list[str]] | None = None,
    **kwargs: Any,
) -> Crawl:
    child_env = {k: v for k, v in os.environ.items() if k != "NUKE_ALLOW_PRIVATE_NETWORKS"}
    child_env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), str(Path(__file__).parent), child_env.get("PYTHONPATH", "")]
    )
    child_env.update(env or {})
    spec = {"spider": spider, "settings": settings or {}, "kwargs": kwargs, "dns": dns or {}}
    code = (
        "import json, sys, fakedns; spec = json.loads(sys.stdin.read()); "
        "fakedns.install(spec['dns']); import test_middlewares as t; t._child_main(spec)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        cwd=REPO,
        env=child_env,
        timeout=60,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(_RESULT_MARK)]
    assert proc.returncode == 0 and lines, f"crawl failed:\n{proc.stdout}\n{proc.stderr}"
    outcome = json.loads(lines[-1][len(_RESULT_MARK) :])
    assert not outcome["errors"], proc.stderr
    return Crawl(outcome, proc.stderr)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Network guard: pure functions


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/", "loopback"),
        ("http://2130706433/", "loopback"),
        ("http://0x7f000001/", "loopback"),
        ("http://0x7f.1/", "loopback"),
        ("http://0177.0.0.1/", "loopback"),
        ("http://127.1/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[::ffff:a00:1]/", "private"),
        ("http://localhost/", "loopback"),
        ("http://LOCALHOST.:8080/", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[fd00:ec2::254]/", "metadata"),
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
        ("http://169.254.1.1/", "link_local"),
        ("http://[fe80::1]/", "link_local"),
        ("http://10.1.2.3/", "private"),
        ("http://172.16.5.4/", "private"),
        ("http://192.168.0.1/", "private"),
        ("http://[fc00::1]/", "private"),
        ("http://100.64.0.1/", "shared"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("http://[64:ff9b::7f00:1]/", "loopback"),
        ("file:///etc/passwd", "scheme"),
        ("ftp://example.com/x.jpg", "scheme"),
        ("data:image/png;base64,AAAA", "scheme"),
        ("http:///x", "no_host"),
        ("https://example.com/a.jpg", None),
        ("http://93.184.215.14/", None),
        ("http://[2606:4700::6810:84e5]/", None),
    ],
)
def test_check_url(url, reason):
    assert check_url(url) == reason


def test_check_url_with_resolved_ips():
    assert check_url("https://images.example/a.jpg", ["93.184.215.14"]) is None
    assert check_url("https://images.example/a.jpg", ["93.184.215.14", "10.0.0.7"]) == "private"
    assert check_url("https://images.example/a.jpg", ["::ffff:169.254.169.254"]) == "metadata"


def _fake_dns(monkeypatch, answers):
    looked_up = []

    def fake_getaddrinfo(host, port, *args):
        looked_up.append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    return looked_up


def test_guard_url_resolves(monkeypatch):
    looked_up = _fake_dns(
        monkeypatch, {"images.example": "10.0.0.5", "cdn.example": "93.184.215.14"}
    )

    async def main():
        return (
            await guard_url("https://images.example/a.jpg"),
            await guard_url("https://images.example/b.jpg"),  # cached
            await guard_url("https://cdn.example/a.jpg"),
            await guard_url("http://no-such-host.invalid/x"),  # DNS failure: refused
            await guard_url("gopher://cdn.example/"),
            await guard_url("http://127.0.0.1/"),  # literal: no lookup
        )

    assert asyncio.run(main()) == ("private", "private", None, "unresolved", "scheme", "loopback")
    assert looked_up == ["images.example", "cdn.example", "no-such-host.invalid"]


def test_guard_middleware_resolves_refuses_and_pins(monkeypatch):
    from scrapy.utils.test import get_crawler
    from twisted.internet.error import DNSLookupError

    from nuke_crawl.middlewares import netguard
    from nuke_crawl.middlewares.netguard import PrivateNetworkGuardMiddleware, RefusedRequest

    monkeypatch.delenv("NUKE_ALLOW_PRIVATE_NETWORKS", raising=False)
    looked_up = _fake_dns(monkeypatch, {"evil.example": "10.0.0.5", "cdn.example": "93.184.215.14"})
    pins = netguard.PinnedNameResolver(fallback=None)
    monkeypatch.setattr(netguard, "install_pinned_resolver", lambda: pins)
    crawler = get_crawler()
    mw = PrivateNetworkGuardMiddleware.from_crawler(crawler)

    async def main():
        with pytest.raises(RefusedRequest) as refused:
            await mw.process_request(scrapy.Request("https://evil.example/a.jpg"))
        assert refused.value.reason == "private"
        assert str(refused.value) == (
            "Refused https://evil.example/a.jpg: host evil.example resolves to a private "
            "address (10.0.0.5); to allow it, set NUKE_ALLOW_PRIVATE_NETWORKS=1 (every private "
            "address) or NUKE_PRIVATE_NETWORKS_ALLOW_HOSTS=host:port (this one host)"
        )
        assert await mw.process_request(scrapy.Request("https://Cdn.example/a.jpg")) is None
        # a name that does not resolve is never let through (a DNS error, retryable)
        with pytest.raises(DNSLookupError) as unresolved:
            await mw.process_request(scrapy.Request("https://nowhere.invalid/"))
        assert "host nowhere.invalid does not resolve" in str(unresolved.value)

    asyncio.run(main())
    # The downloader will connect to the address that was checked.
    assert pins.pins == {"cdn.example": ("93.184.215.14",)}
    assert looked_up == ["evil.example", "cdn.example", "nowhere.invalid"]
    assert crawler.stats.get_value("nuke/netguard/refused/private") == 1
    assert crawler.stats.get_value("nuke/netguard/unresolved") == 1


def test_a_name_that_failed_to_resolve_is_never_fetched():
    """Issue 12, item 6: the guard's lookup fails, the downloader's would give 127.0.0.1."""
    with _Server({"/a": [OK]}) as server:
        url = f"http://rebind.test:{server.port}/a"
        result = crawl(
            "UrlsSpider",
            settings={"RETRY_TIMES": 1},
            dns={"rebind.test": ["fail", "127.0.0.1"]},
            urls=[url],
        )
    assert server.hits == []
    assert result.stats["nuke/netguard/unresolved"] == 1
    # the retry was resolved and checked again
    assert result.stats["nuke/netguard/refused/loopback"] == 1
    assert "Traceback" not in result.log


def test_the_downloader_connects_to_the_address_the_guard_checked():
    """A second DNS answer (a rebinding to 127.0.0.1) never reaches the downloader."""
    with _Server({"/a": [OK]}) as server:
        url = f"http://pinned.test:{server.port}/a"
        result = crawl(
            "UrlsSpider",
            settings={"RETRY_TIMES": 0, "DOWNLOAD_TIMEOUT": 3},
            dns={"pinned.test": ["93.184.215.14", "127.0.0.1"]},
            urls=[url],
        )
    assert server.hits == []
    (record,) = result.records
    assert "error" in record, record
    assert "nuke/netguard/refused" not in result.stats


# Network guard: crawls


def test_loopback_refused_when_setting_off():
    with _Server({"/a": [OK], "/b": [OK]}) as server:
        result = crawl("UrlsSpider", urls=[server.url("/a"), server.url("/b")])
    assert server.hits == []
    assert result.reached == []
    refusals = [(r["error"], r["reason"]) for r in result.records]
    assert refusals == [("RefusedRequest", "loopback")] * 2
    assert result.stats["nuke/netguard/refused"] == 2
    assert result.stats["nuke/netguard/refused/loopback"] == 2
    # Logged once per host, at INFO, without a traceback.
    assert result.log.count("Refusing requests to 127.0.0.1") == 1
    assert "Traceback" not in result.log


@pytest.mark.parametrize(
    ("settings", "env"),
    [({"NUKE_ALLOW_PRIVATE_NETWORKS": True}, {}), ({}, {"NUKE_ALLOW_PRIVATE_NETWORKS": "1"})],
    ids=["setting", "environment"],
)
def test_loopback_allowed_when_setting_on(settings, env):
    with _Server({"/a": [OK]}) as server:
        result = crawl("UrlsSpider", settings=settings, env=env, urls=[server.url("/a")])
    assert [p for _, p in server.hits] == ["/a"]
    assert [r["status"] for r in result.records] == [200]
    assert "nuke/netguard/refused" not in result.stats


def test_refused_without_reaching_the_network():
    port = _free_port()
    urls = {
        "http://169.254.169.254/latest/meta-data/": "metadata",
        "http://10.20.30.40/listing": "private",
        "http://[::1]:8080/": "loopback",
        "http://0x7f000001/": "loopback",
        f"http://localhost:{port}/": "loopback",
        "http://metadata.google.internal/": "metadata",
        "file:///etc/passwd": "scheme",
    }
    result = crawl("UrlsSpider", settings={"DOWNLOAD_TIMEOUT": 2}, urls=list(urls))
    assert result.reached == []
    reasons = {r["url"]: r["reason"] for r in result.records}
    assert len(reasons) == len(urls)
    for url, reason in urls.items():
        # Scrapy normalises the URL (e.g. a trailing slash), so match on the start.
        (got,) = [v for k, v in reasons.items() if k.startswith(url.rstrip("/"))]
        assert got == reason, url
    assert all(r["error"] == "RefusedRequest" for r in result.records)
    assert result.stats["nuke/netguard/refused"] == len(urls)
    assert "Traceback" not in result.log


def test_redirect_to_refused_host_in_a_crawl():
    """A redirect comes back through process_request via the scheduler."""
    with _Server() as target, _Server() as origin:
        target.routes["/secret"] = [OK]
        origin.routes["/go"] = [(302, {"Location": target.url("/secret")}, b"")]
        result = crawl(
            "UrlsSpider",
            settings={"NUKE_PRIVATE_NETWORKS_ALLOW_HOSTS": [f"127.0.0.1:{origin.port}"]},
            urls=[origin.url("/go")],
        )
    assert [p for _, p in origin.hits] == ["/go"]
    assert target.hits == []
    assert result.records == [
        {
            "url": target.url("/secret"),
            "error": "RefusedRequest",
            "reason": "loopback",
            "message": f"Refused {target.url('/secret')}: host 127.0.0.1 is a loopback "
            "address (127.0.0.1); to allow it, set NUKE_ALLOW_PRIVATE_NETWORKS=1 (every private "
            "address) or NUKE_PRIVATE_NETWORKS_ALLOW_HOSTS=host:port (this one host)",
        }
    ]
    assert result.stats["nuke/netguard/refused/loopback"] == 1


def test_redirect_to_refused_host_in_a_media_download(tmp_path):
    """A media redirect loops in engine.download_async() through process_request too."""
    with _Server() as target, _Server() as origin:
        target.routes["/img.png"] = [PNG]
        origin.routes["/page"] = [OK]
        origin.routes["/ok.png"] = [PNG]
        origin.routes["/moved.png"] = [(302, {"Location": target.url("/img.png")}, b"")]
        result = crawl(
            "FilesSpider",
            settings={
                "NUKE_PRIVATE_NETWORKS_ALLOW_HOSTS": [f"127.0.0.1:{origin.port}"],
                "ITEM_PIPELINES": {"scrapy.pipelines.files.FilesPipeline": 1},
                "FILES_STORE": str(tmp_path),
                "MEDIA_ALLOW_REDIRECTS": True,
            },
            urls=[origin.url("/page")],
            file_urls=[origin.url("/ok.png"), origin.url("/moved.png")],
        )
    assert sorted(p for _, p in origin.hits) == ["/moved.png", "/ok.png", "/page"]
    assert target.hits == []
    (record,) = result.records
    assert [f["url"] for f in record["item"]["files"]] == [origin.url("/ok.png")]
    assert result.stats["nuke/netguard/refused/loopback"] == 1


# Backoff and retries

ALLOW_LOCAL = {"NUKE_ALLOW_PRIVATE_NETWORKS": True}


@pytest.mark.serial
def test_500_then_success():
    with _Server({"/flaky": [(500, {}, b"oops"), OK]}) as server:
        result = crawl("UrlsSpider", settings=ALLOW_LOCAL, urls=[server.url("/flaky")])
    assert [(r["status"], r["retry_times"]) for r in result.records] == [(200, 1)]
    (gap,) = _gaps(server.hit_times("/flaky"))
    assert 0.18 <= gap < 0.6
    assert result.stats["nuke/backoff/retries"] == 1
    assert result.stats["retry/count"] == 1
    assert "nuke/backoff/gave_up" not in result.stats
    assert "nuke/backoff/slowed_hosts" not in result.stats


@pytest.mark.serial
def test_backoff_delays_double_then_give_up():
    with _Server({"/down": [(500, {}, b"oops")]}) as server:
        result = crawl(
            "UrlsSpider", settings={**ALLOW_LOCAL, "RETRY_TIMES": 3}, urls=[server.url("/down")]
        )
    gaps = _gaps(server.hit_times("/down"))
    assert len(gaps) == 3
    for gap, expected in zip(gaps, (0.2, 0.4, 0.8), strict=True):
        assert expected - 0.02 <= gap < expected + 0.3, gaps
    # The last response passes on to the callback.
    assert [(r["status"], r["retry_times"]) for r in result.records] == [(500, 3)]
    assert result.stats["nuke/backoff/retries"] == 3
    assert result.stats["nuke/backoff/gave_up"] == 1
    assert result.log.count("Gave up retrying") == 1
    assert "WARNING: Gave up retrying" in result.log
    assert "Traceback" not in result.log


@pytest.mark.serial
def test_backoff_capped():
    with _Server({"/down": [(503, {}, b"oops")]}) as server:
        crawl(
            "UrlsSpider",
            settings={**ALLOW_LOCAL, "RETRY_TIMES": 3, "NUKE_BACKOFF_MAX": 0.3},
            urls=[server.url("/down")],
        )
    gaps = _gaps(server.hit_times("/down"))
    assert [round(g, 1) for g in gaps] == [0.2, 0.3, 0.3], gaps


def test_connection_error_retried_with_backoff():
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    result = crawl("UrlsSpider", settings={**ALLOW_LOCAL, "RETRY_TIMES": 2}, urls=[url])
    (record,) = result.records
    assert record["error"] == "DownloadConnectionRefusedError"
    assert result.stats["nuke/backoff/retries"] == 2
    assert result.stats["nuke/backoff/gave_up"] == 1
    assert "Traceback" not in result.log


@pytest.mark.serial
def test_waiting_retry_holds_up_no_other_host():
    """A crawl request waiting for its backoff holds no concurrency: with a single
    CONCURRENT_REQUESTS, another host's requests go through during the wait."""
    with _Server({"/flaky": [(500, {}, b"oops"), OK], "/other": [OK]}) as server:
        other = f"http://localhost:{server.port}/other"  # another slot: keyed by host name
        result = crawl(
            "UrlsSpider",
            settings={**ALLOW_LOCAL, "CONCURRENT_REQUESTS": 1, "NUKE_BACKOFF_BASE": 1.0},
            urls=[server.url("/flaky"), other, other, other],
        )
    first, second = server.hit_times("/flaky")
    assert second - first >= 0.98
    others = server.hit_times("/other")
    assert len(others) == 3
    assert all(first < t < first + 0.9 for t in others), (first, others)
    assert sorted(r["status"] for r in result.records) == [200] * 4


@pytest.mark.serial
def test_429_retry_after_waits_and_slows_the_host_down():
    """Retry-After: 2 is waited out; the slot keeps a 2 s delay despite AutoThrottle."""
    limited = (429, {"Retry-After": "2"}, b"slow down")
    with _Server({"/limited": [limited, OK], "/next/1": [OK], "/next/2": [OK]}) as server:
        first = server.url("/limited")
        result = crawl(
            "UrlsSpider",
            settings={
                **ALLOW_LOCAL,
                "AUTOTHROTTLE_ENABLED": True,
                "AUTOTHROTTLE_START_DELAY": 0.05,
                "AUTOTHROTTLE_MAX_DELAY": 10,
                "DOWNLOAD_DELAY": 0,
            },
            urls=[first],
            follow={first: [server.url("/next/1"), server.url("/next/2")]},
        )
    (wait,) = _gaps(server.hit_times("/limited"))
    assert 1.95 <= wait < 2.6
    assert [r["status"] for r in result.records] == [200, 200, 200]
    # The pages that followed were spaced by the raised slot delay: AutoThrottle, which
    # would lower it to about the loopback latency, could not.
    times = sorted(t for t, p in server.hits)
    assert all(gap >= 1.9 for gap in _gaps(times[1:])), _gaps(times)
    assert result.slot_delays == {"127.0.0.1": 2.0}
    assert result.stats["nuke/backoff/rate_limited"] == 1
    assert result.stats["nuke/backoff/slowed_hosts"] == 1
    assert result.log.count("Slowing down 127.0.0.1") == 1


@pytest.mark.serial
def test_repeated_429_doubles_the_slow_down_up_to_its_cap():
    limited = (429, {"Retry-After": "0"}, b"slow down")
    with _Server({"/limited": [limited]}) as server:
        result = crawl(
            "UrlsSpider",
            settings={**ALLOW_LOCAL, "RETRY_TIMES": 3, "NUKE_SLOWDOWN_MAX_DELAY": 0.5},
            urls=[server.url("/limited")],
        )
    # Retry-After: 0 -> no wait for the retry itself, but the slot delay applies:
    # floor 0.2 (NUKE_BACKOFF_BASE), then doubled to 0.4, then capped at 0.5.
    gaps = _gaps(server.hit_times("/limited"))
    assert [round(g, 1) for g in gaps] == [0.2, 0.4, 0.5], gaps
    assert result.slot_delays == {"127.0.0.1": 0.5}
    assert result.stats["nuke/backoff/rate_limited"] == 4
    assert result.stats["nuke/backoff/slowed_hosts"] == 1
    assert result.log.count("INFO: Slowing down 127.0.0.1") == 1
    assert [(r["status"], r["retry_times"]) for r in result.records] == [(429, 3)]


@pytest.mark.serial
def test_media_download_retried_with_backoff(tmp_path):
    """A FilesPipeline download (engine.download_async) gets the retried, final response."""
    with _Server() as server:
        server.routes["/page"] = [OK]
        server.routes["/flaky.png"] = [(502, {}, b"bad gateway"), PNG]
        server.routes["/gone.png"] = [(500, {}, b"oops")]
        result = crawl(
            "FilesSpider",
            settings={
                **ALLOW_LOCAL,
                "ITEM_PIPELINES": {"scrapy.pipelines.files.FilesPipeline": 1},
                "FILES_STORE": str(tmp_path),
                "RETRY_TIMES": 1,
            },
            urls=[server.url("/page")],
            file_urls=[server.url("/flaky.png"), server.url("/gone.png")],
        )
    (gap,) = _gaps(server.hit_times("/flaky.png"))
    assert 0.18 <= gap < 0.6
    assert len(server.hit_times("/gone.png")) == 2
    (record,) = result.records
    (stored,) = record["item"]["files"]
    assert stored["url"] == server.url("/flaky.png")
    assert (tmp_path / stored["path"]).read_bytes() == PNG[2]
    assert result.stats["nuke/backoff/retries"] == 2
    assert result.stats["nuke/backoff/gave_up"] == 1


# Backoff: units


def test_parse_retry_after():
    now = 1_700_000_000.0
    assert parse_retry_after(b"120") == 120.0
    assert parse_retry_after("0") == 0.0
    date = "Tue, 14 Nov 2023 22:13:40 GMT"  # now + 20 s
    assert parse_retry_after(date, now=now) == pytest.approx(20.0)
    assert parse_retry_after(date, now=now + 60) == 0.0
    assert parse_retry_after(b"soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("-5") is None


def test_backoff_refuses_to_run_next_to_scrapys_retry_middleware():
    from scrapy.utils.test import get_crawler

    crawler = get_crawler(settings_dict={"DOWNLOADER_MIDDLEWARES": {BACKOFF: 550}})
    with pytest.raises(ValueError, match="RetryMiddleware"):
        BackoffRetryMiddleware.from_crawler(crawler)
