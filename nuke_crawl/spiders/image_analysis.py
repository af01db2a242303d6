"""The ``image_analysis`` spider: analyse every image never analysed (phase three).

``scrapy crawl image_analysis -a limit=1000`` streams ``vehicle_images`` rows with
``ai_last_scanned IS NULL`` (newest first) from the database in leased batches, reads
the stored copy of each (a local file or an S3 object, in a thread) or downloads the
external URL through Scrapy's downloader (private-network guard, retries,
``Retry-After``), verifies it, and runs the providers on it: ``local`` (Pillow/NumPy in
a thread) first, then ``openai`` and ``rekognition`` concurrently. One
:class:`~nuke_crawl.pipelines.analysis.ImageAnalysisItem` per image goes to
:class:`~nuke_crawl.pipelines.analysis.ImageAnalysisPipeline`, which writes it.

``-a check=1`` (or ``scrapy analyze-check``) only runs each provider's preflight and
reports OK or the exact reason; the exit code is 1 when one fails.

:func:`schedule_analysis` starts a run for given images or vehicles without waiting
(a detached process, or scrapyd's ``schedule.json`` with ``NUKE_SCRAPYD_URL``).
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import scrapy
from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Request
from scrapy.http.request import NO_CALLBACK
from scrapy.settings import BaseSettings

from nuke_crawl import analysis as provider_modules  # they import numpy/openai/boto3 on first use
from nuke_crawl.analysis import PROVIDERS, ProviderResult
from nuke_crawl.db import DatabaseError, analysis, database_url, needs_migration
from nuke_crawl.dbglue import SchemaMissing, crawler_database, prepare_database
from nuke_crawl.handoff import (
    absolute_database_url,
    forwarded_settings,
    schedule_scrapyd,
    scrapyd_settings,
)
from nuke_crawl.imaging import ImageRejected, process_image
from nuke_crawl.pipelines.analysis import ImageAnalysisItem
from nuke_crawl.spiders.args import ArgumentError, Param, parse_args, to_bool, to_int, to_uuid

logger = logging.getLogger(__name__)

SPIDER_NAME = "image_analysis"
ACCEPT = "image/avif,image/webp,image/png,image/jpeg,image/*;q=0.8,*/*;q=0.5"
MAX_EXAMPLES = 3
"""Example URLs kept per failure reason for the final summary."""

# -- arguments ------------------------------------------------------------------------


def to_providers(name: str, value: Any) -> tuple[str, ...]:
    """A comma list of provider names (``local``, ``openai``, ``rekognition``)."""
    names = tuple(dict.fromkeys(p.strip().lower() for p in str(value).split(",") if p.strip()))
    if not names:
        raise ArgumentError(f"argument {name}: give at least one of {', '.join(PROVIDERS)}")
    unknown = [p for p in names if p not in PROVIDERS]
    if unknown:
        raise ArgumentError(f"argument {name}={value!r}: unknown provider(s) "
                            f"{', '.join(unknown)}; known: {', '.join(PROVIDERS)}")
    return names


def to_uuid_list(name: str, value: Any) -> tuple[str, ...]:
    """A comma list of UUIDs."""
    items = [v.strip() for v in str(value).split(",") if v.strip()]
    if not items:
        raise ArgumentError(f"argument {name}: expected a comma list of UUIDs")
    return tuple(to_uuid(name, v) for v in items)


ARGUMENTS: dict[str, Param] = {
    "limit": Param(lambda n, v: to_int(n, v, minimum=1), 1000, "images to analyse in this run"),
    "concurrency": Param(
        lambda n, v: to_int(n, v, minimum=1), None,
        "images in flight at once (default NUKE_ANALYSIS_CONCURRENCY, 10)",
    ),
    "organization_id": Param(to_uuid, None, "only this organization's vehicles"),
    "vehicle_id": Param(to_uuid, None, "only this vehicle"),
    "vehicle_ids": Param(to_uuid_list, (), "only these vehicles (comma list; hand-offs)"),
    "image_ids": Param(to_uuid_list, (), "only these images (comma list; hand-offs)"),
    "providers": Param(to_providers, None,
                       "comma list of local, openai, rekognition (default: every configured)"),
    "dry_run": Param(to_bool, False,
                     "report what would be analysed; call no provider, claim and write nothing"),
    "retry_failed": Param(to_bool, False,
                          "also take failed images now, whatever their backoff and attempts"),
    "check": Param(to_bool, False, "only check each provider's credentials and exit"),
}


# -- providers ------------------------------------------------------------------------


def _setting_or_env(settings: BaseSettings, name: str) -> Any:
    value = settings.get(name)
    if value is None or value == "":
        value = os.environ.get(name) or None
    return value


def build_openai(settings: BaseSettings) -> provider_modules.OpenAIProvider:
    """The OpenAI provider from settings and environment.

    ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL`` (environment, or settings), and
    ``NUKE_OPENAI_MODEL`` (``gpt-4o-mini``), ``NUKE_OPENAI_TIMEOUT`` (60 s),
    ``NUKE_OPENAI_MAX_RETRIES`` (3), ``NUKE_OPENAI_BACKOFF_BASE`` (1 s),
    ``NUKE_OPENAI_IMAGE_DETAIL`` (``auto``).
    """
    return provider_modules.OpenAIProvider(
        api_key=_setting_or_env(settings, "OPENAI_API_KEY"),
        base_url=_setting_or_env(settings, "OPENAI_BASE_URL"),
        model=str(_setting_or_env(settings, "NUKE_OPENAI_MODEL") or "gpt-4o-mini"),
        timeout=float(_setting_or_env(settings, "NUKE_OPENAI_TIMEOUT") or 60.0),
        max_retries=int(_setting_or_env(settings, "NUKE_OPENAI_MAX_RETRIES") or 3),
        backoff_base=float(_setting_or_env(settings, "NUKE_OPENAI_BACKOFF_BASE") or 1.0),
        image_detail=str(settings.get("NUKE_OPENAI_IMAGE_DETAIL") or "auto"),
    )


def build_rekognition(settings: BaseSettings) -> provider_modules.RekognitionProvider:
    """Rekognition from ``NUKE_REKOGNITION_MIN_CONFIDENCE`` (70) and
    ``NUKE_REKOGNITION_MAX_LABELS`` (30); region, endpoint and credentials as boto3
    finds them (``AWS_*`` environment)."""
    return provider_modules.RekognitionProvider(
        min_confidence=settings.getfloat("NUKE_REKOGNITION_MIN_CONFIDENCE", 70.0),
        max_labels=settings.getint("NUKE_REKOGNITION_MAX_LABELS", 30),
    )


@dataclass
class Providers:
    """The remote providers of a run (``local`` needs no object)."""

    names: tuple[str, ...]
    remote: dict[str, Any] = field(default_factory=dict)

    async def aclose(self) -> None:
        for provider in self.remote.values():
            close = getattr(provider, "aclose", None)
            if close is not None:
                await close()


def select_providers(
    settings: BaseSettings, requested: Sequence[str] | None
) -> tuple[Providers, list[str]]:
    """The providers to use and, for explicitly requested ones, why they cannot be.

    Without ``requested``: ``local`` plus every remote provider that is configured.
    """
    problems: list[str] = []
    candidates = {"openai": build_openai, "rekognition": build_rekognition}
    names: list[str] = []
    remote: dict[str, Any] = {}
    for name in requested or PROVIDERS:
        if name == "local":
            names.append(name)
            continue
        provider = candidates[name](settings)
        if provider.configured():
            names.append(name)
            remote[name] = provider
        elif requested:
            reason = ("OPENAI_API_KEY is not set" if name == "openai"
                      else "AWS credentials not found")
            problems.append(f"{name}: not_configured: {reason}")
    return Providers(tuple(names), remote), problems


def _probe_image() -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (96, 64), (90, 120, 160))
    ImageDraw.Draw(image).rectangle((20, 20, 70, 50), fill=(200, 40, 40))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG")
    return buffer.getvalue()


async def check_providers(
    settings: BaseSettings, requested: Sequence[str] | None
) -> list[tuple[str, bool, str]]:
    """Each provider's preflight: ``(name, ok, "ok: ..." or "<reason>: <detail>")``.

    Without ``requested``, every provider is listed: unconfigured remote ones as
    ``not_configured`` but not counted as failures (``ok`` None is reported as
    ``skipped``), so a key that is set but wrong is the only thing that fails.
    """
    out: list[tuple[str, bool, str]] = []
    for name in requested or PROVIDERS:
        if name == "local":
            result = await asyncio.to_thread(provider_modules.analyze_local, _probe_image())
            out.append((name, result.ok, "ok: Pillow/NumPy analysis works" if result.ok
                        else f"{result.error_reason}: {result.error_detail}"))
            continue
        provider: Any = build_openai(settings) if name == "openai" else build_rekognition(settings)
        if not provider.configured():
            ok, message = await provider.check()
            out.append((name, not requested, ("skipped (not configured): " + message)
                        if not requested else message))
            continue
        try:
            ok, message = await provider.check()
        finally:
            close = getattr(provider, "aclose", None)
            if close is not None:
                await close()
        out.append((name, ok, message))
    return out


# -- reading images -----------------------------------------------------------------


class FetchFailed(Exception):
    """The image's bytes could not be had: ``reason`` and ``detail``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class StoredImages:
    """Reads stored copies under ``IMAGES_STORE`` (a folder, ``s3://bucket/prefix``
    through boto3 with ``AWS_ENDPOINT_URL``, or ``cloudflare-images://<account_id>``
    through the API's blob endpoint). Blocking: call from a thread."""

    def __init__(self, settings: BaseSettings) -> None:
        self.uri = str(settings.get("IMAGES_STORE") or "images")
        self.settings = settings
        self._s3: Any = None
        self._cloudflare: Any = None  # a CloudflareImagesStore, made on first use
        self._cloudflare_lock = threading.Lock()  # one store: one rate cap for all threads

    def read(self, path: str) -> bytes:
        if self.uri.startswith("s3://"):
            return self._read_s3(path)
        if self.uri.startswith("cloudflare-images://"):
            return self._read_cloudflare(path)
        base = Path(self.uri).expanduser()
        target = (base / path).resolve()
        if not target.is_relative_to(base.resolve()):
            raise FetchFailed("bad_path", f"storage_path {path!r} leaves IMAGES_STORE")
        try:
            return target.read_bytes()
        except FileNotFoundError:
            raise FetchFailed("missing_file", f"{target} does not exist") from None
        except OSError as exc:
            raise FetchFailed("missing_file", f"cannot read {target}: {exc}") from None

    def _read_cloudflare(self, path: str) -> bytes:
        """The original through ``GET .../images/v1/{id}/blob`` (``storage_path`` is the id)."""
        from nuke_crawl.storage.cloudflare import CloudflareImagesError, CloudflareImagesStore

        try:
            with self._cloudflare_lock:
                if self._cloudflare is None:
                    self._cloudflare = CloudflareImagesStore.from_settings(
                        self.uri, self.settings)
            return bytes(self._cloudflare.read(path))
        except CloudflareImagesError as exc:
            reason = "missing_file" if exc.reason == "missing_file" else "storage"
            raise FetchFailed(reason, exc.detail) from None

    def _read_s3(self, path: str) -> bytes:
        import boto3
        import botocore.exceptions

        parts = urllib.parse.urlsplit(self.uri)
        prefix = parts.path.strip("/")
        key = f"{prefix}/{path}" if prefix else path
        if self._s3 is None:
            endpoint = self.settings.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")
            self._s3 = boto3.session.Session().client("s3", endpoint_url=endpoint or None)
        try:
            body = self._s3.get_object(Bucket=parts.netloc, Key=key)["Body"]
            return bytes(body.read())
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise FetchFailed("missing_file", f"s3://{parts.netloc}/{key}: "
                              f"{type(exc).__name__}: {exc}") from None


def _sniff_mime(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return "image/jpeg"


def _download_reason(exc: BaseException) -> tuple[str, str]:
    detail = str(exc) or type(exc).__name__
    name = type(exc).__name__
    if isinstance(exc, IgnoreRequest):
        return "refused", detail
    if "Timeout" in name or isinstance(exc, TimeoutError):
        return "timeout", detail
    if "DNS" in name or "Resolve" in name:
        return "dns", detail
    if "Connect" in name or "Connection" in name or isinstance(exc, ConnectionError):
        return "connection", f"{name}: {detail}"
    return "download_error", f"{name}: {detail}"


# -- the spider -----------------------------------------------------------------------


@dataclass
class _Batch:
    number: int
    size: int
    succeeded: int = 0
    failed: int = 0


class ImageAnalysisSpider(scrapy.Spider):
    """Analyses never-analysed vehicle images and hands the results to the pipeline.

    Arguments (``-a name=value``): ``limit`` (1000), ``concurrency``
    (``NUKE_ANALYSIS_CONCURRENCY``, 10), ``organization_id``, ``vehicle_id``,
    ``vehicle_ids``, ``image_ids``, ``providers`` (every configured), ``dry_run``,
    ``retry_failed``, ``check``.

    Settings (defaults): ``NUKE_ANALYSIS_CONCURRENCY`` (10),
    ``NUKE_ANALYSIS_BATCH_SIZE`` (50 images claimed at a time),
    ``NUKE_ANALYSIS_LEASE_SECONDS`` (900), ``NUKE_ANALYSIS_MAX_ATTEMPTS`` (5),
    ``NUKE_ANALYSIS_RETRY_BACKOFF`` (600 s), ``NUKE_ANALYSIS_PREFLIGHT`` (True: check
    the remote providers before taking any image), ``NUKE_IMAGE_MAX_PIXELS``
    (50,000,000), ``IMAGES_STORE`` (``images``), the OpenAI and Rekognition settings
    (:func:`build_openai`, :func:`build_rekognition`).

    Stats: ``nuke/analysis/claimed``, ``.../succeeded``, ``.../failed``,
    ``.../failed/<reason>``, ``.../provider/<name>/ok``,
    ``.../provider/<name>/failed/<reason>``, ``.../tokens/prompt``,
    ``.../tokens/completion``, ``.../cost_usd``, ``.../success_rate``,
    ``.../images_per_minute``, ``.../check/<provider>``; the pipeline's.
    """

    name = SPIDER_NAME
    ARGUMENTS = ARGUMENTS
    custom_settings = {
        # Only this spider's pipeline: the org spider's database pipeline is global.
        "ITEM_PIPELINES": {"nuke_crawl.pipelines.analysis.ImageAnalysisPipeline": 300},
        # Plain HTTP downloads: no browser for images.
        "DOWNLOAD_HANDLERS": {},
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        given = {k: v for k, v in kwargs.items() if k in ARGUMENTS or not k.startswith("_")}
        self.args = parse_args(ARGUMENTS, given, self.name)
        super().__init__(*args)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.started = time.monotonic()
        self.run_started = datetime.now(UTC)
        self.total = 0
        self.done = 0
        self.succeeded = 0
        self.failed = 0
        self.failures: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost_usd = 0.0
        self.hashes: dict[str, dict[str, str]] = {}
        self.providers = Providers(())

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> ImageAnalysisSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        settings = crawler.settings
        if spider.args["dry_run"]:
            settings.set("NUKE_DRY_RUN", True, priority="spider")
        spider.concurrency = spider.args["concurrency"] or settings.getint(
            "NUKE_ANALYSIS_CONCURRENCY", 10)
        spider.batch_size = max(1, settings.getint("NUKE_ANALYSIS_BATCH_SIZE", 50))
        spider.lease_seconds = settings.getfloat("NUKE_ANALYSIS_LEASE_SECONDS", 900.0)
        spider.max_attempts = settings.getint("NUKE_ANALYSIS_MAX_ATTEMPTS", 5)
        spider.preflight = settings.getbool("NUKE_ANALYSIS_PREFLIGHT", True)
        spider.max_pixels = settings.getint("NUKE_IMAGE_MAX_PIXELS", 50_000_000)
        spider.stored = StoredImages(settings)
        crawler.signals.connect(spider._on_closed, signal=signals.spider_closed)
        return spider

    # -- helpers ----------------------------------------------------------------------

    def _stat(self, key: str, count: float = 1) -> None:
        assert self.crawler.stats is not None
        self.crawler.stats.inc_value(f"nuke/analysis/{key}", count)

    def _error(self, message: str) -> None:
        logger.error("Cannot start: %s", message)
        assert self.crawler.stats is not None
        self.crawler.stats.set_value("nuke/error", message)

    def _selection(self) -> analysis.Selection:
        args = self.args
        return analysis.Selection(
            organization_id=args["organization_id"],
            vehicle_id=args["vehicle_id"],
            vehicle_ids=tuple(args["vehicle_ids"]),
            image_ids=tuple(args["image_ids"]),
            retry_failed=args["retry_failed"],
            max_attempts=self.max_attempts,
            run_started=self.run_started,
        )

    # -- start ------------------------------------------------------------------------

    async def start(self) -> AsyncIterator[Any]:
        settings = self.crawler.settings
        if self.args["check"]:
            await self._check_only()
            return
        providers, problems = select_providers(settings, self.args["providers"])
        if problems:
            self._error("; ".join(problems))
            return
        self.providers = providers
        openai_provider = providers.remote.get("openai")
        if openai_provider is not None:
            # `concurrency` requests in flight; images waiting out a retry's
            # backoff hold none, so twice as many images may be in progress.
            openai_provider.limit_calls(self.concurrency)
        if self.args["dry_run"]:
            # a dry run calls no provider (not even the preflight: it may cost)
            await self._dry_run()
            return
        if self.preflight and providers.remote:
            failed = []
            for name, provider in providers.remote.items():
                ok, message = await provider.check()
                logger.info("Preflight %s: %s", name, message)
                if not ok:
                    failed.append(f"{name}: {message}")
            if failed:
                self._error("provider check failed: " + "; ".join(failed))
                return
        try:
            await self._open_database()
            sel = self._selection()
            pending = await crawler_database(self.crawler).run(analysis.count_pending, sel)
        except (DatabaseError, SchemaMissing) as exc:
            self._error(str(exc))
            return
        self.total = min(pending, self.args["limit"])
        logger.info("%d images pending; analysing up to %d, %d at a time, with %s",
                    pending, self.total, self.concurrency, ", ".join(providers.names))
        self.started = time.monotonic()  # rates count analysis time, not start-up checks
        queue: asyncio.Queue[ImageAnalysisItem | None] = asyncio.Queue()
        producer = asyncio.ensure_future(self._produce(queue, sel))
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                yield item
        finally:
            if not producer.done():
                producer.cancel()
        exc = producer.exception() if not producer.cancelled() else None
        if exc is not None:
            self._error(f"{type(exc).__name__}: {exc}")

    async def _open_database(self) -> None:
        if not self.args["dry_run"]:
            await prepare_database(self.crawler)
            return
        if await crawler_database(self.crawler).run(needs_migration):
            raise SchemaMissing("the database has no current nuke_crawl schema: "
                                "run `scrapy migrate` first (a dry run writes nothing)")

    async def _dry_run(self) -> None:
        """Report what a run would analyse; claim, call and write nothing."""
        try:
            await self._open_database()
            plan = await crawler_database(self.crawler).run(
                analysis.plan, self._selection(), self.args["limit"])
        except (DatabaseError, SchemaMissing) as exc:
            self._error(str(exc))
            return
        stats = self.crawler.stats
        assert stats is not None
        for key, value in (("images", plan.images), ("stored", plan.stored),
                           ("external", plan.external), ("retries", plan.retries),
                           ("vehicles", len(plan.vehicles)),
                           ("organizations", len(plan.organizations))):
            stats.set_value(f"nuke/analysis/dry_run/{key}", value)
        remote = [n for n in self.providers.names if n != "local"]
        lines = [
            f"Dry run (nothing claimed, analysed or written): {plan.pending} images pending; "
            f"a run with limit={self.args['limit']} would analyse {plan.images} "
            f"({plan.stored} from stored copies, {plan.external} downloaded from their "
            f"external URLs; {plan.retries} tried before) of {len(plan.vehicles)} vehicles "
            f"in {len(plan.organizations)} organizations, {self.concurrency} at a time",
            f"  providers: {', '.join(self.providers.names) or 'none'}"
            + (f" (one {' + '.join(remote)} call per image; credentials not checked: "
               "use -a check=1)" if remote else ""),
        ]
        shown = 20
        for org_id, name, n in plan.organizations[:shown]:
            lines.append(f"  organization {name or '?'} ({org_id or '-'}): {n} images")
        if len(plan.organizations) > shown:
            lines.append(f"  ... and {len(plan.organizations) - shown} more organizations")
        for vehicle_id, label, n in plan.vehicles[:shown]:
            lines.append(f"  vehicle {label or '?'} ({vehicle_id}): {n} images")
        if len(plan.vehicles) > shown:
            lines.append(f"  ... and {len(plan.vehicles) - shown} more vehicles")
        logger.info("\n".join(lines))

    async def _check_only(self) -> None:
        results = await check_providers(self.crawler.settings, self.args["providers"])
        failed = []
        for name, ok, message in results:
            assert self.crawler.stats is not None
            self.crawler.stats.set_value(f"nuke/analysis/check/{name}", message)
            if ok:
                logger.info("Check %s: %s", name, message)
            else:
                logger.error("Check %s: FAILED %s", name, message)
                failed.append(f"{name}: {message}")
        if failed:
            assert self.crawler.stats is not None
            self.crawler.stats.set_value("nuke/error", "check failed: " + "; ".join(failed))

    async def _claim(self, sel: analysis.Selection, size: int) -> list[analysis.AnalysisWork]:
        adb = crawler_database(self.crawler)
        batch = await adb.run(analysis.claim_batch, sel, self.owner, size, self.lease_seconds)
        new = [w.vehicle_id for w in batch if w.vehicle_id not in self.hashes]
        if new:
            self.hashes.update(await adb.run(analysis.known_hashes, new))
        return batch

    async def _produce(self, queue: asyncio.Queue[ImageAnalysisItem | None],
                       sel: analysis.Selection) -> None:
        in_progress = self.concurrency * (2 if "openai" in self.providers.remote else 1)
        semaphore = asyncio.Semaphore(in_progress)
        tasks: set[asyncio.Task[None]] = set()
        claimed = 0
        number = 0
        try:
            while claimed < self.args["limit"]:
                size = min(self.batch_size, self.args["limit"] - claimed)
                batch = await self._claim(sel, size)
                if not batch:
                    break
                number += 1
                claimed += len(batch)
                self._stat("claimed", len(batch))
                info = _Batch(number, len(batch))
                for work in batch:
                    await semaphore.acquire()
                    task = asyncio.ensure_future(self._one(work, info, queue))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    task.add_done_callback(lambda _t: semaphore.release())
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            await queue.put(None)

    # -- one image --------------------------------------------------------------------

    async def _one(self, work: analysis.AnalysisWork, batch: _Batch,
                   queue: asyncio.Queue[ImageAnalysisItem | None]) -> None:
        try:
            item = await self._analyse(work)
        except Exception as exc:  # noqa: BLE001 - one image's bug must not stop the run
            logger.exception("Analysis of image %s crashed", work.image_id)
            item = ImageAnalysisItem(work, False, error_reason="error",
                                     error_detail=f"{type(exc).__name__}: {exc}")
        item.owner = self.owner
        self._account(item, batch)
        await queue.put(item)

    async def _fetch(self, work: analysis.AnalysisWork) -> tuple[bytes, str]:
        if work.stored:
            try:
                data = await asyncio.to_thread(self.stored.read, str(work.storage_path))
                return data, work.mime_type or _sniff_mime(data)
            except FetchFailed as exc:
                if not (work.url or "").startswith(("http://", "https://")):
                    raise
                logger.info("Image %s: stored copy unreadable (%s); downloading %s",
                            work.image_id, exc.detail, work.url)
        return await self._download(work)

    async def _download(self, work: analysis.AnalysisWork) -> tuple[bytes, str]:
        url = work.url
        if not url or not url.startswith(("http://", "https://")):
            raise FetchFailed("bad_url", f"not a downloadable http(s) URL: {url!r}")
        headers = {"Accept": ACCEPT}
        if work.referer:
            headers["Referer"] = work.referer
        try:
            request = Request(url, callback=NO_CALLBACK, headers=headers, dont_filter=True,
                              meta={"allow_offsite": True})
        except ValueError as exc:
            raise FetchFailed("bad_url", str(exc)) from None
        assert self.crawler.engine is not None
        try:
            response = await self.crawler.engine.download_async(request)
        except Exception as exc:  # noqa: BLE001 - classified; expected in the wild
            reason, detail = _download_reason(exc)
            raise FetchFailed(reason, detail) from None
        if response.status != 200:
            raise FetchFailed(f"http_{response.status}", f"HTTP {response.status} for {url}")
        content_type = response.headers.get(b"Content-Type")
        ctype = content_type.decode("latin-1") if content_type else None
        try:
            processed = await asyncio.to_thread(
                process_image, response.body, content_type=ctype, max_pixels=self.max_pixels,
                variants={},
            )
        except ImageRejected as exc:
            raise FetchFailed("invalid_image", f"{exc.reason}: {exc.detail}") from None
        return processed.data, processed.mime_type

    async def _analyse(self, work: analysis.AnalysisWork) -> ImageAnalysisItem:
        try:
            data, mime = await self._fetch(work)
        except FetchFailed as exc:
            return ImageAnalysisItem(work, False, error_reason=exc.reason,
                                     error_detail=exc.detail)
        results: list[ProviderResult] = []
        if "local" in self.providers.names:
            others = self.hashes.get(work.vehicle_id, {})
            local = await asyncio.to_thread(provider_modules.analyze_local, data, other_hashes=dict(others))
            results.append(local)
            if not local.ok:
                return ImageAnalysisItem(work, False, results, error_reason=local.error_reason,
                                         error_detail=f"local: {local.error_detail}")
            dhash = local.data.get("dhash_hex")
            if dhash:
                self.hashes.setdefault(work.vehicle_id, {})[work.image_id] = str(dhash)
        remote = list(self.providers.remote.values())
        if remote:
            results.extend(await asyncio.gather(
                *(p.analyze(data, mime, context=work.context) for p in remote)))
        others_ok = any(r.ok for r in results if r.provider != "rekognition")
        fatal = [r for r in results
                 if not r.ok and not (r.provider == "rekognition" and others_ok)]
        if fatal:
            first = fatal[0]
            return ImageAnalysisItem(work, False, results, error_reason=first.error_reason,
                                     error_detail=f"{first.provider}: {first.error_detail}")
        return ImageAnalysisItem(work, True, results)

    def _account(self, item: ImageAnalysisItem, batch: _Batch) -> None:
        self.done += 1
        for result in item.results:
            state = "ok" if result.ok else f"failed/{result.error_reason}"
            self._stat(f"provider/{result.provider}/{state}")
            self.prompt_tokens += result.tokens.prompt
            self.completion_tokens += result.tokens.completion
            self._stat("tokens/prompt", result.tokens.prompt)
            self._stat("tokens/completion", result.tokens.completion)
            if result.cost_usd:
                self.cost_usd += result.cost_usd
                self._stat("cost_usd", result.cost_usd)
        if item.ok:
            self.succeeded += 1
            batch.succeeded += 1
            self._stat("succeeded")
        else:
            reason = item.error_reason or "error"
            self.failed += 1
            batch.failed += 1
            self.failures[reason] += 1
            examples = self.examples.setdefault(reason, [])
            if len(examples) < MAX_EXAMPLES:
                examples.append(f"{item.work.url or item.work.storage_path} ({item.error_detail})")
            self._stat("failed")
            self._stat(f"failed/{reason}")
            logger.info("Image %s failed: %s (%s)", item.work.image_id, reason,
                        item.error_detail)
        if batch.succeeded + batch.failed == batch.size:
            self._log_progress(batch)

    def _rate(self) -> tuple[float, float]:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        per_minute = self.done / elapsed * 60
        rate = 100.0 * self.succeeded / self.done if self.done else 0.0
        return per_minute, rate

    def _log_progress(self, batch: _Batch) -> None:
        per_minute, rate = self._rate()
        left = max(0, self.total - self.done)
        eta = left / per_minute * 60 if per_minute > 0 else 0.0
        batch_rate = 100.0 * batch.succeeded / batch.size
        logger.info(
            "Batch %d: %d succeeded, %d failed (%.0f%%); run: %d/%d images, %.0f%% success, "
            "%.1f images/min, ETA %s",
            batch.number, batch.succeeded, batch.failed, batch_rate, self.done, self.total,
            rate, per_minute, _duration(eta),
        )

    # -- end --------------------------------------------------------------------------

    async def _on_closed(self, spider: scrapy.Spider, reason: str) -> None:
        await self.providers.aclose()
        if self.args["check"] or self.args["dry_run"]:
            return
        stats = self.crawler.stats
        assert stats is not None
        per_minute, rate = self._rate()
        stats.set_value("nuke/analysis/success_rate", round(rate, 2))
        stats.set_value("nuke/analysis/images_per_minute", round(per_minute, 2))
        if not self.args["dry_run"] and stats.get_value("nuke/error") is None:
            try:
                released = await crawler_database(self.crawler).run(
                    analysis.release_leases, self.owner)
            except DatabaseError as exc:
                logger.warning("Could not release leases: %s", exc)
                released = 0
            if released:
                logger.info("Released %d claimed images not analysed in this run", released)
        if not self.done:
            if stats.get_value("nuke/error") is None:
                logger.info("No image to analyse (%s)", reason)
            return
        lines = [
            f"Image analysis finished ({reason}): {self.done} images, {self.succeeded} "
            f"succeeded, {self.failed} failed ({rate:.1f}% success), {per_minute:.1f} "
            f"images/min over {_duration(time.monotonic() - self.started)}",
            f"  tokens: {self.prompt_tokens} prompt + {self.completion_tokens} completion; "
            f"estimated cost ${self.cost_usd:.4f}",
        ]
        for why, count in self.failures.most_common():
            lines.append(f"  failed {why}: {count}")
            lines.extend(f"    e.g. {example}" for example in self.examples.get(why, []))
        logger.info("\n".join(lines))


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


# -- hand-off -------------------------------------------------------------------------

HANDOFF_CHUNK = 500
"""Ids per scheduled run (keeps command lines and POST bodies small)."""


def analysis_command(arguments: dict[str, str],
                     settings: dict[str, str] | None = None) -> list[str]:
    """The ``scrapy crawl image_analysis`` command line for ``arguments``
    (and ``-s`` settings)."""
    cmd = [sys.executable, "-m", "scrapy", "crawl", SPIDER_NAME]
    for name, value in arguments.items():
        cmd += ["-a", f"{name}={value}"]
    for name, value in (settings or {}).items():
        cmd += ["-s", f"{name}={value}"]
    return cmd


def _chunks(ids: Sequence[str]) -> Iterable[list[str]]:
    for start in range(0, len(ids), HANDOFF_CHUNK):
        yield list(ids[start : start + HANDOFF_CHUNK])


def schedule_analysis(
    settings: BaseSettings,
    *,
    image_ids: Sequence[str] = (),
    vehicle_ids: Sequence[str] = (),
) -> list[str]:
    """Start ``image_analysis`` for these images (or vehicles) without waiting.

    Through scrapyd's ``schedule.json`` when ``NUKE_SCRAPYD_URL`` is set (project
    ``NUKE_SCRAPYD_PROJECT``, default ``BOT_NAME``; the job gets ``DATABASE_URL``
    without its password and the ``-s`` storage settings as ``setting=`` parameters,
    see :func:`nuke_crawl.handoff.scrapyd_settings`), else as detached processes in
    their own session logging to ``NUKE_ANALYSIS_LOG_FILE`` (``image_analysis.log``;
    the database URL through their environment). One run per :data:`HANDOFF_CHUNK`
    ids. Returns the scrapyd job ids or ``pid:<n>`` strings. Blocking: call it from a
    thread. Raises ``ValueError`` when neither list is given,
    :class:`~nuke_crawl.handoff.HandoffError` (a ``RuntimeError``) or ``OSError`` when
    a run cannot be started.
    """
    if not image_ids and not vehicle_ids:
        raise ValueError("schedule_analysis needs image_ids or vehicle_ids")
    key, ids = ("image_ids", list(image_ids)) if image_ids else ("vehicle_ids", list(vehicle_ids))
    scrapyd = settings.get("NUKE_SCRAPYD_URL") or None
    project = str(settings.get("NUKE_SCRAPYD_PROJECT") or settings.get("BOT_NAME"))
    log_file = settings.get("NUKE_ANALYSIS_LOG_FILE", "image_analysis.log")
    started: list[str] = []
    job_settings: dict[str, str] | None = None
    for chunk in _chunks(ids):
        arguments = {key: ",".join(chunk), "limit": str(len(chunk) if key == "image_ids"
                                                        else 1000 * len(chunk))}
        if scrapyd:
            if job_settings is None:
                job_settings = scrapyd_settings(settings)
            started.append(schedule_scrapyd(str(scrapyd), project, arguments,
                                            spider=SPIDER_NAME, settings=job_settings))
            continue
        out: Any = subprocess.DEVNULL
        if log_file:
            out = open(log_file, "ab")  # noqa: SIM115 - handed to the child
        try:
            # the same database (through the environment: the URL may hold a
            # password) and the storage settings given with -s to this run
            env = {**os.environ,
                   "DATABASE_URL": absolute_database_url(database_url(settings))}
            proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                analysis_command(arguments, forwarded_settings(settings)), cwd=os.getcwd(),
                env=env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        started.append(f"pid:{proc.pid}")
    logger.info("Scheduled image analysis of %d %s: %s", len(ids), key.replace("_ids", "s"),
                ", ".join(started))
    return started
