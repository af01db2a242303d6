"""The ``image_analysis`` spider: analyse every image never analysed (phase three).

``scrapy crawl image_analysis -a limit=1000`` claims ``vehicle_images`` rows with
``ai_last_scanned IS NULL`` (newest first) from the database in leased batches and
yields one :class:`~nuke_crawl.items.ImageAnalysisItem` per image; the
:class:`~nuke_crawl.pipelines.analysis.ImageAnalysisPipeline` reads the stored copy
(:mod:`nuke_crawl.storage`) or downloads the external URL through Scrapy's downloader
(private-network guard, retries, ``Retry-After``), verifies it, runs the providers on it
(:mod:`nuke_crawl.analysis.registry`: ``local`` first, then the remote ones
concurrently) and writes the outcome. The spider checks the providers before a run,
keeps the leases and reports progress (:class:`~nuke_crawl.spiders.leased.LeasedWorkSpider`).

``-a check=1`` (or ``scrapy analyze-check``) only runs each provider's preflight and
reports OK or the exact reason; the exit code is 1 when one fails.

:func:`nuke_crawl.extensions.handoff.schedule_analysis` starts a run for given images
or vehicles without waiting (a detached process, or scrapyd's ``schedule.json`` with
``NUKE_SCRAPYD_URL``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from scrapy.crawler import Crawler

from nuke_crawl import settings as defaults
from nuke_crawl.analysis.registry import Providers, check_providers, select_providers
from nuke_crawl.db import analysis, needs_migration
from nuke_crawl.extensions.database import SchemaMissing, crawler_database, prepare_database
from nuke_crawl.items import ImageAnalysisItem
from nuke_crawl.params import (
    arg,
    positive_int,
    to_bool,
    to_providers,
    to_uuid,
    to_uuid_list,
)
from nuke_crawl.spiders.leased import LeasedArgs, LeasedWorkSpider, duration

logger = logging.getLogger(__name__)

SPIDER_NAME = "image_analysis"
MAX_EXAMPLES = 3
"""Example URLs kept per failure reason for the final summary."""

# -- arguments ------------------------------------------------------------------------


@dataclass(frozen=True)
class AnalysisArgs(LeasedArgs):
    """The ``image_analysis`` spider's arguments (``-a name=value``)."""

    limit: int = arg(1000, "images to analyse in this run", positive_int)
    concurrency: int | None = arg(
        None, "images in flight at once (default NUKE_ANALYSIS_CONCURRENCY, 10)", positive_int
    )
    organization_id: str | None = arg(None, "only this organization's vehicles", to_uuid)
    vehicle_id: str | None = arg(None, "only this vehicle", to_uuid)
    vehicle_ids: tuple[str, ...] = arg(
        (), "only these vehicles (comma list; hand-offs)", to_uuid_list
    )
    image_ids: tuple[str, ...] = arg((), "only these images (comma list; hand-offs)", to_uuid_list)
    providers: tuple[str, ...] | None = arg(
        None, "comma list of local, openai, rekognition (default: every configured)", to_providers
    )
    dry_run: bool = arg(
        False, "report what would be analysed; call no provider, claim and write nothing", to_bool
    )
    retry_failed: bool = arg(
        False, "also take failed images now, whatever their backoff and attempts", to_bool
    )
    check: bool = arg(False, "only check each provider's credentials and exit", to_bool)


__all__ = ["AnalysisArgs", "ImageAnalysisSpider"]


# -- the spider -----------------------------------------------------------------------


class ImageAnalysisSpider(LeasedWorkSpider):
    """Claims never-analysed vehicle images for the analysis pipeline.

    Arguments (``-a name=value``): :class:`AnalysisArgs`, as ``self.args``; ``concurrency``
    and ``providers`` set ``NUKE_ANALYSIS_CONCURRENCY`` and ``NUKE_ANALYSIS_PROVIDERS`` for
    the pipeline.

    Settings (defaults): ``NUKE_ANALYSIS_CONCURRENCY`` (10),
    ``NUKE_ANALYSIS_BATCH_SIZE`` (50 images claimed at a time),
    ``NUKE_ANALYSIS_LEASE_SECONDS`` (900), ``NUKE_ANALYSIS_MAX_ATTEMPTS`` (5),
    ``NUKE_ANALYSIS_PREFLIGHT`` (True: check the remote providers before taking any
    image), the providers' settings (:mod:`nuke_crawl.analysis.registry`) and the
    pipeline's.

    Stats: ``nuke/analysis/claimed``, ``.../succeeded``, ``.../failed``,
    ``.../failed/<reason>``, ``.../provider/<name>/ok``,
    ``.../provider/<name>/failed/<reason>``, ``.../tokens/prompt``,
    ``.../tokens/completion``, ``.../cost_usd``, ``.../success_rate``,
    ``.../images_per_minute``, ``.../check/<provider>``; the pipeline's.
    """

    name = SPIDER_NAME
    Arguments = AnalysisArgs
    args: AnalysisArgs
    STATS_PREFIX = "nuke/analysis/"
    CLAIMED_STAT = "nuke/analysis/claimed"
    WORK_NAME = "images"
    custom_settings = {
        # Only this spider's pipeline: the org spider's database pipeline is global.
        "ITEM_PIPELINES": {"nuke_crawl.pipelines.analysis.ImageAnalysisPipeline": 300},
        # Plain HTTP downloads: no browser for images.
        "DOWNLOAD_HANDLERS": {},
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.concurrency = 10
        self.max_attempts = 5
        self.preflight = True
        self.succeeded = 0
        self.failed = 0
        self.failures: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}
        self.batch_outcomes: dict[int, list[int]] = {}  # batch -> [succeeded, failed]
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost_usd = 0.0
        self.providers = Providers()

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> ImageAnalysisSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        settings = crawler.settings
        if spider.args.concurrency:
            settings.set("NUKE_ANALYSIS_CONCURRENCY", spider.args.concurrency, priority="spider")
        if spider.args.providers:
            settings.set(
                "NUKE_ANALYSIS_PROVIDERS", ",".join(spider.args.providers), priority="spider"
            )
        spider.concurrency = settings.getint(
            "NUKE_ANALYSIS_CONCURRENCY", defaults.NUKE_ANALYSIS_CONCURRENCY
        )
        spider.batch_size = max(
            1, settings.getint("NUKE_ANALYSIS_BATCH_SIZE", defaults.NUKE_ANALYSIS_BATCH_SIZE)
        )
        spider.lease_seconds = settings.getfloat(
            "NUKE_ANALYSIS_LEASE_SECONDS", defaults.NUKE_ANALYSIS_LEASE_SECONDS
        )
        spider.max_attempts = settings.getint(
            "NUKE_ANALYSIS_MAX_ATTEMPTS", defaults.NUKE_ANALYSIS_MAX_ATTEMPTS
        )
        spider.preflight = settings.getbool(
            "NUKE_ANALYSIS_PREFLIGHT", defaults.NUKE_ANALYSIS_PREFLIGHT
        )
        return spider

    def _selection(self) -> analysis.Selection:
        args = self.args
        return analysis.Selection(
            organization_id=args.organization_id,
            vehicle_id=args.vehicle_id,
            vehicle_ids=tuple(args.vehicle_ids),
            image_ids=tuple(args.image_ids),
            retry_failed=args.retry_failed,
            max_attempts=self.max_attempts,
            run_started=self.run_started,
        )

    def _adb(self) -> Any:
        return crawler_database(self.crawler)

    # -- start ------------------------------------------------------------------------

    async def start(self) -> AsyncIterator[Any]:
        if self.args.check:
            await self._check_only()
            return
        async for item in super().start():
            yield item

    async def _select_providers(self) -> bool:
        providers, problems = select_providers(self.crawler.settings, self.args.providers)
        if problems:
            await providers.aclose()
            self.cannot_start("; ".join(problems))
            return False
        self.providers = providers
        # images waiting out a provider's backoff hold no call slot: more in progress
        self.max_in_flight = self.concurrency * providers.in_progress_factor
        return True

    async def before_claims(self) -> bool:
        if not await self._select_providers():
            return False
        manager = getattr(getattr(self.crawler.engine, "scraper", None), "itemproc", None)
        for component in getattr(manager, "middlewares", ()):
            problem = getattr(component, "store_problem", None)
            if problem:  # IMAGES_STORE cannot be built (read-only here: no probe)
                self.cannot_start(problem)
                return False
        if self.preflight and self.providers.remote:
            failed = []
            for name, provider in self.providers.remote.items():
                ok, message = await provider.check()
                logger.info("Preflight %s: %s", name, message)
                if not ok:
                    failed.append(f"{name}: {message}")
            if failed:
                self.cannot_start("provider check failed: " + "; ".join(failed))
                return False
        await prepare_database(self.crawler)
        pending = await self._adb().run(analysis.count_pending, self._selection())
        self.total = min(pending, self.args.limit)
        logger.info(
            "%d images pending; analysing up to %d, %d at a time, with %s",
            pending,
            self.total,
            self.concurrency,
            ", ".join(self.providers.names),
        )
        self.started = time.monotonic()  # rates count analysis time, not start-up checks
        return True

    async def dry_run(self) -> None:
        """Report what a run would analyse; claim, call and write nothing (not even a
        provider's preflight: it may cost)."""
        if not await self._select_providers():
            return
        if await self._adb().run(needs_migration):
            raise SchemaMissing(
                "the database has no current nuke_crawl schema: "
                "run `scrapy migrate` first (a dry run writes nothing)"
            )
        plan = await self._adb().run(analysis.plan, self._selection(), self.args.limit)
        names = self.providers.names
        remote = list(self.providers.remote)
        lines = [
            (
                f"Dry run (nothing claimed, analysed or written): {plan.pending} images pending; "
                f"a run with limit={self.args.limit} would analyse {plan.images} "
                f"({plan.stored} from stored copies, {plan.external} downloaded from their "
                f"external URLs; {plan.retries} tried before) of {len(plan.vehicles)} vehicles "
                f"in {len(plan.organizations)} organizations, {self.concurrency} at a time"
            ),
            (
                f"  providers: {', '.join(names) or 'none'}"
                + (
                    f" (one {' + '.join(remote)} call per image; credentials not checked: "
                    "use -a check=1)"
                    if remote
                    else ""
                )
            ),
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
        self.report_dry_run(
            lines,
            {
                "images": plan.images,
                "stored": plan.stored,
                "external": plan.external,
                "retries": plan.retries,
                "vehicles": len(plan.vehicles),
                "organizations": len(plan.organizations),
            },
        )

    async def _check_only(self) -> None:
        results = await check_providers(self.crawler.settings, self.args.providers)
        failed = []
        for name, ok, message in results:
            self.stats.set_value(f"nuke/analysis/check/{name}", message)
            if ok:
                logger.info("Check %s: %s", name, message)
            else:
                logger.error("Check %s: FAILED %s", name, message)
                failed.append(f"{name}: {message}")
        if failed:
            self.stats.set_value("nuke/error", "check failed: " + "; ".join(failed))

    # -- leased work ------------------------------------------------------------------

    async def claim(self, want: int) -> list[analysis.AnalysisWork]:
        batch: list[analysis.AnalysisWork] = await self._adb().run(
            analysis.claim_batch, self._selection(), self.owner, want, self.lease_seconds
        )
        return batch

    async def release(self) -> int:
        released: int = await self._adb().run(analysis.release_leases, self.owner)
        return released

    def work_key(self, work: Any) -> str:
        return str(work.image_id)

    def make_item(self, work: Any) -> ImageAnalysisItem:
        return ImageAnalysisItem(work, owner=self.owner)

    def is_work_item(self, item: Any) -> bool:
        return isinstance(item, ImageAnalysisItem)

    def _stat(self, key: str, count: float = 1) -> None:
        self.stats.inc_value(f"nuke/analysis/{key}", count)

    def item_done(self, item: Any, batch: int | None) -> None:
        """Count one analysed image (its providers' results, tokens and cost)."""
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
        outcome = self.batch_outcomes.setdefault(batch or 0, [0, 0])
        if item.ok:
            self.succeeded += 1
            outcome[0] += 1
            self._stat("succeeded")
        else:
            reason = item.error_reason or "error"
            self.failed += 1
            outcome[1] += 1
            self.failures[reason] += 1
            examples = self.examples.setdefault(reason, [])
            if len(examples) < MAX_EXAMPLES:
                examples.append(f"{item.work.url or item.work.storage_path} ({item.error_detail})")
            self._stat("failed")
            self._stat(f"failed/{reason}")
            logger.info("Image %s failed: %s (%s)", item.work.image_id, reason, item.error_detail)

    def _rate(self) -> tuple[float, float]:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        per_minute = self.done / elapsed * 60
        rate = 100.0 * self.succeeded / self.done if self.done else 0.0
        return per_minute, rate

    def progress_line(self, batch: int, elapsed: float, eta: float) -> str:
        succeeded, failed = self.batch_outcomes.pop(batch, [0, 0])
        per_minute, rate = self._rate()
        batch_rate = 100.0 * succeeded / max(1, succeeded + failed)
        return (
            f"Batch {batch}: {succeeded} succeeded, {failed} failed ({batch_rate:.0f}%); "
            f"run: {self.done}/{self.total} images, {rate:.0f}% success, "
            f"{per_minute:.1f} images/min, ETA {duration(eta)}"
        )

    # -- end --------------------------------------------------------------------------

    def summarize(self, reason: str) -> None:
        if self.args.check:
            return
        stats = self.stats
        per_minute, rate = self._rate()
        stats.set_value("nuke/analysis/success_rate", round(rate, 2))
        stats.set_value("nuke/analysis/images_per_minute", round(per_minute, 2))
        if not self.done:
            if stats.get_value("nuke/error") is None:
                logger.info("No image to analyse (%s)", reason)
            return
        lines = [
            (
                f"Image analysis finished ({reason}): {self.done} images, {self.succeeded} "
                f"succeeded, {self.failed} failed ({rate:.1f}% success), {per_minute:.1f} "
                f"images/min over {duration(time.monotonic() - self.started)}"
            ),
            (
                f"  tokens: {self.prompt_tokens} prompt + {self.completion_tokens} completion; "
                f"estimated cost ${self.cost_usd:.4f}"
            ),
        ]
        for why, count in self.failures.most_common():
            lines.append(f"  failed {why}: {count}")
            lines.extend(f"    e.g. {example}" for example in self.examples.get(why, []))
        logger.info("\n".join(lines))

    async def closing(self) -> None:
        await self.providers.aclose()
