"""The crawl's worker processes, as a Scrapy extension.

:class:`WorkerPoolExtension` (``EXTENSIONS`` in settings) owns the crawler's one
:class:`~nuke_crawl.workers.pool.WorkerPool`: its workers start at the first call (or
``await pool.start()``) and exit when the engine stops. Spiders and pipelines find it
with ``crawler.get_extension(WorkerPoolExtension)``, or :func:`worker_pool` for short,
once the engine exists (a spider's ``start()``, a pipeline's ``__init__``); not in a
spider's ``from_crawler``, which Scrapy runs before it builds its extensions.

One pool serves whatever a crawl sends it: the org crawl's extraction and vehicle
writes, the image backfill's decoding. How its workers start (how many, at which CPU
priority, importing which modules) is chosen per spider with the ``NUKE_WORKER_*``
settings: the project's defaults fit the org crawl, and ``image_backfill`` sets its own
in ``custom_settings`` (see :class:`WorkerPoolConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured

from nuke_crawl import settings as defaults
from nuke_crawl.workers.pool import WorkerError, WorkerPool


@dataclass(frozen=True)
class WorkerPoolConfig:
    """``NUKE_WORKER_PROCESSES`` (1; 0: one thread of the crawler), ``NUKE_WORKER_NICE``
    (10), ``NUKE_WORKER_PRELOAD`` (the org crawl's extraction module) and
    ``NUKE_GC_THRESHOLD`` (20,000), defaults in settings.py.

    The workers run at ``NUKE_WORKER_NICE``: when the machine is busy, the crawler's
    event loop (downloads, and the response times AutoThrottle paces a site by) goes
    first and extraction takes the CPU left over, which it catches up on while the
    crawler waits for the network. Measured on 2 cores with the site served locally:
    the org crawl about 6% faster, with both cores busier. They tune their garbage
    collector like the crawler's (``NUKE_GC_THRESHOLD``) and import the
    ``NUKE_WORKER_PRELOAD`` modules as they start.

    The ``image_backfill`` spider's workers decode images instead (see its
    ``custom_settings``): as many as the CPUs (``NUKE_IMAGE_PROCESSES``), at the
    crawler's priority (nice 0: decoding is the run's work, not a background chore)
    and importing only :mod:`nuke_crawl.pipelines._imageworker` (Pillow and numpy, no
    Scrapy)."""

    processes: int
    nice: int
    gc_threshold: int
    preload: tuple[str, ...]

    @classmethod
    def from_settings(cls, settings: Any) -> WorkerPoolConfig:
        return cls(
            processes=settings.getint("NUKE_WORKER_PROCESSES", defaults.NUKE_WORKER_PROCESSES),
            nice=settings.getint("NUKE_WORKER_NICE", defaults.NUKE_WORKER_NICE),
            gc_threshold=settings.getint("NUKE_GC_THRESHOLD", defaults.NUKE_GC_THRESHOLD),
            preload=tuple(settings.getlist("NUKE_WORKER_PRELOAD", defaults.NUKE_WORKER_PRELOAD)),
        )

    def pool(self) -> WorkerPool:
        """A new pool; ``NotConfigured`` naming the settings when one is out of range."""
        try:
            return WorkerPool(
                self.processes, nice=self.nice, gc_threshold=self.gc_threshold, preload=self.preload
            )
        except ValueError as exc:  # the pool's own checks, named by their settings
            raise NotConfigured(
                f"NUKE_WORKER_PROCESSES={self.processes}, NUKE_WORKER_NICE={self.nice}, "
                f"NUKE_GC_THRESHOLD={self.gc_threshold}: {exc}"
            ) from None


class WorkerPoolExtension:
    """The crawler's :class:`~nuke_crawl.workers.pool.WorkerPool` (settings: see
    :class:`WorkerPoolConfig`), closed when the engine stops. A setting out of range
    disables it (``NotConfigured``, logged with the settings' values) and the spider
    that needs it cannot start."""

    def __init__(self, crawler: Crawler) -> None:
        self.config = WorkerPoolConfig.from_settings(crawler.settings)
        self.pool = self.config.pool()
        crawler.signals.connect(self.pool.close, signal=signals.engine_stopped)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> WorkerPoolExtension:
        return cls(crawler)


def worker_pool(crawler: Crawler) -> WorkerPool:
    """The crawler's pool (``WorkerPoolExtension``'s); :class:`WorkerError` when the
    extension is not enabled."""
    ext = crawler.get_extension(WorkerPoolExtension)
    if ext is None:
        raise WorkerError(
            "no worker pool: nuke_crawl.extensions.workers.WorkerPoolExtension is not enabled "
            "(see the warning above, or EXTENSIONS)"
        )
    return ext.pool
