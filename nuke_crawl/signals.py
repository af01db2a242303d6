"""nuke_crawl's own signals (``crawler.signals.connect(receiver, signal=...)``), like
:mod:`scrapy.signals`."""

from __future__ import annotations

vehicles_stored = object()
"""Sent by :class:`~nuke_crawl.pipelines.database.VehicleDatabasePipeline` when it has
written a batch of vehicles (or counted one in a dry run), before those items leave it.
Argument ``outcomes``: a list of ``(organization_id, outcome)``, the outcome being
``created``, ``updated``, ``unchanged``, ``failed`` or ``would_write`` (dry run). The org
spider receives it and records each organization's results in its crawl summary, so
results flow one way: pipeline -> spider's summary -> database."""

store_failed = object()
"""Sent by :class:`~nuke_crawl.pipelines.images.ImageBackfillPipeline` when its image store
cannot be used: when it opens, before the spider's first claim (its settings are bad, or
the store's ``probe()`` fails), or mid-run (a write failed for a reason that is not the
image's). Argument ``detail``: one line saying why. The ``image_backfill`` spider then
claims nothing more: at start it stops with "Cannot start", mid-run the run drains, and
no image is marked failed for it."""

work_stopping = object()
"""Sent by the leased image spiders (:mod:`nuke_crawl.spiders.leased`) once, as soon as
the crawl starts stopping before its work is done (SIGINT, SIGTERM, scrapyd's cancel, a
``CLOSESPIDER_*`` limit). Argument ``spider``. The pipelines then abandon the units in
flight (:class:`nuke_crawl.utils.stopping.StopFlag`): what they finished stays
recorded, the rest is released for the next run."""
