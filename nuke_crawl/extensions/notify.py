"""A run's summary, logged and POSTed to webhooks: when it finishes, and when its failure
rate passes a threshold.

:class:`RunReport` is an extension of every crawl (``EXTENSIONS`` in settings). When the
spider closes it logs one line, ``Run summary: {json}`` (the service reads its jobs'
outcomes from it, whether they ran as its processes or under scrapyd), and POSTs the same
JSON to each URL of ``NUKE_WEBHOOK_URLS``:

``{"event": "finished", "spider", "args", "finishReason", "startedAt", "finishedAt",
"durationSeconds", "items", "counts": {stored, failed, downloaded, vehicles...},
"failuresByReason": {reason: n}, "failureRate"}``

While the run goes, every ``NUKE_ALERT_CHECK_INTERVAL`` seconds and at its close, the
share of failed images (``nuke/images/failed`` over stored + failed, or the analysis'
``nuke/analysis/failed`` over succeeded + failed) is compared with
``NUKE_ALERT_FAILURE_RATE``; past it (with at least ``NUKE_ALERT_MIN_IMAGES`` images
settled) an ``"event": "alert"`` summary is POSTed, once a run.

Each POST carries ``X-Nuke-Signature: sha256=<hex HMAC-SHA256 of the body>`` when
``NUKE_WEBHOOK_SECRET`` is set, ``X-Nuke-Event`` and a JSON body. Failed POSTs
(connection errors, timeouts, non-2xx) are retried ``NUKE_WEBHOOK_RETRIES`` times with
exponential backoff (``NUKE_WEBHOOK_BACKOFF`` seconds, doubling), each attempt at most
``NUKE_WEBHOOK_TIMEOUT`` seconds. Everything runs in a thread, never on the reactor; the
close waits for the finished event's delivery at most ``NUKE_WEBHOOK_DEADLINE`` seconds,
then goes on: a dead webhook never fails a crawl and costs it bounded time. URLs and the
secret are never logged (only the URL's host).

Settings (defaults): ``NUKE_WEBHOOK_URLS`` ([]; a list or a comma-separated string),
``NUKE_WEBHOOK_SECRET`` (None), ``NUKE_ALERT_FAILURE_RATE`` (None: no alerts; 0-1),
``NUKE_ALERT_MIN_IMAGES`` (20), ``NUKE_ALERT_CHECK_INTERVAL`` (30.0),
``NUKE_WEBHOOK_TIMEOUT`` (5.0), ``NUKE_WEBHOOK_RETRIES`` (3), ``NUKE_WEBHOOK_BACKOFF``
(0.5), ``NUKE_WEBHOOK_DEADLINE`` (10.0).

Stats: ``nuke/webhooks/sent``, ``nuke/webhooks/failed``, ``nuke/alerts/sent``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from scrapy import signals
from scrapy.crawler import Crawler

from nuke_crawl import settings as defaults
from nuke_crawl.params import SpiderArgs

logger = logging.getLogger(__name__)

SUMMARY_MARKER = "Run summary: "

_COUNT_KEYS = {
    "item_scraped_count": "items",
    "nuke/vehicles/claimed": "vehiclesClaimed",
    "nuke/vehicles/completed": "vehiclesCompleted",
    "nuke/vehicles/created": "vehiclesCreated",
    "nuke/vehicles/updated": "vehiclesUpdated",
    "nuke/images/stored": "imagesStored",
    "nuke/images/downloaded": "imagesDownloaded",
    "nuke/images/duplicates": "imagesDuplicates",
    "nuke/images/failed": "imagesFailed",
    "nuke/analysis/claimed": "imagesClaimed",
    "nuke/analysis/succeeded": "imagesAnalysed",
    "nuke/analysis/failed": "imagesAnalysisFailed",
    "log_count/ERROR": "errors",
}


def sign(body: bytes, secret: str) -> str:
    """The ``X-Nuke-Signature`` value of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).hostname or "?"


def post_json(
    url: str,
    payload: dict[str, Any],
    *,
    secret: str | None,
    event: str,
    timeout: float,
    retries: int,
    backoff: float,
    deadline: float,
) -> bool:
    """POST ``payload`` with retries and backoff until ``deadline`` (a monotonic time);
    whether it was delivered. Blocking: run it in a thread."""
    body = json.dumps(payload, separators=(",", ":"), default=str).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Nuke-Event": event,
        "User-Agent": "nuke_crawl webhook",
    }
    if secret:
        headers["X-Nuke-Signature"] = sign(body, secret)
    delay = backoff
    for attempt in range(retries + 1):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=min(timeout, left)) as response:
                if 200 <= response.status < 300:
                    return True
                why = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            why = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            why = type(getattr(exc, "reason", exc)).__name__
        logger.info(
            "Webhook to %s failed (%s), attempt %d of %d", _host(url), why, attempt + 1, retries + 1
        )
        if attempt < retries:
            time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
            delay *= 2
    logger.warning("Webhook to %s not delivered", _host(url))
    return False


def _urls(value: Any) -> list[str]:
    if not value:
        return []
    if isinstance(value, str):
        value = value.split(",")
    out = []
    for url in value:
        url = str(url).strip()
        if not url:
            continue
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            logger.error("NUKE_WEBHOOK_URLS: %r is not an http(s) URL; ignored", _host(url))
            continue
        out.append(url)
    return out


class RunReport:
    """Logs a run's summary and sends it to webhooks (see the module doc)."""

    def __init__(self, crawler: Crawler) -> None:
        settings = crawler.settings
        self.crawler = crawler
        self.urls = _urls(settings.get("NUKE_WEBHOOK_URLS"))
        self.secret: str | None = settings.get("NUKE_WEBHOOK_SECRET") or None
        rate = settings.get("NUKE_ALERT_FAILURE_RATE")
        self.alert_rate: float | None = float(rate) if rate not in (None, "") else None
        self.alert_min = settings.getint("NUKE_ALERT_MIN_IMAGES", defaults.NUKE_ALERT_MIN_IMAGES)
        self.check_interval = settings.getfloat(
            "NUKE_ALERT_CHECK_INTERVAL", defaults.NUKE_ALERT_CHECK_INTERVAL
        )
        self.timeout = settings.getfloat("NUKE_WEBHOOK_TIMEOUT", defaults.NUKE_WEBHOOK_TIMEOUT)
        self.retries = settings.getint("NUKE_WEBHOOK_RETRIES", defaults.NUKE_WEBHOOK_RETRIES)
        self.backoff = settings.getfloat("NUKE_WEBHOOK_BACKOFF", defaults.NUKE_WEBHOOK_BACKOFF)
        self.deadline = settings.getfloat("NUKE_WEBHOOK_DEADLINE", defaults.NUKE_WEBHOOK_DEADLINE)
        self.started = datetime.now(UTC)
        self.alerted = False
        self._checker: asyncio.Task[None] | None = None
        crawler.signals.connect(self.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> RunReport:
        return cls(crawler)

    # -- the summary -------------------------------------------------------------------

    def summary(self, event: str, reason: str | None) -> dict[str, Any]:
        stats = self.crawler.stats.get_stats() if self.crawler.stats else {}
        spider = self.crawler.spider
        now = datetime.now(UTC)
        counts = {
            name: int(stats.get(key) or 0)
            for key, name in _COUNT_KEYS.items()
            if stats.get(key) is not None
        }
        by_reason: dict[str, int] = {}
        for prefix in ("nuke/images/failed/", "nuke/analysis/failed/"):
            for key, value in stats.items():
                if key.startswith(prefix) and isinstance(value, int):
                    name = key[len(prefix) :]
                    by_reason[name] = by_reason.get(name, 0) + value
        raw_args = getattr(spider, "args", None)
        if isinstance(raw_args, SpiderArgs):  # every spider's arguments are typed
            raw_args = raw_args.as_dict()
        args = {k: v for k, v in (raw_args or {}).items() if v not in (None, (), [], False)}
        return {
            "event": event,
            "spider": getattr(spider, "name", None),
            "args": args,
            "finishReason": reason,
            "startedAt": self.started.isoformat(),
            "finishedAt": now.isoformat() if event == "finished" else None,
            "durationSeconds": round((now - self.started).total_seconds(), 3),
            "items": counts.get("items", 0),
            "counts": counts,
            "failuresByReason": by_reason,
            "failureRate": self.failure_rate(stats),
        }

    @staticmethod
    def failure_rate(stats: dict[str, Any]) -> float | None:
        for ok_key, bad_key in (
            ("nuke/images/stored", "nuke/images/failed"),
            ("nuke/analysis/succeeded", "nuke/analysis/failed"),
        ):
            ok, bad = int(stats.get(ok_key) or 0), int(stats.get(bad_key) or 0)
            if ok + bad:
                return round(bad / (ok + bad), 4)
        return None

    def _settled(self, stats: dict[str, Any]) -> int:
        return sum(
            int(stats.get(k) or 0)
            for k in (
                "nuke/images/stored",
                "nuke/images/failed",
                "nuke/analysis/succeeded",
                "nuke/analysis/failed",
            )
        )

    # -- signals ---------------------------------------------------------------------

    def spider_opened(self, spider: Any) -> None:
        self.started = datetime.now(UTC)
        if self.urls and self.alert_rate is not None and self.check_interval > 0:
            try:
                self._checker = asyncio.get_running_loop().create_task(self._check_loop())
            except RuntimeError:  # not on the asyncio reactor: the close still checks
                self._checker = None

    async def _check_loop(self) -> None:
        while not self.alerted:
            await asyncio.sleep(self.check_interval)
            self._check_alert()

    def _check_alert(self) -> threading.Thread | None:
        if self.alerted or self.alert_rate is None or not self.urls or not self.crawler.stats:
            return None
        stats = self.crawler.stats.get_stats()
        rate = self.failure_rate(stats)
        if rate is None or self._settled(stats) < self.alert_min or rate <= self.alert_rate:
            return None
        self.alerted = True
        logger.warning(
            "Failure rate %.0f%% passed NUKE_ALERT_FAILURE_RATE (%.0f%%): alerting",
            100 * rate,
            100 * self.alert_rate,
        )
        self.crawler.stats.inc_value("nuke/alerts/sent")
        return self._send(self.summary("alert", None), "alert")

    def _send(self, payload: dict[str, Any], event: str) -> threading.Thread:
        deadline = time.monotonic() + self.deadline
        stats = self.crawler.stats

        def deliver() -> None:
            for url in self.urls:
                ok = post_json(
                    url,
                    payload,
                    secret=self.secret,
                    event=event,
                    timeout=self.timeout,
                    retries=self.retries,
                    backoff=self.backoff,
                    deadline=deadline,
                )
                if stats is not None:
                    stats.inc_value("nuke/webhooks/sent" if ok else "nuke/webhooks/failed")

        thread = threading.Thread(target=deliver, name="nuke-webhooks", daemon=True)
        thread.start()
        return thread

    async def spider_closed(self, spider: Any, reason: str) -> None:
        try:
            await self._closed(reason)
        except Exception:  # a report must never fail the crawl
            logger.exception("Could not report the run")

    async def _closed(self, reason: str) -> None:
        if self._checker is not None:
            self._checker.cancel()
        threads: Sequence[threading.Thread | None] = [self._check_alert()]
        payload = self.summary("finished", reason)
        stats = self.crawler.stats
        if stats is None or stats.get_value("nuke/cannot_start") is None:
            # a run that could not start ends on its "Cannot start: ..." line; the
            # service reads such a run's outcome from its exit code and that line
            logger.info(
                "%s%s", SUMMARY_MARKER, json.dumps(payload, separators=(",", ":"), default=str)
            )
        if not self.urls:
            return
        threads = [*threads, self._send(payload, "finished")]
        # Wait off the reactor, at most the deadline: a dead webhook costs bounded time.
        end = time.monotonic() + self.deadline
        for thread in threads:
            if thread is not None:
                await asyncio.to_thread(thread.join, max(0.0, end - time.monotonic()))
