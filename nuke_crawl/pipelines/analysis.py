"""Writes what the ``image_analysis`` spider found (phase three).

The spider yields one :class:`ImageAnalysisItem` per image, succeeded or failed;
:class:`ImageAnalysisPipeline` records it through :mod:`nuke_crawl.db.analysis` in the
crawler's database thread: a success in one transaction, a failure as an error, an
attempt count and a next-attempt time. A dry run writes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from itemadapter import ItemAdapter
from scrapy.crawler import Crawler

from nuke_crawl.analysis import ProviderResult
from nuke_crawl.db import analysis
from nuke_crawl.extensions.database import crawler_database

logger = logging.getLogger(__name__)


@dataclass
class ImageAnalysisItem:
    """One analysed image: its work record and every provider's result.

    ``ok`` False carries ``error_reason`` (a provider's reason such as ``rate_limited``,
    or a fetch reason such as ``http_404``, ``missing_file``, ``invalid_image``) and
    ``error_detail``.
    """

    work: analysis.AnalysisWork
    ok: bool
    results: list[ProviderResult] = field(default_factory=list)
    error_reason: str | None = None
    error_detail: str | None = None
    owner: str | None = None


class ImageAnalysisPipeline:
    """Records :class:`ImageAnalysisItem` s in the database.

    Settings (defaults): ``NUKE_DRY_RUN`` (False: set by ``-a dry_run=1``; nothing is
    written), ``NUKE_ANALYSIS_RETRY_BACKOFF`` (600 s before a failed image's next
    attempt, doubling per attempt, at most a day).

    Stats: ``nuke/analysis/written``, ``nuke/analysis/failures_recorded``,
    ``nuke/analysis/tags``, ``nuke/analysis/components``, ``nuke/analysis/paint``,
    ``nuke/analysis/spid``, ``nuke/analysis/vin_filled``, ``nuke/analysis/vin_rejected``,
    ``nuke/analysis/skipped/<reason>``, ``nuke/analysis/write_errors``.
    """

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        settings = crawler.settings
        self.dry_run = settings.getbool("NUKE_DRY_RUN", False)
        self.backoff = settings.getfloat("NUKE_ANALYSIS_RETRY_BACKOFF", 600.0)
        assert crawler.stats is not None
        self.stats = crawler.stats

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ImageAnalysisPipeline:
        return cls(crawler)

    async def process_item(self, item: Any) -> Any:
        adapter = ItemAdapter(item)
        work: analysis.AnalysisWork = adapter["work"]
        if self.dry_run:
            return item
        adb = crawler_database(self.crawler)
        try:
            if adapter["ok"]:
                outcome = await adb.run(analysis.record_success, work, adapter["results"],
                                        adapter["owner"])
                if outcome.written:
                    self.stats.inc_value("nuke/analysis/written")
                    self.stats.inc_value("nuke/analysis/tags", outcome.tags)
                    self.stats.inc_value("nuke/analysis/components", outcome.components)
                    self.stats.inc_value("nuke/analysis/paint", outcome.paint)
                    if outcome.spid:
                        self.stats.inc_value("nuke/analysis/spid")
                    if outcome.vin_filled:
                        self.stats.inc_value("nuke/analysis/vin_filled")
                        logger.info("Vehicle %s: VIN %s filled from image %s",
                                    work.vehicle_id, outcome.vin_filled, work.image_id)
                    if outcome.vin_rejected:
                        self.stats.inc_value("nuke/analysis/vin_rejected")
                        logger.info("Vehicle %s: VIN %r read from image %s has an invalid "
                                    "check digit; not used", work.vehicle_id,
                                    outcome.vin_rejected, work.image_id)
                else:
                    self.stats.inc_value(f"nuke/analysis/skipped/{outcome.skipped_reason}")
            else:
                await adb.run(analysis.record_failure, work, adapter["error_reason"] or "error",
                              adapter["error_detail"] or "", backoff=self.backoff)
                self.stats.inc_value("nuke/analysis/failures_recorded")
        except Exception as exc:  # noqa: BLE001 - a database error must not stop the run
            self.stats.inc_value("nuke/analysis/write_errors")
            logger.error("Could not record the analysis of image %s: %s: %s",
                         work.image_id, type(exc).__name__, exc)
        return item
