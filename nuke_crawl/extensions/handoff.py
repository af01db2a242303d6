"""Hand-offs: each phase starts the next when its run closes, without waiting for it.

Two extensions (``EXTENSIONS`` in settings), off by default, on one :class:`Launcher`
(a detached ``python -m scrapy crawl`` process, or scrapyd's ``schedule.json``):

- :class:`BackfillHandoff`: ``org`` -> ``image_backfill`` (``NUKE_TRIGGER_BACKFILL``);
- :class:`AnalysisHandoff`: ``image_backfill`` -> ``image_analysis``
  (``NUKE_ANALYZE_AFTER_BACKFILL``), through :func:`schedule_analysis`.

Phase one to phase two: when the
``org`` spider closes having created vehicles, it starts an ``image_backfill`` run
for them (``-a created_after=<the org run's start> -a limit=<vehicles created>``)
without waiting for it:

- by default as a detached process (``python -m scrapy crawl image_backfill``, its
  own session, so it outlives the org crawl), logging to ``NUKE_BACKFILL_LOG_FILE``;
- through scrapyd's ``schedule.json`` when ``NUKE_SCRAPYD_URL`` is set (project
  ``NUKE_SCRAPYD_PROJECT``, default ``BOT_NAME``; ``http://user:password@host:6800``
  for a scrapyd with HTTP basic auth). The job gets the same settings as ``setting=``
  parameters, ``DATABASE_URL`` among them *without its password*: scrapyd keeps job
  settings in its queue, its ``listjobs.json`` and the job's log, so the password must
  come from the scrapyd side (``PGPASSWORD`` or ``~/.pgpass`` in scrapyd's environment,
  or scrapyd's own ``DATABASE_URL``, which wins over the setting).

Settings (defaults): ``NUKE_TRIGGER_BACKFILL`` (False; off means the extension is
not configured), ``NUKE_SCRAPYD_URL`` (None), ``NUKE_SCRAPYD_PROJECT`` (``BOT_NAME``),
``NUKE_BACKFILL_LOG_FILE`` (``"image_backfill.log"``). The detached run gets the
org crawl's ``DATABASE_URL`` (through its environment) and the :data:`FORWARDED_SETTINGS`
given with ``-s`` (``NUKE_ANALYZE_AFTER_BACKFILL`` and ``NUKE_SCRAPYD_URL`` among them, so
the backfill goes on to the analysis the same way); a relative SQLite path or local
``IMAGES_STORE`` is made absolute, since a scrapyd job runs in scrapyd's directory.

Stats: ``nuke/handoff/started`` (1) or ``nuke/handoff/error`` (the reason).

Phase two to phase three: with ``NUKE_ANALYZE_AFTER_BACKFILL`` (default False), when an
``image_backfill`` run closes, the images it stored that were never analysed are handed
to ``image_analysis`` (``NUKE_ANALYSIS_LOG_FILE`` for the detached runs' output). Stats:
``nuke/handoff/analysis_images`` and ``nuke/handoff/analysis_runs``, or
``nuke/handoff/analysis_error`` with the reason.

Nothing here imports a spider: spiders are named, and run in processes of their own.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured

from nuke_crawl import settings as defaults
from nuke_crawl.db import Database, DatabaseError, database_url, redact_url
from nuke_crawl.extensions.database import crawler_database

logger = logging.getLogger(__name__)

SOURCE_SPIDER = "org"
TARGET_SPIDER = "image_backfill"
ANALYSIS_SPIDER = "image_analysis"


def backfill_arguments(started_at: datetime, created: int) -> dict[str, str]:
    """The ``image_backfill`` arguments covering the vehicles an org run created."""
    return {"created_after": started_at.isoformat(), "limit": str(max(1, created))}


#: Settings given on a run's command line (``-s``) that the run a hand-off starts
#: inherits (org -> image_backfill, image_backfill -> image_analysis), so that a chain
#: started with ``NUKE_TRIGGER_BACKFILL`` and ``NUKE_ANALYZE_AFTER_BACKFILL`` goes on to
#: the analysis, through scrapyd when ``NUKE_SCRAPYD_URL`` is given. A
#: ``NUKE_SCRAPYD_URL`` holding a password is not passed on (see :func:`forwarded_settings`).
FORWARDED_SETTINGS = (
    "IMAGES_STORE",
    "NUKE_IMAGES_PUBLIC_URL",
    "AWS_ENDPOINT_URL",
    # the Cloudflare Images store and the variants (CF_IMAGES_TOKEN is not a setting:
    # it reaches a detached run through the environment, a scrapyd job through scrapyd's)
    "CF_IMAGES_ACCOUNT_HASH",
    "CF_IMAGES_VARIANT",
    "CF_IMAGES_API_URL",
    "CF_IMAGES_RATE_LIMIT",
    "CF_IMAGES_RATE_PERIOD",
    "CF_IMAGES_CONCURRENCY",
    "CF_IMAGES_TIMEOUT",
    "CF_IMAGES_RETRY_TIMES",
    "NUKE_IMAGE_VARIANTS",
    "IMAGES_MIN_WIDTH",
    "IMAGES_MIN_HEIGHT",
    "NUKE_IMAGE_MAX_ATTEMPTS",
    "NUKE_ALLOW_PRIVATE_NETWORKS",
    "AUTOTHROTTLE_START_DELAY",
    "DOWNLOAD_TIMEOUT",
    "NUKE_ANALYZE_AFTER_BACKFILL",
    "NUKE_SCRAPYD_URL",
    "NUKE_SCRAPYD_PROJECT",
)


def _absolute_store(value: str) -> str:
    if "://" in value:
        return value
    return str(Path(value).expanduser().absolute())


def forwarded_settings(settings: Any) -> dict[str, str]:
    """The :data:`FORWARDED_SETTINGS` set with ``-s`` on this run (cmdline priority);
    a local ``IMAGES_STORE`` made absolute. A ``NUKE_SCRAPYD_URL`` with a password is
    left out (logged): the next run would log it with its settings, and scrapyd would
    keep it; such a run takes ``NUKE_SCRAPYD_URL`` from its own project settings."""
    out = {}
    for name in FORWARDED_SETTINGS:
        priority = settings.getpriority(name)
        value = settings.get(name)
        if priority is not None and priority >= 40 and value is not None:
            # a dict or list (NUKE_IMAGE_VARIANTS's mapping form) goes as JSON
            out[name] = value if isinstance(value, str) else json.dumps(value)
    if out.get("IMAGES_STORE"):
        out["IMAGES_STORE"] = _absolute_store(out["IMAGES_STORE"])
    if out.get("NUKE_SCRAPYD_URL") and without_password(out["NUKE_SCRAPYD_URL"])[1]:
        logger.info(
            "NUKE_SCRAPYD_URL holds a password: not passed on to the next run (%s); "
            "its own hand-off takes NUKE_SCRAPYD_URL from its project settings",
            redact_url(out.pop("NUKE_SCRAPYD_URL")),
        )
    return out


def absolute_database_url(url: str) -> str:
    """``url`` with a relative SQLite path made absolute (another process may run
    elsewhere); other URLs unchanged."""
    if not url.startswith("sqlite:"):
        return url
    path = url[len("sqlite:") :]
    path = path[3:] if path.startswith("///") else path.removeprefix("//")
    if not path or path == ":memory:" or os.path.isabs(path):
        return url
    return "sqlite:///" + str(Path(path).expanduser().absolute())


def without_password(url: str) -> tuple[str, bool]:
    """``url`` without its password (in the user part or a ``password=`` query
    parameter), and whether there was one."""
    parts = urllib.parse.urlsplit(url)
    removed = False
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{hostport}" if user else hostport
        removed = True
    query = parts.query
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    kept = [(k, v) for k, v in pairs if k.lower() != "password"]
    if len(kept) != len(pairs):
        query = urllib.parse.urlencode(kept, quote_via=urllib.parse.quote)
        removed = True
    if not removed:
        return url, False
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query)), True


def scrapyd_settings(settings: Any) -> dict[str, str]:
    """The settings a scrapyd job started by a hand-off gets: the forwarded ``-s``
    settings and ``DATABASE_URL`` without its password (logged once when removed)."""
    out = forwarded_settings(settings)
    url, removed = without_password(absolute_database_url(database_url(settings)))
    out["DATABASE_URL"] = url
    if removed:
        logger.info(
            "DATABASE_URL goes to scrapyd without its password (%s): scrapyd's jobs "
            "take it from PGPASSWORD or ~/.pgpass in scrapyd's environment",
            redact_url(url),
        )
    return out


class HandoffError(RuntimeError):
    """A hand-off could not start its run; the message says why, without secrets."""


def crawl_command(
    spider: str, arguments: Mapping[str, str], settings: Mapping[str, str] | None = None
) -> list[str]:
    """The ``scrapy crawl <spider>`` command line for ``arguments`` (and ``-s`` settings)."""
    cmd = [sys.executable, "-m", "scrapy", "crawl", spider]
    for name, value in arguments.items():
        cmd += ["-a", f"{name}={value}"]
    for name, value in (settings or {}).items():
        cmd += ["-s", f"{name}={value}"]
    return cmd


def backfill_command(
    arguments: dict[str, str], settings: dict[str, str] | None = None
) -> list[str]:
    return crawl_command(TARGET_SPIDER, arguments, settings)


def start_detached(
    arguments: Mapping[str, str],
    log_file: str | None,
    *,
    settings: Mapping[str, str] | None = None,
    database_url: str | None = None,
    spider: str = TARGET_SPIDER,
) -> int:
    """Start ``spider`` in its own session (it outlives this process), its output appended
    to ``log_file`` (None: discarded); return its pid. The database URL goes through the
    environment, never the command line (it may hold a password)."""
    env = dict(os.environ)
    if database_url:
        env["DATABASE_URL"] = database_url
    out: Any = subprocess.DEVNULL
    if log_file:
        out = open(log_file, "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(
            crawl_command(spider, arguments, settings),
            cwd=os.getcwd(),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        if out is not subprocess.DEVNULL:
            out.close()
    return proc.pid


def schedule_scrapyd(
    url: str,
    project: str,
    arguments: Mapping[str, str],
    *,
    spider: str = TARGET_SPIDER,
    settings: Mapping[str, str] | None = None,
    timeout: float = 30,
) -> str:
    """POST to scrapyd's ``schedule.json``: ``spider`` of ``project`` with ``arguments``
    (spider arguments) and ``settings`` (``setting=NAME=value``); return the job id.

    Blocking (call it from a thread). ``url`` may hold ``user:password@`` for scrapyd's
    basic auth; it never appears in messages. Raises :class:`HandoffError` with a clear
    reason: scrapyd unreachable, an HTTP error (401: wrong credentials), an answer that
    is not scrapyd's, or scrapyd refusing the job (unknown project or spider...).
    """
    parts = urllib.parse.urlsplit(url)
    shown = redact_url(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HandoffError(f"NUKE_SCRAPYD_URL {shown!r} is not an http(s) URL")
    headers = {"Accept": "application/json"}
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        headers["Authorization"] = f"Basic {token}"
        netloc = parts.netloc.rpartition("@")[2]
        url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    fields: list[tuple[str, str]] = [("project", project), ("spider", spider)]
    fields += [(k, str(v)) for k, v in arguments.items()]
    fields += [("setting", f"{k}={v}") for k, v in (settings or {}).items()]
    endpoint = url.rstrip("/") + "/schedule.json"
    request = urllib.request.Request(
        endpoint, data=urllib.parse.urlencode(fields).encode(), headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        hint = " (check the user and password in NUKE_SCRAPYD_URL)" if exc.code == 401 else ""
        raise HandoffError(
            f"scrapyd at {shown} answered HTTP {exc.code} {exc.reason}{hint}"
        ) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        why = getattr(reason, "strerror", None) or str(reason)
        raise HandoffError(
            f"scrapyd at {shown} is unreachable ({why}): is it running, and "
            "is NUKE_SCRAPYD_URL right?"
        ) from None
    except (TimeoutError, OSError) as exc:
        raise HandoffError(
            f"scrapyd at {shown} is unreachable ({type(exc).__name__}: "
            f"{exc}): is it running, and is NUKE_SCRAPYD_URL right?"
        ) from None
    try:
        answer = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise HandoffError(
            f"{shown} did not answer like scrapyd (no JSON from "
            "schedule.json): is NUKE_SCRAPYD_URL a scrapyd?"
        ) from None
    if not isinstance(answer, dict) or answer.get("status") != "ok":
        message = answer.get("message") if isinstance(answer, dict) else answer
        hint = ""
        if "project" in str(message) and "not found" in str(message):
            hint = (
                " (scrapyd needs the project: deploy it, or name its settings module in "
                "scrapyd.conf's [settings] section; NUKE_SCRAPYD_PROJECT names it)"
            )
        raise HandoffError(f"scrapyd at {shown} refused to schedule {spider}: {message}{hint}")
    return str(answer.get("jobid"))


@dataclass(frozen=True)
class LaunchConfig:
    """``NUKE_SCRAPYD_URL`` (None: detached processes) and ``NUKE_SCRAPYD_PROJECT``
    (None: ``BOT_NAME``)."""

    scrapyd_url: str | None
    project: str

    @classmethod
    def from_settings(cls, settings: Any) -> LaunchConfig:
        return cls(
            scrapyd_url=settings.get("NUKE_SCRAPYD_URL") or None,
            project=str(settings.get("NUKE_SCRAPYD_PROJECT") or settings.get("BOT_NAME")),
        )


class Launcher:
    """Starts crawls in other processes, for the hand-offs: through scrapyd's
    ``schedule.json`` when ``NUKE_SCRAPYD_URL`` is set (project ``NUKE_SCRAPYD_PROJECT``,
    default ``BOT_NAME``; the job gets :func:`scrapyd_settings`), else as a detached
    process (:func:`start_detached`; the database URL through its environment, the
    :data:`FORWARDED_SETTINGS` with ``-s``) logging to ``log_file``.

    :meth:`launch` is blocking (call it from a thread) and raises
    :class:`HandoffError` or ``OSError`` when the run cannot be started."""

    def __init__(self, settings: Any, log_file: str | None) -> None:
        self.settings = settings
        config = LaunchConfig.from_settings(settings)
        self.scrapyd_url = config.scrapyd_url
        self.project = config.project
        self.log_file = log_file
        self._job_settings: dict[str, str] | None = None

    def launch(self, spider: str, arguments: Mapping[str, str]) -> str:
        """Start ``spider`` with ``arguments``: scrapyd's job id, or ``pid:<n>``."""
        if self.scrapyd_url:
            if self._job_settings is None:  # once: it logs a removed password
                self._job_settings = scrapyd_settings(self.settings)
            return schedule_scrapyd(
                self.scrapyd_url,
                self.project,
                arguments,
                spider=spider,
                settings=self._job_settings,
            )
        pid = start_detached(
            arguments,
            self.log_file,
            spider=spider,
            settings=forwarded_settings(self.settings),
            database_url=absolute_database_url(database_url(self.settings)),
        )
        return f"pid:{pid}"


HANDOFF_CHUNK = 500
"""Ids per scheduled analysis run (keeps command lines and POST bodies small)."""


def _chunks(ids: Sequence[str]) -> Iterable[list[str]]:
    for start in range(0, len(ids), HANDOFF_CHUNK):
        yield list(ids[start : start + HANDOFF_CHUNK])


def schedule_analysis(
    settings: Any,
    *,
    image_ids: Sequence[str] = (),
    vehicle_ids: Sequence[str] = (),
) -> list[str]:
    """Start ``image_analysis`` for these images (or vehicles) without waiting.

    Through the :class:`Launcher` (scrapyd when ``NUKE_SCRAPYD_URL`` is set, else
    detached processes logging to ``NUKE_ANALYSIS_LOG_FILE``, ``image_analysis.log``),
    one run per :data:`HANDOFF_CHUNK` ids. Returns the scrapyd job ids or ``pid:<n>``
    strings. Blocking: call it from a thread. Raises ``ValueError`` when neither list
    is given, :class:`HandoffError` (a ``RuntimeError``) or ``OSError`` when a run
    cannot be started.
    """
    if not image_ids and not vehicle_ids:
        raise ValueError("schedule_analysis needs image_ids or vehicle_ids")
    key, ids = ("image_ids", list(image_ids)) if image_ids else ("vehicle_ids", list(vehicle_ids))
    launcher = Launcher(
        settings, settings.get("NUKE_ANALYSIS_LOG_FILE", defaults.NUKE_ANALYSIS_LOG_FILE)
    )
    started: list[str] = []
    for chunk in _chunks(ids):
        arguments = {
            key: ",".join(chunk),
            "limit": str(len(chunk) if key == "image_ids" else 1000 * len(chunk)),
        }
        started.append(launcher.launch(ANALYSIS_SPIDER, arguments))
    logger.info(
        "Scheduled image analysis of %d %s: %s",
        len(ids),
        key.replace("_ids", "s"),
        ", ".join(started),
    )
    return started


def _dry_run(spider: Any) -> bool:
    """Whether ``spider`` runs with ``-a dry_run=1`` (its typed ``SpiderArgs``)."""
    return bool(getattr(getattr(spider, "args", None), "dry_run", False))


class Handoff:
    """Base of the extensions that start the next phase when a run closes.

    Subclasses name the setting that turns them on (off by default: then
    ``NotConfigured``, without a reason, which Scrapy would log as a WARNING on every
    run), the spider whose runs they follow, and write :meth:`hand_off`, called
    when such a run closes, unless it was a dry run. ``started_at`` is when the run
    opened, less ``started_slack`` seconds.
    """

    enabled_setting: str
    source_spider: str
    started_slack = 0.0

    def __init__(self, crawler: Crawler) -> None:
        enabled = getattr(defaults, self.enabled_setting)  # its default: settings.py's
        if not crawler.settings.getbool(self.enabled_setting, enabled):
            raise NotConfigured
        self.crawler = crawler
        self.started_at = datetime.now(UTC)
        crawler.signals.connect(self.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Handoff:
        return cls(crawler)

    def spider_opened(self, spider: Any) -> None:
        self.started_at = datetime.now(UTC) - timedelta(seconds=self.started_slack)

    async def spider_closed(self, spider: Any, reason: str) -> None:
        if getattr(spider, "name", None) != self.source_spider:
            return
        if self.crawler.settings.getbool("NUKE_DRY_RUN", defaults.NUKE_DRY_RUN) or _dry_run(spider):
            return
        await self.hand_off(spider)

    async def hand_off(self, spider: Any) -> None:
        raise NotImplementedError


class BackfillHandoff(Handoff):
    """Starts ``image_backfill`` for the vehicles an ``org`` run created (see module doc)."""

    enabled_setting = "NUKE_TRIGGER_BACKFILL"
    source_spider = SOURCE_SPIDER

    def __init__(self, crawler: Crawler) -> None:
        super().__init__(crawler)
        settings = crawler.settings
        self.launcher = Launcher(
            settings, settings.get("NUKE_BACKFILL_LOG_FILE", defaults.NUKE_BACKFILL_LOG_FILE)
        )

    async def hand_off(self, spider: Any) -> None:
        stats = self.crawler.stats
        assert stats is not None
        created = int(stats.get_value("nuke/vehicles/created", 0) or 0)
        if not created:
            logger.info("No vehicles created: no image backfill to start")
            return
        arguments = backfill_arguments(self.started_at, created)
        launcher = self.launcher
        try:
            run = await asyncio.to_thread(launcher.launch, TARGET_SPIDER, arguments)
            if launcher.scrapyd_url:
                logger.info(
                    "Scheduled image_backfill for %d vehicles on scrapyd %s (job %s)",
                    created,
                    redact_url(launcher.scrapyd_url),
                    run,
                )
            else:
                logger.info(
                    "Started image_backfill for %d vehicles (pid %s, log %s)",
                    created,
                    run.removeprefix("pid:"),
                    launcher.log_file or "discarded",
                )
            stats.set_value("nuke/handoff/started", 1)
        except Exception as exc:  # noqa: BLE001 - the crawl itself succeeded; say why
            logger.error("Could not start image_backfill: %s", exc)
            stats.set_value("nuke/handoff/error", str(exc))


def stored_since(db: Database, since: datetime) -> list[str]:
    """Ids of images stored (file and record) since ``since`` and never analysed."""
    rows = db.fetchall(
        "SELECT id FROM vehicle_images WHERE is_external = false AND storage_path IS NOT NULL "
        "AND ai_last_scanned IS NULL AND updated_at >= ? ORDER BY updated_at",
        [db.ts(since)],
    )
    return [r["id"] for r in rows]


class AnalysisHandoff(Handoff):
    """Starts ``image_analysis`` for the images an ``image_backfill`` run stored."""

    enabled_setting = "NUKE_ANALYZE_AFTER_BACKFILL"
    source_spider = TARGET_SPIDER
    started_slack = 1.0  # for clocks that store whole seconds

    async def hand_off(self, spider: Any) -> None:
        stats = self.crawler.stats
        assert stats is not None
        try:
            ids = await crawler_database(self.crawler).run(stored_since, self.started_at)
            if not ids:
                logger.info("No newly stored images to hand to image_analysis")
                return
            # urllib or a process start: off the reactor thread
            runs = await asyncio.to_thread(schedule_analysis, self.crawler.settings, image_ids=ids)
        except (DatabaseError, OSError, RuntimeError, ValueError) as exc:
            stats.set_value("nuke/handoff/analysis_error", str(exc))
            logger.error("Could not start image_analysis: %s", exc)
            return
        stats.set_value("nuke/handoff/analysis_images", len(ids))
        stats.set_value("nuke/handoff/analysis_runs", len(runs))
        logger.info("Handed %d stored images to image_analysis (%s)", len(ids), ", ".join(runs))
